"""The plugin manager: built in one factory, nothing loaded at import time."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterable
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigurationError

log = logging.getLogger("archify")
ENTRY_POINT_GROUP = "archify"


def make_plugin_manager(
    plugins: Iterable[object] = (), *, load_entry_points: bool = True
) -> pluggy.PluginManager:
    """Hook specs, then the built-in defaults, then entry-point plugins, then `plugins`."""
    from . import default_plugins

    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(default_plugins, name="archify.defaults")
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in plugins:
        if not pm.is_registered(plugin):
            pm.register(plugin)
    return pm


def load_plugin_reference(reference: str) -> object:
    """Import 'package.module:object' (or just 'package.module') for --plugin."""
    import importlib

    module_name, _, attribute = reference.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"cannot load plugin {reference!r}: {exc}") from None


async def await_me_maybe(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


async def call_hook(pm: pluggy.PluginManager, name: str, /, **kwargs: Any) -> list[Any]:
    """Call hook `name` by keyword and await every implementation that returned an awaitable."""
    results = getattr(pm.hook, name)(**kwargs)
    return [await await_me_maybe(r) for r in results]


async def call_hook_quietly(pm: pluggy.PluginManager, name: str, /, **kwargs: Any) -> None:
    """Like call_hook, for notification hooks whose errors must not hide another error."""
    try:
        await call_hook(pm, name, **kwargs)
    except Exception:
        log.exception("hook %s raised; ignoring it so the original outcome stands", name)
