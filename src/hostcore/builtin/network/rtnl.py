"""Rtnetlink messages (as pyroute2 decodes them) turned into hostcore's models. Pure.

Only names and numbers of the kernel's uapi (``linux/if.h``, ``if_addr.h``,
``rtnetlink.h``, ``neighbour.h``) are used here, so the mapping can be read
against the kernel headers. A message is anything with ``get(name)`` and
``[field]`` as pyroute2's ``nlmsg`` has; nothing here imports pyroute2.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hostcore.builtin.network.models import (
    AddressRead,
    Family,
    InterfaceCounters,
    NeighbourRead,
    NextHopRead,
    RouteRead,
)

ARPHRD_ETHER = 1
FOREVER = 0xFFFFFFFF  # an address lifetime that never ends

# linux/if.h, in the order ip link prints them.
IFF_FLAGS = {
    0x1: "up",
    0x2: "broadcast",
    0x4: "debug",
    0x8: "loopback",
    0x10: "pointopoint",
    0x20: "notrailers",
    0x40: "running",
    0x80: "noarp",
    0x100: "promisc",
    0x200: "allmulti",
    0x400: "master",
    0x800: "slave",
    0x1000: "multicast",
    0x2000: "portsel",
    0x4000: "automedia",
    0x8000: "dynamic",
    0x10000: "lower_up",
    0x20000: "dormant",
    0x40000: "echo",
}
IFF_UP = 0x1
# linux/if_addr.h; "permanent" is shown as dynamic=False instead.
IFA_FLAGS = {
    0x01: "secondary",
    0x02: "nodad",
    0x04: "optimistic",
    0x08: "dadfailed",
    0x10: "homeaddress",
    0x20: "deprecated",
    0x40: "tentative",
    0x100: "mngtmpaddr",
    0x200: "noprefixroute",
    0x400: "autojoin",
    0x800: "stable-privacy",
}
IFA_F_PERMANENT = 0x80
# Kinds the link type alone tells (linux/if_arp.h), for links without IFLA_LINKINFO.
ARPHRD_KINDS = {
    ARPHRD_ETHER: "ethernet",
    772: "loopback",
    801: "wireless",  # IEEE 802.11
    803: "wireless",  # 802.11 with a radiotap header: a monitor interface
    65534: "none",
}
SCOPES = {0: "global", 200: "site", 253: "link", 254: "host", 255: "nowhere"}
ROUTE_PROTOCOLS = {
    0: "unspec",
    1: "redirect",
    2: "kernel",
    3: "boot",
    4: "static",
    8: "gated",
    9: "ra",
    10: "mrt",
    11: "zebra",
    12: "bird",
    13: "dnrouted",
    14: "xorp",
    15: "ntk",
    16: "dhcp",
    17: "mrouted",
    18: "keepalived",
    42: "babel",
    99: "openr",
    186: "bgp",
    187: "isis",
    188: "ospf",
    189: "rip",
    192: "eigrp",
}
ROUTE_TYPES = {
    0: "unspec",
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
    11: "xresolve",
}
NUD_STATES = {
    0x01: "incomplete",
    0x02: "reachable",
    0x04: "stale",
    0x08: "delay",
    0x10: "probe",
    0x20: "failed",
    0x40: "noarp",
    0x80: "permanent",
}
NUD_NOARP = 0x40
NTF_ROUTER = 0x80
FAMILIES: dict[int, Family] = {socket.AF_INET: "inet", socket.AF_INET6: "inet6"}
COUNTERS = tuple(InterfaceCounters.model_fields)


class Message(Protocol):
    def get(self, key: str, default: Any = None) -> Any: ...

    def __getitem__(self, key: str) -> Any: ...


@dataclass(frozen=True)
class Link:
    """One link as a dump shows it, before the sysfs facts and addresses are added."""

    index: int
    name: str
    kind: str
    mac: str | None
    mtu: int
    operstate: str
    flags: int
    carrier: bool | None
    master: int | None
    parent: int | None  # IFLA_LINK, only when it names a link of the same namespace
    vlan_id: int | None
    link_type: int  # ARPHRD_*
    counters: InterfaceCounters | None

    @property
    def admin_up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def flag_names(self) -> list[str]:
        return [name for bit, name in IFF_FLAGS.items() if self.flags & bit]


def parse_link(message: Message) -> Link | None:
    """A link, or None for a message without a usable name (never the case for a real dump)."""
    name = message.get("IFLA_IFNAME")
    if not isinstance(name, str) or not name:
        return None
    info = message.get("IFLA_LINKINFO")
    kind = info.get("IFLA_INFO_KIND") if info is not None else None
    vlan_id = None
    data = info.get("IFLA_INFO_DATA") if info is not None else None
    if kind == "vlan" and data is not None:
        vlan_id = data.get("IFLA_VLAN_ID")
    link_type = int(message["ifi_type"])
    if not isinstance(kind, str) or not kind:
        kind = ARPHRD_KINDS.get(link_type, "other")
    carrier = message.get("IFLA_CARRIER")
    same_namespace = message.get("IFLA_LINK_NETNSID") is None
    parent = message.get("IFLA_LINK")
    return Link(
        index=int(message["index"]),
        name=name,
        kind=kind,
        mac=_mac(message.get("IFLA_ADDRESS"), link_type),
        mtu=int(message.get("IFLA_MTU") or 0),
        operstate=str(message.get("IFLA_OPERSTATE") or "UNKNOWN").lower(),
        flags=int(message["flags"]),
        carrier=None if carrier is None else bool(carrier),
        master=message.get("IFLA_MASTER") or None,
        parent=parent if same_namespace and parent and parent != message["index"] else None,
        vlan_id=vlan_id if isinstance(vlan_id, int) else None,
        link_type=link_type,
        counters=counters(message),
    )


def _mac(address: object, link_type: int) -> str | None:
    # Loopback and tunnels carry an all-zero or non-Ethernet "address": not a MAC.
    if not isinstance(address, str) or link_type not in (ARPHRD_ETHER, 801, 803):
        return None
    return address


def counters(message: Message) -> InterfaceCounters | None:
    stats = message.get("IFLA_STATS64")
    if not isinstance(stats, Mapping):
        return None
    return InterfaceCounters(**{name: int(stats.get(name, 0)) for name in COUNTERS})


def parse_address(message: Message) -> tuple[int, AddressRead] | None:
    """The interface index and the address, or None for a family other than IPv4/IPv6."""
    family = FAMILIES.get(message["family"])
    if family is None:
        return None
    # For IPv4, IFA_LOCAL is the address and IFA_ADDRESS the peer (the same unless
    # point-to-point); IPv6 has IFA_ADDRESS, and IFA_LOCAL only with a peer.
    local = message.get("IFA_LOCAL")
    address = message.get("IFA_ADDRESS")
    own = local or address
    if not isinstance(own, str):
        return None
    peer = address if local and address and address != local else None
    flags = int(message.get("IFA_FLAGS") or message["flags"])
    cache = message.get("IFA_CACHEINFO") or {}
    return int(message["index"]), AddressRead(
        family=family,
        address=own,
        prefix_length=int(message["prefixlen"]),
        scope=SCOPES.get(message["scope"], str(message["scope"])),
        peer=peer,
        broadcast=message.get("IFA_BROADCAST"),
        dynamic=not flags & IFA_F_PERMANENT,
        flags=[name for bit, name in IFA_FLAGS.items() if flags & bit],
        valid_lifetime_s=_lifetime(cache.get("ifa_valid")),
        preferred_lifetime_s=_lifetime(cache.get("ifa_preferred")),
    )


def _lifetime(value: object) -> int | None:
    return None if not isinstance(value, int) or value == FOREVER else value


def parse_route(message: Message, names: Mapping[int, str]) -> RouteRead | None:
    family = FAMILIES.get(message["family"])
    if family is None:
        return None
    destination = message.get("RTA_DST")
    length = int(message["dst_len"])
    if destination is None:
        # No RTA_DST: the all-zero address, shown as "default" when the prefix is empty.
        destination = "default" if length == 0 else ("0.0.0.0" if family == "inet" else "::")  # noqa: S104
    if destination != "default":
        destination = f"{destination}/{length}"
    table = message.get("RTA_TABLE")
    nexthops = [_next_hop(hop, names) for hop in message.get("RTA_MULTIPATH") or ()]
    return RouteRead(
        family=family,
        destination=destination,
        gateway=message.get("RTA_GATEWAY"),
        interface=_name(message.get("RTA_OIF"), names),
        source=message.get("RTA_PREFSRC"),
        metric=message.get("RTA_PRIORITY"),
        table=int(table if isinstance(table, int) else message["table"]),
        protocol=ROUTE_PROTOCOLS.get(message["proto"], str(message["proto"])),
        scope=SCOPES.get(message["scope"], str(message["scope"])),
        type=ROUTE_TYPES.get(message["type"], str(message["type"])),
        nexthops=nexthops,
    )


def _next_hop(hop: Message, names: Mapping[int, str]) -> NextHopRead:
    return NextHopRead(
        gateway=hop.get("RTA_GATEWAY"),
        interface=_name(hop.get("oif"), names),
        weight=int(hop.get("hops") or 0) + 1,
    )


def parse_neighbour(message: Message, names: Mapping[int, str]) -> NeighbourRead | None:
    """An IPv4/IPv6 neighbour; None for other families and the kernel's noarp-only entries
    (multicast and broadcast mappings, which ``ip neigh`` hides too)."""
    family = FAMILIES.get(message["family"])
    address = message.get("NDA_DST")
    state = int(message["state"])
    if family is None or not isinstance(address, str) or state == NUD_NOARP:
        return None
    return NeighbourRead(
        family=family,
        address=address,
        mac=message.get("NDA_LLADDR"),
        interface=_name(message["ifindex"], names),
        state=[name for bit, name in NUD_STATES.items() if state & bit] or ["none"],
        router=bool(int(message["flags"]) & NTF_ROUTER),
    )


def _name(index: object, names: Mapping[int, str]) -> str | None:
    if not isinstance(index, int) or index == 0:
        return None
    return names.get(index, str(index))
