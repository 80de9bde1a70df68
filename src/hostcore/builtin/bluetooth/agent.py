# ruff: noqa: N802 - the agent's methods are org.bluez.Agent1's members, named as BlueZ calls them
"""hostcore's ``org.bluez.Agent1``: BlueZ's pairing questions, turned into questions a
client answers through the API (:mod:`hostcore.builtin.bluetooth.pairing`).

BlueZ calls the agent of the connection that asked for a pairing, else the default
agent (a phone pairing with this device). Each question waits for its answer; a
rejection, an expiry or a cancellation is ``org.bluez.Error.Rejected`` or
``…Canceled``, as Agent1's documentation names them. ``DisplayPasskey`` and
``DisplayPinCode`` only show what to type on the other device.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated

from dbus_fast import DBusError
from dbus_fast.annotations import DBusObjectPath, DBusSignature, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from hostcore.builtin.bluetooth.pairing import Pairings, Rejected
from hostcore.builtin.bluetooth.schemas import PairingKind, PairingRequestRead

logger = logging.getLogger(__name__)

AGENT_PATH = "/org/hostcore/bluetooth/agent"
AGENT_INTERFACE = "org.bluez.Agent1"
REJECTED = "org.bluez.Error.Rejected"
CANCELED = "org.bluez.Error.Canceled"
NoOutput = Annotated[None, DBusSignature("")]

# Who a device is, for a question: (adapter, address, name), from the object cache.
Identify = Callable[[str], tuple[str, str, str | None]]
# The job pairing with a device's object path, if one is (its id, and how to tell it).
JobOf = Callable[[str], tuple[str, Callable[[str], None]] | None]


class Agent(ServiceInterface):
    def __init__(self, pairings: Pairings, identify: Identify, job_of: JobOf) -> None:
        super().__init__(AGENT_INTERFACE)
        self.pairings = pairings
        self.identify = identify
        self.job_of = job_of

    async def _ask(
        self,
        kind: PairingKind,
        device: str,
        *,
        passkey: int | None = None,
        service: str | None = None,
    ) -> tuple[int | None, str | None]:
        adapter, address, name = self.identify(device)
        job = self.job_of(device)

        def announce(request: PairingRequestRead) -> None:
            if job is not None:
                shown = f" {passkey:06d}" if passkey is not None else ""
                job[1](
                    f"awaiting_confirmation: {kind}{shown}; answer with "
                    f"POST /api/v1/bluetooth/pairing/{request.id}/confirm"
                )

        try:
            return await self.pairings.ask(
                kind, adapter=adapter, address=address, name=name, passkey=passkey,
                service=service, job_id=job[0] if job is not None else None, announce=announce,
            )  # fmt: skip
        except Rejected as refused:
            logger.info("pairing question %s for %s %s", kind, address, refused.state)
            error = CANCELED if refused.state == "cancelled" else REJECTED
            raise DBusError(error, f"the question was {refused.state}") from None

    async def _show(self, kind: PairingKind, device: str, *, passkey: int | None = None,
                    pin_code: str | None = None) -> None:  # fmt: skip
        adapter, address, name = self.identify(device)
        job = self.job_of(device)
        if job is not None:
            what = f"{passkey:06d}" if passkey is not None else (pin_code or "")
            job[1](f"type {what} on the other device")
        await self.pairings.tell(
            kind, adapter=adapter, address=address, name=name, passkey=passkey,
            pin_code=pin_code, job_id=job[0] if job is not None else None,
        )  # fmt: skip

    @dbus_method()
    def Release(self) -> NoOutput:
        """bluetoothd is stopping (its NameOwnerChanged has hostcore register again)."""

    @dbus_method()
    async def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:
        _, pin_code = await self._ask("pin_code", device)
        return pin_code or ""

    @dbus_method()
    async def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> NoOutput:
        await self._show("display_pin_code", device, pin_code=pincode)

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:
        passkey, _ = await self._ask("passkey", device)
        return passkey or 0

    @dbus_method()
    async def DisplayPasskey(
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> NoOutput:
        if entered == 0:  # shown again for every digit typed there: once is enough
            await self._show("display_passkey", device, passkey=passkey)

    @dbus_method()
    async def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> NoOutput:
        await self._ask("confirmation", device, passkey=passkey)

    @dbus_method()
    async def RequestAuthorization(self, device: DBusObjectPath) -> NoOutput:
        await self._ask("authorization", device)

    @dbus_method()
    async def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> NoOutput:
        await self._ask("service", device, service=uuid.lower()[:64])

    @dbus_method()
    async def Cancel(self) -> NoOutput:
        await self.pairings.cancel_all()
