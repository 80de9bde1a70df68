"""The built-in ``wifi`` plugin: radios, interfaces, links, scans, modes and the
regulatory domain over nl80211; joining networks through wpa_supplicant's D-Bus API.

docs/wifi.md describes every endpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hostcore.builtin.wifi.schemas import WifiSettings
from hostcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from pydantic import BaseModel

    from hostcore.builtin.wifi.schemas import (
        ConnectedRead,
        ConnectStart,
        ScanResultsRead,
        ScanStart,
    )
    from hostcore.builtin.wifi.service import WifiService
    from hostcore.events import Publish, Topic
    from hostcore.jobs import JobContext, JobKind

# The service of this worker, for its jobs (a job runs in the worker that started it).
_service: WifiService | None = None
SCAN_JOB_TIMEOUT_S = 180.0
CONNECT_JOB_TIMEOUT_S = 180.0  # above the longest connect_timeout_s and its calls


@hookimpl
def hostcore_settings_model() -> type[BaseModel]:
    return WifiSettings


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {
        "wifi:read": "Read radios and wireless interfaces.",
        "wifi:scan": "Scan for networks (the radio leaves its channel meanwhile).",
        "wifi:control": "Connect and disconnect, forget networks, switch interface modes, "
        "set the regulatory country.",
    }


@hookimpl
def hostcore_job_kinds() -> list[JobKind]:
    from hostcore.jobs import JobKind

    return [
        JobKind(
            "wifi.scan",
            _scan,
            timeout_s=SCAN_JOB_TIMEOUT_S,
            description="Scan for networks on one interface; ends with what was found.",
        ),
        JobKind(
            "wifi.connect",
            _connect,
            timeout_s=CONNECT_JOB_TIMEOUT_S,
            description="Join a network through wpa_supplicant; ends connected, or failed "
            "naming why.",
        ),
    ]


async def _scan(context: JobContext, params: ScanStart) -> ScanResultsRead:
    from hostcore.errors import Unavailable

    if _service is None:
        raise Unavailable("the Wi-Fi plugin is not started")
    context.progress(None, f"scanning on {params.interface}")
    return await _service.scan(params.interface)


async def _connect(context: JobContext, params: ConnectStart) -> ConnectedRead:
    from hostcore.errors import Unavailable

    if _service is None:
        raise Unavailable("the Wi-Fi plugin is not started")
    return await _service.connect(params, context)


@hookimpl
def hostcore_event_topics() -> list[Topic]:
    from hostcore.builtin.wifi.events import is_topic_ifname
    from hostcore.events import Topic

    return [
        Topic(
            "wifi.*",
            "wifi:read",
            source=_events,
            member=is_topic_ifname,
            description="wifi.<ifname>: scans started, ended or aborted; connected, "
            "disconnected, roamed, channel switched (with the link); stations joining or "
            "leaving; the interface added, removed or given another type.",
        )
    ]


async def _events(app: FastAPI, publish: Publish, ifname: str) -> None:
    from hostcore.builtin.wifi.events import wifi_events

    await wifi_events(app.state.wifi, publish, ifname)


@hookimpl
def hostcore_routes() -> APIRouter:
    from hostcore.builtin.wifi.router import build_router

    return build_router()


@hookimpl
async def hostcore_startup(app: FastAPI, config: WifiSettings) -> None:
    from hostcore.builtin.wifi.service import WifiService

    global _service
    app.state.wifi = _service = WifiService(config)


@hookimpl
async def hostcore_shutdown(app: FastAPI) -> None:
    global _service
    service: WifiService | None = getattr(app.state, "wifi", None)
    if service is not None:
        await service.stop()
        if _service is service:
            _service = None


@hookimpl
def hostcore_health(app: FastAPI) -> dict[str, Any]:
    service: WifiService | None = getattr(app.state, "wifi", None)
    return {"status": "ok" if service is not None else "down"}
