from __future__ import annotations

from collections.abc import Callable

import pytest

from hostcore.config import Settings
from hostcore.errors import ConfigError, PluginError
from hostcore.hookspecs import hookimpl
from hostcore.plugins import PluginRegistry, PluginSource, PluginState, object_source
from tests.helpers import Echo, Plain


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
        settings, sources=[object_source("one", Plain()), object_source("two", Plain())]
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
    assert refusal is not None and refusal.detail == "plugin widget is unavailable"
    assert registry.unavailable_for("/api/v1/widgets") is None


def test_two_plugins_with_one_name_fail_naming_both(settings: Settings) -> None:
    first = PluginSource("echo", "echo-a", "1", "echo-a (echo_a)", Echo)
    second = PluginSource("echo", "echo-b", "1", "echo-b (echo_b)", Echo)
    with pytest.raises(PluginError, match=r"echo-a \(echo_a\) and echo-b \(echo_b\)"):
        PluginRegistry.load(settings, sources=[first, second])


@pytest.mark.parametrize("name", ["plugins", "health", "Bad", "a/b", "../x", "", "echo\n"])
def test_reserved_or_malformed_names_are_refused(settings: Settings, name: str) -> None:
    with pytest.raises(PluginError, match="is not allowed"):
        PluginRegistry.load(settings, sources=[object_source(name, Echo())])


@pytest.mark.parametrize("scope", ["Read Everything", "bad:read\n", "bad"])
def test_malformed_scopes_are_refused(settings: Settings, scope: str) -> None:
    class BadScopes:
        @hookimpl
        def hostcore_scopes(self) -> dict[str, str]:
            return {scope: "?"}

    with pytest.raises(PluginError, match="malformed scope"):
        PluginRegistry.load(settings, sources=[object_source("bad", BadScopes())])


def test_settings_for_a_plugin_without_a_model_are_refused(
    settings_factory: Callable[..., Settings],
) -> None:
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
    builtin = PluginSource("zeta", "hostcore", "1", "hostcore (hostcore.builtin.zeta)", Plain, True)
    registry = PluginRegistry.load(settings, sources=[object_source("alpha", Plain()), builtin])
    assert [p.name for p in registry] == ["zeta", "alpha"]


def test_scopes_must_carry_the_plugin_name(settings: Settings) -> None:
    with pytest.raises(PluginError, match="its scopes must start with 'other:'"):
        PluginRegistry.load(settings, sources=[object_source("other", Echo())])


def test_a_misspelled_hook_fails_the_plugin(settings: Settings) -> None:
    class Typo:
        @hookimpl
        def hostcore_route(self) -> None:
            """Meant to be hostcore_routes."""

    registry = PluginRegistry.load(settings, sources=[object_source("typo", Typo())])
    assert registry["typo"].state is PluginState.FAILED
    assert "hostcore_route" in (registry["typo"].reason or "")


def test_a_raising_settings_hook_fails_only_that_plugin(settings: Settings) -> None:
    class Faulty:
        @hookimpl
        def hostcore_settings_model(self) -> None:
            raise RuntimeError("bad model")

    registry = PluginRegistry.load(
        settings, sources=[object_source("faulty", Faulty()), object_source("echo", Echo())]
    )
    assert registry["faulty"].state is PluginState.FAILED
    assert registry["faulty"].reason == "failed to configure: RuntimeError: bad model"
    assert registry["echo"].ok


def test_unknown_plugin_keys_are_refused_even_if_the_model_ignores_extras(
    settings_factory: Callable[..., Settings],
) -> None:
    from pydantic import BaseModel

    class Lenient(BaseModel):
        colour: str = "red"

    class Plugin:
        @hookimpl
        def hostcore_settings_model(self) -> type[BaseModel]:
            return Lenient

    with pytest.raises(ConfigError, match=r"unknown key plugins\.lenient\.color \(from --set"):
        PluginRegistry.load(
            settings_factory("plugins.lenient.color=blue"),
            sources=[object_source("lenient", Plugin())],
        )


def test_entry_points_outside_hostcore_are_never_builtin() -> None:
    from hostcore.plugins import installed_sources

    assert all(not s.builtin or s.distribution == "hostcore" for s in installed_sources())
