"""The built-in ``system`` plugin: device info, stats, services, power, time, hostname, logs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hostcore.builtin.system.schemas import SystemSettings
from hostcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from pydantic import BaseModel

    from hostcore.builtin.system.service import SystemService
    from hostcore.config import Settings
    from hostcore.events import Publish, Topic

SHARED_STATS_FILE = "system-stats.json"
STATS_EVENT_CHECKS = 10  # per interval: a new sample goes out within a tenth of it

# The server code (router, service) is imported by the hooks that need it, never at
# import: the command line loads this module to list every plugin's commands.


@hookimpl
def hostcore_settings_model() -> type[BaseModel]:
    return SystemSettings


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {
        "system:read": "Read device info, stats, services, time, hostname, packages.",
        "system:control": "Start, stop and restart allowed units; set timezone and hostname.",
        "system:power": "Reboot or shut down the device.",
        "system:logs": "Read journal entries of the allowed units.",
    }


@hookimpl
def hostcore_event_topics() -> list[Topic]:
    from hostcore.events import Topic

    return [
        Topic(
            "system.stats",
            "system:read",
            source=_stats_events,
            description="The stats sample, each time a new one is taken (once a second).",
        )
    ]


async def _stats_events(app: FastAPI, publish: Publish) -> None:
    """While someone listens: each new sample, encoded once (the bytes GET answers)."""
    import asyncio

    service: SystemService = app.state.system
    published = None
    while True:
        encoded = await service.stats_sample()  # a subscriber counts as a reader
        if encoded is not published:
            publish(encoded.body)
            published = encoded
        await asyncio.sleep(service.collector.interval_s / STATS_EVENT_CHECKS)


@hookimpl
def hostcore_routes() -> APIRouter:
    from hostcore.builtin.system.router import build_router

    return build_router()


@hookimpl
async def hostcore_startup(app: FastAPI, settings: Settings, config: SystemSettings) -> None:
    from hostcore.builtin.system.service import SystemService

    # Several workers sample once between them, through a file in the run directory.
    shared = settings.run_dir / SHARED_STATS_FILE if settings.server.workers > 1 else None
    service = SystemService(config, app.state.runner, shared_stats=shared)
    await service.start()
    app.state.system = service


@hookimpl
async def hostcore_shutdown(app: FastAPI) -> None:
    service: SystemService | None = getattr(app.state, "system", None)
    if service is not None:
        await service.stop()


@hookimpl
def hostcore_health(app: FastAPI) -> dict[str, Any]:
    service: SystemService | None = getattr(app.state, "system", None)
    if service is None:
        return {"status": "down", "detail": "not started"}
    return {"status": "ok", "dbus_connected": service.bus.connected}
