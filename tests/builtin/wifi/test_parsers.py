"""nl80211 messages from the fake kernel's fixtures, decoded by pyroute2, into models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.builtin.wifi.parsers import channel_number, merge_phys, parse_interface
from hostcore.builtin.wifi.schemas import WifiSettings
from hostcore.builtin.wifi.service import WifiService
from hostcore.errors import Conflict, NotFound
from tests.builtin.wifi.fake_nl80211 import FakeKernel
from tests.builtin.wifi.nl80211_fixtures import build


@pytest.fixture
async def nl80211() -> AsyncIterator[Nl80211]:
    kernel = FakeKernel(build())
    made = Nl80211(timeout_s=2.0, socket_factory=kernel.socket)
    yield made
    made.close()
    kernel.close()


@pytest.mark.parametrize(
    ("frequency", "number"),
    [
        (2412, 1),
        (2472, 13),
        (2484, 14),
        (5180, 36),
        (5500, 100),
        (5825, 165),
        (5955, 1),
        (5935, 2),
        (6415, 93),
        (58320, 1),
        (900, None),
    ],
)
def test_channel_numbers_follow_802_11_annex_e(frequency: int, number: int | None) -> None:
    assert channel_number(frequency) == number


async def test_a_split_wiphy_dump_merges_into_one_radio_each(nl80211: Nl80211) -> None:
    messages = await nl80211.dump(
        "GET_WIPHY", [("NL80211_ATTR_SPLIT_WIPHY_DUMP", b"")], action="list radios"
    )
    pi, ax200 = merge_phys(messages)

    assert (pi.index, pi.name, ax200.name) == (0, "phy0", "phy1")
    assert [band.band for band in pi.bands] == ["2.4GHz", "5GHz"]
    two, five = pi.bands
    assert len(two.channels) == 14 and two.channels[-1].number == 14
    assert two.channels[-1].disabled  # channel 14: Japan only
    assert two.widths_mhz == [20, 40] and two.ht and not two.vht
    dfs = next(c for c in five.channels if c.number == 100)
    assert dfs.radar and not dfs.disabled
    assert five.vht and 80 in five.widths_mhz and not five.he
    assert "monitor" not in pi.interface_types and "managed" in pi.interface_types
    assert "monitor" in ax200.interface_types and ax200.bands[1].he
    assert "GCMP_256" in ax200.ciphers and "CCMP" in pi.ciphers


async def test_interfaces_show_their_channel_width_and_power(nl80211: Nl80211) -> None:
    found = {
        i.name: i
        for m in await nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
        if (i := parse_interface(m))
    }
    wlan0, mon0 = found["wlan0"], found["mon0"]
    assert (wlan0.type, wlan0.frequency_mhz, wlan0.channel, wlan0.width) == (
        "managed",
        5180,
        36,
        "80",
    )
    assert wlan0.center_frequency_mhz == 5210 and wlan0.tx_power_dbm == 31.0
    assert (mon0.type, mon0.phy, mon0.channel) == ("monitor", 1, 6)


async def test_scan_results_show_every_kind_of_network_safely(nl80211: Nl80211) -> None:
    service = WifiService(WifiSettings(), nl80211=nl80211)
    found = {bss.bssid: bss for bss in await service.scan_results("wlan0")}

    home = found["3c:a6:2f:aa:bb:cc"]
    assert (home.ssid, home.associated, home.channel) == ("HomeNet", True, 36)
    assert home.security.protocol == "WPA2" and home.security.key_management == ["PSK"]
    assert found["b0:f2:08:11:22:33"].security.protocol == "WPA3"
    mixed = found["b0:f2:08:11:22:34"].security
    assert mixed.protocol == "WPA2/WPA3" and set(mixed.key_management) == {"PSK", "SAE"}
    assert found["02:5f:67:10:20:30"].security.protocol == "open"
    for hidden in ("e0:28:6d:01:02:03", "e0:28:6d:01:02:04"):
        assert found[hidden].hidden and found[hidden].ssid is None
    latin1 = found["00:1d:7e:aa:00:01"]
    assert latin1.ssid is None and latin1.ssid_hex == "436166e9204dfc6c6c6572"
    dfs = found["70:4f:57:de:f5:01"]
    assert dfs.channel == 100 and dfs.security.key_management == ["802.1X"]
    # An RSN element that ends after its pairwise suites: 802.1X by default, not an error.
    assert found["00:0c:42:00:00:99"].security.key_management == ["802.1X"]
    signals = [bss.signal_dbm for bss in found.values()]
    assert all(signal is not None for signal in signals)


async def test_the_link_of_a_managed_interface_and_its_access_points_counters(
    nl80211: Nl80211,
) -> None:
    service = WifiService(WifiSettings(), nl80211=nl80211)
    link = await service.link("wlan0")

    assert link.connected and (link.ssid, link.bssid) == ("HomeNet", "3c:a6:2f:aa:bb:cc")
    assert (link.channel, link.width) == (36, "80")
    station = link.station
    assert station is not None and (station.signal_dbm, station.signal_avg_dbm) == (-52, -54)
    tx = station.tx_bitrate
    assert tx is not None and (tx.mode, tx.mcs, tx.nss, tx.guard_interval_us) == ("VHT", 9, 1, 0.4)
    assert tx.mbps == 433.3 and tx.width_mhz == 80
    assert (station.tx_retries, station.tx_failed, station.connected_time_s) == (1234, 12, 3600)


async def test_an_he_station_and_a_monitor_interface_without_a_link(nl80211: Nl80211) -> None:
    service = WifiService(WifiSettings(), nl80211=nl80211)
    (he,) = await service.stations("wlan1")
    rx = he.rx_bitrate
    assert rx is not None and (rx.mode, rx.mcs, rx.nss, rx.guard_interval_us) == ("HE", 9, 2, 1.6)
    assert he.rx_bytes == 9_000_000_000  # a 64-bit counter
    with pytest.raises(Conflict, match="monitor"):
        await service.link("mon0")
    with pytest.raises(NotFound):
        await service.link("wlan7")


async def test_the_regulatory_domain_and_a_self_managed_radio(nl80211: Nl80211) -> None:
    regulatory = await WifiService(WifiSettings(), nl80211=nl80211).regulatory()

    assert (regulatory.country, regulatory.dfs_region) == ("DE", "ETSI")
    dfs = next(rule for rule in regulatory.rules if rule.start_mhz == 5250)
    assert "dfs" in dfs.flags and dfs.max_eirp_dbm == 20 and dfs.max_bandwidth_mhz == 80
    (phy1,) = regulatory.self_managed
    assert (phy1.phy, phy1.country) == (1, "DE")
