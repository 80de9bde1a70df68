"""The app factory: ``create_app(settings)`` builds one FastAPI app from settings and plugins.

Nothing here runs at import time. Every worker process calls ``create_app``
once; plugin startup runs in the lifespan, where a failure marks just that
plugin failed (its routes answer 503) while the rest keep serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.telemetry import TelemetryConfig
from starlette.exceptions import HTTPException as StarletteHTTPException

from hostcore import __version__, compat
from hostcore.config import Settings
from hostcore.context import Principal, RequestContext
from hostcore.db.engine import Database
from hostcore.db.migrate import Lineage, core_lineage, migration_lock, upgrade
from hostcore.error_handling import handle_error
from hostcore.errors import HostcoreError, PluginError
from hostcore.events.hub import JOBS_PREFIX, PLUGINS_TOPIC, EventHub, Topic
from hostcore.events.router import events_router
from hostcore.jobs.kinds import JobKind
from hostcore.jobs.router import jobs_router
from hostcore.jobs.service import JobService, collect_kinds
from hostcore.meta import CORE_MOUNTS, CORE_PATHS, install_meta_routes
from hostcore.middleware import RequestContextMiddleware
from hostcore.plugins import Plugin, PluginRegistry, api_prefix
from hostcore.route_index import RouteIndex
from hostcore.routing import add_routes_flat, allow_all_methods_of_each_path, flat_routes, route_of
from hostcore.runner import Runner
from hostcore.security.admission import CountedByAddress, counting_unmatched
from hostcore.security.deps import AUTHENTICATED, PUBLIC, declared_permissions
from hostcore.security.runtime import SecurityRuntime

CORE = "hostcore core"
REFUSED = "<refused>"  # the rate-limit key of requests the middleware answers itself
STARTUP_TIMEOUT_S = 30.0
EVENTS_DIRECTORY = "events"  # in the run directory: the workers' datagram sockets
TOPIC_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}\.([a-z][a-z0-9_.-]{0,40}|\*)$")
SHUTDOWN_TIMEOUT_S = 10.0
# FastAPI's OpenTelemetry bridge asks on every request whether a tracer, meter or logger
# provider has been configured (reading the environment each time). hostcore records
# its own activity and configures none: off, so no request pays for the question.
TELEMETRY_OFF: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
CORE_EXCEPTIONS: tuple[type[Exception], ...] = (
    HostcoreError,
    StarletteHTTPException,
    RequestValidationError,
)

log = logging.getLogger(__name__)


class HostcoreApp(FastAPI):
    """FastAPI with the error bodies' schemas in its OpenAPI document (see
    :mod:`hostcore.error_models`: routes reference them instead of naming models)."""

    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            from hostcore.error_models import add_error_schemas

            add_error_schemas(super().openapi())
        return super().openapi()


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


class PathClaims:
    """Who serves which path; a second claimant fails startup, naming both."""

    def __init__(self) -> None:
        self.routes: dict[str, str] = {}
        self.mounts: dict[str, str] = {}

    def claim_route(self, path: str, owner: str) -> None:
        current = self.routes.get(path)
        if current is not None and current != owner:
            raise PluginError(f"route {path} is claimed by both {current} and {owner}")
        for mount, mount_owner in self.mounts.items():
            if mount_owner != owner and _under(path, mount):
                raise PluginError(
                    f"route {path} of {owner} lies under mount {mount} of {mount_owner}"
                )
        self.routes[path] = owner

    def claim_mount(self, path: str, owner: str) -> None:
        if not path.startswith("/") or path.rstrip("/") == "":
            raise PluginError(f"{owner} asks for mount {path!r}: it must be a path below /")
        for mount, mount_owner in self.mounts.items():
            if _under(path, mount) or _under(mount, path):
                raise PluginError(
                    f"mount {path} of {owner} overlaps mount {mount} of {mount_owner}"
                )
        for route, route_owner in self.routes.items():
            if route_owner != owner and _under(route, path):
                raise PluginError(f"mount {path} of {owner} covers route {route} of {route_owner}")
        self.mounts[path] = owner


def _plugin_routes(
    registry: PluginRegistry, plugin: Plugin, settings: Settings
) -> tuple[APIRouter | None, dict[str, Path]]:
    """What the plugin asks to serve, checked; PluginError names what is wrong."""
    options = {"settings": settings, "config": plugin.config}
    router = registry.call(plugin.name, "hostcore_routes", **options)
    mounts = dict(registry.call(plugin.name, "hostcore_static_mounts", **options) or {})
    if router is not None and not isinstance(router, APIRouter):
        raise PluginError("hostcore_routes must return an APIRouter")
    for url_path, directory in mounts.items():
        if not Path(directory).is_dir():
            raise PluginError(f"static directory {directory} for {url_path} is missing")
    if router is not None:
        _check_declared_scopes(router, plugin, registry)
    return router, {url_path: Path(directory) for url_path, directory in mounts.items()}


def _mount_plugin(
    app: FastAPI,
    registry: PluginRegistry,
    plugin: Plugin,
    settings: Settings,
    claims: PathClaims,
) -> None:
    """Mount one plugin's routes and static files.

    A plugin whose hooks raise, whose routes declare no or unknown scopes, or whose
    router has a shape hostcore cannot serve is marked failed (its paths answer 503);
    two plugins claiming one path stop the start, naming both.
    """
    owner = f"plugin {plugin.name} ({plugin.distribution})"
    prefix = api_prefix(plugin.name)
    try:
        router, mounts = _plugin_routes(registry, plugin, settings)
        paths = [str(route.path) for route in flat_routes(router)] if router is not None else []
    except Exception as exc:
        log.exception("plugin %s cannot serve its routes", plugin.name)
        detail = str(exc) if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
        registry.fail(plugin.name, f"failed to build routes: {detail}")
        return
    for path in paths:
        claims.claim_route(prefix + path, owner)
    for url_path in mounts:
        claims.claim_mount(url_path, owner)
        plugin.prefixes.append(url_path)
    if router is not None:
        add_routes_flat(app, router, prefix=prefix, tag=plugin.name)
    for url_path, directory in mounts.items():
        files = StaticFiles(directory=directory, html=True)
        app.mount(url_path, CountedByAddress(files, url_path), name=f"{plugin.name}:{url_path}")


def _declared(
    registry: PluginRegistry,
    settings: Settings,
    hook: str,
    what: str,
    check: Callable[[str, list[Any]], None],
) -> dict[str, list[Any]]:
    """Each active plugin's answer to ``hook`` (a list), checked by ``check(plugin,
    items)``; a plugin whose hook raises or whose answer fails the check is failed."""
    found: dict[str, list[Any]] = {}
    for plugin in registry.active():
        if not registry.implements(plugin.name, hook):
            continue
        try:
            items = list(
                registry.call(plugin.name, hook, settings=settings, config=plugin.config) or ()
            )
            check(plugin.name, items)
        except Exception as exc:
            log.exception("plugin %s: its %s cannot be used", plugin.name, what)
            registry.fail(plugin.name, f"{what}: {type(exc).__name__}: {exc}")
            continue
        found[plugin.name] = items
    return found


def _job_kinds(registry: PluginRegistry, settings: Settings) -> dict[str, JobKind]:
    """Every active plugin's job kinds (each carries its plugin's name: none clash)."""

    def check(plugin: str, kinds: list[Any]) -> None:
        collect_kinds({plugin: kinds})

    return collect_kinds(_declared(registry, settings, "hostcore_job_kinds", "job kinds", check))


def _check_topics(plugin: str, topics: list[Any]) -> None:
    for topic in topics:
        if not isinstance(topic, Topic) or not TOPIC_NAME.match(topic.name):
            raise PluginError("hostcore_event_topics must return Topic objects")
        if topic.name.split(".", 1)[0] != plugin:
            raise PluginError(f"topic {topic.name!r} must begin {plugin}.")
        if (topic.family is None) != (topic.member is None):
            raise PluginError(f"topic {topic.name!r}: a family (<name>.*) needs member, "
                              "and only a family has one")  # fmt: skip


def _event_hub(
    app: FastAPI,
    registry: PluginRegistry,
    settings: Settings,
    jobs: JobService,
) -> EventHub:
    """The worker's events: every active plugin's topics, jobs' and the plugin list."""
    declared = _declared(registry, settings, "hostcore_event_topics", "event topics", _check_topics)
    topics = [topic for each in declared.values() for topic in each]
    hub = EventHub(app, topics)

    async def job_snapshot(topic: str, principal: Principal) -> Any:
        return await jobs.get(topic.removeprefix(JOBS_PREFIX), principal)

    def plugin_states() -> list[dict[str, str]]:
        return [{"name": p.name, "version": p.version, "state": p.state.value} for p in registry]

    async def plugins_snapshot(_topic: str, _principal: Principal) -> Any:
        return plugin_states()

    hub.snapshots[JOBS_PREFIX] = job_snapshot
    hub.snapshots[PLUGINS_TOPIC] = plugins_snapshot
    # Attached to the registry while serving (see the lifespan): hub -> registry only.
    hub.announce_plugins = lambda: hub.publish(PLUGINS_TOPIC, plugin_states())
    jobs.publish = lambda job: hub.publish(f"{JOBS_PREFIX}{job.id}", job, forward=True)
    return hub


def _check_declared_scopes(router: APIRouter, plugin: Plugin, registry: PluginRegistry) -> None:
    """Every plugin route says who may call it, and names a scope some plugin defines."""
    known = registry.all_scopes()
    for context in flat_routes(router):
        where = f"route {context.path} of plugin {plugin.name}"
        dependant = getattr(context, "dependant", None) or route_of(context).dependant
        permissions = declared_permissions(dependant)
        if not permissions:
            raise PluginError(
                f"{where} declares no scope: add dependencies=[RequireScope('{plugin.name}:read')]"
                " (or Public) from hostcore.security.deps"
            )
        for permission in permissions:
            if permission not in known and permission not in (PUBLIC, AUTHENTICATED):
                raise PluginError(f"{where} requires scope {permission!r}, which no plugin defines")


def _is_shared_exception(exc_class: type[Exception]) -> bool:
    """Exceptions every plugin raises: a plugin handling them would answer for all plugins."""
    return exc_class.__module__ == "builtins" or issubclass(exc_class, CORE_EXCEPTIONS)


def _install_exception_handlers(app: FastAPI, registry: PluginRegistry) -> None:
    # One handler for requests and websockets; Starlette types those as two signatures.
    handler: Any = handle_error
    for exc_class in (HostcoreError, StarletteHTTPException, RequestValidationError):
        app.add_exception_handler(exc_class, handler)
    owners: dict[type[Exception], str] = {}
    for plugin in registry.active():
        try:
            handlers = dict(registry.call(plugin.name, "hostcore_exception_handlers") or {})
        except Exception as exc:
            log.exception("plugin %s failed to list its exception handlers", plugin.name)
            registry.fail(plugin.name, f"failed to build handlers: {type(exc).__name__}: {exc}")
            continue
        shared = [exc_class for exc_class in handlers if _is_shared_exception(exc_class)]
        if shared:
            registry.fail(
                plugin.name,
                f"may not handle {shared[0].__name__}: hostcore's own handler answers for it "
                "(raise a HostcoreError subclass instead)",
            )
            continue
        for exc_class, handler in handlers.items():
            if exc_class in owners:
                raise PluginError(
                    f"{exc_class.__name__} is handled by both plugin {owners[exc_class]} "
                    f"and plugin {plugin.name}"
                )
            owners[exc_class] = plugin.name
            app.add_exception_handler(exc_class, handler)


async def _migrate(db: Database, registry: PluginRegistry) -> None:
    """hostcore's lineage, then each plugin's; a plugin whose migrations fail is marked
    failed (its routes answer 503), hostcore's own failing stops the start."""
    await upgrade(db, [core_lineage()])
    for name, directory in registry.migration_directories().items():
        try:
            await upgrade(db, [Lineage(name, directory)])
        except Exception as exc:
            log.exception("plugin %s: migrations failed", name)
            registry.fail(name, f"migrations failed: {type(exc).__name__}: {exc}")


async def _start_plugins(app: FastAPI, registry: PluginRegistry, settings: Settings) -> list[str]:
    started = []
    for plugin in registry.active():
        if not registry.implements(plugin.name, "hostcore_startup"):
            started.append(plugin.name)
            continue
        try:
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await registry.acall(
                    plugin.name,
                    "hostcore_startup",
                    app=app,
                    settings=settings,
                    config=plugin.config,
                )
        except Exception as exc:  # isolation: one plugin's failure must not stop the server
            log.exception("plugin %s failed to start", plugin.name)
            reason = "startup timed out" if isinstance(exc, TimeoutError) else f"{exc}"
            registry.fail(plugin.name, f"startup failed: {type(exc).__name__}: {reason}")
        else:
            started.append(plugin.name)
    return started


async def _stop_plugins(app: FastAPI, registry: PluginRegistry, names: list[str]) -> None:
    for name in reversed(names):
        try:
            async with asyncio.timeout(SHUTDOWN_TIMEOUT_S):
                await registry.acall(name, "hostcore_shutdown", app=app)
        except Exception:
            log.exception("plugin %s failed to shut down cleanly", name)


def create_app(
    settings: Settings, *, registry: PluginRegistry | None = None, single_process: bool = False
) -> FastAPI:
    """Build the app. ``registry`` defaults to the plugins installed through entry points.

    ``single_process``: the caller serves the app in this one process and no other
    (``hostcore serve`` without workers), so state that workers share (rate-limit
    counters) can stay in this process's memory. Left False, nothing is assumed.
    """
    compat.install()
    registry = PluginRegistry.load(settings) if registry is None else registry
    db = Database.from_settings(settings)
    security = SecurityRuntime(settings, db, single_process=single_process)
    runner = Runner(settings.runner)
    jobs = JobService(db, runner, _job_kinds(registry, settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        # One process migrates and creates the first signing key; the others wait.
        async with migration_lock(db):
            await _migrate(db, registry)
            await security.start()
        log.info("store: %s", db.describe())
        started = await _start_plugins(app, registry, settings)
        await jobs.start()
        if settings.server.workers > 1:  # events of one worker's jobs reach the others
            hub.open_peers(settings.run_dir / EVENTS_DIRECTORY)
        # Registered while serving only: FastAPI's caches keep endpoint functions, and
        # through them this runtime, for good; it must not keep a replaced app too.
        security.verifier.revocation_listeners.append(hub.revoked)
        registry.observers.append(hub.announce_plugins)
        # What startup built lives as long as the worker: keep the collector off it.
        # Collected first: what a replaced app left in reference cycles (a reload in this
        # process) must not be frozen with it.
        gc.collect()
        gc.freeze()
        log.info(
            "hostcore %s ready: %s",
            __version__,
            ", ".join(f"{p.name}={p.state.value}" for p in registry) or "no plugins",
        )
        try:
            yield {}
        finally:
            # A reload builds a new app in this process: let the old one be collected
            # (now, before the new app's startup freezes what is left).
            gc.unfreeze()
            security.verifier.revocation_listeners.remove(hub.revoked)
            registry.observers.remove(hub.announce_plugins)
            await hub.close()
            await jobs.stop()  # before the plugins whose resources the jobs use
            await _stop_plugins(app, registry, started)
            await security.stop()
            await db.dispose()

    docs = settings.server.docs
    app = HostcoreApp(
        title="hostcore",
        version=__version__,
        description="One API to read and control this device.",
        # hostcore serves the document and the docs pages as admitted routes (meta.py).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # A path that is not a route is a 404 (counted against the caller), not a redirect.
        redirect_slashes=False,
        lifespan=lifespan,
        telemetry=TELEMETRY_OFF,
    )
    app.router.default = counting_unmatched(app.router.default)
    hub = _event_hub(app, registry, settings, jobs)
    app.state.settings = settings
    app.state.registry = registry
    app.state.runner = runner
    app.state.db = db
    app.state.security = security
    app.state.jobs = jobs
    app.state.events = hub

    claims = PathClaims()
    for path in CORE_PATHS:
        claims.claim_route(path, CORE)
    for path in CORE_MOUNTS if docs else ():
        claims.claim_mount(path, CORE)
    for plugin in registry.active():
        _mount_plugin(app, registry, plugin, settings, claims)
    # After the plugins' routes: no path is claimed twice, so the order changes no answer,
    # and the routes consumers poll are matched first.
    install_meta_routes(app, registry, security, docs=docs)
    add_routes_flat(app, jobs_router())
    add_routes_flat(app, events_router())
    allow_all_methods_of_each_path(app)
    # Each request tries only the routes its path can match (hostcore.route_index).
    app.router.middleware_stack = RouteIndex(app.router)
    _install_exception_handlers(app, registry)

    def count_refused(context: RequestContext) -> None:
        security.count_address(f"ANY {REFUSED}", context)

    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.server.max_body_bytes,
        access_log_enabled=settings.logging.access_log,
        unavailable=registry.unavailable_for,
        caller=security.proxies.caller,
        observe=security.observe,
        count_refused=count_refused,
    )
    log.info("app built: %d routes", len(app.routes))
    return app
