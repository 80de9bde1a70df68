"""nl80211 messages from the fake kernel's fixtures, decoded by pyroute2, into models."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.builtin.wifi.parsers import channel_number, merge_phys, parse_interface
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
