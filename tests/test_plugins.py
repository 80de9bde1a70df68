from __future__ import annotations

from collections.abc import Callable

import pytest

from hostcore.config import Settings
from hostcore.errors import PluginError
from hostcore.hookspecs import hookimpl
from hostcore.plugins import PluginRegistry, PluginSource, PluginState, object_source
from tests.plugin_fakes import Echo


def exploding_source(name: str) -> PluginSource:
    def load() -> object:
        raise ImportError("No module named 'widgetlib'")

    return PluginSource(name, "widget-plugin", "1.0", "widget-plugin (widget)", load)


def test_disabled_plugins_are_not_loaded(settings_factory: Callable[..., Settings]) -> None:
    loaded: list[str] = []

    def load() -> object:
        loaded.append("x")
        return Echo()

    source = PluginSource("echo", "echo-dist", "1.0", "echo-dist (echo)", load)
    registry = PluginRegistry.load(settings_factory("plugins.disabled=echo"), sources=[source])
    assert registry["echo"].state is PluginState.DISABLED
    assert loaded == []


def test_enabled_list_loads_only_those(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory("plugins.enabled=one")
    registry = PluginRegistry.load(
        settings, sources=[object_source("one", Echo()), object_source("two", Echo())]
    )
    assert [(p.name, p.state) for p in registry] == [
        ("one", PluginState.OK),
        ("two", PluginState.DISABLED),
    ]


def test_a_plugin_that_fails_to_import_is_marked_failed(settings: Settings) -> None:
    registry = PluginRegistry.load(
        settings, sources=[exploding_source("widget"), object_source("echo", Echo())]
    )
    assert registry["widget"].state is PluginState.FAILED
    assert "No module named 'widgetlib'" in (registry["widget"].reason or "")
    assert registry["echo"].ok
    refusal = registry.unavailable_for("/api/v1/widget/anything")
    assert refusal is not None and "widgetlib" in refusal.detail
    assert registry.unavailable_for("/api/v1/widgets") is None


def test_two_plugins_with_one_name_fail_naming_both(settings: Settings) -> None:
    first = PluginSource("echo", "echo-a", "1", "echo-a (echo_a)", Echo)
    second = PluginSource("echo", "echo-b", "1", "echo-b (echo_b)", Echo)
    with pytest.raises(PluginError, match=r"echo-a \(echo_a\) and echo-b \(echo_b\)"):
        PluginRegistry.load(settings, sources=[first, second])


@pytest.mark.parametrize("name", ["plugins", "health", "Bad", "a/b", "../x", ""])
def test_reserved_or_malformed_names_are_refused(settings: Settings, name: str) -> None:
    with pytest.raises(PluginError, match="is not allowed"):
        PluginRegistry.load(settings, sources=[object_source(name, Echo())])


def test_malformed_scopes_are_refused(settings: Settings) -> None:
    class BadScopes:
        @hookimpl
        def hostcore_scopes(self) -> dict[str, str]:
            return {"Read Everything": "?"}

    with pytest.raises(PluginError, match="malformed scope"):
        PluginRegistry.load(settings, sources=[object_source("bad", BadScopes())])


def test_settings_for_a_plugin_without_a_model_are_refused(
    settings_factory: Callable[..., Settings],
) -> None:
    class Plain:
        pass

    with pytest.raises(PluginError, match=r"takes no settings.*sets colour \(from --set"):
        PluginRegistry.load(
            settings_factory("plugins.plain.colour=red"),
            sources=[object_source("plain", Plain())],
        )


def test_settings_for_an_uninstalled_plugin_only_warn(
    settings_factory: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    PluginRegistry.load(settings_factory("plugins.ghost.x=1"), sources=[])
    assert "[plugins.ghost] (from --set plugins.ghost.x) configures a plugin" in caplog.text


def test_builtins_are_listed_first(settings: Settings) -> None:
    builtin = PluginSource("zeta", "hostcore", "1", "hostcore (hostcore.builtin.zeta)", Echo, True)
    registry = PluginRegistry.load(settings, sources=[object_source("alpha", Echo()), builtin])
    assert [p.name for p in registry] == ["zeta", "alpha"]
