"""What the network plugin answers: interfaces, addresses, counters, routes, neighbours.

The DNS, DHCP-lease and LLDP models live beside their readers (``dns.py``,
``leases.py``, ``lldp.py``), as the system plugin keeps each model with the code
that fills it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, RootModel

Family = Literal["inet", "inet6"]


class AddressRead(BaseModel):
    family: Family
    address: str
    prefix_length: int = Field(description="Bits of the network prefix (24 in 10.0.0.1/24).")
    scope: str = Field(description="global, site, link, host, or the kernel's number.")
    peer: str | None = Field(None, description="The other end of a point-to-point link.")
    broadcast: str | None = None
    dynamic: bool = Field(
        description="Learned (DHCP, router advertisement) and expiring, not configured forever."
    )
    flags: list[str] = Field(
        description="The kernel's address flags: secondary, tentative, deprecated, dadfailed…"
    )
    valid_lifetime_s: int | None = Field(description="Seconds left; null for forever.")
    preferred_lifetime_s: int | None = Field(description="Seconds left; null for forever.")


class InterfaceRead(BaseModel):
    name: str
    index: int
    kind: str = Field(
        description=(
            "ethernet, wireless, loopback, bridge, veth, vlan, macvlan, vxlan, tun, bond, "
            "wireguard, … (the kernel's link kind; ethernet for a plain Ethernet device)."
        )
    )
    mac: str | None = Field(description="The hardware address, where the link has one.")
    mtu: int
    operstate: str = Field(
        description=(
            "RFC 2863 state: up, down, lowerlayerdown, dormant, notpresent, testing, unknown."
        )
    )
    admin_up: bool = Field(description="Set up by an administrator (the UP flag).")
    carrier: bool | None = Field(description="Whether the link layer has carrier.")
    flags: list[str] = Field(description="Interface flags: up, broadcast, multicast, lower_up …")
    master: str | None = Field(description="The bridge or bond this interface is a port of.")
    parent: str | None = Field(
        description="The link this one is stacked on (a VLAN's or macvlan's parent, a veth's "
        "peer) when it is in the same namespace."
    )
    vlan_id: int | None = Field(None, description="802.1Q id, for a VLAN link.")
    netns: str | None = Field(description="The named namespace; null for the device's own.")
    speed_mbps: int | None = Field(description="Negotiated speed, where the driver reports it.")
    duplex: Literal["full", "half"] | None = None
    driver: str | None = Field(description="The kernel driver bound to the device.")
    addresses: list[AddressRead]


class InterfaceList(RootModel[list[InterfaceRead]]):
    """The interface list, encoded once per change (``hostcore.responses.Encoded``)."""


class InterfaceCounters(BaseModel):
    """The kernel's 64-bit counters (``IFLA_STATS64``) since the link was created."""

    rx_bytes: int
    tx_bytes: int
    rx_packets: int
    tx_packets: int
    rx_errors: int
    tx_errors: int
    rx_dropped: int
    tx_dropped: int
    multicast: int
    collisions: int


class InterfaceRates(BaseModel):
    interval_s: float = Field(description="Seconds between the two samples the rates come from.")
    rx_bytes_per_s: float
    tx_bytes_per_s: float
    rx_packets_per_s: float
    tx_packets_per_s: float


class InterfaceStatsRead(BaseModel):
    name: str
    index: int
    sampled_at: datetime
    counters: InterfaceCounters
    rates: InterfaceRates | None = Field(
        description=(
            "Per second, against this process's previous sample of the interface (taken "
            "by an earlier request at least a fifth of a second before, within five "
            "minutes); null on a first read, which stores the sample to compare with."
        )
    )


class LinkStateRead(BaseModel):
    name: str
    admin_up: bool
    operstate: str


class NextHopRead(BaseModel):
    gateway: str | None
    interface: str | None
    weight: int = Field(description="Relative share of traffic (the kernel's hops + 1).")


class RouteRead(BaseModel):
    family: Family
    destination: str = Field(description="A prefix such as 10.0.0.0/24, or default.")
    gateway: str | None
    interface: str | None
    source: str | None = Field(description="The preferred source address.")
    metric: int | None
    table: int = Field(description="254 main, 255 local, 253 default, or a numbered table.")
    protocol: str = Field(description="Who added it: kernel, boot, static, dhcp, ra, …")
    scope: str
    type: str = Field(description="unicast, local, broadcast, blackhole, unreachable, …")
    nexthops: list[NextHopRead] = Field(
        description="The paths of a multipath route; empty for a single path."
    )


class NeighbourRead(BaseModel):
    family: Family
    address: str
    mac: str | None
    interface: str | None
    state: list[str] = Field(
        description="NUD states: reachable, stale, delay, probe, failed, incomplete, noarp, "
        "permanent."
    )
    router: bool = Field(description="An IPv6 neighbour that announced itself as a router.")


class NamespaceRead(BaseModel):
    name: str = Field(description="The name under /run/netns (as ip netns shows it).")
    interfaces: list[str]


class PublicIpRead(BaseModel):
    address: str
    fetched_at: datetime
    cached: bool = Field(description="Answered from the cache, not a new outbound request.")


class LinkEventRead(BaseModel):
    """One ``network.links`` event: an interface appeared, changed (state, addresses,
    name, master …) or went away."""

    change: Literal["added", "changed", "removed"]
    index: int
    name: str
    interface: InterfaceRead | None = Field(description="Its state now; null once removed.")
