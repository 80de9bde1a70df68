"""The Bluetooth plugin's service: adapters, devices, discovery and pairing over BlueZ.

Reads come from :class:`~hostcore.builtin.bluetooth.bluez.BlueZ`'s object cache. The
agent is registered on start, and again whenever bluetoothd comes back or the bus
connection is made anew (BlueZ forgets an agent whose connection went away).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dbus_fast import Variant

from hostcore.builtin.bluetooth.agent import AGENT_PATH, Agent
from hostcore.builtin.bluetooth.bluez import (
    ADAPTER,
    AGENT_MANAGER,
    AGENT_MANAGER_PATH,
    DEVICE,
    OBJECT_MANAGER,
    AuthenticationTimeout,
    BlueZ,
)
from hostcore.builtin.bluetooth.pairing import DISPLAY_ONLY, Pairings
from hostcore.builtin.bluetooth.parsers import adapter_name, parse_adapter, parse_device
from hostcore.builtin.bluetooth.schemas import (
    AdapterRead,
    AdapterUpdate,
    BluetoothSettings,
    DeviceRead,
    DiscoveredRead,
    DiscoveryStart,
    PairingAnswer,
    PairingRequestRead,
)
from hostcore.dbus_connection import disconnected
from hostcore.errors import Conflict, HostcoreError, NotFound, Unprocessable

if TYPE_CHECKING:
    from dbus_fast.aio import MessageBus

    from hostcore.jobs import JobContext

logger = logging.getLogger(__name__)

AGENT_RETRY_S = (1.0, 5.0, 30.0)  # waits between attempts to register, then the last again
PROGRESS_EVERY_S = 1.0


class BluetoothService:
    def __init__(self, config: BluetoothSettings, pairings: Pairings, *, bluez: BlueZ) -> None:
        self.config = config
        self.pairings = pairings
        self.bluez = bluez
        self.agent = Agent(pairings, self._identify, self._job_of)
        self._pairing: dict[str, tuple[str, Callable[[str], None]]] = {}  # device path → job
        self._agent_on: MessageBus | None = None  # the connection the agent is exported on
        self._registered_on: MessageBus | None = None  # … and registered with bluetoothd
        self._agent_wanted = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None

    @property
    def agent_registered(self) -> bool:
        """Registered with the bluetoothd running now (as far as this worker has heard)."""
        return self._registered_on is not None and self._registered_on.connected

    # -- lifecycle --

    def start(self) -> None:
        """Keep the agent registered (in the background: bluetoothd may come later)."""
        self.bluez.listeners.append(self._on_change)
        self._keeper = asyncio.create_task(self._keep_agent(), name="bluetooth agent")

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.wait([self._keeper])
        bus = self._agent_on
        if bus is not None and bus.connected:
            with contextlib.suppress(HostcoreError):
                await self.bluez.method(
                    AGENT_MANAGER_PATH, AGENT_MANAGER, "UnregisterAgent", "o", [AGENT_PATH]
                )
        await self.bluez.close()

    def _on_change(self, path: str, interface: str, props: dict[str, Any]) -> None:
        if interface == OBJECT_MANAGER:  # bluetoothd went away or came back
            self._registered_on = None
            self._agent_wanted.set()

    async def _keep_agent(self) -> None:
        """Register the agent; again when bluetoothd comes back (its NameOwnerChanged) or
        the bus connection is made anew. While the bus itself cannot be reached, try again
        after a while; while it can, the signal says when (nothing is polled)."""
        failures = 0
        while True:
            self._agent_wanted.clear()  # before: a restart during registering is not lost
            try:
                await self._register_agent()
                failures = 0
            except Exception as error:
                if isinstance(error, HostcoreError):
                    why = error.detail
                else:
                    logger.exception("registering the Bluetooth agent failed")
                    why = type(error).__name__
                if self.bluez.subscribed:  # bluetoothd is not there; its arrival is signalled
                    logger.info("Bluetooth agent not registered (%s): waiting for BlueZ", why)
                    await self._until_wanted_or_lost()
                    continue
                wait = AGENT_RETRY_S[min(failures, len(AGENT_RETRY_S) - 1)]
                failures += 1
                logger.info("Bluetooth agent not registered (%s); again in %g s", why, wait)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._agent_wanted.wait()
                continue
            await self._until_wanted_or_lost()

    async def _until_wanted_or_lost(self) -> None:
        bus = self.bluez.bus.current
        lost = asyncio.ensure_future(disconnected(bus)) if bus is not None else None
        wanted = asyncio.ensure_future(self._agent_wanted.wait())
        try:
            await asyncio.wait(
                [task for task in (lost, wanted) if task is not None],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for task in (lost, wanted):
                if task is not None:
                    task.cancel()

    async def _register_agent(self) -> None:
        await self.bluez.objects()  # connects, subscribes: a bluetoothd coming back is seen
        bus = await self.bluez.bus.get()
        if self._agent_on is not bus:
            bus.export(AGENT_PATH, self.agent)
        self._agent_on = bus
        with contextlib.suppress(Conflict):  # AlreadyExists: this connection's agent is
            await self.bluez.method(
                AGENT_MANAGER_PATH, AGENT_MANAGER, "RegisterAgent", "os",
                [AGENT_PATH, self.config.agent_capability],
            )  # fmt: skip
        if self.config.default_agent:
            await self.bluez.method(
                AGENT_MANAGER_PATH, AGENT_MANAGER, "RequestDefaultAgent", "o", [AGENT_PATH]
            )
        self._registered_on = bus
        logger.info("Bluetooth agent registered (%s)", self.config.agent_capability)

    # -- who is who --

    def _identify(self, device: str) -> tuple[str, str, str | None]:
        objects = self.bluez.cached() or {}
        props = objects.get(device, {}).get(DEVICE, {})
        address = props.get("Address")
        if not isinstance(address, str):  # a path BlueZ names after the address
            address = device.rsplit("/dev_", 1)[-1].replace("_", ":")
        alias = props.get("Alias") or props.get("Name")
        return adapter_name(device), address.upper(), alias if isinstance(alias, str) else None

    def _job_of(self, device: str) -> tuple[str, Callable[[str], None]] | None:
        return self._pairing.get(device)

    # -- adapters --

    async def _adapters(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.bluez.with_interface(await self.bluez.objects(), ADAPTER))

    async def adapters(self) -> list[AdapterRead]:
        return [parse_adapter(path, props) for path, props in await self._adapters()]

    async def _adapter_path(self, name: str) -> str:
        for path, _ in await self._adapters():
            if adapter_name(path) == name:
                return path
        raise NotFound(f"no Bluetooth adapter named {name}")

    async def adapter(self, name: str) -> AdapterRead:
        path = await self._adapter_path(name)
        return parse_adapter(path, await self._props(path, ADAPTER))

    async def _props(self, path: str, interface: str) -> dict[str, Any]:
        props = (await self.bluez.objects()).get(path, {}).get(interface)
        if props is None:  # gone between two reads
            raise NotFound(f"BlueZ no longer has {adapter_name(path)}'s {path.rsplit('/', 1)[-1]}")
        return props

    async def update_adapter(self, name: str, update: AdapterUpdate) -> AdapterRead:
        """Set what ``update`` names: power on first, the timeouts before what they
        bound, power off last."""
        path = await self._adapter_path(name)
        changes: list[tuple[str, Variant]] = []
        if update.powered is True:
            changes.append(("Powered", Variant("b", True)))
        if update.alias is not None:
            changes.append(("Alias", Variant("s", update.alias)))
        if update.discoverable_timeout_s is not None:
            changes.append(("DiscoverableTimeout", Variant("u", update.discoverable_timeout_s)))
        if update.pairable_timeout_s is not None:
            changes.append(("PairableTimeout", Variant("u", update.pairable_timeout_s)))
        if update.discoverable is not None:
            changes.append(("Discoverable", Variant("b", update.discoverable)))
        if update.pairable is not None:
            changes.append(("Pairable", Variant("b", update.pairable)))
        if update.powered is False:
            changes.append(("Powered", Variant("b", False)))
        for prop, value in changes:
            await self.bluez.set_property(path, ADAPTER, prop, value)
        return parse_adapter(path, await self.bluez.refresh(path, ADAPTER))

    # -- devices --

    async def devices(
        self, adapter: str, *, paired: bool | None = None, connected: bool | None = None
    ) -> list[DeviceRead]:
        path = await self._adapter_path(adapter)
        found = [
            parse_device(device, props)
            for device, props in self.bluez.with_interface(await self.bluez.objects(), DEVICE)
            if device.startswith(path + "/")
        ]
        return [
            device
            for device in found
            if (paired is None or device.paired == paired)
            and (connected is None or device.connected == connected)
        ]

    async def _device_path(self, address: str, adapter: str | None = None) -> str:
        for path, props in self.bluez.with_interface(await self.bluez.objects(), DEVICE):
            if str(props.get("Address", "")).upper() != address:
                continue
            if adapter is None or adapter_name(path) == adapter:
                return path
        raise NotFound(f"no Bluetooth device {address} is known")

    async def device(self, address: str, adapter: str | None = None) -> DeviceRead:
        path = await self._device_path(address, adapter)
        return parse_device(path, await self._props(path, DEVICE))

    async def set_device_flag(
        self, address: str, flag: str, value: bool, adapter: str | None = None
    ) -> DeviceRead:
        """``Trusted`` or ``Blocked`` (blocking also disconnects it)."""
        path = await self._device_path(address, adapter)
        await self.bluez.set_property(path, DEVICE, flag, Variant("b", value))
        return parse_device(path, await self.bluez.refresh(path, DEVICE))

    async def connect(self, address: str, adapter: str | None = None) -> DeviceRead:
        path = await self._device_path(address, adapter)
        await self.bluez.method(path, DEVICE, "Connect", timeout_s=self.config.pair_timeout_s)
        return parse_device(path, await self.bluez.refresh(path, DEVICE))

    async def disconnect(self, address: str, adapter: str | None = None) -> DeviceRead:
        path = await self._device_path(address, adapter)
        await self.bluez.method(path, DEVICE, "Disconnect")
        return parse_device(path, await self.bluez.refresh(path, DEVICE))

    async def remove(self, address: str, adapter: str | None = None) -> None:
        """Forget a device: its keys go too (it must pair again)."""
        path = await self._device_path(address, adapter)
        parent = path.rsplit("/", 1)[0]
        await self.bluez.method(parent, ADAPTER, "RemoveDevice", "o", [path])

    # -- discovery --

    async def discover(
        self, adapter: str, start: DiscoveryStart, context: JobContext
    ) -> DiscoveredRead:
        """Discover for ``start.duration_s`` (a job's work): each device heard goes into the
        job's log as it is, and the result lists them all. The discovery session is this
        connection's: BlueZ ends it if the connection goes, and so it ends with the job."""
        await self.check_discovery(adapter, start)
        path = await self._adapter_path(adapter)
        seen: dict[str, int] = {}  # device path → the last RSSI heard

        def on_change(changed: str, interface: str, props: dict[str, Any]) -> None:
            rssi = props.get("RSSI")  # heard now: not a known device's other change
            if interface != DEVICE or not changed.startswith(path + "/"):
                return
            if not isinstance(rssi, int) or isinstance(rssi, bool):
                return
            if changed not in seen:
                name = props.get("Alias") or props.get("Name") or ""
                context.log(f"found {props.get('Address', '?')} {name} ({rssi} dBm)".strip())
            seen[changed] = rssi

        await self.bluez.method(
            path, ADAPTER, "SetDiscoveryFilter", "a{sv}",
            [{"Transport": Variant("s", start.transport)}],
        )  # fmt: skip
        self.bluez.listeners.append(on_change)
        try:
            await self.bluez.method(path, ADAPTER, "StartDiscovery")
            began = time.monotonic()
            while (elapsed := time.monotonic() - began) < start.duration_s:
                context.progress(elapsed / start.duration_s, f"{len(seen)} devices found")
                await asyncio.sleep(min(PROGRESS_EVERY_S, start.duration_s - elapsed))
        finally:
            self.bluez.listeners.remove(on_change)
            await asyncio.shield(self._stop_discovery(path))
        context.progress(1.0, f"{len(seen)} devices found")
        objects = await self.bluez.objects()
        devices = [  # BlueZ forgets the RSSI when discovery stops: the last one heard
            parse_device(device, {"RSSI": rssi, **objects[device][DEVICE]})
            for device, rssi in seen.items()
            if DEVICE in objects.get(device, {})
        ]
        return DiscoveredRead(adapter=adapter, transport=start.transport, devices=devices)

    async def check_discovery(self, adapter: str, start: DiscoveryStart) -> None:
        """What refuses a discovery at once: an unknown adapter (404), one too long (422)."""
        await self._adapter_path(adapter)
        if start.duration_s > self.config.discovery_max_s:
            raise Unprocessable(f"discovery is limited to {self.config.discovery_max_s:g} s")

    async def _stop_discovery(self, path: str) -> None:
        try:
            await self.bluez.method(path, ADAPTER, "StopDiscovery")
        except HostcoreError as error:
            logger.info("stopping discovery on %s: %s", path, error.detail)

    # -- pairing --

    async def check_pair(self, address: str, adapter: str | None = None) -> None:
        """What refuses a pairing at once: an unknown device (404); one already paired,
        or on an adapter that is off (409: BlueZ would only answer "authentication
        failed" for that)."""
        path = await self._device_path(address, adapter)
        if (await self._props(path, DEVICE)).get("Paired"):
            raise Conflict(f"{address} is already paired")
        parent = path.rsplit("/", 1)[0]
        if not (await self._props(parent, ADAPTER)).get("Powered"):
            raise Conflict(f"the adapter {adapter_name(parent)} is powered off")

    async def pair(
        self, address: str, context: JobContext, adapter: str | None = None
    ) -> DeviceRead:
        """Pair with a device (a job's work); BlueZ's questions reach this worker's agent
        and wait for a client's answer. Cancelling the job, or ``pair_timeout_s`` passing,
        cancels the pairing in BlueZ; what it asked or showed is closed either way."""
        await self.check_pair(address, adapter)
        path = await self._device_path(address, adapter)
        if path in self._pairing:
            raise Conflict(f"a pairing with {address} is already running here")
        self._pairing[path] = (context.job_id, lambda message: context.progress(None, message))
        context.progress(None, f"pairing with {address}")
        timeout_s = self.config.pair_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                # BlueZ's answer is bounded by the timeout above, not by the call's own.
                await self.bluez.method(path, DEVICE, "Pair", timeout_s=timeout_s + 5)
        except TimeoutError:
            await asyncio.shield(self._cancel_pairing(path))
            raise AuthenticationTimeout(f"the pairing did not end within {timeout_s:g} s") from None
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_pairing(path))
            raise
        finally:
            self._pairing.pop(path, None)
            await asyncio.shield(self.pairings.close_job(context.job_id, address))
        context.progress(1.0, "paired")
        return parse_device(path, await self.bluez.refresh(path, DEVICE))

    async def _cancel_pairing(self, path: str) -> None:
        try:
            await self.bluez.method(path, DEVICE, "CancelPairing")
        except HostcoreError as error:
            logger.info("cancelling the pairing of %s: %s", path, error.detail)

    async def pairing_requests(self) -> list[PairingRequestRead]:
        return await self.pairings.pending()

    async def answer(self, request_id: str, answer: PairingAnswer) -> PairingRequestRead:
        """Answer a question. Rejecting what is only shown (a passkey to type there) has
        nothing to answer in BlueZ: the pairing itself is cancelled."""
        answered = await self.pairings.answer(request_id, answer)
        if answered.state == "rejected" and answered.kind in DISPLAY_ONLY:
            with contextlib.suppress(NotFound):
                path = await self._device_path(answered.address, answered.adapter)
                await self._cancel_pairing(path)
        return answered
