"""hostcore's own routes: liveness, the plugin list, the landing page, the JWKS and offline docs.

They are routes like any plugin's (``Public``, admitted and rate-limited by
address); only the liveness answer comes from the middleware.
"""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from hostcore import __version__
from hostcore.assets import CompressedAssets
from hostcore.middleware import LIVENESS_BODY
from hostcore.plugins import API_PREFIX, Plugin, PluginRegistry, PluginState
from hostcore.routing import add_routes_flat
from hostcore.security.acl import ADMIN_SCOPE, allows
from hostcore.security.admission import CountedByAddress
from hostcore.security.deps import OptionalPrincipal, Public
from hostcore.security.keys import jwks
from hostcore.security.runtime import SecurityRuntime

OPENAPI_URL = f"{API_PREFIX}/openapi.json"
DOCS_ASSETS_URL = "/static/docs"
JWKS_URL = "/.well-known/jwks.json"
HEALTH_TIMEOUT_S = 2.0
# However often the plugin list is asked for, each plugin's health hook runs at most
# this often.
HEALTH_MAX_AGE_S = 1.0
HEALTH_STATES = frozenset({"ok", "degraded", "down"})


class HealthRead(BaseModel):
    status: Literal["ok"]


class PluginRead(BaseModel):
    """One plugin. ``reason`` and the health report's details (which may hold exception
    texts) are shown to ``auth:admin`` callers only; others see the states."""

    name: str
    version: str
    distribution: str
    builtin: bool
    state: PluginState
    reason: str | None
    scopes: dict[str, str]
    health: dict[str, Any] | None


def docs_assets_dir() -> Path:
    """Swagger UI and ReDoc bundles shipped as package data, so docs work offline."""
    return Path(str(files("fastapi_offline") / "static"))


@cache
def asset_url(name: str) -> str:
    """A docs asset's URL, naming the bundles' version: clients keep it for a year
    (hostcore.assets), and an upgrade of the bundles changes it."""
    return f"{DOCS_ASSETS_URL}/{name}?v={metadata.version('fastapi-offline')}"


async def plugin_health(registry: PluginRegistry, plugin: Plugin, app: FastAPI) -> dict[str, Any]:
    if plugin.state is PluginState.DISABLED:
        return {"status": "disabled"}
    if plugin.state is PluginState.FAILED:
        return {"status": "down", "detail": plugin.reason}
    if not registry.implements(plugin.name, "hostcore_health"):
        return {"status": "ok"}
    try:
        async with asyncio.timeout(HEALTH_TIMEOUT_S):
            report = await registry.acall(plugin.name, "hostcore_health", app=app)
    except TimeoutError:
        return {"status": "down", "detail": f"health check took over {HEALTH_TIMEOUT_S}s"}
    except Exception as exc:  # a plugin's health check must not break the list
        return {"status": "down", "detail": f"health check raised {type(exc).__name__}: {exc}"}
    if report is None:
        return {"status": "ok"}
    if not isinstance(report, Mapping) or report.get("status") not in HEALTH_STATES:
        return {"status": "unknown", "detail": f"malformed health report: {report!r:.200}"}
    try:
        encoded: dict[str, Any] = jsonable_encoder(report)
    except Exception as exc:
        return {"status": "unknown", "detail": f"health report is not JSON: {exc}"}
    return encoded


@dataclass
class _Checked:
    at: float | None = None  # when the report was made; None: never
    report: dict[str, Any] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class HealthChecks:
    """Each plugin's newest health report, checked at most every ``HEALTH_MAX_AGE_S``;
    callers that ask while a check runs wait for that check instead of starting one."""

    def __init__(self, registry: PluginRegistry) -> None:
        self.registry = registry
        self._checked: dict[str, _Checked] = {}

    async def report(self, plugin: Plugin, app: FastAPI) -> dict[str, Any]:
        checked = self._checked.setdefault(plugin.name, _Checked())
        async with checked.lock:
            if checked.at is None or time.monotonic() - checked.at >= HEALTH_MAX_AGE_S:
                checked.report = await plugin_health(self.registry, plugin, app)
                checked.at = time.monotonic()
            return checked.report


def _plugin_read(plugin: Plugin, health: dict[str, Any], *, full: bool) -> PluginRead:
    return PluginRead(
        name=plugin.name,
        version=plugin.version,
        distribution=plugin.distribution,
        builtin=plugin.builtin,
        state=plugin.state,
        reason=plugin.reason if full or plugin.state is not PluginState.FAILED else None,
        scopes=plugin.scopes,
        health=health if full else {"status": health.get("status", "unknown")},
    )


def api_router(registry: PluginRegistry) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, tags=["hostcore"], dependencies=[Public])
    checks = HealthChecks(registry)

    @router.get("/health", response_model=HealthRead, summary="Liveness for load balancers")
    async def health() -> Response:
        # RequestContextMiddleware answers before routing (see LIVENESS_PATH); this
        # route is its OpenAPI declaration.
        return Response(LIVENESS_BODY, media_type="application/json")

    @router.get("/plugins", summary="Every plugin with its version, state and health")
    async def list_plugins(request: Request, caller: OptionalPrincipal) -> list[PluginRead]:
        """Failure reasons and health details only for callers holding ``auth:admin``."""
        full = caller is not None and allows(caller.scopes, ADMIN_SCOPE)
        plugins = list(registry)
        healths = await asyncio.gather(*(checks.report(plugin, request.app) for plugin in plugins))
        return [
            _plugin_read(plugin, health, full=full)
            for plugin, health in zip(plugins, healths, strict=True)
        ]

    return router


def landing_page(registry: PluginRegistry, *, docs: bool) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(p.name)}</td><td>{html.escape(p.version)}</td>"
        f'<td class="{p.state.value}">{p.state.value}</td></tr>'
        for p in registry
    )
    links = (
        '<p><a href="/docs">API docs (Swagger UI)</a> · <a href="/redoc">ReDoc</a> · '
        f'<a href="{OPENAPI_URL}">OpenAPI document</a></p>'
        if docs
        else "<p>API docs are turned off on this server.</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>hostcore {__version__}</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:.2em 1em;text-align:left}}
.ok{{color:#070}}.failed{{color:#b00}}.disabled{{color:#777}}</style></head>
<body><h1>hostcore {__version__}</h1>
{links}
<h2>Plugins</h2>
<table><tr><th>name</th><th>version</th><th>state</th></tr>
{rows}
</table></body></html>
"""


def pages_router(registry: PluginRegistry, security: SecurityRuntime, *, docs: bool) -> APIRouter:
    """The landing page, the JWKS and (when on) the API documentation."""
    router = APIRouter(tags=["hostcore"], dependencies=[Public])

    @router.get(JWKS_URL, summary="Public keys that verify hostcore's tokens")
    async def jwks_document() -> dict[str, list[dict[str, str]]]:
        return jwks(list(security.verifier.keys.values()), time.time())

    @router.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(landing_page(registry, docs=docs))

    if not docs:
        return router

    @router.get(OPENAPI_URL, include_in_schema=False)
    async def openapi_document(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi())

    @router.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"hostcore {__version__} - Swagger UI",
            swagger_js_url=asset_url("swagger-ui-bundle.js"),
            swagger_css_url=asset_url("swagger-ui.css"),
            swagger_favicon_url=asset_url("favicon.png"),
            swagger_ui_parameters={"validatorUrl": None},
        )

    @router.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"hostcore {__version__} - ReDoc",
            redoc_js_url=asset_url("redoc.standalone.js"),
            redoc_favicon_url=asset_url("favicon.png"),
            with_google_fonts=False,
        )

    return router


def install_meta_routes(
    app: FastAPI, registry: PluginRegistry, security: SecurityRuntime, *, docs: bool
) -> None:
    add_routes_flat(app, api_router(registry))
    add_routes_flat(app, pages_router(registry, security, docs=docs))
    if docs:
        assets = CompressedAssets(docs_assets_dir())
        app.mount(DOCS_ASSETS_URL, CountedByAddress(assets, DOCS_ASSETS_URL), name="docs-assets")


CORE_PATHS = (
    "/",
    "/docs",
    "/redoc",
    f"{API_PREFIX}/health",
    f"{API_PREFIX}/plugins",
    OPENAPI_URL,
    JWKS_URL,
    f"{API_PREFIX}/jobs",
    f"{API_PREFIX}/jobs/{{job_id}}",
    f"{API_PREFIX}/events",
    f"{API_PREFIX}/ws",
)
CORE_MOUNTS = (DOCS_ASSETS_URL,)
