from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from hostcore.builtin.bluetooth.schemas import (
    AdapterName,
    AdapterRead,
    AdapterUpdate,
    Address,
    DeviceRead,
    DiscoveryJob,
    DiscoveryStart,
    FlagUpdate,
    PairingAnswer,
    PairingRequestRead,
    PairJob,
)
from hostcore.builtin.bluetooth.service import BluetoothService
from hostcore.context import Principal
from hostcore.errors import error_responses
from hostcore.jobs import JobRead, Jobs, accepted
from hostcore.security.deps import RequireScope

READ = [RequireScope("bluetooth:read")]
CONTROL = [RequireScope("bluetooth:control")]
PAIR = [RequireScope("bluetooth:pair")]
Controller = Annotated[Principal, RequireScope("bluetooth:control")]
Pairer = Annotated[Principal, RequireScope("bluetooth:pair")]
ERRORS = error_responses(401, 403, 404, 422, 429, 502, 503)
CHANGE_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429, 502, 503)
JOB_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429, 502, 503)  # 400: a bad body


async def _service(request: Request) -> BluetoothService:
    service: BluetoothService = request.app.state.bluetooth
    return service


Bluetooth = Annotated[BluetoothService, Depends(_service)]
Hci = Annotated[AdapterName, Path(description="An adapter, as BlueZ names it: hci0 …")]
Device = Annotated[Address, Path(description="A device's address, XX:XX:XX:XX:XX:XX.")]
OnAdapter = Annotated[
    AdapterName | None, Query(description="The adapter, when two know the device.")
]
RequestId = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$", description="A pairing question.")]


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/adapters", dependencies=READ, responses=ERRORS)
    async def adapters(bluetooth: Bluetooth) -> list[AdapterRead]:
        """Adapters: address, names, power, discoverable and pairable (with their
        timeouts), discovering, roles."""
        return await bluetooth.adapters()

    @router.get("/adapters/{hci}", dependencies=READ, responses=ERRORS)
    async def adapter(hci: Hci, bluetooth: Bluetooth) -> AdapterRead:
        return await bluetooth.adapter(hci)

    @router.patch("/adapters/{hci}", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def update_adapter(hci: Hci, body: AdapterUpdate, bluetooth: Bluetooth) -> AdapterRead:
        """Power, alias, discoverable and pairable (and their timeouts). An adapter blocked
        by rfkill cannot be powered: 409."""
        return await bluetooth.update_adapter(hci, body)

    @router.get("/adapters/{hci}/devices", dependencies=READ, responses=ERRORS)
    async def devices(
        hci: Hci,
        bluetooth: Bluetooth,
        paired: Annotated[bool | None, Query()] = None,
        connected: Annotated[bool | None, Query()] = None,
    ) -> list[DeviceRead]:
        """Devices the adapter knows: paired ones, and those seen while discovering."""
        return await bluetooth.devices(hci, paired=paired, connected=connected)

    @router.post(
        "/adapters/{hci}/discovery",
        status_code=202,
        response_model=JobRead,
        responses=JOB_ERRORS,
        summary="Discover devices for a while: a job",
    )
    async def discover(
        hci: Hci, body: DiscoveryStart, principal: Controller, bluetooth: Bluetooth, jobs: Jobs
    ) -> JSONResponse:
        """The job's progress counts the devices found; it ends with them. Cancelling it
        stops the discovery. One per adapter at a time."""
        await bluetooth.check_discovery(hci, body)  # 404 or 422 before a job exists
        job, reused = await jobs.start_job(
            "bluetooth.discovery", principal, DiscoveryJob(adapter=hci, start=body), resource=hci
        )
        return accepted(job, reused)

    @router.get("/devices/{address}", dependencies=READ, responses=ERRORS)
    async def device(
        address: Device, bluetooth: Bluetooth, adapter: OnAdapter = None
    ) -> DeviceRead:
        return await bluetooth.device(address, adapter)

    @router.put("/devices/{address}/trusted", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def trust(
        address: Device, body: FlagUpdate, bluetooth: Bluetooth, adapter: OnAdapter = None
    ) -> DeviceRead:
        """A trusted device connects without asking the agent to authorize it."""
        return await bluetooth.set_device_flag(address, "Trusted", body.value, adapter)

    @router.put("/devices/{address}/blocked", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def block(
        address: Device, body: FlagUpdate, bluetooth: Bluetooth, adapter: OnAdapter = None
    ) -> DeviceRead:
        """A blocked device is disconnected and refused."""
        return await bluetooth.set_device_flag(address, "Blocked", body.value, adapter)

    @router.post("/devices/{address}/connect", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def connect(
        address: Device, bluetooth: Bluetooth, adapter: OnAdapter = None
    ) -> DeviceRead:
        return await bluetooth.connect(address, adapter)

    @router.post("/devices/{address}/disconnect", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def disconnect(
        address: Device, bluetooth: Bluetooth, adapter: OnAdapter = None
    ) -> DeviceRead:
        return await bluetooth.disconnect(address, adapter)

    @router.delete(
        "/devices/{address}", status_code=204, dependencies=CONTROL, responses=CHANGE_ERRORS
    )
    async def remove(address: Device, bluetooth: Bluetooth, adapter: OnAdapter = None) -> Response:
        """Forget a device and its keys."""
        await bluetooth.remove(address, adapter)
        return Response(status_code=204)

    @router.post(
        "/devices/{address}/pair",
        status_code=202,
        response_model=JobRead,
        responses=JOB_ERRORS,
        summary="Pair with a device: a job",
    )
    async def pair(
        address: Device,
        principal: Pairer,
        bluetooth: Bluetooth,
        jobs: Jobs,
        adapter: OnAdapter = None,
    ) -> JSONResponse:
        """When BlueZ asks to compare or enter a passkey, the job's message says
        awaiting_confirmation with the passkey and the question's id: answer with
        POST /pairing/{id}/confirm. The job ends with the paired device, or failed with
        BlueZ's reason (AuthenticationFailed, AuthenticationRejected …)."""
        await bluetooth.check_pair(address, adapter)  # 404 or 409 before a job exists
        job, reused = await jobs.start_job(
            "bluetooth.pair", principal, PairJob(address=address, adapter=adapter),
            resource=address,
        )  # fmt: skip
        return accepted(job, reused)

    @router.get("/pairing-requests", dependencies=PAIR, responses=ERRORS)
    async def pairing_requests(bluetooth: Bluetooth) -> list[PairingRequestRead]:
        """Questions waiting for an answer: a phone pairing with this device, or a pair
        job's passkey."""
        return await bluetooth.pairing_requests()

    @router.post("/pairing-requests/{request_id}", dependencies=PAIR, responses=CHANGE_ERRORS)
    async def answer_request(
        request_id: RequestId, body: PairingAnswer, bluetooth: Bluetooth
    ) -> PairingRequestRead:
        """Accept or reject (409 once answered or expired)."""
        return await bluetooth.answer(request_id, body)

    @router.post("/pairing/{request_id}/confirm", dependencies=PAIR, responses=CHANGE_ERRORS)
    async def confirm(
        request_id: RequestId, body: PairingAnswer, bluetooth: Bluetooth
    ) -> PairingRequestRead:
        """The pair job's question, answered (the same as POST /pairing-requests/{id})."""
        return await bluetooth.answer(request_id, body)

    return router
