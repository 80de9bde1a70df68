from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from hostcore.builtin.network.dns import DnsRead
from hostcore.builtin.network.leases import LeaseRead
from hostcore.builtin.network.lldp import LldpNeighbourRead
from hostcore.builtin.network.models import (
    Family,
    InterfaceRead,
    InterfaceStatsRead,
    LinkStateRead,
    NamespaceRead,
    NeighbourRead,
    PublicIpRead,
    RouteRead,
)
from hostcore.builtin.network.schemas import (
    LinkStateUpdate,
    RouteTable,
    VlanCreate,
    route_table_number,
)
from hostcore.builtin.network.service import Caller, NetworkService
from hostcore.context import context_of
from hostcore.errors import error_responses
from hostcore.netnames import InterfaceName
from hostcore.netns import NamespaceName
from hostcore.responses import CONDITIONAL_GET, revalidated
from hostcore.security.deps import RequireScope

READ = [RequireScope("network:read")]
CONTROL = [RequireScope("network:control")]
INTERNET = [RequireScope("network:internet")]
DAEMON_ERRORS = error_responses(401, 403, 429, 502, 503, 504)
KERNEL_ERRORS = error_responses(401, 403, 404, 422, 429, 502, 503)
CHANGE_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429, 502, 503)


async def _service(request: Request) -> NetworkService:
    # async: a plain def dependency would be run in the threadpool on every request.
    service: NetworkService = request.app.state.network
    return service


async def _caller(request: Request) -> Caller:
    """The caller's address as hostcore's middleware saw it (behind a trusted proxy, the
    forwarded client's, or ``unix``/``unknown``), and the local address of a connection
    that came straight from it."""
    context = context_of(request.scope)
    address = context.client if context is not None else "unknown"
    peer, server = request.scope.get("client"), request.scope.get("server")
    if peer is None or server is None or peer[0] != address:
        return Caller(address)
    return Caller(address, str(server[0]))


Network = Annotated[NetworkService, Depends(_service)]
CallerOf = Annotated[Caller, Depends(_caller)]
Ifname = Annotated[InterfaceName, Path(description="An interface name (IFNAMSIZ rules).")]
Netns = Annotated[
    NamespaceName | None,
    Query(description="A named namespace (ip netns); the device's own when absent."),
]


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get(
        "/interfaces",
        dependencies=READ,
        response_model=list[InterfaceRead],
        responses=KERNEL_ERRORS,
        openapi_extra=CONDITIONAL_GET,
    )
    async def interfaces(request: Request, network: Network, netns: Netns = None) -> Response:
        """Every interface with its addresses, state, and the driver's speed and duplex.

        Kept current by the kernel's notifications and encoded once per change: a poller
        that sends the ``ETag`` back in ``If-None-Match`` gets 304 until something changes.
        """
        return revalidated(request, await network.interfaces_encoded(netns))

    @router.get("/interfaces/{ifname}", dependencies=READ, responses=KERNEL_ERRORS)
    async def interface(ifname: Ifname, network: Network, netns: Netns = None) -> InterfaceRead:
        return await network.interface(ifname, netns)

    @router.get("/interfaces/{ifname}/stats", dependencies=READ, responses=KERNEL_ERRORS)
    async def stats(ifname: Ifname, network: Network, netns: Netns = None) -> InterfaceStatsRead:
        """64-bit counters now, and rates against this process's previous sample."""
        return await network.stats(ifname, netns)

    @router.put("/interfaces/{ifname}/state", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def set_state(
        ifname: Ifname,
        body: LinkStateUpdate,
        network: Network,
        caller: CallerOf,
        netns: Netns = None,
    ) -> LinkStateRead:
        """Set an interface up or down; a protected one (by default the one your own
        connection comes through) is never set down: 403."""
        return await network.set_state(ifname, body.state, caller, netns)

    @router.get("/routes", dependencies=READ, responses=KERNEL_ERRORS)
    async def routes(
        network: Network,
        family: Annotated[Family | None, Query()] = None,
        table: Annotated[
            RouteTable, Query(description="main (default), local, default, all, or a number.")
        ] = "main",
        netns: Netns = None,
    ) -> list[RouteRead]:
        return await network.routes(family, route_table_number(table), netns)

    @router.get("/neighbours", dependencies=READ, responses=KERNEL_ERRORS)
    async def neighbours(network: Network, netns: Netns = None) -> list[NeighbourRead]:
        """The ARP and NDP caches."""
        return await network.neighbours(netns)

    @router.get("/dns", dependencies=READ, responses=KERNEL_ERRORS)
    async def dns(network: Network) -> DnsRead:
        """Nameservers and search domains: systemd-resolved's when resolv.conf points at
        its stub, else resolv.conf's."""
        return await network.dns()

    @router.get("/dhcp/leases", dependencies=READ, responses=KERNEL_ERRORS)
    async def leases(network: Network) -> list[LeaseRead]:
        """The DHCP clients' current leases (dhcpcd, dhclient, systemd-networkd,
        NetworkManager), from their lease files."""
        return await network.leases()

    @router.post("/vlans", status_code=201, dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def create_vlan(body: VlanCreate, network: Network, netns: Netns = None) -> InterfaceRead:
        """Add an 802.1Q VLAN link on an Ethernet interface (503 when the kernel lacks 8021q)."""
        return await network.create_vlan(body, netns)

    @router.delete(
        "/vlans/{ifname}", status_code=204, dependencies=CONTROL, responses=CHANGE_ERRORS
    )
    async def delete_vlan(
        ifname: Ifname, network: Network, caller: CallerOf, netns: Netns = None
    ) -> Response:
        """Delete a VLAN link; any other kind of link is refused (409), and so is a protected
        one (403, as for setting it down)."""
        await network.delete_vlan(ifname, caller, netns)
        return Response(status_code=204)

    @router.get("/namespaces", dependencies=READ, responses=KERNEL_ERRORS)
    async def namespaces(network: Network) -> list[NamespaceRead]:
        """The named network namespaces and their interfaces."""
        return await network.namespaces()

    @router.get(
        "/lldp/neighbours",
        dependencies=READ,
        responses=DAEMON_ERRORS,
    )
    async def lldp_neighbours(network: Network) -> list[LldpNeighbourRead]:
        """What lldpd has heard from the switches and hosts on each port (LLDP, CDP …)."""
        return await network.lldp_neighbours()

    @router.get("/public-ip", dependencies=INTERNET, responses=DAEMON_ERRORS)
    async def public_ip(network: Network) -> PublicIpRead:
        """The address a configured internet service sees (cached; off unless configured)."""
        return await network.public_ip()

    return router
