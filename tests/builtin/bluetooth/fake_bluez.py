# ruff: noqa: N802 - the fake's methods are D-Bus members, named as BlueZ names them
"""A fake ``bluetoothd`` (BlueZ 5.66) on a private D-Bus, with scripted devices in the air.

The kernel here has no Bluetooth, so bluetoothd cannot run; this fake speaks what
bluetoothd 5.66 speaks (``doc/*-api.txt``; ``src/adapter.c``, ``src/device.c``,
``src/agent.c``, ``src/error.c``, ``gdbus/object.c``), for the parts hostcore uses.

How a test uses it::

    bluez = FakeBluez(private_bus).start()          # stop() at teardown (a fixture)
    hci0 = bluez.add_adapter("hci0", "00:1A:7D:DA:71:13", powered=True)
    phone = Peer("AA:BB:CC:DD:EE:01", "Pixel", kind="dual", pairing="confirmation",
                 passkey=123456, appears_after_s=0.05)
    bluez.add_peer("hci0", phone)                   # found while someone discovers
    bluez.add_device("hci0", headset, paired=True)  # known before the test starts
    bluez.set_rfkill_blocked("hci0", True)          # Powered=true then fails "Blocked"
    outcome = bluez.start_incoming_pairing("hci0", phone)   # a Future: "paired", ...
    bluez.hanging = True                            # method calls are never answered
    FakeBluez(private_bus, absent=True).start()     # org.bluez is not on the bus
    bluez.called("Pair"), bluez.agent_calls         # what it was asked, and what it asked

What it does as bluetoothd does:

* **Objects**: ``/`` has the ObjectManager; ``/org/bluez`` AgentManager1; adapters
  ``/org/bluez/hciN`` Adapter1; devices ``…/dev_XX_XX_XX_XX_XX_XX`` Device1. As gdbus
  does, ``InterfacesAdded``/``InterfacesRemoved`` come from ``/`` and list
  ``org.freedesktop.DBus.Introspectable`` and ``…Properties`` beside the BlueZ interface;
  an optional property (``RSSI``, ``Name``, ``Class``…) is left out of ``GetAll`` while
  unset, ``Get`` of it is ``InvalidArgs "No such property 'RSSI'"``, and its clearing is
  signalled in ``PropertiesChanged``'s invalidated list. ``PowerState`` is experimental
  in 5.66 (only with ``bluetoothd -E``): pass ``experimental=True`` to show it.
* **Discovery belongs to the caller's connection**: one session per client; Discovering
  is true while any client has one; a client that leaves the bus loses its session (and
  its filter). The filter's Transport (and RSSI) decide which :class:`Peer` s are found;
  a found device appears with RSSI, gets RSSI updates (from ``rssi_trace``; below the
  8 dBm delta only when a filter is set), loses RSSI when discovery stops and, still
  temporary, is removed ``TemporaryTimeout`` (30 s) later.
* **Agents**: one per connection; the first registered is the default. Pair asks the
  caller's agent, else the default one, as the peer's ``pairing`` says; an agent that
  answers with any error or not within 60 s makes the kernel refuse the pairing:
  ``AuthenticationFailed`` (not Rejected/Canceled — see the kernel's mgmt status
  table). ``rejects`` (the peer refuses) is ``AuthenticationRejected``; CancelPairing,
  a Pair caller leaving, or power off is ``AuthenticationCanceled`` after ``Cancel()``
  to an agent that was still asked. Pair on an unpowered adapter reaches the kernel and
  is ``AuthenticationFailed`` too, never ``NotReady``.
* **Pairable** follows the default agent (``AlwaysPairable=false``): false while none is
  registered. An **incoming pairing** (:meth:`FakeBluez.start_incoming_pairing`) asks
  the default agent, needs Pairable (and Discoverable for a new device).
* **rfkill**: setting Powered true on a blocked adapter is ``org.bluez.Error.Blocked``
  ``"Blocked through rfkill"`` (PowerState ``off-blocked``); unblocking powers it on.

Timers of bluetoothd's own (agent timeout 60 s, TemporaryTimeout 30 s, the Discoverable
and Pairable timeouts) run ``Timing.time_scale`` real seconds per BlueZ second.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypeVar

from dbus_fast import (
    BusType,
    DBusError,
    Message,
    MessageType,
    NameFlag,
    PropertyAccess,
    RequestNameReply,
    Variant,
)
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import (
    DBusBool,
    DBusDict,
    DBusInt16,
    DBusObjectPath,
    DBusSignature,
    DBusStr,
    DBusUInt16,
    DBusUInt32,
)
from dbus_fast.introspection import Node
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from tests.builtin.system.fakes import STARTUP_TIMEOUT_S, NoOutput, OnItsOwnLoop

T = TypeVar("T")

NAME = "org.bluez"
MANAGER_PATH = "/org/bluez"
ADAPTER = "org.bluez.Adapter1"
DEVICE = "org.bluez.Device1"
AGENT_MANAGER = "org.bluez.AgentManager1"
AGENT = "org.bluez.Agent1"
OBJECT_MANAGER = "org.freedesktop.DBus.ObjectManager"
PROPERTIES = "org.freedesktop.DBus.Properties"
INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
DBUS_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
DBUS_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
DBUS_UNKNOWN_PROPERTY = "org.freedesktop.DBus.Error.UnknownProperty"
DBUS_PROPERTY_READ_ONLY = "org.freedesktop.DBus.Error.PropertyReadOnly"
DBUS_INVALID_SIGNATURE = "org.freedesktop.DBus.Error.InvalidSignature"
DBUS_NO_REPLY = "org.freedesktop.DBus.Error.NoReply"

AGENT_TIMEOUT_S = 60  # REQUEST_TIMEOUT, src/agent.c
TEMPORARY_TIMEOUT_S = 30  # TemporaryTimeout, src/main.conf
RSSI_THRESHOLD = 8  # src/device.c: RSSI changes below it are not signalled (unfiltered)
# SetDiscoveryFilter's keys, src/adapter.c parsers[] (5.66; 5.71 adds AutoConnect).
DISCOVERY_FILTERS = ("UUIDs", "RSSI", "Pathloss", "Transport", "DuplicateData", "Discoverable",
                     "Pattern")  # fmt: skip
CAPABILITIES = frozenset(
    {"", "DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay"}
)
# Agent1's members as bluetoothd calls them: (in signature, out signature), doc/agent-api.txt.
AGENT_SIGNATURES = {
    "Release": ("", ""),
    "RequestPinCode": ("o", "s"),
    "DisplayPinCode": ("os", ""),
    "RequestPasskey": ("o", "u"),
    "DisplayPasskey": ("ouq", ""),
    "RequestConfirmation": ("ou", ""),
    "RequestAuthorization": ("o", ""),
    "AuthorizeService": ("os", ""),
    "Cancel": ("", ""),
}

Strings = Annotated[list[str], DBusSignature("as")]


def _error(name: str, text: str) -> DBusError:
    return DBusError("org.bluez.Error." + name, text)


# src/error.c and the strings bluetoothd passes to btd_error_failed().
def not_ready() -> DBusError:
    return _error("NotReady", "Resource Not Ready")


def invalid_args() -> DBusError:
    return _error("InvalidArguments", "Invalid arguments in method call")


def does_not_exist() -> DBusError:
    return _error("DoesNotExist", "Does Not Exist")


def already_exists() -> DBusError:
    return _error("AlreadyExists", "Already Exists")


def _unknown_method(message: Message) -> Message:
    """What libdbus answers for a member no handler took (gdbus passes it on)."""
    text = (
        f'Method "{message.member}" with signature "{message.signature}" on interface '
        f'"{message.interface}" doesn\'t exist\n'
    )
    return Message.new_error(message, DBUS_UNKNOWN_METHOD, text)


def device_path(adapter_path: str, address: str) -> str:
    return f"{adapter_path}/dev_{address.upper().replace(':', '_')}"


# --- what is in the air --------------------------------------------------------------

PairingMethod = Literal[
    "just-works",  # Secure Simple Pairing without a question when we start it
    "confirmation",  # numeric comparison: RequestConfirmation(device, passkey)
    "passkey-entry",  # the peer shows `passkey`, we type it: RequestPasskey(device)
    "passkey-display",  # we show a passkey, the peer types it: DisplayPasskey(...)
    "pin-code",  # legacy pairing: RequestPinCode(device), the peer wants `pin`
    "rejects",  # the peer refuses (HCI Pairing Not Allowed)
]


@dataclass(frozen=True)
class Peer:
    """A remote device. ``kind`` decides which Transport finds it (``dual``: any);
    ``rssi_trace`` are the readings after the first, one per scan round;
    ``appears_after_s`` counts (real seconds) from the start of discovery."""

    address: str
    name: str | None = None
    kind: Literal["bredr", "le", "dual"] = "bredr"
    address_type: Literal["public", "random"] = "public"
    device_class: int | None = None
    appearance: int | None = None
    icon: str | None = None
    rssi: int = -60
    rssi_trace: tuple[int, ...] = ()
    tx_power: int | None = None
    uuids: tuple[str, ...] = ()
    pairing: PairingMethod = "just-works"
    passkey: int = 123456
    pin: str = "0000"
    appears_after_s: float = 0.0
    in_range: bool = True  # False: a page to it times out (Pair, Connect)

    @property
    def legacy_pairing(self) -> bool:
        return self.pairing == "pin-code"


@dataclass
class Timing:
    """How long the radio takes (real seconds), and how fast bluetoothd's timers run."""

    step_s: float = 0.01  # between the steps of a connection or a pairing
    scan_round_s: float = 0.02  # one inquiry/scan round: peers found, RSSI updated
    time_scale: float = 0.05  # real seconds per second of bluetoothd's own timers


@dataclass(frozen=True)
class Agent:
    owner: str  # the unique bus name that registered it
    path: str
    capability: str


@dataclass
class AgentCall:
    """One call bluetoothd made to an agent, and how it ended: ``"returned"``, the error
    name, ``"timeout"``, ``"canceled"`` (bluetoothd gave up waiting) or ``"sent"``."""

    agent: Agent
    member: str
    args: tuple[Any, ...]
    outcome: str = "pending"
    value: Any = None


@dataclass
class ReceivedCall:
    sender: str
    path: str
    interface: str
    member: str
    args: tuple[Any, ...]


_CALL: contextvars.ContextVar[Message] = contextvars.ContextVar("bluez_call")


def _caller() -> str:
    return str(_CALL.get().sender)


# --- objects -------------------------------------------------------------------------


class _Object(ServiceInterface):
    """A BlueZ interface on one object path, with gdbus's property semantics: a getter
    answering None means the (optional) property does not exist right now."""

    def __init__(self, name: str, fake: FakeBluez, path: str) -> None:
        super().__init__(name)
        self.fake = fake
        self.path = path

    def present(self) -> dict[str, Variant]:
        values = {}
        for prop in ServiceInterface._get_properties(self):
            value = getattr(self, prop.prop_getter.__name__)
            if value is not None:
                values[prop.name] = Variant(prop.signature, value)
        return values

    def changed(self, *names: str) -> None:
        """PropertiesChanged of ``names`` with their values now (absent: invalidated)."""
        values: dict[str, Any] = {}
        invalidated = []
        for name in names:
            value = getattr(self, name)
            if value is None:
                invalidated.append(name)
            else:
                values[name] = value
        self.emit_properties_changed(values, invalidated)

    def interfaces(self) -> dict[str, dict[str, Variant]]:
        """As GetManagedObjects and InterfacesAdded show this object (gdbus's order)."""
        shown: dict[str, dict[str, Variant]] = {INTROSPECTABLE: {}, self.name: self.present()}
        if ServiceInterface._get_properties(self):
            shown[PROPERTIES] = {}
        return shown

    def after_reply(self, effect: Callable[[], None]) -> None:
        """Run ``effect`` once the current call is answered (a mgmt command completing)."""
        asyncio.get_running_loop().call_soon(effect)


class FakeObjectManager(_Object):
    """org.freedesktop.DBus.ObjectManager at ``/``, as gdbus registers it for bluetoothd."""

    def __init__(self, fake: FakeBluez) -> None:
        super().__init__(OBJECT_MANAGER, fake, "/")

    @dbus_method()
    def GetManagedObjects(self) -> Annotated[dict[str, Any], DBusSignature("a{oa{sa{sv}}}")]:
        return {path: obj.interfaces() for path, obj in self.fake.objects.items()}

    @dbus_signal()
    def InterfacesAdded(
        self, path: str, interfaces: dict[str, dict[str, Variant]]
    ) -> Annotated[list[Any], DBusSignature("oa{sa{sv}}")]:
        return [path, interfaces]

    @dbus_signal()
    def InterfacesRemoved(
        self, path: str, interfaces: list[str]
    ) -> Annotated[list[Any], DBusSignature("oas")]:
        return [path, interfaces]


class FakeAgentManager(_Object):
    """org.bluez.AgentManager1 at /org/bluez (src/agent.c)."""

    def __init__(self, fake: FakeBluez) -> None:
        super().__init__(AGENT_MANAGER, fake, MANAGER_PATH)

    @dbus_method()
    def RegisterAgent(self, agent: DBusObjectPath, capability: DBusStr) -> NoOutput:
        sender = _caller()
        if sender in self.fake.agents:
            raise already_exists()
        if capability not in CAPABILITIES:
            raise invalid_args()
        registered = Agent(sender, agent, capability or "KeyboardDisplay")
        self.fake.agents[sender] = registered
        self.fake.default_agents.append(registered)
        if len(self.fake.default_agents) == 1:
            self.fake.default_agent_changed()

    @dbus_method()
    def UnregisterAgent(self, agent: DBusObjectPath) -> NoOutput:
        registered = self.fake.agents.get(_caller())
        if registered is None or registered.path != agent:
            raise does_not_exist()
        self.fake.drop_agent(registered)

    @dbus_method()
    def RequestDefaultAgent(self, agent: DBusObjectPath) -> NoOutput:
        registered = self.fake.agents.get(_caller())
        if registered is None or registered.path != agent:
            raise does_not_exist()
        if self.fake.default_agents[0] != registered:
            self.fake.default_agents.remove(registered)
            self.fake.default_agents.insert(0, registered)
            self.fake.default_agent_changed()


@dataclass
class DiscoveryFilter:
    transport: Literal["auto", "bredr", "le"] = "auto"
    rssi: int | None = None
    pathloss: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # as the client sent it


@dataclass
class DiscoveryClient:
    filter: DiscoveryFilter | None = None
    discovering: bool = False


def parse_filter(values: dict[str, Variant]) -> DiscoveryFilter | None:
    """parse_discovery_filter_dict(), src/adapter.c: None for an empty dict."""
    if not values:
        return None
    parsed = DiscoveryFilter(raw={key: value.value for key, value in values.items()})
    types = {"UUIDs": "as", "RSSI": "n", "Pathloss": "q", "Transport": "s",
             "DuplicateData": "b", "Discoverable": "b", "Pattern": "s"}  # fmt: skip
    for key, value in values.items():
        if types.get(key) != value.signature:
            raise invalid_args()
    if "RSSI" in values:
        parsed.rssi = values["RSSI"].value
        if not -127 <= parsed.rssi <= 20:
            raise invalid_args()
    if "Pathloss" in values:
        parsed.pathloss = values["Pathloss"].value
        if parsed.pathloss > 137:  # PATHLOSS_MAX
            raise invalid_args()
    if parsed.rssi is not None and parsed.pathloss is not None:
        raise invalid_args()
    if "Transport" in values:
        if values["Transport"].value not in ("auto", "bredr", "le"):
            raise invalid_args()
        parsed.transport = values["Transport"].value
    return parsed


class FakeAdapter(_Object):
    """org.bluez.Adapter1 of one controller (src/adapter.c)."""

    def __init__(
        self,
        fake: FakeBluez,
        name: str,
        address: str,
        *,
        powered: bool,
        rfkill_blocked: bool,
        alias: str | None,
        system_name: str,
    ) -> None:
        super().__init__(ADAPTER, fake, f"{MANAGER_PATH}/{name}")
        self.hci = name
        self.address = address
        self.system_name = system_name
        self.alias: str | None = alias
        self.powered = powered and not rfkill_blocked
        self.rfkill_blocked = rfkill_blocked
        self.power_state = "off-blocked" if rfkill_blocked else ("on" if self.powered else "off")
        self.discoverable = False
        self.discoverable_timeout = 180
        self.pairable = bool(fake.default_agents)
        self.pairable_timeout = 0
        self.discovering = False
        self.clients: dict[str, DiscoveryClient] = {}
        self.air: list[Peer] = []
        self.devices: dict[str, FakeDevice] = {}  # by address
        self._scan: asyncio.Task[None] | None = None
        self._discoverable_timer: asyncio.TimerHandle | None = None
        self._pairable_timer: asyncio.TimerHandle | None = None

    # -- properties --

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.address

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return "public"

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.system_name

    @dbus_property()
    def Alias(self) -> DBusStr:
        return self.alias or self.system_name

    @Alias.setter  # type: ignore[no-redef]
    def Alias(self, value: DBusStr) -> None:
        self.alias = value or None
        self.after_reply(lambda: self.changed("Alias"))

    @dbus_property(access=PropertyAccess.READ)
    def Class(self) -> DBusUInt32:
        return 0x7C0000 if self.powered else 0

    @dbus_property()
    def Powered(self) -> DBusBool:
        return self.powered

    @Powered.setter  # type: ignore[no-redef]
    def Powered(self, value: DBusBool) -> None:
        if value == self.powered:
            return
        if value and self.rfkill_blocked:
            # property_set_mode_complete(): MGMT_STATUS_RFKILLED, mgmt_errstr()
            raise _error("Blocked", "Blocked through rfkill")
        self.after_reply(lambda: self.fake.set_powered(self, value))

    @dbus_property(access=PropertyAccess.READ)
    def PowerState(self) -> DBusStr:
        return self.power_state if self.fake.experimental else None  # type: ignore[return-value]

    @dbus_property()
    def Discoverable(self) -> DBusBool:
        return self.discoverable

    @Discoverable.setter  # type: ignore[no-redef]
    def Discoverable(self, value: DBusBool) -> None:
        if value == self.discoverable:
            return
        if value and not self.powered and self.discoverable_timeout:
            raise _error("Failed", "Not Powered")  # the kernel's set_discoverable()
        self.after_reply(lambda: self.fake.set_discoverable(self, value))

    @dbus_property()
    def DiscoverableTimeout(self) -> DBusUInt32:
        return self.discoverable_timeout

    @DiscoverableTimeout.setter  # type: ignore[no-redef]
    def DiscoverableTimeout(self, value: DBusUInt32) -> None:
        self.discoverable_timeout = value
        self.after_reply(lambda: self.changed("DiscoverableTimeout"))

    @dbus_property()
    def Pairable(self) -> DBusBool:
        return self.pairable

    @Pairable.setter  # type: ignore[no-redef]
    def Pairable(self, value: DBusBool) -> None:
        if value != self.pairable:
            self.after_reply(lambda: self.fake.set_pairable(self, value))

    @dbus_property()
    def PairableTimeout(self) -> DBusUInt32:
        return self.pairable_timeout

    @PairableTimeout.setter  # type: ignore[no-redef]
    def PairableTimeout(self, value: DBusUInt32) -> None:
        self.pairable_timeout = value
        self.after_reply(lambda: self.changed("PairableTimeout"))

    @dbus_property(access=PropertyAccess.READ)
    def Discovering(self) -> DBusBool:
        return self.discovering

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> Strings:
        return [
            "00001800-0000-1000-8000-00805f9b34fb",  # Generic Access
            "00001801-0000-1000-8000-00805f9b34fb",  # Generic Attribute
            "0000110e-0000-1000-8000-00805f9b34fb",  # A/V Remote Control
            "00001200-0000-1000-8000-00805f9b34fb",  # PnP Information
        ]

    @dbus_property(access=PropertyAccess.READ)
    def Modalias(self) -> DBusStr:
        return "usb:v1D6Bp0246d0542"  # DeviceID = bluetooth:1d6b:0246:0542 in main.conf

    @dbus_property(access=PropertyAccess.READ)
    def Roles(self) -> Strings:
        return ["central", "peripheral"]

    # -- methods --

    @dbus_method()
    async def StartDiscovery(self) -> NoOutput:
        sender = _caller()
        if not self.powered:
            raise not_ready()
        client = self.clients.get(sender)
        if client is not None and client.discovering:
            raise _error("InProgress", "Operation already in progress")
        if client is None:
            client = self.clients[sender] = DiscoveryClient()
        client.discovering = True
        self.fake.watch(sender)
        # start_discovery_complete(): the caller is answered, then Discovering is signalled.
        self.after_reply(self.fake.discovery_changed_for(self))

    @dbus_method()
    async def StopDiscovery(self) -> NoOutput:
        sender = _caller()
        if not self.powered:
            raise not_ready()
        client = self.clients.get(sender)
        if client is None or not client.discovering:
            raise _error("Failed", "No discovery started")
        self.fake.end_session(self, sender)

    @dbus_method()
    async def SetDiscoveryFilter(self, properties: DBusDict) -> NoOutput:
        sender = _caller()
        if not self.powered:
            raise not_ready()
        parsed = parse_filter(properties)
        client = self.clients.get(sender)
        if client is None:
            if parsed is None:
                return
            client = self.clients[sender] = DiscoveryClient()
            self.fake.watch(sender)
        client.filter = parsed
        if parsed is None and not client.discovering:
            del self.clients[sender]

    @dbus_method()
    def GetDiscoveryFilters(self) -> Strings:
        return list(DISCOVERY_FILTERS)

    @dbus_method()
    async def RemoveDevice(self, device: DBusObjectPath) -> NoOutput:
        found = [d for d in self.devices.values() if d.path == device]
        if not found:
            raise does_not_exist()
        if not self.powered:
            raise not_ready()
        target = found[0]
        target.temporary = True
        if target.connected:
            await self.fake.disconnect(target)
        self.fake.remove_device(target)

    # -- discovery, as the kernel runs it --

    def scan_type(self) -> set[str]:
        transports = set()
        for client in self.clients.values():
            if client.discovering:
                transport = client.filter.transport if client.filter else "auto"
                transports |= {"bredr", "le"} if transport == "auto" else {transport}
        return transports

    def rssi_floor(self) -> int | None:
        """The merged RSSI threshold: none unless every discovering client set one."""
        floors = [
            c.filter.rssi if c.filter else None for c in self.clients.values() if c.discovering
        ]
        if not floors or None in floors:
            return None
        return min(f for f in floors if f is not None)

    def filtered(self) -> bool:
        return any(c.filter for c in self.clients.values() if c.discovering)

    def finds(self, peer: Peer) -> bool:
        transports = self.scan_type()
        kinds = {"bredr", "le"} if peer.kind == "dual" else {peer.kind}
        return bool(kinds & transports)


class FakeDevice(_Object):
    """org.bluez.Device1 of one remote device (src/device.c)."""

    def __init__(self, fake: FakeBluez, adapter: FakeAdapter, peer: Peer) -> None:
        super().__init__(DEVICE, fake, device_path(adapter.path, peer.address))
        self.adapter = adapter
        self.peer = peer
        self.alias: str | None = None
        self.paired = False
        self.bonded = False
        self.trusted = False
        self.blocked = False
        self.connected = False
        self.services_resolved = False
        self.uuids: list[str] = []
        self.rssi: int | None = None
        self.tx_power: int | None = None
        self.temporary = True
        self.bonding: Bonding | None = None
        self._temporary_timer: asyncio.TimerHandle | None = None

    @dbus_property(access=PropertyAccess.READ)
    def Address(self) -> DBusStr:
        return self.peer.address.upper()

    @dbus_property(access=PropertyAccess.READ)
    def AddressType(self) -> DBusStr:
        return self.peer.address_type

    @dbus_property(access=PropertyAccess.READ)
    def Name(self) -> DBusStr:
        return self.peer.name  # type: ignore[return-value]

    @dbus_property()
    def Alias(self) -> DBusStr:
        return self.alias or self.peer.name or self.peer.address.upper().replace(":", "-")

    @Alias.setter  # type: ignore[no-redef]
    def Alias(self, value: DBusStr) -> None:
        if (value or None) != self.alias:
            self.alias = value or None
            self.changed("Alias")

    @dbus_property(access=PropertyAccess.READ)
    def Class(self) -> DBusUInt32:
        return self.peer.device_class  # type: ignore[return-value]

    @dbus_property(access=PropertyAccess.READ)
    def Appearance(self) -> DBusUInt16:
        return self.peer.appearance  # type: ignore[return-value]

    @dbus_property(access=PropertyAccess.READ)
    def Icon(self) -> DBusStr:
        return self.peer.icon  # type: ignore[return-value]

    @dbus_property(access=PropertyAccess.READ)
    def Paired(self) -> DBusBool:
        return self.paired

    @dbus_property(access=PropertyAccess.READ)
    def Bonded(self) -> DBusBool:
        return self.bonded

    @dbus_property()
    def Trusted(self) -> DBusBool:
        return self.trusted

    @Trusted.setter  # type: ignore[no-redef]
    def Trusted(self, value: DBusBool) -> None:
        if value != self.trusted:
            self.trusted = value
            if value:
                self.fake.keep(self)
            self.changed("Trusted")

    @dbus_property()
    def Blocked(self) -> DBusBool:
        return self.blocked

    @Blocked.setter  # type: ignore[no-redef]
    def Blocked(self, value: DBusBool) -> None:
        if value == self.blocked:
            return
        self.blocked = value
        if value:
            self.fake.keep(self)  # device_block(): no longer temporary
            self.fake.drop_connection(self)  # disconnect_all()
        self.changed("Blocked")

    @dbus_property(access=PropertyAccess.READ)
    def LegacyPairing(self) -> DBusBool:
        return self.peer.legacy_pairing

    @dbus_property(access=PropertyAccess.READ)
    def RSSI(self) -> DBusInt16:
        return self.rssi  # type: ignore[return-value]

    @dbus_property(access=PropertyAccess.READ)
    def Connected(self) -> DBusBool:
        return self.connected

    @dbus_property(access=PropertyAccess.READ)
    def UUIDs(self) -> Strings:
        return self.uuids

    @dbus_property(access=PropertyAccess.READ)
    def Adapter(self) -> DBusObjectPath:
        return self.adapter.path

    @dbus_property(access=PropertyAccess.READ)
    def TxPower(self) -> DBusInt16:
        return self.tx_power  # type: ignore[return-value]

    @dbus_property(access=PropertyAccess.READ)
    def ServicesResolved(self) -> DBusBool:
        return self.services_resolved

    # -- methods --

    @dbus_method()
    async def Connect(self) -> NoOutput:
        await self._connect()

    async def _connect(self) -> None:
        """connect_profiles() (BR/EDR's errors): services resolved once connected."""
        if self.bonding is not None:
            raise _error("InProgress", "br-connection-busy")
        if not self.adapter.powered:
            raise _error("NotReady", "br-connection-adapter-not-powered")
        if self.connected:
            return
        self.fake.keep(self)
        await asyncio.sleep(self.fake.timing.step_s)
        if not self.peer.in_range or self.blocked:
            raise _error("Failed", "br-connection-page-timeout")
        self.connected = True
        self.changed("Connected")
        await asyncio.sleep(self.fake.timing.step_s)
        self.fake.resolve_services(self)

    @dbus_method()
    async def Disconnect(self) -> NoOutput:
        if self.bonding is not None:
            self.fake.end_bonding(self, "AuthenticationCanceled", "Authentication Canceled")
        if self.connected:
            await self.fake.disconnect(self)

    @dbus_method()
    async def ConnectProfile(self, uuid: DBusStr) -> NoOutput:
        if not self.adapter.powered:
            raise _error("NotReady", "br-connection-adapter-not-powered")
        if uuid.lower() not in self.peer.uuids:
            raise _error("NotAvailable", "br-connection-profile-unavailable")
        await self._connect()

    @dbus_method()
    async def DisconnectProfile(self, uuid: DBusStr) -> NoOutput:
        if uuid.lower() not in self.peer.uuids:
            raise invalid_args()

    @dbus_method()
    def Pair(self) -> NoOutput:
        message = _CALL.get()
        self.fake.keep(self)
        if self.bonding is not None:
            raise _error("InProgress", "In Progress")
        if self.bonded:
            raise already_exists()
        agent = self.fake.agent_for(_caller())
        self.fake.watch(_caller())
        self.bonding = Bonding(message, agent)
        self.bonding.task = asyncio.get_running_loop().create_task(self.fake.pair(self))
        return DEFERRED  # type: ignore[return-value]

    @dbus_method()
    def CancelPairing(self) -> NoOutput:
        if self.bonding is None:
            raise does_not_exist()
        self.fake.end_bonding(self, "AuthenticationCanceled", "Authentication Canceled")


DEFERRED = object()  # a method's answer is sent later, by whoever ends what it started


@dataclass
class Bonding:
    """A Pair in progress: its call, the agent asked, and the agent call pending."""

    message: Message | None  # None: the peer started it (incoming)
    agent: Agent | None
    task: asyncio.Task[None] | None = None
    asking: AgentCall | None = None


# --- the bus connection and the daemon -----------------------------------------------


class _GdbusObjectManagerBus(MessageBus):
    """A connection whose exports do not announce themselves: dbus-fast would send one
    ``InterfacesAdded`` per interface from the object's own path; bluetoothd (gdbus)
    sends one per object from ``/``, which :class:`FakeBluez` does itself."""

    def _emit_interface_added(self, path: str, interface: ServiceInterface) -> None:
        return None

    def _emit_interface_removed(self, path: str, removed_interfaces: list[str]) -> None:
        return None


@dataclass
class FakeBluez(OnItsOwnLoop):
    """bluetoothd on ``address``: ``absent`` never connects; ``hanging`` (may change while
    running) receives method calls and never answers them (noted in ``swallowed``)."""

    address: str
    absent: bool = False
    hanging: bool = False
    experimental: bool = False  # bluetoothd -E: PowerState is shown
    timing: Timing = field(default_factory=Timing)
    swallowed: list[str] = field(default_factory=list)
    received: list[ReceivedCall] = field(default_factory=list)
    agent_calls: list[AgentCall] = field(default_factory=list)

    thread_name = "fake-bluez"

    def __post_init__(self) -> None:
        self.agents: dict[str, Agent] = {}  # by owner
        self.default_agents: list[Agent] = []  # the first is the default agent
        self.adapters: dict[str, FakeAdapter] = {}  # by hciN
        self.objects: dict[str, _Object] = {}
        self.root = FakeObjectManager(self)
        self.manager = FakeAgentManager(self)
        self.bus: MessageBus | None = None
        self._watched: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- test controls (thread-safe: each runs on the fake's loop) --

    def run(self, function: Callable[[], T]) -> T:
        """``function()`` in the fake's own thread (to read or change it safely)."""

        async def call() -> T:
            return function()

        return self._run(call())

    def add_adapter(
        self,
        name: str = "hci0",
        address: str = "00:1A:7D:DA:71:13",
        *,
        powered: bool = False,
        rfkill_blocked: bool = False,
        alias: str | None = None,
        system_name: str = "BlueZ 5.66",
    ) -> str:
        """A controller appears (at start or hotplugged); its object path."""

        def add() -> str:
            adapter = FakeAdapter(
                self,
                name,
                address,
                powered=powered,
                rfkill_blocked=rfkill_blocked,
                alias=alias,
                system_name=system_name,
            )
            self.adapters[name] = adapter
            self._export(adapter)
            return adapter.path

        return self.run(add)

    def remove_adapter(self, name: str) -> None:
        """The controller is unplugged: its devices and then it go away."""

        def remove() -> None:
            adapter = self.adapters.pop(name)
            for device in list(adapter.devices.values()):
                self.remove_device(device)
            if adapter._scan is not None:
                adapter._scan.cancel()
            self._unexport(adapter)

        self.run(remove)

    def add_peer(self, adapter: str, peer: Peer) -> None:
        """``peer`` is in the air near ``adapter``: discovery will find it."""
        self.run(lambda: self.adapters[adapter].air.append(peer))

    def add_device(
        self,
        adapter: str,
        peer: Peer,
        *,
        paired: bool = False,
        trusted: bool = False,
        connected: bool = False,
    ) -> str:
        """A device bluetoothd knows from its storage (paired, trusted) or a connection;
        its object path."""

        def add() -> str:
            device = self._new_device(self.adapters[adapter], peer)
            device.paired = device.bonded = paired
            device.trusted = trusted
            device.connected = connected
            device.temporary = not (paired or trusted)
            if paired:
                device.uuids = list(peer.uuids)
                device.services_resolved = connected
            self._export(device)
            return device.path

        return self.run(add)

    def set_rfkill_blocked(self, adapter: str, blocked: bool) -> None:
        """rfkill blocks (the controller powers off, PowerState off-blocked) or unblocks
        it (src/rfkill.c: btd_adapter_restore_powered() powers it on)."""

        def change() -> None:
            target = self.adapters[adapter]
            target.rfkill_blocked = blocked
            if blocked:
                if target.powered:
                    self.set_powered(target, False)
                target.power_state = "off-blocked"
                self._signal_power_state(target)
            else:
                target.power_state = "off"
                self.set_powered(target, True)

        self.run(change)

    def start_incoming_pairing(
        self,
        adapter: str,
        peer: Peer,
        *,
        service: str | None = None,
    ) -> concurrent.futures.Future[str]:
        """``peer`` pairs with ``adapter`` of its own accord, as a phone does; then, when
        ``service`` is given, connects that profile (AuthorizeService unless trusted).

        The future's result: ``"paired"``, ``"not-pairable"``, ``"not-discoverable"``,
        ``"no-agent"``, ``"failed"`` (the agent refused or did not answer),
        ``"service-refused"``. Await it with ``asyncio.wrap_future``: the agent that
        answers may run on the test's own loop."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(
            self._incoming(self.adapters[adapter], peer, service), self._loop
        )

    def called(self, member: str) -> list[ReceivedCall]:
        """Every call of ``member`` bluetoothd received, oldest first."""
        return self.run(lambda: [c for c in self.received if c.member == member])

    def asked(self) -> list[tuple[str, tuple[Any, ...], str]]:
        """(member, args, outcome) of every agent call, oldest first."""
        return self.run(lambda: [(c.member, c.args, c.outcome) for c in self.agent_calls])

    def device(self, adapter: str, address: str) -> FakeDevice | None:
        return self.run(lambda: self.adapters[adapter].devices.get(address.upper()))

    # -- running --

    async def _connect(self) -> None:
        if self.absent:
            return
        bus = await _GdbusObjectManagerBus(
            bus_address=self.address, bus_type=BusType.SYSTEM
        ).connect()
        self.bus = bus
        bus.add_message_handler(self._answer)
        await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="AddMatch",
                signature="s",
                body=[
                    "type='signal',sender='org.freedesktop.DBus',"
                    "interface='org.freedesktop.DBus',member='NameOwnerChanged'"
                ],
            )
        )
        bus.export("/", self.root)
        self.objects[MANAGER_PATH] = self.manager
        bus.export(MANAGER_PATH, self.manager)
        reply = await bus.request_name(NAME, NameFlag.DO_NOT_QUEUE)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"{NAME} is already taken on {self.address}")

    async def _disconnect(self) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            # agent_destroy() on exit: every agent is told it was released.
            for agent in list(self.agents.values()):
                self._send_agent(bus, agent, "Release", ())
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    await bus.call(
                        Message(
                            destination="org.freedesktop.DBus",
                            path="/org/freedesktop/DBus",
                            interface="org.freedesktop.DBus.Peer",
                            member="Ping",
                        )
                    )
            bus.disconnect()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # -- the object tree --

    def _export(self, obj: _Object) -> None:
        assert self.bus is not None, "the fake is absent or stopped"
        self.objects[obj.path] = obj
        self.bus.export(obj.path, obj)
        self.root.InterfacesAdded(obj.path, obj.interfaces())

    def _unexport(self, obj: _Object) -> None:
        assert self.bus is not None
        del self.objects[obj.path]
        self.bus.unexport(obj.path)
        # gdbus prepends each removed name: the object's own interface was removed first.
        self.root.InterfacesRemoved(obj.path, [PROPERTIES, INTROSPECTABLE, obj.name])

    def _introspect(self, path: str) -> str:
        """As gdbus answers for an object (Introspectable, its interface, Properties when
        it has any, its children) and libdbus for a path between objects (children only)."""
        standard = {interface.name: interface for interface in Node.default().interfaces}
        node = Node(path)
        target = self.root if path == "/" else self.objects.get(path)
        if target is not None:
            node.interfaces.append(standard[INTROSPECTABLE])
            node.interfaces.append(target.introspect())
            if ServiceInterface._get_properties(target):
                node.interfaces.append(standard[PROPERTIES])
        prefix = path.rstrip("/") + "/"
        children = {p[len(prefix) :].split("/")[0] for p in self.objects if p.startswith(prefix)}
        node.nodes = [Node(name) for name in sorted(children)]
        return node.tostring()

    # -- answering, as gdbus and libdbus answer --

    def _answer(self, message: Message) -> Message | bool | None:
        if message.message_type is MessageType.SIGNAL:
            if (
                message.member == "NameOwnerChanged"
                and message.sender == "org.freedesktop.DBus"
                and message.body[2] == ""
                and message.body[0] in self._watched
            ):
                self._client_left(message.body[0])
            return None
        if message.message_type is not MessageType.METHOD_CALL:
            return None
        self.received.append(
            ReceivedCall(
                str(message.sender),
                str(message.path),
                str(message.interface),
                str(message.member),
                tuple(message.body),
            )
        )
        if self.hanging:
            self.swallowed.append(str(message.member))
            return True  # handled: no answer, ever
        path = str(message.path)
        if message.interface == INTROSPECTABLE and message.member == "Introspect":
            return Message.new_method_return(message, "s", [self._introspect(path)])
        if message.interface == "org.freedesktop.DBus.Peer":
            return None  # libdbus answers Ping itself
        target = self.root if path == "/" else self.objects.get(path)
        if target is None:
            return _unknown_method(message)
        if message.interface == PROPERTIES and ServiceInterface._get_properties(target):
            return self._properties(message, target)
        if message.interface not in (None, target.name):
            return _unknown_method(message)
        for method in ServiceInterface._get_methods(target):
            if method.name == message.member and method.in_signature == message.signature:
                token = _CALL.set(message)
                try:
                    task = asyncio.get_running_loop().create_task(
                        self._reply(message, target, method)
                    )
                finally:
                    _CALL.reset(token)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return True
        return _unknown_method(message)

    async def _reply(self, message: Message, target: _Object, method: Any) -> None:
        assert self.bus is not None
        try:
            result = method.fn(target, *message.body)
            if inspect.isawaitable(result):
                result = await result
        except DBusError as error:
            self.bus.send(Message.new_error(message, error.type, error.text))
            return
        if result is DEFERRED:
            return
        body = [] if method.out_signature == "" else [result]
        self.bus.send(Message.new_method_return(message, method.out_signature, body))

    def _properties(self, message: Message, target: _Object) -> Message:
        """gdbus/object.c: properties_get(), properties_get_all(), properties_set()."""
        member, signature = message.member, message.signature
        if (member, signature) not in (("Get", "ss"), ("GetAll", "s"), ("Set", "ssv")):
            return _unknown_method(message)
        interface = message.body[0]
        if interface != target.name:
            return Message.new_error(message, DBUS_INVALID_ARGS, f"No such interface '{interface}'")
        if member == "GetAll":
            return Message.new_method_return(message, "a{sv}", [target.present()])
        name = message.body[1]
        props = {p.name: p for p in ServiceInterface._get_properties(target)}
        prop = props.get(name)
        if member == "Get":
            value = getattr(target, name) if prop is not None else None
            if value is None:
                return Message.new_error(message, DBUS_INVALID_ARGS, f"No such property '{name}'")
            return Message.new_method_return(message, "v", [Variant(prop.signature, value)])
        if prop is None:
            return Message.new_error(message, DBUS_UNKNOWN_PROPERTY, f"No such property '{name}'")
        if not prop.access.writable():
            return Message.new_error(
                message, DBUS_PROPERTY_READ_ONLY, f"Property '{name}' is not writable"
            )
        value = message.body[2]
        if value.signature != prop.signature:
            return Message.new_error(
                message, DBUS_INVALID_SIGNATURE, f"Invalid signature for '{name}'"
            )
        try:
            setattr(target, prop.prop_setter.__name__, value.value)
        except DBusError as error:
            return Message.new_error(message, error.type, error.text)
        return Message.new_method_return(message)

    # -- clients leaving the bus --

    def watch(self, owner: str) -> None:
        self._watched.add(owner)

    def _client_left(self, owner: str) -> None:
        self._watched.discard(owner)
        agent = self.agents.get(owner)
        if agent is not None:
            self.drop_agent(agent)
        for adapter in self.adapters.values():
            if owner in adapter.clients:
                self.end_session(adapter, owner, leaving=True)
            for device in adapter.devices.values():
                bonding = device.bonding
                if bonding and bonding.message is not None and bonding.message.sender == owner:
                    # create_bond_req_exit(): the agent is cancelled, the link dropped.
                    self.end_bonding(device, "AuthenticationCanceled", "Authentication Canceled")

    # -- agents --

    def agent_for(self, owner: str | None) -> Agent | None:
        """agent_get(): the caller's own agent, else the default one."""
        if owner is not None and owner in self.agents:
            return self.agents[owner]
        return self.default_agents[0] if self.default_agents else None

    def drop_agent(self, agent: Agent) -> None:
        del self.agents[agent.owner]
        was_default = self.default_agents[0] == agent
        self.default_agents.remove(agent)
        if was_default:
            self.default_agent_changed()

    def default_agent_changed(self) -> None:
        """set_io_cap() → adapter_set_io_capability(): with AlwaysPairable=false an adapter
        is bondable exactly while there is a default agent."""
        for adapter in self.adapters.values():
            if adapter.pairable != bool(self.default_agents):
                self.set_pairable(adapter, bool(self.default_agents))

    def _send_agent(
        self, bus: MessageBus, agent: Agent, member: str, args: tuple[Any, ...]
    ) -> None:
        self.agent_calls.append(AgentCall(agent, member, args, outcome="sent"))
        bus.send(
            Message(
                destination=agent.owner,
                path=agent.path,
                interface=AGENT,
                member=member,
                signature=AGENT_SIGNATURES[member][0],
                body=list(args),
            )
        )

    async def ask_agent(
        self, device: FakeDevice, agent: Agent, member: str, *args: Any
    ) -> AgentCall:
        """A call to ``agent`` that bluetoothd waits for (REQUEST_TIMEOUT); when it gives
        up waiting it sends ``Cancel()``, as agent_cancel() does."""
        assert self.bus is not None
        call = AgentCall(agent, member, args)
        self.agent_calls.append(call)
        if device.bonding is not None:
            device.bonding.asking = call
        message = Message(
            destination=agent.owner,
            path=agent.path,
            interface=AGENT,
            member=member,
            signature=AGENT_SIGNATURES[member][0],
            body=list(args),
        )
        try:
            async with asyncio.timeout(AGENT_TIMEOUT_S * self.timing.time_scale):
                reply = await self.bus.call(message)
        except TimeoutError:
            call.outcome = "timeout"
            self._send_agent(self.bus, agent, "Cancel", ())
            return call
        except asyncio.CancelledError:
            call.outcome = "canceled"
            raise
        finally:
            if device.bonding is not None:
                device.bonding.asking = None
        if reply.message_type is MessageType.ERROR:
            call.outcome = str(reply.error_name)
        elif reply.signature != AGENT_SIGNATURES[member][1]:
            call.outcome = "wrong-signature"
        else:
            call.outcome = "returned"
            call.value = reply.body[0] if reply.body else None
        return call

    # -- power and modes --

    def _signal_power_state(self, adapter: FakeAdapter) -> None:
        if self.experimental:
            adapter.changed("PowerState")

    def set_powered(self, adapter: FakeAdapter, powered: bool) -> None:
        if adapter.powered == powered:
            return
        if not powered:
            # adapter_stop(): discovery clients dropped, links and bondings gone,
            # temporary devices removed (property_set_mode(): remove_temporary_devices).
            for owner in list(adapter.clients):
                adapter.clients.pop(owner)
            self._stop_scan(adapter)
            for device in list(adapter.devices.values()):
                if device.bonding is not None:
                    self.end_bonding(device, "AuthenticationCanceled", "Authentication Canceled")
                self.drop_connection(device)
            for device in list(adapter.devices.values()):
                if device.temporary:
                    self.remove_device(device)
        adapter.powered = powered
        if adapter.power_state != "off-blocked" or powered:
            adapter.power_state = "on" if powered else "off"
        names = ["Powered", "Class"]
        if adapter.discovering and not powered:
            adapter.discovering = False
            names.append("Discovering")
        if not powered and adapter.discoverable and adapter.discoverable_timeout:
            adapter.discoverable = False  # clear_discoverable()
            names.append("Discoverable")
        if self.experimental:
            names.append("PowerState")
        adapter.changed(*names)

    def set_discoverable(self, adapter: FakeAdapter, value: bool) -> None:
        adapter.discoverable = value
        if adapter._discoverable_timer is not None:
            adapter._discoverable_timer.cancel()
            adapter._discoverable_timer = None
        if value and adapter.discoverable_timeout:
            adapter._discoverable_timer = asyncio.get_running_loop().call_later(
                adapter.discoverable_timeout * self.timing.time_scale,
                lambda: self.set_discoverable(adapter, False),
            )
        adapter.changed("Discoverable")

    def set_pairable(self, adapter: FakeAdapter, value: bool) -> None:
        adapter.pairable = value
        if adapter._pairable_timer is not None:
            adapter._pairable_timer.cancel()
            adapter._pairable_timer = None
        if value and adapter.pairable_timeout:
            adapter._pairable_timer = asyncio.get_running_loop().call_later(
                adapter.pairable_timeout * self.timing.time_scale,
                lambda: self.set_pairable(adapter, False),
            )
        adapter.changed("Pairable")

    # -- discovery --

    def discovery_changed_for(self, adapter: FakeAdapter) -> Callable[[], None]:
        def start() -> None:
            if adapter.discovering or not adapter.scan_type():
                return
            adapter.discovering = True
            adapter.changed("Discovering")
            for device in adapter.devices.values():
                if device._temporary_timer is not None:
                    device._temporary_timer.cancel()
                    device._temporary_timer = None
            adapter._scan = asyncio.get_running_loop().create_task(self._scan(adapter))

        return start

    def end_session(self, adapter: FakeAdapter, owner: str, *, leaving: bool = False) -> None:
        """discovery_stop()/discovery_remove(): the filter stays with a client still on
        the bus; the last session stops discovery (the caller is answered first)."""
        client = adapter.clients[owner]
        client.discovering = False
        if leaving or client.filter is None:
            del adapter.clients[owner]
        if not adapter.scan_type() and adapter.discovering:
            if adapter._scan is not None:
                adapter._scan.cancel()
                adapter._scan = None
            adapter.after_reply(lambda: self._stopped(adapter))

    def _stopped(self, adapter: FakeAdapter) -> None:
        if adapter.scan_type() or not adapter.discovering:
            return
        self._stop_scan(adapter)
        adapter.discovering = False
        adapter.changed("Discovering")

    def _stop_scan(self, adapter: FakeAdapter) -> None:
        """discovery_cleanup(): RSSI and TxPower of what was found are invalidated; a
        temporary device is removed TemporaryTimeout later."""
        if adapter._scan is not None:
            adapter._scan.cancel()
            adapter._scan = None
        loop = asyncio.get_running_loop()
        for device in adapter.devices.values():
            if device.rssi is not None or device.tx_power is not None:
                device.rssi = device.tx_power = None
                device.changed("RSSI", "TxPower")
            if device.temporary and not device.connected and device._temporary_timer is None:
                device._temporary_timer = loop.call_later(
                    TEMPORARY_TIMEOUT_S * self.timing.time_scale,
                    lambda d=device: self._disappeared(d),  # type: ignore[misc]
                )

    def _disappeared(self, device: FakeDevice) -> None:
        device._temporary_timer = None
        if device.temporary and not device.connected and device.path in self.objects:
            self.remove_device(device)

    async def _scan(self, adapter: FakeAdapter) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        readings: dict[str, list[int]] = {}
        while True:
            now = loop.time() - started
            for peer in adapter.air:
                if peer.appears_after_s > now or not adapter.finds(peer):
                    continue
                floor = adapter.rssi_floor()
                if peer.address.upper() not in readings:
                    readings[peer.address.upper()] = [peer.rssi, *peer.rssi_trace]
                trace = readings[peer.address.upper()]
                rssi = trace.pop(0) if len(trace) > 1 else trace[0]
                if floor is not None and rssi < floor:
                    continue
                self._found(adapter, peer, rssi)
            await asyncio.sleep(self.timing.scan_round_s)

    def _found(self, adapter: FakeAdapter, peer: Peer, rssi: int) -> None:
        device = adapter.devices.get(peer.address.upper())
        if device is None:
            device = self._new_device(adapter, peer)
            device.rssi, device.tx_power = rssi, peer.tx_power
            self._export(device)
            return
        # device_set_rssi_with_delta(): unfiltered discovery signals changes of 8 dBm up.
        threshold = 0 if adapter.filtered() else RSSI_THRESHOLD
        if device.rssi is None or (device.rssi != rssi and abs(device.rssi - rssi) >= threshold):
            device.rssi = rssi
            names = ["RSSI"]
            if device.tx_power != peer.tx_power:
                device.tx_power = peer.tx_power
                names.append("TxPower")
            device.changed(*names)

    # -- devices --

    def _new_device(self, adapter: FakeAdapter, peer: Peer) -> FakeDevice:
        device = FakeDevice(self, adapter, peer)
        adapter.devices[peer.address.upper()] = device
        return device

    def remove_device(self, device: FakeDevice) -> None:
        if device._temporary_timer is not None:
            device._temporary_timer.cancel()
        device.adapter.devices.pop(device.peer.address.upper(), None)
        self._unexport(device)

    def keep(self, device: FakeDevice) -> None:
        """btd_device_set_temporary(device, false)."""
        device.temporary = False
        if device._temporary_timer is not None:
            device._temporary_timer.cancel()
            device._temporary_timer = None

    def drop_connection(self, device: FakeDevice) -> None:
        if not device.connected:
            return
        device.connected = False
        names = ["Connected"]
        if device.services_resolved:
            device.services_resolved = False
            names.append("ServicesResolved")
        device.changed(*names)

    async def disconnect(self, device: FakeDevice) -> None:
        await asyncio.sleep(self.timing.step_s)
        self.drop_connection(device)

    def resolve_services(self, device: FakeDevice) -> None:
        names = []
        if device.uuids != list(device.peer.uuids):
            device.uuids = list(device.peer.uuids)
            names.append("UUIDs")
        if not device.services_resolved:
            device.services_resolved = True
            names.append("ServicesResolved")
        if names:
            device.changed(*names)

    # -- pairing --

    def end_bonding(self, device: FakeDevice, error: str | None, text: str = "") -> None:
        """device_bonding_complete()/device_cancel_bonding(): an agent still asked gets
        ``Cancel()`` first, then Pair is answered; a failure drops the link."""
        bonding, device.bonding = device.bonding, None
        if bonding is None:
            return
        assert self.bus is not None
        if bonding.asking is not None and bonding.agent is not None:
            bonding.asking.outcome = "canceled"
            self._send_agent(self.bus, bonding.agent, "Cancel", ())
        if bonding.task is not None and bonding.task is not asyncio.current_task():
            bonding.task.cancel()
        if bonding.message is not None:
            if error is None:
                self.bus.send(Message.new_method_return(bonding.message))
            else:
                self.bus.send(Message.new_error(bonding.message, "org.bluez.Error." + error, text))
        if error is not None:
            if not device.paired and not device.trusted:
                device.temporary = True
            self.drop_connection(device)

    def _bonded(self, device: FakeDevice) -> None:
        """Keys stored (Bonded), services resolved, then Paired (pending_paired)."""
        device.bonded = True
        device.changed("Bonded")
        self.resolve_services(device)
        device.paired = True
        device.changed("Paired")

    async def pair(self, device: FakeDevice) -> None:
        """Pair, started by us (the kernel's pairing, the agent's part in it)."""
        step = self.timing.step_s
        peer = device.peer
        await asyncio.sleep(step)
        if not device.adapter.powered:
            # The kernel refuses MGMT_OP_PAIR_DEVICE with Not Powered, which
            # new_authentication_return() reads as a failed authentication.
            self.end_bonding(device, "AuthenticationFailed", "Authentication Failed")
            return
        if not peer.in_range:
            await asyncio.sleep(step)
            self.end_bonding(device, "ConnectionAttemptFailed", "Page Timeout")
            return
        if not device.connected:
            device.connected = True
            device.changed("Connected")
        await asyncio.sleep(step)
        accepted = await self._authenticate(device, incoming=False)
        await asyncio.sleep(step)
        if accepted == "rejected-by-peer":
            self.end_bonding(device, "AuthenticationRejected", "Authentication Rejected")
        elif accepted != "accepted":
            self.end_bonding(device, "AuthenticationFailed", "Authentication Failed")
        else:
            self._bonded(device)
            self.end_bonding(device, None)

    async def _authenticate(self, device: FakeDevice, *, incoming: bool) -> str:
        """The agent's part of one pairing: ``"accepted"``, ``"rejected-by-peer"`` or
        why it failed."""
        peer = device.peer
        agent = device.bonding.agent if device.bonding else None
        if peer.pairing == "rejects":
            return "rejected-by-peer"
        if peer.pairing == "just-works" and not incoming:
            return "accepted"  # confirm_hint with a bonding of ours: auto-accepted
        if agent is None:
            return "no-agent"  # new_auth(): "No agent available for request type"
        if peer.pairing == "just-works":
            call = await self.ask_agent(device, agent, "RequestAuthorization", device.path)
            return "accepted" if call.outcome == "returned" else call.outcome
        if peer.pairing == "confirmation":
            call = await self.ask_agent(
                device, agent, "RequestConfirmation", device.path, peer.passkey
            )
            return "accepted" if call.outcome == "returned" else call.outcome
        if peer.pairing == "passkey-entry":
            call = await self.ask_agent(device, agent, "RequestPasskey", device.path)
            if call.outcome != "returned":
                return call.outcome
            return "accepted" if call.value == peer.passkey else "wrong-passkey"
        if peer.pairing == "pin-code":
            call = await self.ask_agent(device, agent, "RequestPinCode", device.path)
            if call.outcome != "returned":
                return call.outcome
            return "accepted" if call.value == peer.pin else "wrong-pin"
        # passkey-display: shown (no answer awaited), typed on the peer key by key.
        assert self.bus is not None
        for entered in range(7):
            self._send_agent(
                self.bus, agent, "DisplayPasskey", (device.path, peer.passkey, entered)
            )
            await asyncio.sleep(self.timing.step_s)
        return "accepted"

    async def _incoming(self, adapter: FakeAdapter, peer: Peer, service: str | None) -> str:
        known = adapter.devices.get(peer.address.upper())
        if not adapter.powered or (known is None and not adapter.discoverable):
            return "not-discoverable"  # the phone never finds us
        if not adapter.pairable:
            return "not-pairable"  # the kernel answers Pairing Not Allowed
        device = known
        if device is None:
            device = self._new_device(adapter, peer)
            self._export(device)
        if not device.connected:
            device.connected = True
            device.changed("Connected")
        agent = self.agent_for(None)
        bonding = device.bonding = Bonding(None, agent)
        await asyncio.sleep(self.timing.step_s)
        accepted = await self._authenticate(device, incoming=True)
        if device.bonding is not bonding:
            return "failed"  # ended meanwhile (power off, a Disconnect)
        if accepted != "accepted":
            self.end_bonding(device, "AuthenticationFailed", "Authentication Failed")
            return "no-agent" if accepted == "no-agent" else "failed"
        self.keep(device)
        self._bonded(device)
        self.end_bonding(device, None)
        if service is not None and not device.trusted:
            if agent is None:
                return "service-refused"
            call = await self.ask_agent(device, agent, "AuthorizeService", device.path, service)
            if call.outcome != "returned":
                return "service-refused"
        return "paired"
