# ruff: noqa: N802 - the fake's properties are D-Bus members, named as resolved names them
"""A fake systemd-resolved on a private D-Bus daemon (the ``private_bus`` fixture).

It speaks what org.freedesktop.resolve1(5) documents for the part hostcore reads:
the bus name ``org.freedesktop.resolve1``, the object ``/org/freedesktop/resolve1``,
its interface ``org.freedesktop.resolve1.Manager`` with ``DNS`` ``a(iiay)``,
``DNSEx`` ``a(iiayqs)`` and ``Domains`` ``a(isb)``, and some of the properties
beside them that hostcore ignores (the fallback and current servers among them),
so that a ``GetAll`` answers as much as resolved's does. ``dns_ex=False`` is a
resolved older than systemd 246, which has no ``DNSEx``.

Like the system fakes (``tests/builtin/system/fakes.py``) it runs on its own event
loop in a thread, so it answers async tests and synchronous ``TestClient`` tests
alike, and on its own connection, so it can be unresponsive (method calls are
swallowed, each noted in ``swallowed``) or answer every call with a D-Bus error.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from dbus_fast import (
    BusType,
    Message,
    MessageFlag,
    MessageType,
    NameFlag,
    PropertyAccess,
    RequestNameReply,
)
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_property

from tests.builtin.system.fakes import STARTUP_TIMEOUT_S, OnItsOwnLoop

T = TypeVar("T")

BUS_NAME = "org.freedesktop.resolve1"
OBJECT_PATH = "/org/freedesktop/resolve1"
MANAGER_INTERFACE = "org.freedesktop.resolve1.Manager"
ACCESS_DENIED = "org.freedesktop.DBus.Error.AccessDenied"

AddressList = Annotated[list[tuple[int, int, bytes]], DBusSignature("a(iiay)")]
AddressExList = Annotated[list[tuple[int, int, bytes, int, str]], DBusSignature("a(iiayqs)")]
Address = Annotated[tuple[int, int, bytes], DBusSignature("(iiay)")]
AddressEx = Annotated[tuple[int, int, bytes, int, str], DBusSignature("(iiayqs)")]
DomainList = Annotated[list[tuple[int, str, bool]], DBusSignature("a(isb)")]


@dataclass(frozen=True)
class ResolvedServer:
    """A DNS server as resolved keeps it: ``ifindex`` 0 for a global one, ``port`` 0 for
    the default, ``server_name`` empty when none is set (``DNS=addr:port%ifname#name``)."""

    address: str
    ifindex: int = 0
    port: int = 0
    server_name: str = ""

    def plain(self) -> tuple[int, int, bytes]:
        parsed = ipaddress.ip_address(self.address)
        family = socket.AF_INET if parsed.version == 4 else socket.AF_INET6
        return (self.ifindex, int(family), parsed.packed)

    def extended(self) -> tuple[int, int, bytes, int, str]:
        return (*self.plain(), self.port, self.server_name)


@dataclass(frozen=True)
class ResolvedDomain:
    """A search domain, or with ``route_only`` a routing-only one (``~name``)."""

    name: str
    ifindex: int = 0
    route_only: bool = False


# The links of the default configuration, by index: what a netlink dump would name.
IFNAMES = {1: "lo", 2: "eth0", 5: "wg0"}


def default_servers() -> list[ResolvedServer]:
    """Global DNS over TLS servers from resolved.conf, then eth0's from DHCP and router
    advertisements, then a WireGuard link's."""
    return [
        ResolvedServer("9.9.9.9", port=853, server_name="dns.quad9.net"),
        ResolvedServer("2620:fe::fe", server_name="dns.quad9.net"),
        ResolvedServer("192.168.1.1", ifindex=2),
        ResolvedServer("fe80::1", ifindex=2),
        ResolvedServer("10.8.0.1", ifindex=5, port=5353),
    ]


def default_domains() -> list[ResolvedDomain]:
    """A global search domain, eth0's (one of them the global one again), and the
    WireGuard link's routing-only ones (``~vpn.example.com`` and ``~.``)."""
    return [
        ResolvedDomain("corp.example.com"),
        ResolvedDomain("lan", ifindex=2),
        ResolvedDomain("corp.example.com", ifindex=2),
        ResolvedDomain("vpn.example.com", ifindex=5, route_only=True),
        ResolvedDomain(".", ifindex=5, route_only=True),
    ]


FALLBACK_SERVERS = (
    ResolvedServer("1.1.1.1", server_name="cloudflare-dns.com"),
    ResolvedServer("8.8.8.8", server_name="dns.google"),
)


class FakeResolvedManager(ServiceInterface):
    """org.freedesktop.resolve1.Manager of a resolved before systemd 246 (no DNSEx)."""

    def __init__(self, servers: Sequence[ResolvedServer], domains: Sequence[ResolvedDomain]):
        super().__init__(MANAGER_INTERFACE)
        self.servers = list(servers)
        self.domains = list(domains)

    @dbus_property(access=PropertyAccess.READ)
    def LLMNRHostname(self) -> DBusStr:
        return "device"

    @dbus_property(access=PropertyAccess.READ)
    def LLMNR(self) -> DBusStr:
        return "yes"

    @dbus_property(access=PropertyAccess.READ)
    def MulticastDNS(self) -> DBusStr:
        return "no"

    @dbus_property(access=PropertyAccess.READ)
    def DNS(self) -> AddressList:
        return [server.plain() for server in self.servers]

    @dbus_property(access=PropertyAccess.READ)
    def FallbackDNS(self) -> AddressList:
        return [server.plain() for server in FALLBACK_SERVERS]

    @dbus_property(access=PropertyAccess.READ)
    def CurrentDNSServer(self) -> Address:
        # No server in use: resolved answers ifindex 0, AF_UNSPEC and no address bytes.
        return self.servers[0].plain() if self.servers else (0, 0, b"")

    @dbus_property(access=PropertyAccess.READ)
    def Domains(self) -> DomainList:
        return [(domain.ifindex, domain.name, domain.route_only) for domain in self.domains]

    @dbus_property(access=PropertyAccess.READ)
    def DNSSEC(self) -> DBusStr:
        return "allow-downgrade"


class FakeResolvedManagerEx(FakeResolvedManager):
    """The Manager of systemd 246 and later: DNSEx and its neighbours too."""

    @dbus_property(access=PropertyAccess.READ)
    def DNSOverTLS(self) -> DBusStr:
        return "opportunistic"

    @dbus_property(access=PropertyAccess.READ)
    def DNSEx(self) -> AddressExList:
        return [server.extended() for server in self.servers]

    @dbus_property(access=PropertyAccess.READ)
    def FallbackDNSEx(self) -> AddressExList:
        return [server.extended() for server in FALLBACK_SERVERS]

    @dbus_property(access=PropertyAccess.READ)
    def CurrentDNSServerEx(self) -> AddressEx:
        return self.servers[0].extended() if self.servers else (0, 0, b"", 0, "")

    @dbus_property(access=PropertyAccess.READ)
    def DNSStubListener(self) -> DBusStr:
        return "yes"

    @dbus_property(access=PropertyAccess.READ)
    def ResolvConfMode(self) -> DBusStr:
        return "stub"


class FakeResolved(OnItsOwnLoop):
    """The fake resolved on ``address``, served from a thread once :meth:`start` ed.

    ``unresponsive`` (may change while running) swallows every method call, noting its
    member in ``swallowed``; ``error`` (a D-Bus error name and message) answers every
    call with it. ``received`` holds the member and flags of every method call."""

    thread_name = "fake-resolved"

    def __init__(
        self,
        address: str,
        *,
        servers: Sequence[ResolvedServer] | None = None,
        domains: Sequence[ResolvedDomain] | None = None,
        dns_ex: bool = True,
        unresponsive: bool = False,
    ) -> None:
        self.address = address
        manager = FakeResolvedManagerEx if dns_ex else FakeResolvedManager
        self.manager = manager(
            default_servers() if servers is None else servers,
            default_domains() if domains is None else domains,
        )
        self.unresponsive = unresponsive
        self.error: tuple[str, str] | None = None
        self.received: list[tuple[str, MessageFlag]] = []
        self.swallowed: list[str] = []
        self._bus: MessageBus | None = None

    def members(self) -> list[str]:
        """The member of every method call received, oldest first."""
        return [member for member, _flags in self.received]

    async def _connect(self) -> None:
        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        self._bus = bus
        bus.add_message_handler(self._handle)
        bus.export(OBJECT_PATH, self.manager)
        reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"{BUS_NAME} is already taken on {self.address}")

    def _handle(self, message: Message) -> Message | bool:
        if message.message_type is not MessageType.METHOD_CALL:
            return False
        self.received.append((str(message.member), message.flags))
        if self.unresponsive:
            # True marks the message handled, so no reply is ever sent.
            self.swallowed.append(str(message.member))
            return True
        if self.error is not None:
            return Message.new_error(message, *self.error)
        return False

    async def _disconnect(self) -> None:
        bus, self._bus = self._bus, None
        if bus is None:
            return
        bus.disconnect()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STARTUP_TIMEOUT_S):
                await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]


FakeResolvedFactory = Callable[..., FakeResolved]
"""``make(servers=..., domains=..., dns_ex=..., unresponsive=...)`` -> a started fake."""
