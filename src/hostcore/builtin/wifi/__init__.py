"""The built-in ``wifi`` plugin: radios and interfaces over nl80211 (issue 12, in progress)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hostcore.builtin.wifi.schemas import WifiSettings
from hostcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from pydantic import BaseModel

    from hostcore.builtin.wifi.service import WifiService


@hookimpl
def hostcore_settings_model() -> type[BaseModel]:
    return WifiSettings


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {"wifi:read": "Read radios and wireless interfaces."}


@hookimpl
def hostcore_routes() -> APIRouter:
    from hostcore.builtin.wifi.router import build_router

    return build_router()


@hookimpl
async def hostcore_startup(app: FastAPI, config: WifiSettings) -> None:
    from hostcore.builtin.wifi.service import WifiService

    app.state.wifi = WifiService(config)


@hookimpl
async def hostcore_shutdown(app: FastAPI) -> None:
    service: WifiService | None = getattr(app.state, "wifi", None)
    if service is not None:
        await service.stop()


@hookimpl
def hostcore_health(app: FastAPI) -> dict[str, Any]:
    service: WifiService | None = getattr(app.state, "wifi", None)
    return {"status": "ok" if service is not None else "down"}
