"""Entry-point plugins are found by reading only the entry_points.txt files that name the
`archify` group (plugins.entry_points); what is found must be what importlib.metadata
finds, and a broken or blocked plugin behaves as before."""

from __future__ import annotations

from importlib.metadata import entry_points as metadata_entry_points
from pathlib import Path

import pytest

from archify_core.errors import ConfigurationError
from archify_core.plugins import ENTRY_POINT_GROUP, entry_points, make_plugin_manager


def _install(site: Path, project: str, module: str, source: str, target: str) -> None:
    (site / f"{module}.py").write_text(source)
    info = site / f"{project}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{project} = {target}\n")


PLUGIN = "import archify_core\n\n@archify_core.hookimpl\ndef archify_after_schema(result):\n    pass\n"


def test_entry_point_plugins_are_found_and_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path, "archify_demo", "archify_demo_plugin", PLUGIN, "archify_demo_plugin")
    (tmp_path / "other-2.0.dist-info").mkdir()  # a distribution without entry points
    monkeypatch.syspath_prepend(str(tmp_path))
    found = [(e.name, e.value) for e in entry_points(ENTRY_POINT_GROUP)]
    assert found == [("archify_demo", "archify_demo_plugin")]
    assert sorted((e.name, e.value) for e in metadata_entry_points(group="console_scripts")) \
        == sorted({(e.name, e.value) for e in entry_points("console_scripts")})
    pm = make_plugin_manager()
    assert pm.get_plugin("archify_demo") is not None
    blocked = make_plugin_manager(blocked=["archify_demo"])
    assert blocked.get_plugin("archify_demo") is None


def test_a_broken_entry_point_plugin_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _install(tmp_path, "archify_broken", "archify_broken_plugin", "raise ImportError('nope')\n",
             "archify_broken_plugin")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigurationError, match="ImportError: nope; uninstall it"):
        make_plugin_manager()
