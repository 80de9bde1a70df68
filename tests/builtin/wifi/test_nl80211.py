"""The nl80211 layer: the real kernel's answer here (no cfg80211), and a fake kernel's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from hostcore.builtin.wifi.nl80211 import NO_NL80211, Nl80211
from hostcore.errors import NotFound, Unavailable
from tests.builtin.wifi.fake_nl80211 import FakeKernel
from tests.builtin.wifi.nl80211_fixtures import build

TIMEOUT_S = 2.0


@pytest.fixture
async def kernel() -> AsyncIterator[FakeKernel]:
    made = FakeKernel(build())
    yield made
    made.close()


async def test_a_kernel_without_nl80211_is_503_naming_it() -> None:
    nl80211 = Nl80211(timeout_s=TIMEOUT_S)
    try:
        with pytest.raises(Unavailable) as raised:
            await nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
    finally:
        nl80211.close()
    assert raised.value.detail == NO_NL80211


async def test_a_fake_kernel_without_the_family_is_the_same_503() -> None:
    kernel = FakeKernel(build(), family_present=False)
    nl80211 = Nl80211(timeout_s=TIMEOUT_S, socket_factory=kernel.socket)
    try:
        with pytest.raises(Unavailable, match="no nl80211"):
            await nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
    finally:
        nl80211.close()
        kernel.close()


async def test_dumps_come_back_whole_and_a_split_wiphy_dump_asks_for_the_split(
    kernel: FakeKernel,
) -> None:
    nl80211 = Nl80211(timeout_s=TIMEOUT_S, socket_factory=kernel.socket)
    try:
        interfaces = await nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
        split = await nl80211.dump(
            "GET_WIPHY", [("NL80211_ATTR_SPLIT_WIPHY_DUMP", b"")], action="list radios"
        )
    finally:
        nl80211.close()
    names = {m.get_attr("NL80211_ATTR_IFNAME") for m in interfaces}
    assert names == {"wlan0", "wlan1", "mon0"}
    assert "NL80211_ATTR_SPLIT_WIPHY_DUMP" in kernel.requests[-1].attrs
    assert len(split) == 100  # one message per band and per channel
    assert {m.get_attr("NL80211_ATTR_WIPHY") for m in split} == {0, 1}


async def test_a_dump_that_fails_midway_raises_instead_of_answering_nothing(
    kernel: FakeKernel,
) -> None:
    nl80211 = Nl80211(timeout_s=TIMEOUT_S, socket_factory=kernel.socket)
    try:
        await nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
        with pytest.raises(NotFound):
            await nl80211.dump(
                "GET_STATION", [("NL80211_ATTR_IFINDEX", 999)], action="list stations"
            )
        # The kernel's refusal leaves the socket usable: no new one (no family lookup).
        assert await nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
        lookups = [request for request in kernel.requests if request.cmd.startswith("CTRL_CMD")]
        assert len(lookups) == 1
    finally:
        nl80211.close()


async def test_an_interrupted_dump_is_made_again(kernel: FakeKernel) -> None:
    nl80211 = Nl80211(timeout_s=TIMEOUT_S, socket_factory=kernel.socket)
    try:
        kernel.interrupt_next_dump = True
        interfaces = await nl80211.dump("GET_INTERFACE", action="list wireless interfaces")
    finally:
        nl80211.close()
    assert len(interfaces) == 3
    asked = [request.cmd for request in kernel.requests if request.cmd == "GET_INTERFACE"]
    assert len(asked) == 2  # the interrupted dump, then the whole one
