"""hostcore's own routes: liveness, the plugin list, the landing page and offline docs."""

from __future__ import annotations

import asyncio
import html
import time
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from hostcore import __version__
from hostcore.middleware import LIVENESS_BODY
from hostcore.plugins import API_PREFIX, Plugin, PluginRegistry, PluginState
from hostcore.routing import add_routes_flat
from hostcore.security.keys import jwks
from hostcore.security.runtime import SecurityRuntime

OPENAPI_URL = f"{API_PREFIX}/openapi.json"
DOCS_ASSETS_URL = "/static/docs"
JWKS_URL = "/.well-known/jwks.json"
HEALTH_TIMEOUT_S = 2.0
HEALTH_STATES = frozenset({"ok", "degraded", "down"})


class HealthRead(BaseModel):
    status: Literal["ok"]


class PluginRead(BaseModel):
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


def api_router(registry: PluginRegistry) -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, tags=["hostcore"])

    @router.get("/health", response_model=HealthRead, summary="Liveness for load balancers")
    async def health() -> Response:
        # RequestContextMiddleware answers before routing (see LIVENESS_PATH); this
        # route is its OpenAPI declaration and the answer of an app run without it.
        return Response(LIVENESS_BODY, media_type="application/json")

    @router.get("/plugins", summary="Every plugin with its version, state and health")
    async def list_plugins(request: Request) -> list[PluginRead]:
        plugins = list(registry)
        healths = await asyncio.gather(
            *(plugin_health(registry, plugin, request.app) for plugin in plugins)
        )
        return [
            PluginRead(
                name=plugin.name,
                version=plugin.version,
                distribution=plugin.distribution,
                builtin=plugin.builtin,
                state=plugin.state,
                reason=plugin.reason,
                scopes=plugin.scopes,
                health=health,
            )
            for plugin, health in zip(plugins, healths, strict=True)
        ]

    return router


def landing_page(registry: PluginRegistry, *, docs: bool) -> str:
    rows = "\n".join(
        f"<tr><td>{html.escape(p.name)}</td><td>{html.escape(p.version)}</td>"
        f'<td class="{p.state.value}">{p.state.value}</td>'
        f"<td>{html.escape(p.reason or '')}</td></tr>"
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
<table><tr><th>name</th><th>version</th><th>state</th><th>reason</th></tr>
{rows}
</table></body></html>
"""


def install_meta_routes(
    app: FastAPI, registry: PluginRegistry, security: SecurityRuntime, *, docs: bool
) -> None:
    add_routes_flat(app, api_router(registry))

    @app.get(JWKS_URL, tags=["hostcore"], summary="Public keys that verify hostcore's tokens")
    async def jwks_document() -> dict[str, list[dict[str, str]]]:
        return jwks(list(security.verifier.keys.values()), time.time())

    @app.get("/", include_in_schema=False)
    async def index() -> HTMLResponse:
        return HTMLResponse(landing_page(registry, docs=docs))

    if not docs:
        return
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=docs_assets_dir()), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"hostcore {__version__} - Swagger UI",
            swagger_js_url=f"{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"hostcore {__version__} - ReDoc",
            redoc_js_url=f"{DOCS_ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )


CORE_PATHS = (
    "/",
    "/docs",
    "/redoc",
    f"{API_PREFIX}/health",
    f"{API_PREFIX}/plugins",
    OPENAPI_URL,
    JWKS_URL,
)
CORE_MOUNTS = (DOCS_ASSETS_URL,)
