"""``wifi.<ifname>``: nl80211's notifications about one interface, as events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pyroute2.netlink.nl80211 import NL80211_NAMES

from hostcore.app import create_app
from hostcore.builtin.wifi.events import is_topic_ifname, wifi_events
from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.builtin.wifi.schemas import WifiSettings
from hostcore.builtin.wifi.service import WifiService
from hostcore.config import Settings
from tests.builtin.wifi.fake_nl80211 import FakeKernel
from tests.builtin.wifi.nl80211_fixtures import AP_MAC, WLAN0, WLAN1, build, message
from tests.helpers import wait_until

WITHIN_S = 5.0
STATION = "02:11:22:33:44:55"


def event(name: str, ifindex: int, **attrs: Any) -> bytes:
    cells = [["NL80211_ATTR_WIPHY", 0], ["NL80211_ATTR_IFINDEX", ifindex]]
    cells += [[f"NL80211_ATTR_{key.upper()}", value] for key, value in attrs.items()]
    return message(NL80211_NAMES[f"NL80211_CMD_{name}"], cells)


@pytest.fixture
async def kernel() -> AsyncIterator[FakeKernel]:
    kernel = FakeKernel(build(), scan_delay=0.05)
    yield kernel
    kernel.close()


@pytest.fixture
async def follow(
    kernel: FakeKernel,
) -> AsyncIterator[Callable[[str], Any]]:
    """``follow(ifname)``: the events of ``ifname`` as they come, in a list."""
    service = WifiService(
        WifiSettings(), nl80211=Nl80211(timeout_s=2.0, socket_factory=kernel.socket)
    )
    tasks: list[asyncio.Task[None]] = []

    async def start(ifname: str) -> list[Any]:
        published: list[Any] = []
        asked = len(kernel.requests)
        tasks.append(asyncio.create_task(wifi_events(service, published.append, ifname)))
        # The listener joins the groups, then looks the interface up: what comes after
        # waits in its socket until then, so nothing about the interface is missed.
        await wait_until(
            lambda: any(r.cmd == "GET_INTERFACE" for r in kernel.requests[asked:]),
            WITHIN_S,
            "the listener to look the interface up",
        )
        return published

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await service.stop()


async def test_link_changes_of_the_interface_become_events_with_the_link(
    kernel: FakeKernel, follow: Callable[[str], Any]
) -> None:
    published = await follow("wlan0")
    kernel.emit("mlme", event("CONNECT", WLAN1, mac=AP_MAC))  # another interface's
    kernel.emit("mlme", event("CONNECT", WLAN0, mac=AP_MAC))
    kernel.emit("mlme", event("DEL_STATION", WLAN0, mac=STATION))
    kernel.emit("mlme", event("DISCONNECT", WLAN0))
    await wait_until(lambda: len(published) == 3, WITHIN_S, "three events")
    connected, left, disconnected = published
    assert connected.event == "connected" and connected.interface == "wlan0"
    assert connected.link is not None and connected.link.bssid == AP_MAC
    assert left.event == "station_removed" and left.station == STATION
    assert disconnected.event == "disconnected" and disconnected.link is None


async def test_scans_and_mode_changes_become_events(
    kernel: FakeKernel, follow: Callable[[str], Any]
) -> None:
    published = await follow("wlan1")
    service = WifiService(
        WifiSettings(), nl80211=Nl80211(timeout_s=2.0, socket_factory=kernel.socket)
    )
    try:
        await service.scan("wlan1")
        await service.set_mode("wlan1", "monitor")
    finally:
        await service.stop()
    await wait_until(lambda: len(published) == 3, WITHIN_S, "three events")
    assert [found.event for found in published] == ["scan_started", "scan_done", "mode_changed"]
    assert published[-1].type == "monitor"


def test_the_topic_family_takes_interface_names_only(
    settings_factory: Callable[..., Settings],
) -> None:
    assert is_topic_ifname("wlan0") and is_topic_ifname("wlx00c0ca.1")
    for bad in ("", "WLAN0", "wlan 0", "a" * 16, "..", "wl/an"):
        assert not is_topic_ifname(bad)
    with TestClient(create_app(settings_factory())) as client:
        hub = client.app.state.events  # type: ignore[attr-defined]
        found = hub.declared("wifi.wlan0")
        assert found is not None and found[0].scope == "wifi:read" and found[1] == "wlan0"
        assert hub.declared("wifi.WLAN0") is None and hub.declared("wifi.") is None
