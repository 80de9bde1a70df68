"""The built-in ``bluetooth`` plugin: adapters, devices, discovery and pairing both ways,
through BlueZ's D-Bus API only (docs/bluetooth.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostcore.builtin.bluetooth.schemas import BluetoothSettings
from hostcore.hookspecs import hookimpl

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI
    from pydantic import BaseModel

    from hostcore.builtin.bluetooth.schemas import (
        DeviceRead,
        DiscoveredRead,
        DiscoveryJob,
        PairingRequestRead,
        PairJob,
    )
    from hostcore.builtin.bluetooth.service import BluetoothService
    from hostcore.events import Topic
    from hostcore.jobs import JobContext, JobKind

MIGRATIONS = Path(__file__).parent / "migrations"
PAIRING_TOPIC = "bluetooth.pairing"
# The service of this worker, for its jobs (a job runs in the worker that started it).
_service: BluetoothService | None = None


@hookimpl
def hostcore_settings_model() -> type[BaseModel]:
    return BluetoothSettings


@hookimpl
def hostcore_scopes() -> dict[str, str]:
    return {
        "bluetooth:read": "Read adapters and devices.",
        "bluetooth:control": "Power and name adapters, discover, connect, trust, block and "
        "forget devices.",
        "bluetooth:pair": "Pair with devices, and answer pairing questions (a phone pairing "
        "with this device included).",
    }


@hookimpl
def hostcore_migrations() -> Path:
    return MIGRATIONS


@hookimpl
def hostcore_job_kinds() -> list[JobKind]:
    from hostcore.jobs import JobKind

    return [
        JobKind(
            "bluetooth.discovery",
            _discover,
            timeout_s=3700.0,  # above the longest discovery a setting allows
            description="Discover devices on one adapter; ends with those seen.",
        ),
        JobKind(
            "bluetooth.pair",
            _pair,
            timeout_s=330.0,  # above the longest pair_timeout_s
            description="Pair with a device, asking the client to confirm; ends paired.",
        ),
    ]


def _started() -> BluetoothService:
    from hostcore.errors import Unavailable

    if _service is None:
        raise Unavailable("the Bluetooth plugin is not started")
    return _service


async def _discover(context: JobContext, params: DiscoveryJob) -> DiscoveredRead:
    return await _started().discover(params.adapter, params.start, context)


async def _pair(context: JobContext, params: PairJob) -> DeviceRead:
    return await _started().pair(params.address, context, params.adapter)


@hookimpl
def hostcore_event_topics() -> list[Topic]:
    from hostcore.events import Topic

    return [
        Topic(
            PAIRING_TOPIC,
            "bluetooth:pair",
            description="A pairing question asked (a phone pairing with this device, a pair "
            "job's passkey), answered, expired or cancelled.",
        )
    ]


@hookimpl
def hostcore_routes() -> APIRouter:
    from hostcore.builtin.bluetooth.router import build_router

    return build_router()


@hookimpl
async def hostcore_startup(app: FastAPI, config: BluetoothSettings) -> None:
    from hostcore.builtin.bluetooth.bluez import BlueZ
    from hostcore.builtin.bluetooth.pairing import Pairings
    from hostcore.builtin.bluetooth.service import BluetoothService

    events = app.state.events

    def publish(request: PairingRequestRead) -> None:
        events.publish(PAIRING_TOPIC, request, forward=True)

    global _service
    pairings = Pairings(app.state.db, timeout_s=config.request_timeout_s, publish=publish)
    service = BluetoothService(config, pairings, bluez=BlueZ(timeout_s=config.timeout_s))
    service.start()
    app.state.bluetooth = _service = service


@hookimpl
async def hostcore_shutdown(app: FastAPI) -> None:
    global _service
    service: BluetoothService | None = getattr(app.state, "bluetooth", None)
    if service is not None:
        await service.stop()
        if _service is service:
            _service = None


@hookimpl
def hostcore_health(app: FastAPI) -> dict[str, Any]:
    service: BluetoothService | None = getattr(app.state, "bluetooth", None)
    if service is None:
        return {"status": "down", "detail": "not started"}
    return {"status": "ok", "agent_registered": service.agent_registered}
