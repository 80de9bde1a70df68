"""The Wi-Fi plugin's service: nl80211 reads, no HTTP."""

from __future__ import annotations

from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.builtin.wifi.parsers import (
    BssRead,
    PhyRead,
    WifiInterfaceRead,
    merge_phys,
    parse_bss,
    parse_interface,
)
from hostcore.builtin.wifi.schemas import WifiSettings
from hostcore.errors import NotFound

SPLIT_WIPHY_DUMP = ("NL80211_ATTR_SPLIT_WIPHY_DUMP", b"")  # newer capabilities need it


class WifiService:
    def __init__(self, config: WifiSettings, *, nl80211: Nl80211 | None = None) -> None:
        self.config = config
        self.nl80211 = nl80211 or Nl80211(timeout_s=config.nl80211_timeout_s)

    async def stop(self) -> None:
        self.nl80211.close()

    async def interfaces(self) -> list[WifiInterfaceRead]:
        messages = await self.nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
        found = [i for m in messages if (i := parse_interface(m)) is not None]
        return sorted(found, key=lambda interface: interface.index)

    async def phys(self) -> list[PhyRead]:
        messages = await self.nl80211.dump("GET_WIPHY", [SPLIT_WIPHY_DUMP], action="list radios")
        return merge_phys(messages)

    async def phy(self, name: str) -> PhyRead:
        for phy in await self.phys():
            if phy.name == name:
                return phy
        raise NotFound(f"no radio named {name}")

    async def interface(self, name: str) -> WifiInterfaceRead:
        for interface in await self.interfaces():
            if interface.name == name:
                return interface
        raise NotFound(f"no wireless interface named {name}")

    async def scan_results(self, name: str) -> list[BssRead]:
        """The kernel's cached scan results of ``name``, strongest first; no new scan."""
        interface = await self.interface(name)
        messages = await self.nl80211.dump(
            "GET_SCAN", [("NL80211_ATTR_IFINDEX", interface.index)], action="read scan results"
        )
        found = [bss for m in messages if (bss := parse_bss(m)) is not None]
        return sorted(
            found, key=lambda bss: -(bss.signal_dbm if bss.signal_dbm is not None else -1e9)
        )
