from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from hostcore.builtin.wifi.parsers import (
    BssRead,
    LinkRead,
    PhyRead,
    RegulatoryRead,
    StationRead,
    WifiInterfaceRead,
)
from hostcore.builtin.wifi.schemas import (
    ConnectCreate,
    ConnectStart,
    DisconnectedRead,
    ModeUpdate,
    PhyName,
    RegulatoryUpdate,
    SavedNetworkRead,
    ScanStart,
)
from hostcore.builtin.wifi.service import WifiService
from hostcore.context import Principal
from hostcore.errors import error_responses
from hostcore.jobs import JobRead, Jobs, accepted
from hostcore.netnames import InterfaceName
from hostcore.netns import NamespaceName
from hostcore.security.deps import RequireScope

READ = [RequireScope("wifi:read")]
CONTROL = [RequireScope("wifi:control")]
Scanner = Annotated[Principal, RequireScope("wifi:scan")]
Controller = Annotated[Principal, RequireScope("wifi:control")]
ERRORS = error_responses(401, 403, 404, 422, 429, 502, 503)
LINK_ERRORS = error_responses(401, 403, 404, 409, 422, 429, 502, 503)
CHANGE_ERRORS = error_responses(400, 401, 403, 404, 409, 422, 429, 502, 503)  # 400: a bad body


async def _service(request: Request) -> WifiService:
    service: WifiService = request.app.state.wifi
    return service


Wifi = Annotated[WifiService, Depends(_service)]
Phy = Annotated[PhyName, Path(description="A radio's name, as GET /phys lists it.")]
Ifname = Annotated[InterfaceName, Path(description="A wireless interface's name.")]
Netns = Annotated[
    NamespaceName | None,
    Query(description="A named namespace (ip netns); the device's own when absent."),
]
NetworkId = Annotated[
    int, Path(ge=0, le=2**31 - 1, description="A saved network's id, as GET …/networks lists it.")
]


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/interfaces", dependencies=READ, responses=ERRORS)
    async def interfaces(wifi: Wifi, netns: Netns = None) -> list[WifiInterfaceRead]:
        """Wireless interfaces: radio, type, channel, width, transmit power, namespace."""
        return await wifi.interfaces(netns)

    @router.get("/phys", dependencies=READ, responses=ERRORS)
    async def phys(wifi: Wifi, netns: Netns = None) -> list[PhyRead]:
        """Radios: bands, channels (DFS, no-IR, power), widths, interface types, ciphers.
        A radio moved to another namespace is listed there."""
        return await wifi.phys(netns)

    @router.get("/phys/{phy}", dependencies=READ, responses=ERRORS)
    async def phy(phy: Phy, wifi: Wifi, netns: Netns = None) -> PhyRead:
        return await wifi.phy(phy, netns)

    @router.get("/interfaces/{ifname}/scan-results", dependencies=READ, responses=ERRORS)
    async def scan_results(ifname: Ifname, wifi: Wifi, netns: Netns = None) -> list[BssRead]:
        """The networks the kernel heard in its last scans (no new scan), strongest first:
        SSID (hidden and non-UTF-8 ones shown safely), channel, signal, security."""
        return await wifi.scan_results(ifname, netns)

    @router.get("/interfaces/{ifname}/link", dependencies=READ, responses=LINK_ERRORS)
    async def link(ifname: Ifname, wifi: Wifi, netns: Netns = None) -> LinkRead:
        """The access point a managed interface is connected to: SSID, BSSID, channel,
        width, signal, bitrates with MCS/NSS/guard interval, connected time."""
        return await wifi.link(ifname, netns)

    @router.get("/interfaces/{ifname}/stations", dependencies=READ, responses=ERRORS)
    async def stations(ifname: Ifname, wifi: Wifi, netns: Netns = None) -> list[StationRead]:
        """Per station: signal, bytes and packets, retries and failures, rates, times."""
        return await wifi.stations(ifname, netns)

    @router.post(
        "/interfaces/{ifname}/scans",
        status_code=202,
        response_model=JobRead,
        responses=error_responses(401, 403, 404, 409, 422, 429, 502, 503),
        summary="Scan for networks: a job (follow it at the Location it answers with)",
    )
    async def scan(ifname: Ifname, principal: Scanner, wifi: Wifi, jobs: Jobs) -> JSONResponse:
        """One scan per interface at a time (409 names the running one). The job ends with
        the networks found, or failed: aborted by the kernel, or not ended in time."""
        await wifi.interface(ifname)  # 404 before a job exists
        job, reused = await jobs.start_job(
            "wifi.scan", principal, ScanStart(interface=ifname), resource=ifname
        )
        return accepted(job, reused)

    @router.put("/interfaces/{ifname}/mode", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def set_mode(ifname: Ifname, body: ModeUpdate, wifi: Wifi) -> WifiInterfaceRead:
        """Switch an interface between managed and monitor: 422 when its radio has no such
        mode, 409 while the interface is busy (most drivers want it down first)."""
        return await wifi.set_mode(ifname, body.mode)

    @router.post(
        "/interfaces/{ifname}/connect",
        status_code=202,
        response_model=JobRead,
        responses=error_responses(400, 401, 403, 404, 409, 422, 429, 502, 503),
        summary="Join a network through wpa_supplicant: a job",
    )
    async def connect(
        ifname: Ifname, body: ConnectCreate, principal: Controller, wifi: Wifi, jobs: Jobs
    ) -> JSONResponse:
        """The job ends succeeded once wpa_supplicant reached completed, or failed naming
        why: WrongKey, AuthenticationFailed, NetworkNotFound, ConnectTimeout. The network
        replaces any saved one of the same name; the secret is never shown again. 409
        while NetworkManager manages the interface, or another connect runs on it."""
        await wifi.check_connect(ifname)  # 404, 409 or 503 before a job exists
        job, reused = await jobs.start_job(
            "wifi.connect", principal, ConnectStart(interface=ifname, network=body),
            resource=ifname,
        )  # fmt: skip
        return accepted(job, reused)

    @router.post("/interfaces/{ifname}/disconnect", dependencies=CONTROL, responses=LINK_ERRORS)
    async def disconnect(ifname: Ifname, wifi: Wifi) -> DisconnectedRead:
        """Leave the network; wpa_supplicant stays disconnected until the next connect."""
        return await wifi.disconnect(ifname)

    @router.get("/interfaces/{ifname}/networks", dependencies=READ, responses=LINK_ERRORS)
    async def networks(ifname: Ifname, wifi: Wifi) -> list[SavedNetworkRead]:
        """The networks wpa_supplicant keeps for the interface, never with their secrets."""
        return await wifi.saved_networks(ifname)

    @router.delete(
        "/interfaces/{ifname}/networks/{network}",
        status_code=204,
        dependencies=CONTROL,
        responses=LINK_ERRORS,
    )
    async def forget(ifname: Ifname, network: NetworkId, wifi: Wifi) -> Response:
        """Forget a saved network (also in wpa_supplicant's file, when it may write it)."""
        await wifi.forget_network(ifname, network)
        return Response(status_code=204)

    @router.get("/regulatory", dependencies=READ, responses=ERRORS)
    async def regulatory(wifi: Wifi) -> RegulatoryRead:
        """The regulatory domain: country, DFS region, the frequency rules with their
        power limits, and radios that keep a domain of their own."""
        return await wifi.regulatory()

    @router.put("/regulatory", dependencies=CONTROL, responses=CHANGE_ERRORS)
    async def set_regulatory(body: RegulatoryUpdate, wifi: Wifi) -> RegulatoryRead:
        """Set the country whose rules the radios follow (applied by the kernel shortly
        after, when wireless-regdb has the country; radios with a self-managed domain
        keep their own)."""
        return await wifi.set_regulatory(body.country)

    return router
