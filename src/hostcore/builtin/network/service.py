"""The network plugin's service: the rules (protected interfaces, VLANs only), no HTTP.

A name a caller sends is only compared with the names the kernel lists; what goes
back to the kernel is the index it gave. ``netns`` None is the device's own
namespace, a name one under ``netns_dir``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from hostcore.builtin.network.dns import DnsRead, Resolved, read_dns
from hostcore.builtin.network.leases import LeaseRead, read_leases
from hostcore.builtin.network.linktable import LinkTable, Snapshot
from hostcore.builtin.network.lldp import LldpNeighbourRead, read_neighbours
from hostcore.builtin.network.models import (
    AddressRead,
    Family,
    InterfaceCounters,
    InterfaceList,
    InterfaceRates,
    InterfaceRead,
    InterfaceStatsRead,
    LinkStateRead,
    NamespaceRead,
    NeighbourRead,
    PublicIpRead,
    RouteRead,
)
from hostcore.builtin.network.netlink import Netlink, NotSupported
from hostcore.builtin.network.public_ip import PublicAddress
from hostcore.builtin.network.rtnl import ARPHRD_ETHER, Link
from hostcore.builtin.network.schemas import (
    LinkState,
    NetworkSettings,
    VlanCreate,
)
from hostcore.builtin.network.sysfs import DeviceFacts, device_facts
from hostcore.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    HostcoreError,
    NotFound,
    Unavailable,
)
from hostcore.netnames import MAX_IFNAME_BYTES, check_ifname
from hostcore.netns import namespace_names
from hostcore.responses import Encoded
from hostcore.runner import Runner

# Rates compare with a sample at least this old (closer ones measure noise), and no
# older than the other bound (a rate over an hour says little about now).
RATE_MIN_INTERVAL_S = 0.2
RATE_MAX_INTERVAL_S = 300.0
KEPT_SAMPLES = 256  # interfaces whose last sample is kept, per process
NO_FACTS = DeviceFacts()


def _aged(address: AddressRead, elapsed_s: int) -> AddressRead:
    """``address`` with its lifetimes as they stand ``elapsed_s`` after it was read."""
    if not elapsed_s or (address.valid_lifetime_s is None and address.preferred_lifetime_s is None):
        return address
    return address.model_copy(
        update={
            "valid_lifetime_s": _left(address.valid_lifetime_s, elapsed_s),
            "preferred_lifetime_s": _left(address.preferred_lifetime_s, elapsed_s),
        }
    )


def _left(lifetime: int | None, elapsed_s: int) -> int | None:
    return None if lifetime is None else max(0, lifetime - elapsed_s)


@dataclass(frozen=True)
class Caller:
    """Who asks for a change: the address the middleware saw (the forwarded client's
    behind a trusted proxy; ``unix`` or ``unknown`` when there is none), and the
    address their connection came in on, when it came straight to hostcore over IP."""

    address: str
    local_address: str | None = None


@dataclass(frozen=True)
class _Sample:
    at: float  # monotonic
    counters: InterfaceCounters


class NetworkService:
    def __init__(
        self, config: NetworkSettings, runner: Runner, *, netlink: Netlink | None = None
    ) -> None:
        self.config = config
        self.runner = runner
        self.class_net = config.root / "sys/class/net"
        self._netlink = netlink or Netlink(config.netns_dir)
        self.table = LinkTable(self._netlink)
        self.resolved = Resolved(timeout_s=config.dbus_timeout_s)
        url = str(config.public_ip_url) if config.public_ip_url is not None else None
        self.public = PublicAddress(
            url, timeout_s=config.public_ip_timeout_s, cache_s=config.public_ip_cache_s
        )
        # (namespace, index) -> (latest, the one before): the baseline of the next rate.
        self._samples: OrderedDict[tuple[str | None, int], tuple[_Sample, _Sample | None]] = (
            OrderedDict()
        )
        self._encoded: tuple[Hashable, Encoded] | None = None
        self._facts: tuple[Hashable, dict[int, DeviceFacts]] | None = None

    @property
    def netlink(self) -> Netlink:
        return self._netlink

    @netlink.setter
    def netlink(self, netlink: Netlink) -> None:
        """Use ``netlink`` from now on (tests point the service at their own namespace)."""
        self.table.close()
        self._netlink.close()
        self._netlink = netlink
        self.table = LinkTable(netlink)
        self._encoded = None

    async def stop(self) -> None:
        self.table.close()
        self.netlink.close()
        await self.resolved.close()

    # -- reading --

    async def _own_facts(self, snapshot: Snapshot) -> dict[int, DeviceFacts]:
        """What /sys/class/net says of each link, read once per change of the links (speed
        and duplex change with carrier, which the kernel notifies), in a thread: reading
        ``speed`` asks the driver, slow for a USB adapter."""
        kept = self._facts
        if kept is not None and kept[0] == snapshot.version:
            return kept[1]
        class_net, names = self.class_net, [(link.index, link.name) for link in snapshot.links]
        facts = await asyncio.to_thread(
            lambda: {index: device_facts(class_net, name) for index, name in names}
        )
        self._facts = (snapshot.version, facts)
        return facts

    def _interface(
        self,
        link: Link,
        addresses: list[AddressRead],
        names: Mapping[int, str],
        facts: DeviceFacts,
        netns: str | None,
    ) -> InterfaceRead:
        kind = "wireless" if facts.wireless and link.kind == "ethernet" else link.kind
        return InterfaceRead(
            name=link.name,
            index=link.index,
            kind=kind,
            mac=link.mac,
            mtu=link.mtu,
            operstate=link.operstate,
            admin_up=link.admin_up,
            carrier=link.carrier,
            flags=link.flag_names,
            master=names.get(link.master) if link.master else None,
            parent=names.get(link.parent) if link.parent else None,
            vlan_id=link.vlan_id,
            netns=netns,
            speed_mbps=facts.speed_mbps,
            duplex=facts.duplex,
            driver=facts.driver,
            addresses=addresses,
        )

    async def interfaces(self, netns: str | None = None) -> list[InterfaceRead]:
        if netns is None:
            snapshot = await self.table.snapshot()
            facts = await self._own_facts(snapshot)
            return self._from_snapshot(snapshot, facts, time.monotonic())
        links = await self.netlink.links(netns)
        by_index: dict[int, list[AddressRead]] = {}
        for index, address in await self.netlink.addresses(netns):
            by_index.setdefault(index, []).append(address)
        names = {link.index: link.name for link in links}
        return [
            self._interface(link, by_index.get(link.index, []), names, NO_FACTS, netns)
            for link in links
        ]

    def _from_snapshot(
        self, snapshot: Snapshot, facts: Mapping[int, DeviceFacts], now: float
    ) -> list[InterfaceRead]:
        elapsed = int(now - snapshot.taken_at)
        names = snapshot.names
        return [
            self._interface(
                link,
                [_aged(a, elapsed) for a in snapshot.addresses.get(link.index, [])],
                names,
                facts.get(link.index, NO_FACTS),
                None,
            )
            for link in snapshot.links
        ]

    async def interfaces_encoded(self, netns: str | None = None) -> Encoded:
        """The interface list as JSON with an ETag. The device's own is encoded once per
        change, and once a second while an address counts down its lifetime."""
        if netns is not None:
            return Encoded.of(InterfaceList(await self.interfaces(netns)))
        snapshot = await self.table.snapshot()
        now = time.monotonic()
        counting = any(
            a.valid_lifetime_s is not None or a.preferred_lifetime_s is not None
            for addresses in snapshot.addresses.values()
            for a in addresses
        )
        key = (snapshot.version, int(now - snapshot.taken_at) if counting else None)
        kept = self._encoded
        if kept is None or kept[0] != key:
            facts = await self._own_facts(snapshot)
            listing = InterfaceList(self._from_snapshot(snapshot, facts, now))
            kept = (key, Encoded.of(listing))
            self._encoded = kept
        return kept[1]

    async def interface(self, name: str, netns: str | None = None) -> InterfaceRead:
        for interface in await self.interfaces(netns):
            if interface.name == name:
                return interface
        raise NotFound(f"no interface named {name}")

    async def _links(self, netns: str | None) -> list[Link]:
        if netns is None:
            return (await self.table.snapshot()).links
        return await self.netlink.links(netns)

    async def _find(self, name: str, netns: str | None) -> tuple[Link, dict[int, str]]:
        links = await self._links(netns)
        names = {link.index: link.name for link in links}
        for link in links:
            if link.name == name:
                return link, names
        raise NotFound(f"no interface named {name}")

    async def stats(self, name: str, netns: str | None = None) -> InterfaceStatsRead:
        link, _ = await self._find(name, netns)
        link = await self.netlink.link(netns, link.index)  # its counters, read now
        if link.counters is None:
            raise Unavailable(f"the kernel keeps no counters for {name}")
        now = _Sample(time.monotonic(), link.counters)
        return InterfaceStatsRead(
            name=link.name,
            index=link.index,
            sampled_at=datetime.now(UTC),
            counters=now.counters,
            rates=self._rates((netns, link.index), now),
        )

    def _rates(self, key: tuple[str | None, int], now: _Sample) -> InterfaceRates | None:
        latest, before = self._samples.pop(key, (None, None))
        baseline = None
        for candidate in (latest, before):
            if candidate is not None and now.at - candidate.at >= RATE_MIN_INTERVAL_S:
                baseline = candidate
                break
        # Keep the newer sample only once it is far enough from the one it follows, so
        # quick polls still have a baseline a fifth of a second back.
        if latest is None or now.at - latest.at >= RATE_MIN_INTERVAL_S:
            self._samples[key] = (now, latest)
        else:
            self._samples[key] = (latest, before)
        while len(self._samples) > KEPT_SAMPLES:
            self._samples.popitem(last=False)
        if baseline is None or now.at - baseline.at > RATE_MAX_INTERVAL_S:
            return None
        interval = now.at - baseline.at
        old, new = baseline.counters, now.counters
        deltas = (
            new.rx_bytes - old.rx_bytes,
            new.tx_bytes - old.tx_bytes,
            new.rx_packets - old.rx_packets,
            new.tx_packets - old.tx_packets,
        )
        if min(deltas) < 0:
            return None  # the counters went back: the link was reset or replaced
        return InterfaceRates(
            interval_s=round(interval, 3),
            rx_bytes_per_s=deltas[0] / interval,
            tx_bytes_per_s=deltas[1] / interval,
            rx_packets_per_s=deltas[2] / interval,
            tx_packets_per_s=deltas[3] / interval,
        )

    async def routes(
        self, family: Family | None, table: int | None, netns: str | None = None
    ) -> list[RouteRead]:
        names = {link.index: link.name for link in await self._links(netns)}
        return [
            route
            for route in await self.netlink.routes(netns, names)
            if (family is None or route.family == family)
            and (table is None or route.table == table)
        ]

    async def neighbours(self, netns: str | None = None) -> list[NeighbourRead]:
        names = {link.index: link.name for link in await self._links(netns)}
        return await self.netlink.neighbours(netns, names)

    async def namespaces(self) -> list[NamespaceRead]:
        found = []
        for name in namespace_names(self.config.netns_dir):
            try:
                links = await self.netlink.links(name)
            except (NotFound, Unavailable):
                continue  # gone since the listing, or not a namespace at all
            found.append(NamespaceRead(name=name, interfaces=[link.name for link in links]))
        return found

    async def _own_names(self) -> dict[int, str]:
        return (await self.table.snapshot()).names

    async def dns(self) -> DnsRead:
        return await read_dns(self.config.root, self.resolved, await self._own_names())

    async def leases(self) -> list[LeaseRead]:
        names = await self._own_names()
        return await asyncio.to_thread(read_leases, self.config.root, names)

    async def lldp_neighbours(self) -> list[LldpNeighbourRead]:
        return await read_neighbours(
            self.runner,
            control_socket=self.config.lldpd_socket,
            timeout_s=self.config.lldp_timeout_s,
        )

    async def public_ip(self) -> PublicIpRead:
        return await self.public.get()

    # -- changing --

    async def protected(self, caller: Caller) -> set[str]:
        """The interfaces of the device's own namespace that may not be set down or
        deleted for ``caller``.

        The configured ones; and unless ``protect_caller_interface`` is off, the ones the
        caller's connection comes through: the kernel's route back to its address (from
        the address the connection came in on, so policy routing is followed), every path
        of a multipath route among them, the interface an IPv6 link-local caller is a
        neighbour on (each one with a link-local address when none is known), and when
        the caller's address is unknown or unroutable, every interface carrying a
        default route. Then, until nothing changes: the ports of a protected bridge or
        bond, and what a protected link is stacked on (a VLAN's parent, a veth's peer).
        """
        snapshot = await self.table.snapshot()
        names = snapshot.names
        found = set(self.config.protected_interfaces)
        if self.config.protect_caller_interface:
            found |= await self._carrying(caller, names)
        changed = True
        while changed:
            changed = False
            for link in snapshot.links:
                master = names.get(link.master) if link.master else None
                lower = names.get(link.parent) if link.parent else None
                if link.name not in found and master in found:
                    found.add(link.name)
                    changed = True
                if link.name in found and lower is not None and lower not in found:
                    found.add(lower)
                    changed = True
        return found

    async def _carrying(self, caller: Caller, names: Mapping[int, str]) -> set[str]:
        try:
            address = ipaddress.ip_address(caller.address)
        except ValueError:
            return await self._default_route_interfaces(names)
        if address.version == 6 and address.is_link_local:
            # No scope in a peer's link-local address: ask the neighbour tables.
            neighbours = await self.netlink.neighbours(None, names)
            known = {n.interface for n in neighbours if n.address == str(address) and n.interface}
            if known:
                return known
            interfaces = await self.interfaces()
            return {
                i.name
                for i in interfaces
                if any(a.family == "inet6" and a.scope == "link" for a in i.addresses)
            }
        try:
            index = await self.netlink.route_interface(str(address), source=caller.local_address)
        except HostcoreError:
            index = None
        if index is None or index not in names:
            return await self._default_route_interfaces(names)
        carrying = {names[index]}
        for route in await self.netlink.routes(None, names):
            hops = {hop.interface for hop in route.nexthops}
            if names[index] in hops:
                carrying |= {hop for hop in hops if hop is not None}
        return carrying

    async def _default_route_interfaces(self, names: Mapping[int, str]) -> set[str]:
        found: set[str] = set()
        for route in await self.netlink.routes(None, names):
            if route.destination == "default":
                found.update(hop.interface for hop in route.nexthops if hop.interface)
                if route.interface is not None:
                    found.add(route.interface)
        return found

    async def _refuse_if_protected(self, name: str, caller: Caller, netns: str | None) -> None:
        if self.netlink.is_own(netns) and name in await self.protected(caller):
            raise Forbidden(
                f"{name} is protected: it carries your own connection or is on the "
                "protected-interfaces list"
            )

    async def set_state(
        self, name: str, state: LinkState, caller: Caller, netns: str | None = None
    ) -> LinkStateRead:
        link, _ = await self._find(name, netns)
        if state == "down":
            await self._refuse_if_protected(name, caller, netns)
        try:
            await self.netlink.set_up(netns, link.index, state == "up")
        finally:
            self.table.invalidate()  # read your own write, before the kernel's notification
        link = await self.netlink.link(netns, link.index)
        return LinkStateRead(name=link.name, admin_up=link.admin_up, operstate=link.operstate)

    async def create_vlan(self, request: VlanCreate, netns: str | None = None) -> InterfaceRead:
        parent, names = await self._find(request.parent, netns)
        if parent.link_type != ARPHRD_ETHER:
            raise Conflict(f"{parent.name} is not an Ethernet interface: no VLAN can ride on it")
        name = request.name or f"{parent.name}.{request.vlan_id}"
        try:
            check_ifname(name)
        except ValueError:
            raise BadRequest(
                f"the default name {parent.name}.{request.vlan_id} is longer than "
                f"{MAX_IFNAME_BYTES} bytes: give a name"
            ) from None
        if name in names.values():
            raise Conflict(f"an interface named {name} exists")
        try:
            await self.netlink.add_vlan(netns, parent.index, name, request.vlan_id)
        except NotSupported as error:
            raise Unavailable(
                "the kernel has no 802.1Q VLAN support (module 8021q is not available)"
            ) from error
        finally:
            self.table.invalidate()
        return await self.interface(name, netns)

    async def delete_vlan(self, name: str, caller: Caller, netns: str | None = None) -> None:
        link, _ = await self._find(name, netns)
        if link.kind != "vlan":
            raise Conflict(f"{name} is a {link.kind} link: only VLANs are deleted here")
        await self._refuse_if_protected(name, caller, netns)
        try:
            await self.netlink.delete_link(netns, link.index)
        finally:
            self.table.invalidate()
