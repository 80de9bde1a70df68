"""BlueZ over the system D-Bus: one object cache, and the calls hostcore makes.

* **Reads never wait on the bus.** The first read subscribes to BlueZ's signals
  (``InterfacesAdded``/``InterfacesRemoved`` of its ObjectManager, every
  ``PropertiesChanged`` under ``/org/bluez``) and then asks ``GetManagedObjects``.
  Signals that come while the answer is on its way are held and applied to it, in
  order (those it already has change nothing), and every one after is applied to the
  copy kept here. Later reads are answered from the copy.
* **A restarted bluetoothd** (``NameOwnerChanged`` of ``org.bluez``) or a lost bus
  connection drops the copy; the next read loads it again.
* **Every call is bounded** (``timeout_s``; a pairing has its own, longer bound). A
  missing bluetoothd, or one that does not answer in time, is a 503 naming it.
* **BlueZ's errors** (``org.bluez.Error.*``) become hostcore errors by name; BlueZ's
  own message is only logged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from typing import Any

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from hostcore.dbus import PROPERTIES_INTERFACE, DBusService
from hostcore.dbus_connection import BusConnection, match_rule
from hostcore.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HostcoreError,
    NotFound,
    Unavailable,
    UpstreamFailed,
)

logger = logging.getLogger(__name__)

BLUEZ = DBusService(
    label="BlueZ (bluetoothd)",
    name="org.bluez",
    path="/",
    interface="org.freedesktop.DBus.ObjectManager",
)
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
AGENT_MANAGER = "org.bluez.AgentManager1"
AGENT_MANAGER_PATH = "/org/bluez"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
_SIGNALS = (
    "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.ObjectManager'",
    "type='signal',sender='org.bluez',interface='org.freedesktop.DBus.Properties',"
    "member='PropertiesChanged',path_namespace='/org/bluez'",
    "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',"
    "member='NameOwnerChanged',arg0='org.bluez'",
)
_E = "org.bluez.Error."

Objects = dict[str, dict[str, dict[str, Any]]]


class PairingFailed(UpstreamFailed):
    """A pairing ended without keys: BlueZ's reason is the error's name."""


class AuthenticationFailed(PairingFailed):
    pass


class AuthenticationRejected(PairingFailed):
    pass


class AuthenticationCanceled(PairingFailed):
    pass


class AuthenticationTimeout(PairingFailed):
    pass


class ConnectionAttemptFailed(PairingFailed):
    pass


_PAIRING = {
    _E + "AuthenticationFailed": AuthenticationFailed,
    _E + "AuthenticationRejected": AuthenticationRejected,
    _E + "AuthenticationCanceled": AuthenticationCanceled,
    _E + "AuthenticationTimeout": AuthenticationTimeout,
    _E + "ConnectionAttemptFailed": ConnectionAttemptFailed,
}
_CONFLICT = {
    _E + "InProgress": "another operation on it is in progress",
    _E + "AlreadyExists": "it already is",
    _E + "AlreadyConnected": "it is already connected",
    _E + "NotConnected": "it is not connected",
    _E + "NotReady": "the adapter is not ready (powered off?)",
    _E + "Busy": "the adapter is busy",
}


def bluez_error(name: str, member: str, message: str = "") -> HostcoreError | None:
    """The hostcore error for BlueZ's documented error ``name`` (None: the common
    D-Bus mapping applies)."""
    if name in _PAIRING:
        return _PAIRING[name](f"BlueZ: {member} failed ({name.removeprefix(_E)})")
    if name in _CONFLICT:
        return Conflict(f"BlueZ refused {member}: {_CONFLICT[name]}")
    if name == _E + "DoesNotExist":
        return NotFound(f"BlueZ has no such object for {member}")
    if name in (_E + "InvalidArguments", _E + "InvalidLength", _E + "InvalidOffset"):
        return BadRequest(f"BlueZ rejected the arguments of {member}")
    if name in (_E + "NotAuthorized", _E + "NotPermitted"):
        return Forbidden(f"BlueZ refused {member}: {name.removeprefix(_E)}")
    if name in (_E + "NotSupported", _E + "NotAvailable"):
        return Unavailable(f"BlueZ cannot {member} here: {name.removeprefix(_E)}")
    if name == _E + "Blocked" or (name == _E + "Failed" and "rfkill" in message.lower()):
        return Conflict(f"BlueZ refused {member}: the adapter is blocked by rfkill")
    if name == _E + "Failed":
        return UpstreamFailed(f"BlueZ failed {member}")
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, Variant):
        return _plain(value.value)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


class BlueZ:
    """The object cache and the calls, over one lazily made connection."""

    def __init__(self, *, address: str | None = None, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.bus = BusConnection(address=address, timeout_s=timeout_s, on_lost=self._lost)
        self._objects: Objects | None = None
        self._loading: asyncio.Task[Objects] | None = None
        self._watched: MessageBus | None = None  # the connection the signals come on
        self._handled: MessageBus | None = None  # the connection _on_message listens on
        self._epoch = 0  # bumped when bluetoothd goes or comes (NameOwnerChanged)
        self._held: list[Message] | None = None  # signals that came while loading
        self._changes = 0  # signals applied to the copy, for refresh()
        # Told of every change the cache takes: (path, interface, its properties now;
        # empty when the interface went away).
        self.listeners: list[Callable[[str, str, dict[str, Any]], None]] = []

    async def close(self) -> None:
        await self.bus.close()

    def _lost(self, bus: MessageBus) -> None:
        if self._watched is bus:
            self._watched = None
            self._objects = None

    # -- the cache --

    def cached(self) -> Objects | None:
        """The copy as it is, without loading it (None before the first read)."""
        return self._objects

    async def objects(self) -> Objects:
        """Every BlueZ object with its interfaces and properties (plain values)."""
        if self._objects is not None:
            return self._objects
        task = self._loading
        if task is None or task.done():
            task = self._loading = asyncio.get_running_loop().create_task(self._load())
        return await asyncio.shield(task)

    async def _load(self) -> Objects:
        bus = await self.bus.get()
        if self._watched is not bus:
            if self._handled is not bus:
                bus.add_message_handler(self._on_message)
                self._handled = bus
            for rule in _SIGNALS:  # all of them again, until every one is in place
                await match_rule(bus, rule, timeout_s=self.timeout_s)
            self._watched = bus
        epoch = self._epoch
        self._held = []
        try:
            (managed,) = await self.call(BLUEZ, "GetManagedObjects", autostart=False)
            objects: Objects = {
                str(path): {interface: _plain(props) for interface, props in interfaces.items()}
                for path, interfaces in managed.items()
            }
            if epoch != self._epoch:
                return objects  # bluetoothd changed meanwhile: answer, but keep nothing
            # Signals that came while the answer was on its way: those sent before it are
            # in it already, and applying them again in order ends in the same state.
            self._objects = objects
            for message in self._held:
                self._apply(objects, message)
            return objects
        finally:
            self._held = None

    def _on_message(self, message: Message) -> None:
        if message.message_type is not MessageType.SIGNAL:
            return
        if message.member == "NameOwnerChanged":
            if message.sender == "org.freedesktop.DBus":
                self._epoch += 1
                self._objects = None  # bluetoothd went away or came back: read it afresh
                self._tell("/", OBJECT_MANAGER, {})
            return
        if message.sender == "org.freedesktop.DBus":
            return
        objects = self._objects
        if objects is not None:
            self._apply(objects, message)
        elif self._held is not None:
            self._held.append(message)

    def _apply(self, objects: Objects, message: Message) -> None:
        self._changes += 1
        path = message.path or ""
        if message.member == "InterfacesAdded" and len(message.body) == 2:
            added, interfaces = message.body
            entry = objects.setdefault(str(added), {})
            for interface, props in interfaces.items():
                entry[interface] = _plain(props)
                self._tell(str(added), interface, entry[interface])
        elif message.member == "InterfacesRemoved" and len(message.body) == 2:
            removed, interfaces = message.body
            entry = objects.get(str(removed), {})
            for interface in interfaces:
                entry.pop(interface, None)
                self._tell(str(removed), interface, {})
            if not entry:
                objects.pop(str(removed), None)
        elif message.member == "PropertiesChanged" and len(message.body) == 3:
            interface, changed, invalidated = message.body
            props = objects.get(path, {}).get(interface)
            if props is None:
                return
            props.update(_plain(changed))
            for name in invalidated:
                props.pop(name, None)
            self._tell(path, interface, props)

    def _tell(self, path: str, interface: str, props: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(path, interface, props)
            except Exception:
                logger.exception("a BlueZ listener failed")

    @staticmethod
    def with_interface(objects: Objects, interface: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The objects that have ``interface``, by path, with its properties."""
        for path, interfaces in sorted(objects.items()):
            props = interfaces.get(interface)
            if props is not None:
                yield path, props

    # -- calls --

    async def call(
        self,
        service: DBusService,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str | None = None,
        interface: str | None = None,
        timeout_s: float | None = None,
        autostart: bool = True,
    ) -> list[Any]:
        def errors(name: str, text: str) -> HostcoreError | None:
            return bluez_error(name, member, text)

        return await self.bus.call(
            service, member, signature, body or [], path=path, interface=interface,
            timeout_s=timeout_s, errors=errors, autostart=autostart,
        )  # fmt: skip

    async def method(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> list[Any]:
        """``member`` of ``interface`` on the BlueZ object ``path``."""
        return await self.call(
            BLUEZ, member, signature, body, path=path, interface=interface, timeout_s=timeout_s
        )

    async def set_property(self, path: str, interface: str, name: str, value: Variant) -> None:
        await self.call(
            BLUEZ, "Set", "ssv", [interface, name, value], path=path,
            interface=PROPERTIES_INTERFACE,
        )  # fmt: skip

    @property
    def subscribed(self) -> bool:
        """Whether BlueZ's signals reach the copy (so bluetoothd coming back is seen)."""
        return self._watched is not None and self._watched.connected

    async def refresh(self, path: str, interface: str) -> dict[str, Any]:
        """An object's properties read now (after a change whose signal may come later).
        The copy takes them only if no signal about the object came meanwhile: one
        handled before this coroutine resumed may be newer than the answer."""
        changes = self._changes
        (values,) = await self.call(
            BLUEZ, "GetAll", "s", [interface], path=path, interface=PROPERTIES_INTERFACE
        )
        props = {name: _plain(value) for name, value in values.items()}
        objects = self._objects
        if objects is not None and changes == self._changes and path in objects:
            objects[path].setdefault(interface, {}).update(props)
        return props
