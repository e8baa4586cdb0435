"""The plugin manager: built in one factory, nothing loaded at import time.

Archify calls each implementation of a hook itself, in pluggy's order (last
registered first, `tryfirst`/`trylast` respected), and awaits its result before
calling the next one. So plain and `async def` implementations interleave in a
predictable order, two implementations never share a connection at the same
time, and one failing notification hook cannot stop the others from running.
The price: pluggy's hook wrappers, which could not wrap awaited work anyway,
are refused.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .errors import ConfigurationError

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

log = logging.getLogger("archify")
ENTRY_POINT_GROUP = "archify"
DEFAULTS = "archify.defaults"


def make_plugin_manager(
    plugins: Iterable[object] = (),
    *,
    load_entry_points: bool = True,
    blocked: Iterable[str] = (),
) -> pluggy.PluginManager:
    """Hook specs, then the built-in defaults, then entry-point plugins, then `plugins`.

    `blocked` names plugins never to register: "archify.defaults" to replace
    the built-in seed_admin, or an entry point's name to keep it out.
    """
    from . import default_plugins

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in blocked:
        pm.set_blocked(name)
    try:
        pm.register(default_plugins, name=DEFAULTS)
        if load_entry_points:
            _load_entry_points(pm)
        for plugin in plugins:
            if not pm.is_registered(plugin):
                pm.register(plugin)
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise ConfigurationError(
            f"plugin {plugin_label(exc.plugin)} is not a valid Archify plugin: {exc}"
        ) from None
    for name in hookspecs_names():
        for impl in getattr(pm.hook, name).get_hookimpls():
            _refuse_wrapper(impl, name)
    return pm


def hookspecs_names() -> list[str]:
    """The name of every hook Archify calls."""
    return [name for name in dir(hookspecs) if name.startswith("archify_")]


def plugin_label(plugin: object, name: str | None = None) -> str:
    """A name a person recognises: the entry point's or the module's, else the class's
    (pluggy names an unnamed instance by its id)."""
    if name and not name.isdigit():
        return name
    if inspect.ismodule(plugin):
        return plugin.__name__
    return f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    try:
        for entry_point in entry_points(ENTRY_POINT_GROUP):
            if pm.get_plugin(entry_point.name) or pm.is_blocked(entry_point.name):
                continue
            pm.register(entry_point.load(), name=entry_point.name)
    except pluggy.PluginValidationError:
        raise
    except Exception as exc:  # a broken installed plugin: name it instead of a traceback
        raise ConfigurationError(
            f"cannot load a plugin of entry-point group {ENTRY_POINT_GROUP!r}: "
            f"{type(exc).__name__}: {exc}; uninstall it or block it with --block-plugin"
        ) from None


def entry_points(group: str) -> Iterator[EntryPoint]:
    """The installed entry points of `group`, as importlib.metadata finds them (the first
    distribution of a name on sys.path wins), but reading only the entry_points.txt
    files that mention the group: parsing every installed distribution's metadata
    costs each command ~50 ms with a few hundred packages (Airflow's) installed."""
    header = f"[{group}]"
    seen: set[str] = set()
    for folder in sys.path:
        try:
            names = sorted(os.listdir(folder or "."))
        except OSError:
            continue
        for name in names:
            if not name.endswith((".dist-info", ".egg-info")):
                continue
            project = name.split("-", 1)[0].lower().replace(".", "_")
            if project in seen:
                continue
            seen.add(project)
            path = os.path.join(folder or ".", name)
            try:
                with open(os.path.join(path, "entry_points.txt"), encoding="utf-8") as file:
                    if header not in file.read():
                        continue
            except OSError:
                continue
            from importlib.metadata import Distribution  # ~25 ms: only when a plugin is there

            yield from Distribution.at(path).entry_points.select(group=group)


def load_plugin_reference(reference: str) -> object:
    """Import 'package.module:object' (or just 'package.module') for --plugin."""
    module_name, _, attribute = reference.partition(":")
    if not module_name:
        raise ConfigurationError(
            f"cannot load plugin {reference!r}: expected 'package.module' or "
            "'package.module:object'")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except Exception as exc:  # ImportError, AttributeError, or the module itself raising
        raise ConfigurationError(
            f"cannot load plugin {reference!r}: {type(exc).__name__}: {exc}") from None


async def await_me_maybe(value: Any) -> Any:
    """An implementation's result, awaited if it is awaitable (an `async def` hook)."""
    if inspect.isawaitable(value):
        return await value
    return value


async def call_hook(pm: pluggy.PluginManager, name: str, /, **kwargs: Any) -> list[Any]:
    """Call every implementation of hook `name` by keyword, one after the other, awaiting
    each; the first exception propagates (with a note naming the plugin) and the
    implementations after it are not called."""
    return [await _call_one(impl, name, kwargs) for impl in _implementations(pm, name, kwargs)]


async def call_hook_quietly(pm: pluggy.PluginManager, name: str, /, **kwargs: Any) -> None:
    """Like call_hook, for notification hooks whose errors must not hide another error
    or change an outcome: each implementation's exception is logged, and the next
    implementation is still called."""
    for impl in _implementations(pm, name, kwargs):
        try:
            await _call_one(impl, name, kwargs)
        except Exception:
            log.exception("plugin %s raised in %s; ignored so the outcome stands",
                          plugin_label(impl.plugin, impl.plugin_name), name)


def _implementations(
    pm: pluggy.PluginManager, name: str, kwargs: dict[str, Any]
) -> list[pluggy.HookImpl]:
    """The implementations in the order pluggy itself would call them."""
    caller = getattr(pm.hook, name)
    assert caller.spec is not None, f"{name} is not an Archify hook"
    implementations = caller.get_hookimpls()
    if not implementations:  # the usual case, several times per schema: nothing to check
        return []
    missing = set(caller.spec.argnames) - set(kwargs)
    assert not missing, f"{name} called without {sorted(missing)}"
    return list(reversed(implementations))


async def _call_one(impl: pluggy.HookImpl, name: str, kwargs: dict[str, Any]) -> Any:
    _refuse_wrapper(impl, name)
    try:
        return await await_me_maybe(impl.function(*(kwargs[arg] for arg in impl.argnames)))
    except Exception as exc:
        exc.add_note(f"raised by plugin {plugin_label(impl.plugin, impl.plugin_name)} in {name}")
        raise


def _refuse_wrapper(impl: pluggy.HookImpl, name: str) -> None:
    if impl.hookwrapper or impl.wrapper:
        plugin = plugin_label(impl.plugin, impl.plugin_name)
        raise ConfigurationError(
            f"plugin {plugin}: {name} is a hook wrapper; Archify hooks may be plain or async "
            "functions, not wrappers"
        )
