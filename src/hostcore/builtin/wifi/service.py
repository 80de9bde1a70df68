"""The Wi-Fi plugin's service: nl80211 and wpa_supplicant, no HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hostcore.builtin.wifi.connect import (
    ConnectWatch,
    config_bytes,
    network_args,
    network_id,
    saved_network,
)
from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.builtin.wifi.parsers import (
    IFTYPES,
    BssRead,
    LinkRead,
    PhyRead,
    RegulatoryRead,
    StationRead,
    WifiInterfaceRead,
    merge_phys,
    parse_bss,
    parse_interface,
    parse_regulatory,
    parse_station,
)
from hostcore.builtin.wifi.schemas import (
    ConnectCreate,
    ConnectedRead,
    ConnectStart,
    DisconnectedRead,
    SavedNetworkRead,
    ScanResultsRead,
    WifiSettings,
)
from hostcore.builtin.wifi.supplicant import BSS, Supplicant
from hostcore.errors import (
    BadRequest,
    Conflict,
    HostcoreError,
    NotFound,
    Unprocessable,
    UpstreamFailed,
)
from hostcore.netns import namespace_names

if TYPE_CHECKING:
    from hostcore.jobs import JobContext

logger = logging.getLogger(__name__)

SPLIT_WIPHY_DUMP = ("NL80211_ATTR_SPLIT_WIPHY_DUMP", b"")  # newer capabilities need it
IFTYPE_NUMBERS = {name: number for number, name in IFTYPES.items()}


class Radios:
    """The nl80211 reads of one namespace, over one :class:`Nl80211`."""

    def __init__(self, nl80211: Nl80211, netns: str | None) -> None:
        self.nl80211 = nl80211
        self.netns = netns

    async def interfaces(self) -> list[WifiInterfaceRead]:
        messages = await self.nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
        found = [i for m in messages if (i := parse_interface(m, self.netns)) is not None]
        return sorted(found, key=lambda interface: interface.index)

    async def phys(self) -> list[PhyRead]:
        messages = await self.nl80211.dump("GET_WIPHY", [SPLIT_WIPHY_DUMP], action="list radios")
        return merge_phys(messages)

    async def interface(self, name: str) -> WifiInterfaceRead:
        for interface in await self.interfaces():
            if interface.name == name:
                return interface
        raise NotFound(f"no wireless interface named {name}")

    async def scan_results(self, name: str) -> list[BssRead]:
        interface = await self.interface(name)
        messages = await self.nl80211.dump(
            "GET_SCAN", [("NL80211_ATTR_IFINDEX", interface.index)], action="read scan results"
        )
        found = [bss for m in messages if (bss := parse_bss(m)) is not None]
        return sorted(
            found, key=lambda bss: -(bss.signal_dbm if bss.signal_dbm is not None else -1e9)
        )

    async def stations(self, name: str) -> list[StationRead]:
        interface = await self.interface(name)
        messages = await self.nl80211.dump(
            "GET_STATION", [("NL80211_ATTR_IFINDEX", interface.index)], action="list stations"
        )
        return [station for m in messages if (station := parse_station(m)) is not None]

    async def link(self, name: str) -> LinkRead:
        interface = await self.interface(name)
        if interface.type != "managed":
            raise Conflict(f"{name} is a {interface.type} interface, not a managed one")
        associated = next((bss for bss in await self.scan_results(name) if bss.associated), None)
        if associated is None:
            return LinkRead(connected=False, ssid=None, ssid_hex=None, bssid=None,
                            frequency_mhz=None, channel=None, width=None, station=None)  # fmt: skip
        stations = {station.mac: station for station in await self.stations(name)}
        return LinkRead(
            connected=True,
            ssid=associated.ssid,
            ssid_hex=associated.ssid_hex,
            bssid=associated.bssid,
            frequency_mhz=associated.frequency_mhz,
            channel=associated.channel,
            width=interface.width,
            station=stations.get(associated.bssid),
        )


def _nl80211_in(config: WifiSettings) -> Callable[[Path], Nl80211]:
    def made(namespace: Path) -> Nl80211:
        return Nl80211(timeout_s=config.nl80211_timeout_s, namespace=namespace)

    return made


class WifiService:
    """Everything the Wi-Fi endpoints do. Reads take ``netns``: a named namespace (``ip
    netns``), whose nl80211 is reached through a socket made in it for the request; None
    is the device's own, over the socket kept for it. Changes act on the own one."""

    def __init__(
        self,
        config: WifiSettings,
        *,
        nl80211: Nl80211 | None = None,
        supplicant: Supplicant | None = None,
        nl80211_in: Callable[[Path], Nl80211] | None = None,
    ) -> None:
        self.config = config
        self.nl80211 = nl80211 or Nl80211(timeout_s=config.nl80211_timeout_s)
        self.nl80211_in = nl80211_in or _nl80211_in(config)
        self.supplicant = supplicant or Supplicant(
            timeout_s=config.supplicant_timeout_s, driver=config.supplicant_driver
        )

    async def stop(self) -> None:
        self.nl80211.close()
        await self.supplicant.close()

    @contextlib.asynccontextmanager
    async def radios(self, netns: str | None = None) -> AsyncIterator[Radios]:
        """The reads of ``netns`` (404 for a name ``ip netns`` does not list)."""
        if netns is None:
            yield Radios(self.nl80211, None)
            return
        if netns not in namespace_names(self.config.netns_dir):
            raise NotFound(f"no network namespace named {netns}")
        nl80211 = self.nl80211_in(self.config.netns_dir / netns)
        try:
            yield Radios(nl80211, netns)
        finally:
            nl80211.close()

    async def interfaces(self, netns: str | None = None) -> list[WifiInterfaceRead]:
        async with self.radios(netns) as radios:
            return await radios.interfaces()

    async def phys(self, netns: str | None = None) -> list[PhyRead]:
        async with self.radios(netns) as radios:
            return await radios.phys()

    async def phy(self, name: str, netns: str | None = None) -> PhyRead:
        for phy in await self.phys(netns):
            if phy.name == name:
                return phy
        raise NotFound(f"no radio named {name}")

    async def interface(self, name: str, netns: str | None = None) -> WifiInterfaceRead:
        async with self.radios(netns) as radios:
            return await radios.interface(name)

    async def scan_results(self, name: str, netns: str | None = None) -> list[BssRead]:
        """The kernel's cached scan results of ``name``, strongest first; no new scan."""
        async with self.radios(netns) as radios:
            return await radios.scan_results(name)

    async def stations(self, name: str, netns: str | None = None) -> list[StationRead]:
        """The stations the kernel knows on ``name``: an AP's clients, a managed
        interface's access point."""
        async with self.radios(netns) as radios:
            return await radios.stations(name)

    async def link(self, name: str, netns: str | None = None) -> LinkRead:
        """The access point a managed interface is associated with, from the scan entry
        the kernel marks associated and the station entry of that BSSID."""
        async with self.radios(netns) as radios:
            return await radios.link(name)

    async def regulatory(self) -> RegulatoryRead:
        """The global regulatory domain and the radios that keep their own (a dump: the
        request pyroute2's get_regulatory_domain means to send and does not)."""
        return parse_regulatory(
            await self.nl80211.dump("GET_REG", action="read the regulatory domain")
        )

    async def scan(self, name: str) -> ScanResultsRead:
        """Scan on ``name`` now and answer what was found (a job's work: it takes seconds)."""
        interface = await self.interface(name)
        if not await self.nl80211.scan(interface.index, timeout_s=self.config.scan_timeout_s):
            raise UpstreamFailed(
                f"the kernel aborted the scan on {name} (the interface went down, or "
                "another scan took over)"
            )
        return ScanResultsRead(interface=name, networks=await self.scan_results(name))

    async def set_regulatory(self, country: str) -> RegulatoryRead:
        """Ask the kernel for ``country``'s rules. The kernel's regulatory core applies
        them afterwards, when its database (wireless-regdb) has the country: the answer
        is the domain as it stands right after the request."""
        await self.nl80211.request(
            "REQ_SET_REG", [("NL80211_ATTR_REG_ALPHA2", country)], action="set the country"
        )
        return await self.regulatory()

    async def set_mode(self, name: str, mode: str) -> WifiInterfaceRead:
        """Make ``name`` a ``mode`` (managed, monitor) interface. The radio must support the
        type (422 otherwise); most drivers refuse to change a running interface (409)."""
        interface = await self.interface(name)
        if interface.type == mode:
            return interface
        radio = next((phy for phy in await self.phys() if phy.index == interface.phy), None)
        if radio is not None and mode not in radio.interface_types:
            raise Unprocessable(f"the radio of {name} ({radio.name}) has no {mode} mode")
        try:
            await self.nl80211.request(
                "SET_INTERFACE",
                [("NL80211_ATTR_IFINDEX", interface.index),
                 ("NL80211_ATTR_IFTYPE", IFTYPE_NUMBERS[mode])],
                action=f"make {name} a {mode} interface",
            )  # fmt: skip
        except Conflict as busy:
            raise Conflict(
                f"{name} is busy: set it down first (the network plugin's "
                f"PUT /interfaces/{name}/state), or stop what uses it"
            ) from busy
        return await self.interface(name)

    # -- wpa_supplicant --

    async def _supplicant_interface(
        self, name: str, *, create: bool, autostart: bool = False
    ) -> str | None:
        """wpa_supplicant's object of the wireless interface ``name`` (404 if it is not
        one), refused with 409 while NetworkManager manages it. ``autostart``: a
        wpa_supplicant that is not running may be started by the bus (a read does not)."""
        await self.interface(name)
        if await self.supplicant.managed_by_networkmanager(name):
            raise Conflict(
                f"NetworkManager manages {name}: connect with NetworkManager, or release "
                f"the interface first (nmcli device set {name} managed no)"
            )
        return await self.supplicant.interface(name, create=create, autostart=autostart)

    async def check_connect(self, name: str) -> None:
        """What would refuse a connect at once (so the request, not its job, says it): no
        such wireless interface (404), NetworkManager's (409), no wpa_supplicant (503)."""
        await self._supplicant_interface(name, create=False, autostart=True)

    async def connect(self, params: ConnectStart, context: JobContext) -> ConnectedRead:
        """Join a network (a job's work): add it to wpa_supplicant, select it, and follow
        the signals until the attempt ends.

        Success replaces any saved network of the same name. Failure (or a cancel) leaves
        wpa_supplicant as it was: the network added is removed, the networks
        ``SelectNetwork`` disabled are enabled again (so it goes back to the one it had),
        and an interface added to wpa_supplicant for this attempt is removed again."""
        name, request = params.interface, params.network
        supplicant = self.supplicant
        path = await self._supplicant_interface(name, create=False, autostart=True)
        created = path is None
        if path is None:
            path = await supplicant.interface(name, create=True)
            assert path is not None
        try:
            return await self._connect_on(path, name, request, context)
        except BaseException:
            if created:
                await _shielded(supplicant.remove_interface(path))
            raise

    async def _connect_on(
        self, path: str, name: str, request: ConnectCreate, context: JobContext
    ) -> ConnectedRead:
        supplicant = self.supplicant
        wired = (await supplicant.property(path, "Driver")) == "wired"
        ssid = request.ssid_bytes
        before = await supplicant.networks(path)
        was_connected = (await supplicant.property(path, "State")) == "completed"
        seen = not wired and ssid in await supplicant.bss_ssids(path)
        watch = ConnectWatch(request.security, ssid, seen=seen, wired=wired)
        context.progress(None, "asking wpa_supplicant to connect")
        network: str | None = None
        connected = False
        async with supplicant.signals(path) as signals:
            try:
                network = watch.network = await supplicant.add_network(
                    path, network_args(request, wired=wired)
                )
                await supplicant.select_network(path, network)
                timeout_s = self.config.connect_timeout_s
                try:
                    async with asyncio.timeout(timeout_s):
                        while not connected:
                            connected = watch.feed(await signals.next()) == "completed"
                            if watch.state is not None:
                                context.progress(None, f"wpa_supplicant: {watch.state}")
                except TimeoutError:
                    raise watch.timed_out(timeout_s) from None
            finally:
                if not connected:
                    await _shielded(self._undo(path, network, ssid, before, was_connected))
        assert network is not None
        for old, values, enabled in before:  # the new one takes the old one's place
            if config_bytes(values.get("ssid")) == ssid:
                await supplicant.remove_network(path, old)
            elif enabled:
                await supplicant.set_enabled(old, True)
        saved = await supplicant.save_config(path)
        now = await supplicant.properties(path)
        bssid = None
        if now.get("CurrentBSS") not in (None, "/"):
            with contextlib.suppress(NotFound):
                raw = await supplicant.property(now["CurrentBSS"], "BSSID", BSS)
                bssid = ":".join(f"{byte:02x}" for byte in bytes(raw))
        return ConnectedRead(
            interface=name,
            state=str(now.get("State", "completed")),
            network_id=network_id(network),
            ssid=request.ssid,
            ssid_hex=ssid.hex(),
            bssid=bssid,
            auth_mode=now.get("CurrentAuthMode") or None,
            saved=saved,
        )

    async def _undo(
        self,
        path: str,
        network: str | None,
        ssid: bytes,
        before: list[tuple[str, dict[str, Any], bool]],
        was_connected: bool,
    ) -> None:
        """Put wpa_supplicant back as it was before a failed attempt. ``network`` is None
        when the add's answer never came: a new network of this name is then the one."""
        supplicant = self.supplicant
        known = {old for old, _, _ in before}
        for current, values, _ in await supplicant.networks(path):
            added = current == network or (
                network is None
                and current not in known
                and config_bytes(values.get("ssid")) == ssid
            )
            if added:
                await supplicant.remove_network(path, current)
        for old, _, enabled in before:
            if enabled:
                await supplicant.set_enabled(old, True)
        if was_connected:
            await supplicant.reconnect(path)

    async def disconnect(self, name: str) -> DisconnectedRead:
        path = await self._supplicant_interface(name, create=False)
        if path is None:
            raise Conflict(f"wpa_supplicant does not manage {name}")
        was_connected = await self.supplicant.disconnect(path)
        state = await self.supplicant.property(path, "State")
        return DisconnectedRead(interface=name, was_connected=was_connected, state=str(state))

    async def saved_networks(self, name: str) -> list[SavedNetworkRead]:
        """wpa_supplicant's networks of ``name`` (none when it does not manage it)."""
        path = await self._supplicant_interface(name, create=False)
        if path is None:
            return []
        current = await self.supplicant.property(path, "CurrentNetwork")
        return [
            saved_network(network, values, enabled=enabled, current=network == current)
            for network, values, enabled in await self.supplicant.networks(path)
        ]

    async def forget_network(self, name: str, network: int) -> None:
        """Remove a saved network (and from wpa_supplicant's file, when it may write it)."""
        path = await self._supplicant_interface(name, create=False)
        if path is None:
            raise NotFound(f"wpa_supplicant does not manage {name}")
        try:
            await self.supplicant.remove_network(path, f"{path}/Networks/{network}")
        except (NotFound, BadRequest):
            raise NotFound(f"{name} has no saved network {network}") from None
        await self.supplicant.save_config(path)


async def _shielded(cleanup: Awaitable[None]) -> None:
    """Run a cleanup to its end even when the job is being cancelled; its failure is
    logged (the attempt's own outcome is what the caller hears about)."""
    task = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise
    except HostcoreError as error:
        logger.info("could not remove the failed network: %s", error.detail)
