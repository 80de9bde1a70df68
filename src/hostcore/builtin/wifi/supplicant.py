"""wpa_supplicant's D-Bus API (``fi.w1.wpa_supplicant1``), and NetworkManager's claim.

* **One connection** to the system bus (:class:`hostcore.dbus_connection.BusConnection`),
  every call bounded by ``timeout_s``; a daemon that is not running is a 503 naming it.
* **Interfaces** are found with ``GetInterface``; one wpa_supplicant does not manage
  yet (a D-Bus-only ``wpa_supplicant -u``, as Debian's unit runs it) is added with
  ``CreateInterface`` and the configured driver.
* **Networks** are added from typed values only (the SSID as bytes, ``ay``; numbers as
  numbers): nothing a caller sent is ever written into a configuration file by
  hostcore, and wpa_supplicant writes its own file (``SaveConfig``) with its own
  escaping.
* **Signals** of one interface reach a :class:`Signals` queue while it is open (a match
  rule on the bus for that object only).
* wpa_supplicant's error messages are logged, never answered: they can quote what
  was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from dbus_fast import Message, MessageType, Variant

from hostcore.dbus import PROPERTIES_INTERFACE, DBusService
from hostcore.dbus_connection import BusConnection, match_rule
from hostcore.errors import BadRequest, Conflict, HostcoreError, NotFound

logger = logging.getLogger(__name__)

SUPPLICANT = DBusService(
    label="wpa_supplicant",
    name="fi.w1.wpa_supplicant1",
    path="/fi/w1/wpa_supplicant1",
    interface="fi.w1.wpa_supplicant1",
)
INTERFACE = "fi.w1.wpa_supplicant1.Interface"
NETWORK = "fi.w1.wpa_supplicant1.Network"
BSS = "fi.w1.wpa_supplicant1.BSS"
NETWORKMANAGER = DBusService(
    label="NetworkManager",
    name="org.freedesktop.NetworkManager",
    path="/org/freedesktop/NetworkManager",
    interface="org.freedesktop.NetworkManager",
)
NM_DEVICE = "org.freedesktop.NetworkManager.Device"
_ERROR = "fi.w1.wpa_supplicant1."
_NM_ABSENT = frozenset(
    {
        "org.freedesktop.DBus.Error.ServiceUnknown",
        "org.freedesktop.DBus.Error.NameHasNoOwner",
        "org.freedesktop.NetworkManager.UnknownDevice",
    }
)
_GONE = frozenset(
    {"org.freedesktop.DBus.Error.UnknownMethod", "org.freedesktop.DBus.Error.UnknownObject"}
)
SIGNAL_QUEUE = 256  # a connect reads them as they come; more waiting means it is gone


class _Absent(NotFound):
    """NetworkManager is not running, or does not know the device."""


def _supplicant_error(name: str, _text: str = "") -> HostcoreError | None:
    """wpa_supplicant's own error names (dbus_new_handlers.h)."""
    if name in (_ERROR + "InterfaceUnknown", _ERROR + "NetworkUnknown"):
        return NotFound(f"wpa_supplicant has no such object ({name})")
    if name in (_ERROR + "InterfaceExists", _ERROR + "InterfaceDisabled"):
        return Conflict(f"wpa_supplicant refused: {name}")
    if name in (_ERROR + "InvalidArgs", _ERROR + "NotConnected"):
        return BadRequest(f"wpa_supplicant refused: {name}")
    return None


def _object_error(name: str, _text: str = "") -> HostcoreError | None:
    """A read of a network's or BSS's object: one removed meanwhile is not registered any
    more, and D-Bus answers for the object path with no such method."""
    if name in _GONE:
        return NotFound(f"wpa_supplicant's object is gone ({name})")
    return _supplicant_error(name)


def _nm_error(name: str, _text: str = "") -> HostcoreError | None:
    return _Absent(name) if name in _NM_ABSENT else None


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Variant) else value


@dataclass(frozen=True)
class Signal:
    member: str
    interface: str
    body: list[Any]


class Signals:
    """The signals of one wpa_supplicant object, in order, while open."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Signal] = asyncio.Queue(SIGNAL_QUEUE)

    async def next(self) -> Signal:
        return await self.queue.get()


class Supplicant:
    """The calls hostcore makes to wpa_supplicant and NetworkManager."""

    def __init__(self, *, address: str | None = None, timeout_s: float, driver: str) -> None:
        self.bus = BusConnection(address=address, timeout_s=timeout_s)
        self.driver = driver

    async def close(self) -> None:
        await self.bus.close()

    async def _call(
        self, member: str, signature: str = "", body: list[Any] | None = None, **where: Any
    ) -> list[Any]:
        return await self.bus.call(
            SUPPLICANT, member, signature, body or [], errors=_supplicant_error, **where
        )

    async def remove_interface(self, path: str) -> None:
        """Stop managing an interface hostcore added (a failed first connect)."""
        await self._call("RemoveInterface", "o", [path])

    async def set_enabled(self, network: str, enabled: bool) -> None:
        await self.bus.call(
            SUPPLICANT, "Set", "ssv", [NETWORK, "Enabled", Variant("b", enabled)],
            path=network, interface=PROPERTIES_INTERFACE, errors=_object_error,
        )  # fmt: skip

    async def reconnect(self, path: str) -> None:
        """Connect again to an enabled network (after a failed attempt disturbed it)."""
        try:
            await self._call("Reconnect", path=path, interface=INTERFACE)
        except HostcoreError as refused:
            logger.info("wpa_supplicant did not reconnect: %s", refused.detail)

    # -- NetworkManager --

    async def managed_by_networkmanager(self, ifname: str) -> bool:
        """Whether a running NetworkManager manages ``ifname`` (it would undo what
        wpa_supplicant is told, and it owns wpa_supplicant's networks)."""
        try:
            (device,) = await self.bus.call(
                NETWORKMANAGER, "GetDeviceByIpIface", "s", [ifname],
                errors=_nm_error, autostart=False,
            )  # fmt: skip
            (managed,) = await self.bus.call(
                NETWORKMANAGER, "Get", "ss", [NM_DEVICE, "Managed"],
                path=device, interface=PROPERTIES_INTERFACE, errors=_nm_error, autostart=False,
            )  # fmt: skip
        except _Absent:
            return False
        return bool(_plain(managed))

    # -- interfaces --

    async def interface(self, ifname: str, *, create: bool, autostart: bool = True) -> str | None:
        """The object path of wpa_supplicant's ``ifname``; with ``create``, one is made
        when wpa_supplicant does not manage it yet (else None). ``autostart=False``: a
        wpa_supplicant that is not running is a 503, not started by the bus."""
        try:
            (path,) = await self._call("GetInterface", "s", [ifname], autostart=autostart)
        except NotFound:
            if not create:
                return None
            args = {"Ifname": Variant("s", ifname), "Driver": Variant("s", self.driver)}
            (path,) = await self._call("CreateInterface", "a{sv}", [args])
        return str(path)

    async def properties(self, path: str, interface: str = INTERFACE) -> dict[str, Any]:
        """An object's properties; ``NotFound`` when the object is gone."""
        (values,) = await self.bus.call(
            SUPPLICANT, "GetAll", "s", [interface],
            path=path, interface=PROPERTIES_INTERFACE, errors=_object_error,
        )  # fmt: skip
        return {name: _plain(value) for name, value in values.items()}

    async def property(self, path: str, name: str, interface: str = INTERFACE) -> Any:
        """One property of an object; ``NotFound`` when the object is gone."""
        (value,) = await self.bus.call(
            SUPPLICANT, "Get", "ss", [interface, name],
            path=path, interface=PROPERTIES_INTERFACE, errors=_object_error,
        )  # fmt: skip
        return _plain(value)

    # -- networks --

    async def add_network(self, path: str, args: Mapping[str, Variant]) -> str:
        (network,) = await self._call("AddNetwork", "a{sv}", [dict(args)], path=path,
                                      interface=INTERFACE)  # fmt: skip
        return str(network)

    async def select_network(self, path: str, network: str) -> None:
        await self._call("SelectNetwork", "o", [network], path=path, interface=INTERFACE)

    async def remove_network(self, path: str, network: str) -> None:
        await self._call("RemoveNetwork", "o", [network], path=path, interface=INTERFACE)

    async def disconnect(self, path: str) -> bool:
        """Disconnect and stay so until told to connect; False when it was not connected."""
        try:
            await self._call("Disconnect", path=path, interface=INTERFACE)
        except BadRequest:  # NotConnected
            return False
        return True

    async def save_config(self, path: str) -> bool:
        """Ask wpa_supplicant to write its configuration file; False when it may not
        (started without one, or without ``update_config=1``)."""
        try:
            await self._call("SaveConfig", path=path, interface=INTERFACE)
        except HostcoreError as refused:
            logger.info("wpa_supplicant did not save its configuration: %s", refused.detail)
            return False
        return True

    async def networks(self, path: str) -> list[tuple[str, dict[str, Any], bool]]:
        """Each configured network: its path, its properties (as wpa_supplicant shows
        them: strings, secrets left out by it), and whether it is enabled."""
        found = []
        for network in await self.property(path, "Networks"):
            try:
                values = await self.properties(network, NETWORK)
            except NotFound:  # removed meanwhile
                continue
            shown = {
                name: _plain(value) for name, value in (values.get("Properties") or {}).items()
            }
            found.append((str(network), shown, bool(values.get("Enabled"))))
        return found

    async def bss_ssids(self, path: str) -> list[bytes]:
        """The SSIDs of the BSSs wpa_supplicant knows on the interface now."""
        ssids = []
        for bss in await self.property(path, "BSSs"):
            with contextlib.suppress(NotFound):
                ssids.append(bytes(await self.property(bss, "SSID", BSS)))
        return ssids

    # -- signals --

    @contextlib.asynccontextmanager
    async def signals(self, path: str) -> AsyncIterator[Signals]:
        """wpa_supplicant's signals from the object ``path`` while the block runs, and
        ``NameOwnerChanged`` when wpa_supplicant stops or starts."""
        bus = await self.bus.get()
        rules = [
            f"type='signal',sender='{SUPPLICANT.name}',path='{path}'",
            "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
            f"arg0='{SUPPLICANT.name}'",
        ]
        signals = Signals()

        def handler(message: Message) -> None:
            if message.message_type is not MessageType.SIGNAL:
                return
            owner_changed = (
                message.member == "NameOwnerChanged"
                and message.body[:1] == [SUPPLICANT.name]
                and message.sender == "org.freedesktop.DBus"
            )
            if message.path == path or owner_changed:
                signal = Signal(message.member or "", message.interface or "", list(message.body))
                with contextlib.suppress(asyncio.QueueFull):
                    signals.queue.put_nowait(signal)

        bus.add_message_handler(handler)
        try:
            for rule in rules:
                await match_rule(bus, rule, timeout_s=self.bus.timeout_s)
            yield signals
        finally:
            bus.remove_message_handler(handler)
            if bus.connected:
                for rule in rules:  # one added as the block was cancelled goes too
                    with contextlib.suppress(Exception):
                        await match_rule(bus, rule, timeout_s=self.bus.timeout_s, remove=True)
