"""The plugin registry: entry-point discovery, enable/disable, per-plugin state.

Built-in plugins are found through the same ``hostcore.plugins`` entry-point
group as third-party ones. Each plugin is registered with pluggy under its
entry-point name, and hooks are called one plugin at a time so every result,
failure and conflict can be attributed to a plugin by name.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pluggy
from pydantic import BaseModel

from hostcore import __version__, hookspecs
from hostcore.config import Settings, validate_plugin_settings
from hostcore.errors import ConfigError, PluginError, PluginUnavailable

ENTRY_POINT_GROUP = "hostcore.plugins"
API_PREFIX = "/api/v1"
# Names become URL segments, TOML keys and HOSTCORE_PLUGINS__<NAME>__ variables.
PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
SCOPE_NAME = re.compile(r"^[a-z][a-z0-9_-]*:[a-z][a-z0-9_-]*$")
# Names that would shadow hostcore's own routes under /api/v1.
RESERVED_NAMES = frozenset({"health", "plugins", "openapi.json", "docs", "static"})

log = logging.getLogger(__name__)


class PluginState(StrEnum):
    OK = "ok"
    FAILED = "failed"
    DISABLED = "disabled"


@dataclass
class Plugin:
    """One discovered plugin and what hostcore knows of it."""

    name: str
    version: str
    distribution: str
    builtin: bool
    state: PluginState
    reason: str | None = None
    module: object | None = None
    config: BaseModel | None = None
    scopes: dict[str, str] = field(default_factory=dict)
    # URL prefixes this plugin serves (its API prefix and static mounts).
    prefixes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state is PluginState.OK


@dataclass(frozen=True)
class PluginSource:
    """Where a plugin comes from, before it is imported."""

    name: str
    distribution: str
    version: str
    origin: str  # shown in conflict messages: "package (module)"
    load: Callable[[], object]
    builtin: bool = False


def installed_sources() -> list[PluginSource]:
    """Every plugin advertised through the entry-point group."""
    sources = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist
        distribution = dist.name if dist else "unknown"
        sources.append(
            PluginSource(
                name=ep.name,
                distribution=distribution,
                version=dist.version if dist else "0",
                origin=f"{distribution} ({ep.value})",
                load=ep.load,
                builtin=distribution == "hostcore" and ep.value.startswith("hostcore.builtin."),
            )
        )
    return sources


def object_source(name: str, obj: object, *, distribution: str = "local") -> PluginSource:
    """A plugin given as an object (a module or instance), e.g. by tests or embedding code."""
    version = str(getattr(obj, "__version__", __version__))
    return PluginSource(name, distribution, version, f"{distribution} (object)", lambda: obj)


def api_prefix(name: str) -> str:
    """Where a plugin's routes live."""
    return f"{API_PREFIX}/{name}"


class PluginRegistry:
    """The plugins of one app (or CLI run) and the pluggy manager that holds them."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("hostcore")
        self.pm.add_hookspecs(hookspecs)
        self._plugins: dict[str, Plugin] = {}
        self._failed_prefixes: list[tuple[str, Plugin]] = []
        # Told when a plugin's state changes (the ``plugins`` event topic).
        self.observers: list[Callable[[], None]] = []

    @classmethod
    def load(
        cls,
        settings: Settings,
        *,
        sources: list[PluginSource] | None = None,
        extra: list[PluginSource] | None = None,
    ) -> PluginRegistry:
        """Discover, import and configure plugins. Config errors raise ``ConfigError``."""
        registry = cls()
        found = installed_sources() if sources is None else list(sources)
        seen: dict[str, PluginSource] = {}
        for source in [*found, *(extra or [])]:
            if source.name in seen:
                raise PluginError(
                    f"plugin name {source.name!r} is claimed by two plugins: "
                    f"{seen[source.name].origin} and {source.origin}"
                )
            seen[source.name] = source
        for source in sorted(seen.values(), key=lambda s: (not s.builtin, s.name)):
            registry._add(source, settings)
        registry._warn_about_unknown_names(settings)
        return registry

    def _add(self, source: PluginSource, settings: Settings) -> None:
        plugin = Plugin(
            name=source.name,
            version=source.version,
            distribution=source.distribution,
            builtin=source.builtin,
            state=PluginState.OK,
        )
        self._plugins[source.name] = plugin
        if not PLUGIN_NAME.fullmatch(source.name) or source.name in RESERVED_NAMES:
            raise PluginError(
                f"plugin name {source.name!r} from {source.distribution} is not allowed: "
                "use lower-case letters, digits and '_', and not one of "
                f"{sorted(RESERVED_NAMES)} (hostcore core routes)"
            )
        if not settings.plugins.is_enabled(source.name):
            plugin.state = PluginState.DISABLED
            plugin.reason = "disabled by configuration"
            return
        plugin.prefixes.append(api_prefix(source.name))
        try:
            plugin.module = source.load()
            self.pm.register(plugin.module, name=source.name)
            # A misspelled hook name would otherwise be ignored without a word.
            self.pm.check_pending()
        except Exception as exc:  # a broken plugin must not take the server down
            log.exception("plugin %s failed to load", source.name)
            if plugin.module is not None and self.pm.is_registered(plugin.module):
                self.pm.unregister(plugin.module)
            self.fail(source.name, f"failed to load: {type(exc).__name__}: {exc}")
            return
        try:
            self._configure(plugin, settings)
        except (ConfigError, PluginError):
            raise  # the operator's config or a conflict: stop, with the message
        except Exception as exc:
            log.exception("plugin %s failed to configure", source.name)
            self.fail(source.name, f"failed to configure: {type(exc).__name__}: {exc}")

    def _configure(self, plugin: Plugin, settings: Settings) -> None:
        model = self.call(plugin.name, "hostcore_settings_model")
        if model is not None:
            plugin.config = validate_plugin_settings(settings, plugin.name, model)
        elif settings.plugins.section(plugin.name):
            keys = ", ".join(sorted(settings.plugins.section(plugin.name)))
            origin = settings.source_of(f"plugins.{plugin.name}")
            raise PluginError(
                f"plugin {plugin.name} takes no settings, but [plugins.{plugin.name}] "
                f"sets {keys} (from {origin})"
            )
        plugin.scopes = self._scopes_of(plugin.name)

    def _scopes_of(self, name: str) -> dict[str, str]:
        scopes = dict(self.call(name, "hostcore_scopes") or {})
        for scope in scopes:
            if not SCOPE_NAME.fullmatch(scope):
                raise PluginError(f"plugin {name} declares a malformed scope {scope!r}")
            if scope.split(":", 1)[0] != name:
                raise PluginError(
                    f"plugin {name} declares scope {scope!r}: its scopes must start with '{name}:'"
                )
        return scopes

    def _warn_about_unknown_names(self, settings: Settings) -> None:
        for name in settings.plugins.section_names():
            if name not in self._plugins:
                log.warning(
                    "[plugins.%s] (from %s) configures a plugin that is not installed",
                    name,
                    settings.source_of(f"plugins.{name}"),
                )
        for name in settings.plugins.enabled or []:
            if name not in self._plugins:
                log.warning("plugins.enabled names %r, which is not installed", name)

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._plugins.values())

    def __getitem__(self, name: str) -> Plugin:
        return self._plugins[name]

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def active(self) -> list[Plugin]:
        return [plugin for plugin in self._plugins.values() if plugin.ok]

    def fail(self, name: str, reason: str) -> None:
        plugin = self._plugins[name]
        plugin.state = PluginState.FAILED
        plugin.reason = reason
        self._failed_prefixes.extend((prefix, plugin) for prefix in plugin.prefixes)
        for observer in self.observers:
            observer()

    def unavailable_for(self, path: str) -> PluginUnavailable | None:
        """The 503 for a path served by a failed plugin; checked on every request. Why the
        plugin failed may quote an exception: it is in the plugin list, for auth:admin."""
        if not self._failed_prefixes:
            return None
        for prefix, plugin in self._failed_prefixes:
            if path == prefix or path.startswith(f"{prefix}/"):
                return PluginUnavailable(f"plugin {plugin.name} is unavailable")
        return None

    def implements(self, name: str, hook_name: str) -> bool:
        return self._hookimpl(name, hook_name) is not None

    def _hookimpl(self, name: str, hook_name: str) -> pluggy.HookImpl | None:
        caller: pluggy.HookCaller = getattr(self.pm.hook, hook_name)
        for impl in caller.get_hookimpls():
            if impl.plugin_name == name:
                return impl
        return None

    def call(self, name: str, hook_name: str, **kwargs: Any) -> Any:
        """Call one plugin's implementation of a hook with the arguments it asks for."""
        impl = self._hookimpl(name, hook_name)
        if impl is None:
            return None
        wanted = {arg: kwargs[arg] for arg in impl.argnames if arg in kwargs}
        return impl.function(**wanted)

    async def acall(self, name: str, hook_name: str, **kwargs: Any) -> Any:
        """Like ``call``, awaiting the result when the implementation is async."""
        result = self.call(name, hook_name, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result

    def migration_directories(self) -> dict[str, Path]:
        """Each active plugin's migration scripts; a plugin whose hook raises or names a
        missing directory is marked failed."""
        found: dict[str, Path] = {}
        for plugin in self.active():
            try:
                directory = self.call(plugin.name, "hostcore_migrations")
                if directory is not None and not Path(directory).is_dir():
                    raise PluginError(f"migrations directory {directory} is missing")
            except Exception as exc:
                log.exception("plugin %s: cannot use its migrations", plugin.name)
                self.fail(plugin.name, f"migrations unusable: {exc}")
                continue
            if directory is not None:
                found[plugin.name] = Path(directory)
        return found

    def all_scopes(self) -> dict[str, str]:
        scopes: dict[str, str] = {}
        for plugin in self.active():
            scopes.update(plugin.scopes)
        return scopes

    def configs(self) -> Mapping[str, BaseModel]:
        return {p.name: p.config for p in self._plugins.values() if p.config is not None}
