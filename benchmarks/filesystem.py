"""Which file system holds the server's data folder, for the report: creating and
deleting relation files is a good part of bootstrap and create-tenant, and on ext4
without a journal it depends on what was deleted in the last minutes
(docs/performance.md, "Creating relation files")."""

from __future__ import annotations

import os
from pathlib import Path


def _mount(path: Path) -> tuple[str, str, str] | None:
    """(mount point, file system type, source) of the mount holding `path`."""
    best: tuple[str, str, str] | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        point = fields[4].encode().decode("unicode_escape")
        fs_type, source = fields[fields.index("-") + 1:][:2]
        inside = str(path) == point or str(path).startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) > len(best[0])):
            best = (point, fs_type, source)
    return best


def describe(data_dir: str) -> str:
    """E.g. "ext4 with a journal on /dev/loop0"; "unknown" for a folder this machine
    does not have (a server elsewhere)."""
    path = Path(data_dir)
    if not path.is_absolute() or not os.path.exists(path):
        return "unknown (not on this machine)"
    mount = _mount(path.resolve())
    if mount is None:
        return "unknown"
    _, fs_type, source = mount
    if fs_type == "ext4":
        # an ext4 journal shows as /proc/fs/jbd2/<device>-8
        device = Path(source).name
        journal = any(Path("/proc/fs/jbd2").glob(f"{device}-*"))
        fs_type = f"ext4 {'with' if journal else 'without'} a journal"
    return f"{fs_type} on {source}"
