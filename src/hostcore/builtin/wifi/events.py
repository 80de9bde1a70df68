"""The ``wifi.<ifname>`` events: nl80211's own notifications about one interface.

While someone listens to ``wifi.wlan0``, a socket of its own joins nl80211's
``config``, ``scan`` and ``mlme`` groups and turns what concerns ``wlan0`` into
events: scans started, ended or aborted; connected, disconnected, roamed, the channel
switched (with the link as it is then); a station joined or left (an AP's); the
interface added, removed or given another type. The interface is followed by name:
one that comes back with another index is still ``wlan0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from hostcore.builtin.wifi.nl80211 import command
from hostcore.builtin.wifi.parsers import IFTYPES, LinkRead
from hostcore.errors import HostcoreError, NotFound
from hostcore.netnames import check_ifname

if TYPE_CHECKING:
    from hostcore.builtin.wifi.service import WifiService
    from hostcore.events import Publish

logger = logging.getLogger(__name__)

GROUPS = ("config", "scan", "mlme")
RETRY_S = 5.0  # after nl80211 failed the listener, unhurried
EventName = Literal[
    "scan_started",
    "scan_done",
    "scan_aborted",
    "connected",
    "disconnected",
    "roamed",
    "channel_switched",
    "station_added",
    "station_removed",
    "added",
    "removed",
    "mode_changed",
]
_EVENTS: dict[str, EventName] = {
    "TRIGGER_SCAN": "scan_started",
    "NEW_SCAN_RESULTS": "scan_done",
    "SCAN_ABORTED": "scan_aborted",
    "CONNECT": "connected",
    "DISCONNECT": "disconnected",
    "ROAM": "roamed",
    "CH_SWITCH_NOTIFY": "channel_switched",
    "NEW_STATION": "station_added",
    "DEL_STATION": "station_removed",
    "NEW_INTERFACE": "added",
    "DEL_INTERFACE": "removed",
    "SET_INTERFACE": "mode_changed",
}
_WITH_LINK = frozenset({"connected", "roamed", "channel_switched"})


class WifiEventRead(BaseModel):
    interface: str
    event: EventName
    link: LinkRead | None = Field(None, description="connected, roamed, channel_switched.")
    station: str | None = Field(None, description="station_added and _removed: its MAC.")
    type: str | None = Field(None, description="added, mode_changed: the interface type.")


def is_topic_ifname(name: str) -> bool:
    """Whether ``name`` is an interface name a topic can carry (topics are lower case)."""
    try:
        check_ifname(name)
    except ValueError:
        return False
    return all(c.islower() or c.isdigit() or c in "_.-" for c in name)


async def wifi_events(service: WifiService, publish: Publish, ifname: str) -> None:
    """Publish ``ifname``'s events until cancelled; a failed listener is made again (what
    happened meanwhile is not told)."""
    while True:
        try:
            await _follow(service, publish, ifname)
        except HostcoreError as error:
            logger.info("Wi-Fi events of %s paused: %s", ifname, error.detail)
        except Exception as error:  # the socket failed (ENOBUFS after a burst …)
            logger.info("Wi-Fi events of %s paused: %r", ifname, error)
        await asyncio.sleep(RETRY_S)


async def _follow(service: WifiService, publish: Publish, ifname: str) -> None:
    names = {command(name): event for name, event in _EVENTS.items()}
    async with service.nl80211.listen(GROUPS) as messages:
        index: int | None = None
        with contextlib.suppress(NotFound):
            index = (await service.interface(ifname)).index
        async for message in messages:
            event = names.get(message["cmd"])
            if event is None:
                continue
            if message.get_attr("NL80211_ATTR_IFNAME") == ifname:
                index = message.get_attr("NL80211_ATTR_IFINDEX")
            if index is None or message.get_attr("NL80211_ATTR_IFINDEX") != index:
                continue
            publish(await _event(service, ifname, event, message))
            if event == "removed":
                index = None


async def _event(
    service: WifiService, ifname: str, event: EventName, message: Any
) -> WifiEventRead:
    found = WifiEventRead(interface=ifname, event=event)
    if event in _WITH_LINK:
        with contextlib.suppress(HostcoreError):
            found.link = await service.link(ifname)
    elif event in ("station_added", "station_removed"):
        mac = message.get_attr("NL80211_ATTR_MAC")  # pyroute2 gives it as text
        found.station = mac if isinstance(mac, str) else None
    elif event in ("added", "mode_changed"):
        found.type = IFTYPES.get(message.get_attr("NL80211_ATTR_IFTYPE") or 0, "unknown")
    return found
