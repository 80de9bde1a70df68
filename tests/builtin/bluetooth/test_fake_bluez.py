# ruff: noqa: N802 - the test agent's methods are D-Bus members, named as BlueZ names them
"""The fake bluetoothd, driven with dbus-fast as any BlueZ client drives the real one.

Its exports are held to BlueZ 5.66's documentation (``DOCUMENTED`` below), then each
behaviour hostcore's Bluetooth plugin leans on is exercised over the private bus:
the object tree, properties and their signals, per-client discovery, Pair calling back
into an agent the test exports, incoming pairing, the error names, hanging and absent.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from dbus_fast import BusType, DBusError, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.introspection import Node
from dbus_fast.service import ServiceInterface, dbus_method

from tests.builtin.bluetooth.fake_bluez import (
    ADAPTER,
    AGENT,
    AGENT_MANAGER,
    AGENT_SIGNATURES,
    DEVICE,
    INTROSPECTABLE,
    MANAGER_PATH,
    NAME,
    OBJECT_MANAGER,
    PROPERTIES,
    FakeBluez,
    Peer,
    Timing,
    device_path,
)
from tests.builtin.system.fakes import NoOutput
from tests.helpers import wait_until

WITHIN_S = 5.0  # bounds a wait only a fake that never moves on would reach
HCI0 = f"{MANAGER_PATH}/hci0"
HEADSET = Peer("00:1B:66:AA:00:01", "Headset", kind="bredr", device_class=0x240404,
               uuids=("0000110b-0000-1000-8000-00805f9b34fb",))  # fmt: skip
WATCH = Peer("C4:00:00:00:00:02", "Watch", kind="le", address_type="random", appearance=0x00C1)
AUDIO_SOURCE = "0000110a-0000-1000-8000-00805f9b34fb"
PHONE = Peer("AA:BB:CC:DD:EE:03", "Pixel", kind="dual", pairing="confirmation", passkey=123456,
             rssi=-70, rssi_trace=(-69, -50), uuids=(AUDIO_SOURCE,))  # fmt: skip
KEYBOARD = Peer("AA:BB:CC:DD:EE:04", "Keyboard", pairing="passkey-entry", passkey=4711)
OLD_KEYBOARD = Peer("AA:BB:CC:DD:EE:06", "Old keyboard", pairing="pin-code", pin="0000")
SPEAKER = Peer("AA:BB:CC:DD:EE:07", "Speaker", pairing="passkey-display", passkey=42)
STUBBORN = Peer("AA:BB:CC:DD:EE:05", "Stubborn", pairing="rejects")


# --- BlueZ 5.66's documentation, as the exports must show it ---------------------------
# (interface, kind, member) -> (in signature, out signature) for methods, (type, access)
# for properties. Lines are of doc/*-api.txt at tag 5.66 (doc/org.bluez.*.rst since 5.71).

DOCUMENTED: dict[tuple[str, str, str], tuple[str, str]] = {
    # doc/agent-api.txt
    (AGENT_MANAGER, "method", "RegisterAgent"): ("os", ""),  # :12
    (AGENT_MANAGER, "method", "UnregisterAgent"): ("o", ""),  # :45
    (AGENT_MANAGER, "method", "RequestDefaultAgent"): ("o", ""),  # :53
    # doc/adapter-api.txt
    (ADAPTER, "method", "StartDiscovery"): ("", ""),  # :12
    (ADAPTER, "method", "StopDiscovery"): ("", ""),  # :31
    (ADAPTER, "method", "RemoveDevice"): ("o", ""),  # :45
    (ADAPTER, "method", "SetDiscoveryFilter"): ("a{sv}", ""),  # :53
    (ADAPTER, "method", "GetDiscoveryFilters"): ("", "as"),  # :167
    (ADAPTER, "property", "Address"): ("s", "read"),  # :212
    (ADAPTER, "property", "AddressType"): ("s", "read"),  # :216
    (ADAPTER, "property", "Name"): ("s", "read"),  # :228
    (ADAPTER, "property", "Alias"): ("s", "readwrite"),  # :236
    (ADAPTER, "property", "Class"): ("u", "read"),  # :255
    (ADAPTER, "property", "Powered"): ("b", "readwrite"),  # :263
    (ADAPTER, "property", "PowerState"): ("s", "read"),  # :272 (experimental in 5.66)
    (ADAPTER, "property", "Discoverable"): ("b", "readwrite"),  # :287
    (ADAPTER, "property", "Pairable"): ("b", "readwrite"),  # :307
    (ADAPTER, "property", "PairableTimeout"): ("u", "readwrite"),  # :318
    (ADAPTER, "property", "DiscoverableTimeout"): ("u", "readwrite"),  # :327
    (ADAPTER, "property", "Discovering"): ("b", "read"),  # :336
    (ADAPTER, "property", "UUIDs"): ("as", "read"),  # :340
    (ADAPTER, "property", "Modalias"): ("s", "read"),  # :345
    (ADAPTER, "property", "Roles"): ("as", "read"),  # :350
    # doc/device-api.txt
    (DEVICE, "method", "Connect"): ("", ""),  # :12
    (DEVICE, "method", "Disconnect"): ("", ""),  # :43
    (DEVICE, "method", "ConnectProfile"): ("s", ""),  # :61
    (DEVICE, "method", "DisconnectProfile"): ("s", ""),  # :73
    (DEVICE, "method", "Pair"): ("", ""),  # :88
    (DEVICE, "method", "CancelPairing"): ("", ""),  # :115
    (DEVICE, "property", "Address"): ("s", "read"),  # :123
    (DEVICE, "property", "AddressType"): ("s", "read"),  # :127
    (DEVICE, "property", "Name"): ("s", "read"),  # :140
    (DEVICE, "property", "Icon"): ("s", "read"),  # :152
    (DEVICE, "property", "Class"): ("u", "read"),  # :157
    (DEVICE, "property", "Appearance"): ("q", "read"),  # :161
    (DEVICE, "property", "UUIDs"): ("as", "read"),  # :165
    (DEVICE, "property", "Paired"): ("b", "read"),  # :170
    (DEVICE, "property", "Bonded"): ("b", "read"),  # :177
    (DEVICE, "property", "Connected"): ("b", "read"),  # :183
    (DEVICE, "property", "Trusted"): ("b", "readwrite"),  # :189
    (DEVICE, "property", "Blocked"): ("b", "readwrite"),  # :194
    (DEVICE, "property", "Alias"): ("s", "readwrite"),  # :206
    (DEVICE, "property", "Adapter"): ("o", "read"),  # :219
    (DEVICE, "property", "LegacyPairing"): ("b", "read"),  # :223
    (DEVICE, "property", "RSSI"): ("n", "read"),  # :239
    (DEVICE, "property", "TxPower"): ("n", "read"),  # :244
    (DEVICE, "property", "ServicesResolved"): ("b", "read"),  # :260
    # doc/agent-api.txt: what bluetoothd calls on an agent
    (AGENT, "method", "Release"): ("", ""),  # :72
    (AGENT, "method", "RequestPinCode"): ("o", "s"),  # :80
    (AGENT, "method", "DisplayPinCode"): ("os", ""),  # :91
    (AGENT, "method", "RequestPasskey"): ("o", "u"),  # :115
    (AGENT, "method", "DisplayPasskey"): ("ouq", ""),  # :126
    (AGENT, "method", "RequestConfirmation"): ("ou", ""),  # :146
    (AGENT, "method", "RequestAuthorization"): ("o", ""),  # :161
    (AGENT, "method", "AuthorizeService"): ("os", ""),  # :174
    (AGENT, "method", "Cancel"): ("", ""),  # :182
    # The D-Bus specification, "org.freedesktop.DBus.ObjectManager"
    (OBJECT_MANAGER, "method", "GetManagedObjects"): ("", "a{oa{sa{sv}}}"),
    (OBJECT_MANAGER, "signal", "InterfacesAdded"): ("oa{sa{sv}}", ""),
    (OBJECT_MANAGER, "signal", "InterfacesRemoved"): ("oas", ""),
}


# --- a client of the fake, and an agent of the test's own ----------------------------


class Client:
    """A connection to the private bus that keeps every signal and reply it receives, in
    the order they came."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus
        self.received: list[Message] = []

    @classmethod
    async def connect(cls) -> Client:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
        client = cls(bus)
        bus.add_message_handler(client._note)
        await client.ok(
            "/org/freedesktop/DBus", "org.freedesktop.DBus", "AddMatch", "s",
            ["type='signal',sender='org.bluez'"], destination="org.freedesktop.DBus",
        )  # fmt: skip
        return client

    def _note(self, message: Message) -> None:
        if message.message_type is not MessageType.METHOD_CALL:
            self.received.append(message)

    async def call(
        self,
        path: str,
        interface: str,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        destination: str = NAME,
    ) -> Message:
        message = Message(
            destination=destination, path=path, interface=interface, member=member,
            signature=signature, body=body or [],
        )  # fmt: skip
        async with asyncio.timeout(WITHIN_S):
            return await self.bus.call(message)

    async def ok(self, *args: Any, **kwargs: Any) -> list[Any]:
        reply = await self.call(*args, **kwargs)
        assert reply.message_type is MessageType.METHOD_RETURN, reply.body
        return list(reply.body)

    async def error(self, *args: Any, **kwargs: Any) -> tuple[str, str]:
        reply = await self.call(*args, **kwargs)
        assert reply.message_type is MessageType.ERROR, f"{args[2]} succeeded"
        return str(reply.error_name), str(reply.body[0]) if reply.body else ""

    async def get(self, path: str, interface: str, name: str) -> Any:
        (value,) = await self.ok(path, PROPERTIES, "Get", "ss", [interface, name])
        return value.value

    async def get_all(self, path: str, interface: str) -> dict[str, Any]:
        (values,) = await self.ok(path, PROPERTIES, "GetAll", "s", [interface])
        return {name: variant.value for name, variant in values.items()}

    async def set(self, path: str, interface: str, name: str, value: Variant) -> Message:
        return await self.call(path, PROPERTIES, "Set", "ssv", [interface, name, value])

    async def managed(self) -> dict[str, dict[str, dict[str, Any]]]:
        (objects,) = await self.ok("/", OBJECT_MANAGER, "GetManagedObjects")
        return {
            path: {name: {k: v.value for k, v in props.items()} for name, props in ifaces.items()}
            for path, ifaces in objects.items()
        }

    def signals(self, member: str, path: str | None = None) -> list[Message]:
        return [
            m
            for m in self.received
            if m.message_type is MessageType.SIGNAL
            and m.member == member
            and (path is None or m.path == path)
        ]

    def changes(self, path: str) -> list[dict[str, Any]]:
        """The changed properties of each PropertiesChanged of ``path`` (invalidated: None)."""
        return [
            {name: v.value for name, v in m.body[1].items()} | dict.fromkeys(m.body[2])
            for m in self.signals("PropertiesChanged", path)
        ]

    async def wait_change(self, path: str, name: str, value: Any, what: str) -> None:
        await wait_until(
            lambda: any(c.get(name, ...) == value for c in self.changes(path)), WITHIN_S, what
        )

    def position(self, predicate: Callable[[Message], bool]) -> int:
        return next(i for i, m in enumerate(self.received) if predicate(m))

    async def register_agent(self, agent: TestAgent, capability: str = "KeyboardDisplay") -> None:
        self.bus.export(agent.path, agent)
        await self.ok(MANAGER_PATH, AGENT_MANAGER, "RegisterAgent", "os", [agent.path, capability])


class TestAgent(ServiceInterface):
    """org.bluez.Agent1 with the documented signatures (a call of another signature is
    UnknownMethod to the fake). ``answers[member]``: a value, a DBusError, or ``"hang"``."""

    __test__ = False

    def __init__(self, path: str = "/test/agent") -> None:
        super().__init__(AGENT)
        self.path = path
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.answers: dict[str, Any] = {}
        self.release = asyncio.Event()

    async def _answer(self, member: str, *args: Any) -> Any:
        self.calls.append((member, args))
        answer = self.answers.get(member)
        if answer == "hang":
            await self.release.wait()
            raise DBusError("org.bluez.Error.Canceled", "the test ended")
        if isinstance(answer, DBusError):
            raise answer
        return answer

    def members(self) -> list[str]:
        return [member for member, _ in self.calls]

    @dbus_method()
    async def Release(self) -> NoOutput:
        await self._answer("Release")

    @dbus_method()
    async def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:
        return await self._answer("RequestPinCode", device)  # type: ignore[no-any-return]

    @dbus_method()
    async def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> NoOutput:
        await self._answer("DisplayPinCode", device, pincode)

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:
        return await self._answer("RequestPasskey", device)  # type: ignore[no-any-return]

    @dbus_method()
    async def DisplayPasskey(
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> NoOutput:
        await self._answer("DisplayPasskey", device, passkey, entered)

    @dbus_method()
    async def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> NoOutput:
        await self._answer("RequestConfirmation", device, passkey)

    @dbus_method()
    async def RequestAuthorization(self, device: DBusObjectPath) -> NoOutput:
        await self._answer("RequestAuthorization", device)

    @dbus_method()
    async def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> NoOutput:
        await self._answer("AuthorizeService", device, uuid)

    @dbus_method()
    async def Cancel(self) -> NoOutput:
        await self._answer("Cancel")


REJECTED = DBusError("org.bluez.Error.Rejected", "no")


# --- fixtures -----------------------------------------------------------------------


@pytest.fixture
def bluez_factory(private_bus: str) -> Iterator[Callable[..., FakeBluez]]:
    started: list[FakeBluez] = []

    def make(**options: Any) -> FakeBluez:
        fake = FakeBluez(private_bus, **options)
        started.append(fake)
        return fake.start()

    yield make
    for fake in started:
        fake.stop()


@pytest.fixture
def bluez(bluez_factory: Callable[..., FakeBluez]) -> FakeBluez:
    """bluetoothd with a powered hci0."""
    fake = bluez_factory()
    fake.add_adapter("hci0", powered=True)
    return fake


@pytest.fixture
async def connect(private_bus: str) -> AsyncIterator[Callable[[], Any]]:
    """``await connect()``: one more client connection, closed (its agents let go) after."""
    clients: list[Client] = []

    async def make() -> Client:
        client = await Client.connect()
        clients.append(client)
        return client

    yield make
    for client in clients:
        for interfaces in client.bus._path_exports.values():
            for interface in interfaces.values():
                if isinstance(interface, TestAgent):
                    interface.release.set()
        client.bus.disconnect()


@pytest.fixture
async def client(connect: Callable[[], Any]) -> Client:
    return await connect()  # type: ignore[no-any-return]


# --- the exports against the documentation ---------------------------------------------


def exported(xml: str, interface: str) -> dict[tuple[str, str, str], tuple[str, str]]:
    node = Node.parse(xml)
    (found,) = [i for i in node.interfaces if i.name == interface]
    members: dict[tuple[str, str, str], tuple[str, str]] = {}
    for method in found.methods:
        members[(interface, "method", method.name)] = (method.in_signature, method.out_signature)
    for signal in found.signals:
        members[(interface, "signal", signal.name)] = (signal.signature, "")
    for prop in found.properties:
        members[(interface, "property", prop.name)] = (prop.signature, prop.access.value)
    return members


async def test_the_exports_are_the_documented_members_with_their_signatures(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_device("hci0", HEADSET, paired=True)
    headset = device_path(HCI0, HEADSET.address)
    shown: dict[tuple[str, str, str], tuple[str, str]] = {}
    for path, interface in ((MANAGER_PATH, AGENT_MANAGER), (HCI0, ADAPTER), (headset, DEVICE),
                            ("/", OBJECT_MANAGER)):  # fmt: skip
        (xml,) = await client.ok(path, INTROSPECTABLE, "Introspect")
        shown |= exported(xml, interface)
    documented = {key: value for key, value in DOCUMENTED.items() if key[0] != AGENT}
    assert shown == documented
    # Agent1 is not exported but called: bluetoothd's calls must match the documentation.
    calls = {(AGENT, "method", member): sig for member, sig in AGENT_SIGNATURES.items()}
    assert calls == {key: value for key, value in DOCUMENTED.items() if key[0] == AGENT}


# --- objects and properties ---------------------------------------------------------


async def test_managed_objects_list_adapters_and_devices_as_gdbus_shows_them(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_device("hci0", HEADSET, paired=True)
    objects = await client.managed()
    headset = device_path(HCI0, HEADSET.address)
    assert set(objects) == {MANAGER_PATH, HCI0, headset}
    assert list(objects[headset]) == [INTROSPECTABLE, DEVICE, PROPERTIES]
    assert AGENT_MANAGER in objects[MANAGER_PATH]
    adapter = objects[HCI0][ADAPTER]
    assert adapter["Powered"] is True and adapter["Discovering"] is False
    assert adapter["Pairable"] is False  # AlwaysPairable=false and no agent yet
    assert "PowerState" not in adapter  # experimental in 5.66
    device = objects[headset][DEVICE]
    assert device["Paired"] is device["Bonded"] is True
    assert device["Adapter"] == HCI0 and device["Alias"] == "Headset"
    assert "RSSI" not in device and "Appearance" not in device  # optional, unset
    reply = await client.call(headset, PROPERTIES, "Get", "ss", [DEVICE, "RSSI"])
    assert (reply.error_name, reply.body) == (
        "org.freedesktop.DBus.Error.InvalidArgs", ["No such property 'RSSI'"]
    )  # fmt: skip
    unknown = await client.error(HCI0 + "/dev_00_00_00_00_00_00", DEVICE, "Pair")
    assert unknown[0] == "org.freedesktop.DBus.Error.UnknownMethod"


async def test_a_property_set_is_answered_then_signalled_and_gdbus_errors_are_kept(
    bluez: FakeBluez, client: Client
) -> None:
    reply = await client.set(HCI0, ADAPTER, "Alias", Variant("s", "kitchen"))
    assert reply.message_type is MessageType.METHOD_RETURN
    await client.wait_change(HCI0, "Alias", "kitchen", "the Alias signal")
    assert client.position(lambda m: m.reply_serial == reply.reply_serial) < client.position(
        lambda m: m.member == "PropertiesChanged"
    )
    assert await client.get(HCI0, ADAPTER, "Alias") == "kitchen"
    await client.set(HCI0, ADAPTER, "Alias", Variant("s", ""))
    assert await client.get(HCI0, ADAPTER, "Alias") == "BlueZ 5.66"  # back to the name

    await client.set(HCI0, ADAPTER, "Discoverable", Variant("b", True))
    await client.wait_change(HCI0, "Discoverable", True, "Discoverable")

    readonly = await client.set(HCI0, ADAPTER, "Discovering", Variant("b", True))
    assert (readonly.error_name, readonly.body) == (
        "org.freedesktop.DBus.Error.PropertyReadOnly", ["Property 'Discovering' is not writable"]
    )  # fmt: skip
    wrong = await client.set(HCI0, ADAPTER, "Powered", Variant("s", "yes"))
    assert wrong.error_name == "org.freedesktop.DBus.Error.InvalidSignature"
    unknown = await client.set(HCI0, ADAPTER, "Colour", Variant("s", "blue"))
    assert unknown.error_name == "org.freedesktop.DBus.Error.UnknownProperty"


async def test_discoverable_times_out_as_the_kernel_ends_it(
    bluez_factory: Callable[..., FakeBluez], client: Client
) -> None:
    bluez = bluez_factory(timing=Timing(time_scale=0.01))
    bluez.add_adapter("hci0", powered=True)
    await client.set(HCI0, ADAPTER, "DiscoverableTimeout", Variant("u", 5))
    await client.set(HCI0, ADAPTER, "Discoverable", Variant("b", True))
    await client.wait_change(HCI0, "Discoverable", False, "the timeout to end it")
    assert [c["Discoverable"] for c in client.changes(HCI0) if "Discoverable" in c] == [
        True, False,
    ]  # fmt: skip


# --- discovery ---------------------------------------------------------------------------


async def test_discovery_is_per_client_and_ends_with_the_client_that_leaves(
    bluez: FakeBluez, connect: Callable[[], Any], client: Client
) -> None:
    first, second = await connect(), await connect()
    await first.ok(HCI0, ADAPTER, "StartDiscovery")
    assert await first.error(HCI0, ADAPTER, "StartDiscovery") == (
        "org.bluez.Error.InProgress", "Operation already in progress"
    )  # fmt: skip
    await client.wait_change(HCI0, "Discovering", True, "discovery to start")
    assert await second.error(HCI0, ADAPTER, "StopDiscovery") == (
        "org.bluez.Error.Failed", "No discovery started"
    )  # fmt: skip
    await second.ok(HCI0, ADAPTER, "StartDiscovery")
    first.bus.disconnect()
    await wait_until(lambda: first.bus._disconnected, WITHIN_S, "the first client to leave")
    await second.ok(HCI0, ADAPTER, "GetDiscoveryFilters")  # after the daemon saw it leave
    assert await client.get(HCI0, ADAPTER, "Discovering") is True  # the second still has one
    second.bus.disconnect()
    await client.wait_change(HCI0, "Discovering", False, "discovery to stop with the last")
    assert [c["Discovering"] for c in client.changes(HCI0) if "Discovering" in c] == [True, False]


async def test_devices_appear_while_discovering_as_the_transport_filter_lets_them(
    bluez: FakeBluez, client: Client
) -> None:
    for peer in (HEADSET, WATCH, PHONE):
        bluez.add_peer("hci0", peer)
    invalid = {"Transport": Variant("s", "bluetooth")}
    assert await client.error(HCI0, ADAPTER, "SetDiscoveryFilter", "a{sv}", [invalid]) == (
        "org.bluez.Error.InvalidArguments", "Invalid arguments in method call"
    )  # fmt: skip
    filter_le = {"Transport": Variant("s", "le")}
    await client.ok(HCI0, ADAPTER, "SetDiscoveryFilter", "a{sv}", [filter_le])
    await client.ok(HCI0, ADAPTER, "StartDiscovery")
    watch, phone = device_path(HCI0, WATCH.address), device_path(HCI0, PHONE.address)
    headset = device_path(HCI0, HEADSET.address)

    def added() -> dict[str, Any]:
        return {m.body[0]: m.body[1] for m in client.signals("InterfacesAdded", "/")}

    await wait_until(lambda: {watch, phone} <= set(added()), WITHIN_S, "LE devices")
    assert headset not in added()  # BR/EDR only: not found by an LE scan
    assert list(added()[phone]) == [INTROSPECTABLE, DEVICE, PROPERTIES]
    assert added()[phone][DEVICE]["RSSI"].value == -70
    assert added()[watch][DEVICE]["AddressType"].value == "random"
    await client.wait_change(phone, "RSSI", -50, "the phone's RSSI updates")
    # With a filter set, every RSSI change is signalled (no 8 dBm delta).
    assert [c["RSSI"] for c in client.changes(phone)] == [-69, -50]

    await client.ok(HCI0, ADAPTER, "SetDiscoveryFilter", "a{sv}", [{}])  # back to auto
    await wait_until(lambda: headset in added(), WITHIN_S, "the headset, now BR/EDR is scanned")
    await client.ok(HCI0, ADAPTER, "StopDiscovery")
    await client.wait_change(phone, "RSSI", None, "RSSI to be invalidated")
    assert "RSSI" not in await client.get_all(phone, DEVICE)


async def test_a_temporary_device_is_removed_after_discovery_a_paired_one_stays(
    bluez_factory: Callable[..., FakeBluez], client: Client
) -> None:
    bluez = bluez_factory(timing=Timing(time_scale=0.01))
    bluez.add_adapter("hci0", powered=True)
    bluez.add_peer("hci0", WATCH)
    bluez.add_device("hci0", HEADSET, paired=True)
    await client.ok(HCI0, ADAPTER, "StartDiscovery")
    watch = device_path(HCI0, WATCH.address)
    await wait_until(lambda: bool(client.signals("InterfacesAdded", "/")), WITHIN_S, "the watch")
    await client.ok(HCI0, ADAPTER, "StopDiscovery")
    await wait_until(
        lambda: bool(client.signals("InterfacesRemoved", "/")), WITHIN_S, "TemporaryTimeout"
    )
    (removed,) = client.signals("InterfacesRemoved", "/")
    assert removed.body == [watch, [PROPERTIES, INTROSPECTABLE, DEVICE]]
    assert set(await client.managed()) == {MANAGER_PATH, HCI0, device_path(HCI0, HEADSET.address)}


# --- agents and pairing ------------------------------------------------------------------


async def test_agents_are_one_per_connection_and_pairable_follows_the_default(
    bluez: FakeBluez, connect: Callable[[], Any], client: Client
) -> None:
    agent = TestAgent()
    await client.register_agent(agent)
    await client.wait_change(HCI0, "Pairable", True, "Pairable with a default agent")
    assert await client.error(
        MANAGER_PATH, AGENT_MANAGER, "RegisterAgent", "os", ["/other", "DisplayOnly"]
    ) == ("org.bluez.Error.AlreadyExists", "Already Exists")
    other = await connect()
    assert (await other.error(
        MANAGER_PATH, AGENT_MANAGER, "RegisterAgent", "os", ["/a", "Telepathy"]
    ))[0] == "org.bluez.Error.InvalidArguments"  # fmt: skip
    assert await client.error(MANAGER_PATH, AGENT_MANAGER, "UnregisterAgent", "o", ["/x"]) == (
        "org.bluez.Error.DoesNotExist", "Does Not Exist"
    )  # fmt: skip
    await client.ok(MANAGER_PATH, AGENT_MANAGER, "UnregisterAgent", "o", [agent.path])
    await client.wait_change(HCI0, "Pairable", False, "not Pairable without an agent")
    assert agent.calls == []  # UnregisterAgent does not call Release


async def test_pair_asks_the_callers_agent_and_a_confirmed_passkey_pairs(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_peer("hci0", PHONE)
    phone = device_path(HCI0, PHONE.address)
    await client.ok(HCI0, ADAPTER, "StartDiscovery")
    await wait_until(lambda: bool(client.signals("InterfacesAdded")), WITHIN_S, "the phone")
    agent = TestAgent()
    await client.register_agent(agent, "DisplayYesNo")
    reply = await client.call(phone, DEVICE, "Pair")
    assert reply.message_type is MessageType.METHOD_RETURN, reply.body
    assert agent.calls == [("RequestConfirmation", (phone, 123456))]
    # Keys stored, services resolved, and only then Paired (device_set_paired()).
    signalled = [set(change) - {"RSSI"} for change in client.changes(phone)]
    assert [names for names in signalled if names] == [
        {"Connected"}, {"Bonded"}, {"UUIDs", "ServicesResolved"}, {"Paired"},
    ]  # fmt: skip
    assert client.position(lambda m: m.member == "PropertiesChanged" and "Paired" in m.body[1]) < (
        client.position(lambda m: m.reply_serial == reply.reply_serial)
    )
    state = await client.get_all(phone, DEVICE)
    assert state["Paired"] and state["Bonded"] and state["Connected"]
    assert await client.error(phone, DEVICE, "Pair") == (
        "org.bluez.Error.AlreadyExists", "Already Exists"
    )  # fmt: skip


async def test_an_agent_refusal_fails_authentication_and_a_refusing_peer_rejects(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_device("hci0", PHONE)
    bluez.add_device("hci0", STUBBORN)
    agent = TestAgent()
    agent.answers["RequestConfirmation"] = REJECTED
    await client.register_agent(agent)
    phone = device_path(HCI0, PHONE.address)
    # The kernel reads a negative reply as an authentication failure, whatever the error.
    assert await client.error(phone, DEVICE, "Pair") == (
        "org.bluez.Error.AuthenticationFailed", "Authentication Failed"
    )  # fmt: skip
    state = await client.get_all(phone, DEVICE)
    assert not state["Paired"] and not state["Connected"]
    stubborn = device_path(HCI0, STUBBORN.address)
    assert await client.error(stubborn, DEVICE, "Pair") == (
        "org.bluez.Error.AuthenticationRejected", "Authentication Rejected"
    )  # fmt: skip
    assert agent.members() == ["RequestConfirmation"]  # the refusing peer asked nothing


async def test_passkey_entry_pairs_with_the_right_passkey_only(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_device("hci0", KEYBOARD)
    keyboard = device_path(HCI0, KEYBOARD.address)
    agent = TestAgent()
    await client.register_agent(agent, "KeyboardOnly")
    agent.answers["RequestPasskey"] = 1234
    assert (await client.error(keyboard, DEVICE, "Pair"))[0] == (
        "org.bluez.Error.AuthenticationFailed"
    )
    agent.answers["RequestPasskey"] = 4711
    await client.ok(keyboard, DEVICE, "Pair")
    assert agent.calls == [("RequestPasskey", (keyboard,))] * 2
    assert await client.get(keyboard, DEVICE, "Paired") is True


async def test_a_legacy_pin_is_asked_for_and_a_displayed_passkey_is_shown_as_typed(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_device("hci0", OLD_KEYBOARD)
    bluez.add_device("hci0", SPEAKER)
    old, speaker = device_path(HCI0, OLD_KEYBOARD.address), device_path(HCI0, SPEAKER.address)
    agent = TestAgent()
    await client.register_agent(agent)
    assert await client.get(old, DEVICE, "LegacyPairing") is True
    agent.answers["RequestPinCode"] = "1234"
    assert (await client.error(old, DEVICE, "Pair"))[0] == "org.bluez.Error.AuthenticationFailed"
    agent.answers["RequestPinCode"] = "0000"
    await client.ok(old, DEVICE, "Pair")
    await client.ok(speaker, DEVICE, "Pair")
    shown = [args for member, args in agent.calls if member == "DisplayPasskey"]
    assert shown == [(speaker, 42, entered) for entered in range(7)]
    assert agent.members().count("RequestPinCode") == 2 and "Cancel" not in agent.members()


async def test_cancel_pairing_cancels_the_agent_and_ends_pair_as_canceled(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_device("hci0", PHONE)
    phone = device_path(HCI0, PHONE.address)
    agent = TestAgent()
    agent.answers["RequestConfirmation"] = "hang"
    await client.register_agent(agent)
    pairing = asyncio.create_task(client.call(phone, DEVICE, "Pair"))
    await wait_until(lambda: bool(agent.calls), WITHIN_S, "the agent to be asked")
    assert await client.error(phone, DEVICE, "Pair") == (
        "org.bluez.Error.InProgress",
        "In Progress",
    )
    cancel = await client.call(phone, DEVICE, "CancelPairing")
    assert cancel.message_type is MessageType.METHOD_RETURN
    paired = await pairing
    assert (paired.error_name, paired.body) == (
        "org.bluez.Error.AuthenticationCanceled", ["Authentication Canceled"]
    )  # fmt: skip
    assert client.position(lambda m: m.reply_serial == paired.reply_serial) < client.position(
        lambda m: m.reply_serial == cancel.reply_serial
    )
    await wait_until(lambda: "Cancel" in agent.members(), WITHIN_S, "Cancel on the agent")
    assert await client.error(phone, DEVICE, "CancelPairing") == (
        "org.bluez.Error.DoesNotExist", "Does Not Exist"
    )  # fmt: skip


async def test_an_agent_that_never_answers_is_cancelled_after_the_request_timeout(
    bluez_factory: Callable[..., FakeBluez], client: Client
) -> None:
    bluez = bluez_factory(timing=Timing(time_scale=0.005))  # 60 s → 0.3 s
    bluez.add_adapter("hci0", powered=True)
    bluez.add_device("hci0", PHONE)
    agent = TestAgent()
    agent.answers["RequestConfirmation"] = "hang"
    await client.register_agent(agent)
    error = await client.error(device_path(HCI0, PHONE.address), DEVICE, "Pair")
    assert error[0] == "org.bluez.Error.AuthenticationFailed"
    await wait_until(lambda: "Cancel" in agent.members(), WITHIN_S, "Cancel on the agent")
    assert [(m, outcome) for m, _, outcome in bluez.asked()] == [
        ("RequestConfirmation", "timeout"), ("Cancel", "sent"),
    ]  # fmt: skip


async def test_a_caller_without_an_agent_gets_the_default_one(
    bluez: FakeBluez, connect: Callable[[], Any], client: Client
) -> None:
    bluez.add_device("hci0", PHONE)
    settings_app = await connect()
    agent = TestAgent()
    await settings_app.register_agent(agent)  # the first agent is the default
    await client.ok(device_path(HCI0, PHONE.address), DEVICE, "Pair")
    assert agent.members() == ["RequestConfirmation"]
    assert [c.sender for c in bluez.called("Pair")] == [client.bus.unique_name]


async def test_an_incoming_pairing_asks_the_default_agent_once_pairable_and_discoverable(
    bluez: FakeBluez, client: Client
) -> None:
    agent = TestAgent()
    await client.register_agent(agent)
    await client.wait_change(HCI0, "Pairable", True, "Pairable")
    not_visible = bluez.start_incoming_pairing("hci0", PHONE)
    assert await asyncio.wait_for(asyncio.wrap_future(not_visible), WITHIN_S) == (
        "not-discoverable"
    )
    await client.set(HCI0, ADAPTER, "Discoverable", Variant("b", True))
    await client.wait_change(HCI0, "Discoverable", True, "Discoverable")
    audio = AUDIO_SOURCE
    outcome = bluez.start_incoming_pairing("hci0", PHONE, service=audio)
    assert await asyncio.wait_for(asyncio.wrap_future(outcome), WITHIN_S) == "paired"
    phone = device_path(HCI0, PHONE.address)
    assert agent.calls == [
        ("RequestConfirmation", (phone, PHONE.passkey)), ("AuthorizeService", (phone, audio)),
    ]  # fmt: skip
    assert (await client.get_all(phone, DEVICE))["Paired"] is True

    await client.set(HCI0, ADAPTER, "Pairable", Variant("b", False))
    await client.wait_change(HCI0, "Pairable", False, "not Pairable")
    refused = bluez.start_incoming_pairing("hci0", STUBBORN)
    assert await asyncio.wait_for(asyncio.wrap_future(refused), WITHIN_S) == "not-pairable"
    assert len(agent.calls) == 2


async def test_connect_block_and_remove_a_device(bluez: FakeBluez, client: Client) -> None:
    bluez.add_device("hci0", HEADSET, paired=True)
    headset = device_path(HCI0, HEADSET.address)
    await client.ok(headset, DEVICE, "Connect")
    assert (await client.get_all(headset, DEVICE))["Connected"] is True
    await client.set(headset, DEVICE, "Blocked", Variant("b", True))
    await client.wait_change(headset, "Connected", False, "blocking to disconnect")
    await client.ok(headset, DEVICE, "Disconnect")  # not connected: still answered
    assert await client.error(HCI0, ADAPTER, "RemoveDevice", "o", [HCI0 + "/dev_00"]) == (
        "org.bluez.Error.DoesNotExist", "Does Not Exist"
    )  # fmt: skip
    await client.ok(HCI0, ADAPTER, "RemoveDevice", "o", [headset])
    (removed,) = client.signals("InterfacesRemoved", "/")
    assert removed.body == [headset, [PROPERTIES, INTROSPECTABLE, DEVICE]]
    assert headset not in await client.managed()


async def test_an_unplugged_adapter_takes_its_devices_with_it(
    bluez: FakeBluez, client: Client
) -> None:
    bluez.add_device("hci0", HEADSET, paired=True)
    hci1 = bluez.add_adapter("hci1", "00:1A:7D:DA:71:14")
    headset = device_path(HCI0, HEADSET.address)

    def added() -> list[str]:
        return [m.body[0] for m in client.signals("InterfacesAdded", "/")]

    await wait_until(lambda: len(added()) == 2, WITHIN_S, "the headset and hci1")
    assert added() == [headset, hci1]
    bluez.remove_adapter("hci0")
    await wait_until(
        lambda: len(client.signals("InterfacesRemoved", "/")) == 2, WITHIN_S, "the removals"
    )
    removed = [m.body for m in client.signals("InterfacesRemoved", "/")]
    assert removed == [
        [headset, [PROPERTIES, INTROSPECTABLE, DEVICE]],
        [HCI0, [PROPERTIES, INTROSPECTABLE, ADAPTER]],
    ]
    assert set(await client.managed()) == {MANAGER_PATH, hci1}


# --- power, rfkill, hanging, absent -------------------------------------------------------


async def test_an_unpowered_adapter_answers_not_ready_and_pair_fails_authentication(
    bluez_factory: Callable[..., FakeBluez], client: Client
) -> None:
    bluez = bluez_factory()
    bluez.add_adapter("hci0")
    bluez.add_device("hci0", HEADSET, paired=True)
    bluez.add_device("hci0", PHONE)
    headset, phone = device_path(HCI0, HEADSET.address), device_path(HCI0, PHONE.address)
    not_ready = ("org.bluez.Error.NotReady", "Resource Not Ready")
    assert await client.error(HCI0, ADAPTER, "StartDiscovery") == not_ready
    assert await client.error(HCI0, ADAPTER, "StopDiscovery") == not_ready
    assert await client.error(HCI0, ADAPTER, "SetDiscoveryFilter", "a{sv}", [{}]) == not_ready
    assert await client.error(HCI0, ADAPTER, "RemoveDevice", "o", [headset]) == not_ready
    assert await client.error(headset, DEVICE, "Connect") == (
        "org.bluez.Error.NotReady", "br-connection-adapter-not-powered"
    )  # fmt: skip
    await client.register_agent(TestAgent())
    assert await client.error(phone, DEVICE, "Pair") == (
        "org.bluez.Error.AuthenticationFailed", "Authentication Failed"
    )  # fmt: skip
    discoverable = await client.set(HCI0, ADAPTER, "Discoverable", Variant("b", True))
    assert (discoverable.error_name, discoverable.body) == (
        "org.bluez.Error.Failed",
        ["Not Powered"],
    )
    await client.set(HCI0, ADAPTER, "Powered", Variant("b", True))
    await client.wait_change(HCI0, "Powered", True, "power on")
    await client.ok(HCI0, ADAPTER, "StartDiscovery")


async def test_an_rfkill_blocked_adapter_refuses_power_until_unblocked(
    bluez_factory: Callable[..., FakeBluez], client: Client
) -> None:
    bluez = bluez_factory(experimental=True)
    bluez.add_adapter("hci0", rfkill_blocked=True)
    assert await client.get(HCI0, ADAPTER, "PowerState") == "off-blocked"
    blocked = await client.set(HCI0, ADAPTER, "Powered", Variant("b", True))
    assert (blocked.error_name, blocked.body) == (
        "org.bluez.Error.Blocked", ["Blocked through rfkill"]
    )  # fmt: skip
    assert await client.get(HCI0, ADAPTER, "Powered") is False
    bluez.set_rfkill_blocked("hci0", False)  # rfkill.c: unblocking restores power
    await client.wait_change(HCI0, "Powered", True, "power after unblocking")
    assert await client.get(HCI0, ADAPTER, "PowerState") == "on"
    bluez.set_rfkill_blocked("hci0", True)
    await client.wait_change(HCI0, "PowerState", "off-blocked", "blocked again")
    assert await client.get(HCI0, ADAPTER, "Powered") is False


async def test_a_hanging_bluetoothd_never_answers(bluez: FakeBluez, client: Client) -> None:
    bluez.hanging = True
    message = Message(destination=NAME, path=HCI0, interface=ADAPTER, member="StartDiscovery")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):  # the caller's own deadline is what ends it
            await client.bus.call(message)
    assert bluez.swallowed == ["StartDiscovery"]
    bluez.hanging = False
    await client.ok(HCI0, ADAPTER, "StartDiscovery")


async def test_an_absent_bluetoothd_is_service_unknown(
    bluez_factory: Callable[..., FakeBluez], client: Client
) -> None:
    bluez_factory(absent=True)
    name, _ = await client.error("/", OBJECT_MANAGER, "GetManagedObjects")
    assert name == "org.freedesktop.DBus.Error.ServiceUnknown"


async def test_agents_are_released_when_bluetoothd_stops(bluez: FakeBluez, client: Client) -> None:
    agent = TestAgent()
    await client.register_agent(agent)
    await asyncio.to_thread(bluez.stop)
    await wait_until(lambda: agent.members() == ["Release"], WITHIN_S, "Release")
