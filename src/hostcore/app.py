"""The app factory: ``create_app(settings)`` builds one FastAPI app from settings and plugins.

Nothing here runs at import time. Every worker process calls ``create_app``
once; plugin startup runs in the lifespan, where a failure marks just that
plugin failed (its routes answer 503) while the rest keep serving.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute, APIWebSocketRoute
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute

from hostcore import __version__
from hostcore.config import Settings
from hostcore.db.engine import Database
from hostcore.db.migrate import lineages, migration_lock, upgrade
from hostcore.errors import HostcoreError, PluginError, handle_error
from hostcore.meta import CORE_MOUNTS, CORE_PATHS, OPENAPI_URL, install_meta_routes
from hostcore.middleware import RequestContextMiddleware
from hostcore.plugins import Plugin, PluginRegistry, api_prefix
from hostcore.routing import add_routes_flat
from hostcore.runner import Runner
from hostcore.security.deps import AUTHENTICATED, PUBLIC, declared_scopes
from hostcore.security.gate import RouteTable, SecurityGate, gated_route
from hostcore.security.runtime import SecurityRuntime

CORE = "hostcore core"
STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
CORE_EXCEPTIONS: tuple[type[Exception], ...] = (
    HostcoreError,
    StarletteHTTPException,
    RequestValidationError,
)

log = logging.getLogger(__name__)


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


def _route_paths(routes: list[BaseRoute], prefix: str) -> list[tuple[str, bool]]:
    """(full path, is_mount) for every route a router holds."""
    paths = []
    for route in routes:
        if isinstance(route, Mount):
            paths.append((prefix + route.path, True))
        elif isinstance(route, Route | WebSocketRoute):
            paths.append((prefix + route.path, False))
    return paths


def _mount_plugin(
    app: FastAPI,
    registry: PluginRegistry,
    plugin: Plugin,
    settings: Settings,
    claims: PathClaims,
    table: RouteTable,
) -> None:
    """Mount one plugin's routes and static files; a hook that raises fails only this plugin."""
    owner = f"plugin {plugin.name} ({plugin.distribution})"
    prefix = api_prefix(plugin.name)
    try:
        router = registry.call(
            plugin.name, "hostcore_routes", settings=settings, config=plugin.config
        )
        mounts = dict(
            registry.call(
                plugin.name, "hostcore_static_mounts", settings=settings, config=plugin.config
            )
            or {}
        )
    except Exception as exc:
        log.exception("plugin %s failed to build its routes", plugin.name)
        registry.fail(plugin.name, f"failed to build routes: {type(exc).__name__}: {exc}")
        return
    if router is not None and not isinstance(router, APIRouter):
        raise PluginError(f"{owner}: hostcore_routes must return an APIRouter")
    for url_path, directory in mounts.items():
        if not Path(directory).is_dir():
            raise PluginError(f"{owner}: static directory {directory} for {url_path} is missing")

    if router is not None:
        _check_declared_scopes(router, plugin, registry)
        for path, is_mount in _route_paths(router.routes, prefix):
            (claims.claim_mount if is_mount else claims.claim_route)(path, owner)
    for url_path in mounts:
        claims.claim_mount(url_path, owner)
        plugin.prefixes.append(url_path)
    if router is not None:
        try:
            added = add_routes_flat(app, router, prefix=prefix, tag=plugin.name)
        except PluginError as exc:
            raise PluginError(f"{owner}: {exc}") from None
        for route in added:
            if isinstance(route, APIRoute) and (found := gated_route(route.path, route)):
                table.add(found)
    for url_path, directory in mounts.items():
        app.mount(
            url_path, StaticFiles(directory=directory, html=True), name=f"{plugin.name}:{url_path}"
        )


def _check_declared_scopes(router: APIRouter, plugin: Plugin, registry: PluginRegistry) -> None:
    """Every plugin route says who may call it, and names a scope some plugin defines."""
    known = registry.all_scopes()
    for route in router.routes:
        where = f"route {getattr(route, 'path', route)} of plugin {plugin.name}"
        if not isinstance(route, APIRoute | APIWebSocketRoute):
            # A plain Starlette route or mount would bypass the scope dependency.
            raise PluginError(
                f"{where} is not a FastAPI route: declare routes with the router's "
                "decorators (static files go through hostcore_static_mounts)"
            )
        scopes = declared_scopes(route.dependant)
        if not scopes:
            raise PluginError(
                f"{where} declares no scope: add dependencies=[RequireScope('{plugin.name}:read')]"
                " (or Public) from hostcore.security.deps"
            )
        for scope in scopes:
            if scope not in known and scope not in (PUBLIC, AUTHENTICATED):
                raise PluginError(f"{where} requires scope {scope!r}, which no plugin defines")


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
        for exc_class, handler in handlers.items():
            if _is_shared_exception(exc_class):
                raise PluginError(
                    f"plugin {plugin.name} may not handle {exc_class.__name__}: hostcore's own "
                    "handler answers for it (raise a HostcoreError subclass instead)"
                )
            if exc_class in owners:
                raise PluginError(
                    f"{exc_class.__name__} is handled by both plugin {owners[exc_class]} "
                    f"and plugin {plugin.name}"
                )
            owners[exc_class] = plugin.name
            app.add_exception_handler(exc_class, handler)


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


def create_app(settings: Settings, *, registry: PluginRegistry | None = None) -> FastAPI:
    """Build the app. ``registry`` defaults to the plugins installed through entry points."""
    registry = PluginRegistry.load(settings) if registry is None else registry
    db = Database.from_settings(settings)
    security = SecurityRuntime(settings, db)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[Mapping[str, Any]]:
        # One process migrates and creates the first signing key; the others wait.
        async with migration_lock(db):
            await upgrade(db, lineages(registry))
            await security.start()
        log.info("store: %s", db.describe())
        started = await _start_plugins(app, registry, settings)
        # What startup built lives as long as the worker: keep the collector off it.
        gc.freeze()
        log.info(
            "hostcore %s ready: %s",
            __version__,
            ", ".join(f"{p.name}={p.state.value}" for p in registry) or "no plugins",
        )
        try:
            yield {}
        finally:
            await _stop_plugins(app, registry, started)
            await security.stop()
            await db.dispose()

    docs = settings.server.docs
    app = FastAPI(
        title="hostcore",
        version=__version__,
        description="One API to read and control this device.",
        openapi_url=OPENAPI_URL if docs else None,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.runner = Runner(settings.runner)
    app.state.db = db
    app.state.security = security

    install_meta_routes(app, registry, security, docs=docs)
    claims = PathClaims()
    table = app.state.route_table = RouteTable()
    for path in CORE_PATHS:
        claims.claim_route(path, CORE)
    for path in CORE_MOUNTS if docs else ():
        claims.claim_mount(path, CORE)
    for plugin in registry.active():
        _mount_plugin(app, registry, plugin, settings, claims, table)
    _install_exception_handlers(app, registry)

    # The last one added is the outermost: request context, then the gate, then FastAPI.
    app.add_middleware(SecurityGate, table=table, runtime=security)
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.server.max_body_bytes,
        access_log_enabled=settings.logging.access_log,
        unavailable=registry.unavailable_for,
        resolve_client=security.proxies.resolve,
        observe=security.observe,
    )
    return app
