"""Plugins the hook tests load by reference (`--plugin tests.plugin_fixtures.MODULE:OBJECT`)."""
