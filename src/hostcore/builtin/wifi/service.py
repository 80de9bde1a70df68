"""The Wi-Fi plugin's service: nl80211 reads, no HTTP."""

from __future__ import annotations

from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.builtin.wifi.parsers import PhyRead, WifiInterfaceRead, merge_phys, parse_interface
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
