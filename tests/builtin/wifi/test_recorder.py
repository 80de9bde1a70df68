"""The nl80211 recorder: a fake kernel recorded through the recorder's own sockets, written,
read back with ``Fixture.from_json`` and served again answers the Wi-Fi service as the
original did; the real kernel here (no cfg80211) fails the command in one line."""

from __future__ import annotations

import asyncio
import errno
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hostcore.builtin.wifi.nl80211 import NO_NL80211, Nl80211
from hostcore.builtin.wifi.recorder import Recording, Scrubber, command_line, record, write
from hostcore.builtin.wifi.schemas import WifiSettings
from hostcore.builtin.wifi.service import WifiService
from hostcore.errors import UpstreamFailed
from tests.builtin.wifi.fake_nl80211 import FakeKernel, Request
from tests.builtin.wifi.nl80211_fixtures import (
    FAMILY_ID,
    MON0,
    WLAN0,
    WLAN1,
    Fixture,
    build,
    decode_all,
    nla,
)

TIMEOUT_S = 2.0
DUMPED = ("wiphy_split", "wiphy", "interfaces", "stations", "scan", "reg")
SCAN_EVENTS = ("scan_started", "scan_done", "scan_aborted")
NLMSG_HEADER_BYTES = 16  # sequence number, port id and flags: the fake stamps them anew


async def recorded(
    kernel: FakeKernel, out: Path, *, scrub: bool = True, trigger_scan: str | None = None
) -> Fixture:
    """``kernel`` recorded, written to ``out`` and read back as the tests read fixtures."""
    try:
        recording = await record(kernel.socket, scrub=scrub, trigger_scan=trigger_scan)
    finally:
        kernel.close()
    await asyncio.to_thread(write, recording, out, force=False)
    return Fixture.from_json(await asyncio.to_thread(out.read_text))


async def answers(fixture: Fixture) -> dict[str, Any]:
    """Everything the Wi-Fi service reads, as JSON-ready data, from a kernel serving it."""
    kernel = FakeKernel(fixture)
    service = WifiService(
        WifiSettings(), nl80211=Nl80211(timeout_s=TIMEOUT_S, socket_factory=kernel.socket)
    )
    try:
        interfaces = await service.interfaces()
        names = [interface.name for interface in interfaces]
        return {
            "interfaces": [interface.model_dump() for interface in interfaces],
            "phys": [phy.model_dump() for phy in await service.phys()],
            "stations": {
                name: [station.model_dump() for station in await service.stations(name)]
                for name in names
            },
            "scan": {
                name: [bss.model_dump() for bss in await service.scan_results(name)]
                for name in names
            },
            "regulatory": (await service.regulatory()).model_dump(),
            "link": (await service.link("wlan0")).model_dump(),
        }
    finally:
        await service.stop()
        kernel.close()


def payloads(messages: list[bytes]) -> list[bytes]:
    return [message[NLMSG_HEADER_BYTES:] for message in messages]


async def test_an_unscrubbed_recording_answers_the_service_as_the_recorded_kernel(
    tmp_path: Path,
) -> None:
    original = build()
    replay = await recorded(FakeKernel(original), tmp_path / "fixture.json", scrub=False)
    assert await answers(replay) == await answers(original)
    for kind in DUMPED:  # the kernel's bytes, not pyroute2's re-encoding of them
        assert payloads(replay.messages[kind]) == payloads(original.messages[kind]), kind
    assert replay.family_id == original.family_id and replay.groups == original.groups
    assert payloads([replay.family]) == payloads([original.family])


async def test_the_file_has_the_keys_fixture_to_json_writes(tmp_path: Path) -> None:
    out = tmp_path / "fixture.json"
    await recorded(FakeKernel(build()), out)
    document, built = (
        json.loads(await asyncio.to_thread(out.read_text)),
        json.loads(build().to_json()),
    )
    assert document["format"] == built["format"] == "hostcore-nl80211-fixture/1"
    assert document.keys() == built.keys()
    assert document["family"].keys() == built["family"].keys()
    assert document["messages"].keys() == built["messages"].keys()
    meta = document["meta"]
    assert meta["source"] == "recorded" and meta["scrubbed"] is True and meta["skipped"] == []
    assert set(meta["drivers"]) == {"phy0", "phy1"}


def test_writing_never_replaces_a_file_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "fixture.json"
    built = build()
    recording = Recording(built.family_id, built.groups, built.family, built.messages)
    out.write_text("made meanwhile\n")
    with pytest.raises(FileExistsError):
        write(recording, out, force=False)
    assert out.read_text() == "made meanwhile\n"
    write(recording, out, force=True)
    assert Fixture.from_json(out.read_text()).messages == recording.messages


async def test_scrubbing_hides_the_neighbours_and_keeps_what_the_api_says_about_them(
    tmp_path: Path,
) -> None:
    original = await answers(build())
    scrubbed = await answers(await recorded(FakeKernel(build()), tmp_path / "fixture.json"))
    for same in ("interfaces", "phys", "regulatory"):  # the device's own, kept
        assert scrubbed[same] == original[same], same
    for name, networks in original["scan"].items():
        assert len(scrubbed["scan"][name]) == len(networks)
        for seen, was in zip(scrubbed["scan"][name], networks, strict=True):
            assert seen["bssid"] != was["bssid"] and seen["bssid"][:8] == was["bssid"][:8]
            assert len(seen["ssid_hex"]) == len(was["ssid_hex"])
            assert seen["hidden"] is was["hidden"]
            if not was["hidden"]:
                assert seen["ssid_hex"] != was["ssid_hex"]
                assert (seen["ssid"] is None) is (was["ssid"] is None)  # UTF-8, or not
            unchanged = ("frequency_mhz", "signal_dbm", "associated", "security")
            assert {k: seen[k] for k in unchanged} == {k: was[k] for k in unchanged}
    link = scrubbed["link"]  # the station, the BSS and the interface still match up
    assert (
        link["connected"] and link["station"]["mac"] == link["bssid"] != original["link"]["bssid"]
    )
    assert link["ssid"] != original["link"]["ssid"]


async def test_the_interface_names_the_network_by_the_same_pseudonym_as_its_bss(
    tmp_path: Path,
) -> None:
    replay = await recorded(FakeKernel(build()), tmp_path / "fixture.json")
    (wlan0,) = (
        message
        for raw in replay.messages["interfaces"]
        for message in decode_all(raw)
        if message.get_attr("NL80211_ATTR_IFINDEX") == WLAN0
    )
    link = (await answers(replay))["link"]
    assert wlan0.get_attr("NL80211_ATTR_SSID") == link["ssid"] != "HomeNet"


@pytest.mark.parametrize(
    ("ssid", "utf8"),
    [
        ("Caf\u00e9 \u2615 Gast".encode(), True),
        ("Caf\u00e9 M\u00fcller".encode("latin-1"), False),
        (b"", True),
        (b"\0" * 7, True),
    ],
)
def test_an_ssid_pseudonym_keeps_its_length_and_whether_it_is_utf8_or_hidden(
    ssid: bytes, utf8: bool
) -> None:
    scrubber = Scrubber([])
    pseudonym = scrubber.ssid(ssid)
    assert len(pseudonym) == len(ssid)
    assert pseudonym == scrubber.ssid(ssid)  # one pseudonym per network in a recording
    try:
        pseudonym.decode()
    except UnicodeDecodeError:
        assert not utf8
    else:
        assert utf8
    if ssid.strip(b"\0"):
        assert pseudonym != ssid and pseudonym.strip(b"\0")
    else:
        assert pseudonym == ssid


def test_every_address_of_a_bss_is_pseudonymised_and_the_devices_own_are_kept() -> None:
    own, bssid, parent, mld = (bytes([0x02, 0, 0, 0, 0, n]) for n in range(4))
    bss = nla(1, bssid) + nla(18, parent) + nla(22, mld)
    body = bytes([34, 1, 0, 0]) + nla(47 | 0x8000, bss)  # NEW_SCAN_RESULTS {BSS: …}
    message = struct.pack("=IHHII", 16 + len(body), FAMILY_ID, 0, 0, 0) + body
    scrubber = Scrubber([own])
    scrubbed = scrubber.message(message)
    assert len(scrubbed) == len(message)
    for address in (bssid, parent, mld):
        assert address not in scrubbed and scrubber.mac(address) in scrubbed
        assert scrubber.mac(address)[:3] == address[:3]
    assert scrubber.mac(own) == own


class NeighbourScanningKernel(FakeKernel):
    """Another interface (wlan1) scans too: its events reach every listener."""

    def _trigger_scan(self, sock: Any, request: Request) -> None:
        self._event("scan_started", WLAN1)
        self._event("scan_done", WLAN1)
        super()._trigger_scan(sock, request)


@pytest.mark.parametrize("outcome", ["done", "aborted"])
async def test_a_triggered_scan_is_recorded_with_its_events_and_replays_the_same_way(
    tmp_path: Path, outcome: str
) -> None:
    kernel = NeighbourScanningKernel(build(), scan_outcome=outcome)
    replay = await recorded(kernel, tmp_path / "fixture.json", trigger_scan="wlan0")
    assert "TRIGGER_SCAN" in [request.cmd for request in kernel.requests]
    ended = "scan_done" if outcome == "done" else "scan_aborted"
    counts = {kind: len(replay.messages[kind]) for kind in SCAN_EVENTS}
    assert counts == {"scan_started": 1, "scan_done": 0, "scan_aborted": 0, ended: 1}
    events = [decode_all(raw)[0] for kind in SCAN_EVENTS for raw in replay.messages[kind]]
    assert {event.get_attr("NL80211_ATTR_IFINDEX") for event in events} == {WLAN0}

    kernel = FakeKernel(replay, scan_outcome=outcome)
    service = WifiService(
        WifiSettings(), nl80211=Nl80211(timeout_s=TIMEOUT_S, socket_factory=kernel.socket)
    )
    try:
        if outcome == "done":
            found = await service.scan("wlan0")
            assert (
                [bss.bssid for bss in found.networks]
                == [bss.bssid for bss in await service.scan_results("wlan0")]
                != []
            )
        else:
            with pytest.raises(UpstreamFailed, match="aborted"):
                await service.scan("wlan0")
    finally:
        await service.stop()
        kernel.close()


async def test_without_trigger_scan_no_scan_is_started_and_no_event_recorded(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel(build())
    replay = await recorded(kernel, tmp_path / "fixture.json")
    assert "TRIGGER_SCAN" not in [request.cmd for request in kernel.requests]
    assert all(replay.messages[kind] == [] for kind in SCAN_EVENTS)


async def test_a_dump_made_again_after_an_interruption_is_recorded_once(tmp_path: Path) -> None:
    kernel = FakeKernel(build())
    kernel.interrupt_next_dump = True  # the split wiphy dump, the first one
    replay = await recorded(kernel, tmp_path / "fixture.json")
    split = [request for request in kernel.requests if request.cmd == "GET_WIPHY"]
    assert len(split) == 3  # interrupted, again, and the dump without the split
    assert payloads(replay.messages["wiphy_split"]) == payloads(build().messages["wiphy_split"])


class RefusingKernel(FakeKernel):
    """A kernel whose radios are too big for the unsplit dump and whose monitor refuses
    the station dump (both end the dump with an errno, as nl80211 does), and that has
    no GET_REG dump (genetlink refuses the request)."""

    def _get_reg(self, sock: Any, request: Request) -> None:
        if request.dump:
            return self._error(sock, request, errno.EOPNOTSUPP)
        return super()._get_reg(sock, request)

    def _get_wiphy(self, sock: Any, request: Request) -> None:
        if "NL80211_ATTR_SPLIT_WIPHY_DUMP" not in request.attrs:
            return self._dump(sock, request, [], code=errno.EMSGSIZE)
        return super()._get_wiphy(sock, request)

    def _get_station(self, sock: Any, request: Request) -> None:
        if request.attrs.get("NL80211_ATTR_IFINDEX") == MON0:
            return self._dump(sock, request, [], code=errno.EOPNOTSUPP)
        return super()._get_station(sock, request)


async def test_a_refused_dump_is_noted_and_the_rest_is_recorded(tmp_path: Path) -> None:
    out = tmp_path / "fixture.json"
    replay = await recorded(RefusingKernel(build()), out, scrub=False)
    assert replay.messages["wiphy"] == []
    skipped = json.loads(await asyncio.to_thread(out.read_text))["meta"]["skipped"]
    assert [note.split(":")[0] for note in skipped] == [
        "GET_WIPHY without the split",
        "GET_STATION mon0",
        "GET_REG dump (the global domain recorded instead)",
    ]
    assert payloads(replay.messages["reg"]) == payloads(build().messages["reg"][:1])
    got, expected = await answers(replay), await answers(build())
    regulatory = got.pop("regulatory")
    assert regulatory["self_managed"] == []  # what only the dump tells
    assert regulatory == {**expected.pop("regulatory"), "self_managed": []}
    assert got == expected


async def test_an_empty_datagram_before_the_unsplit_dump_is_not_a_message(
    tmp_path: Path,
) -> None:
    kernel = FakeKernel(build(), empty_datagram_before_unsplit=True)
    replay = await recorded(kernel, tmp_path / "fixture.json")
    assert payloads(replay.messages["wiphy"]) == payloads(build().messages["wiphy"])


def test_the_command_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "pi4.json"
    out.write_text("a recording of another device\n")
    kernel = FakeKernel(build())
    try:
        refused = CliRunner().invoke(command_line(kernel.socket), ["--out", str(out)])
        assert refused.exit_code == 2, refused.output
        assert refused.stderr == f"hostcore: {out} exists: --force replaces it\n"
        assert out.read_text() == "a recording of another device\n"
        assert kernel.requests == []  # refused before the radio was used

        forced = CliRunner().invoke(
            command_line(kernel.socket), ["--out", str(out), "--force", "--no-scrub"]
        )
        assert forced.exit_code == 0, forced.output
        assert forced.stdout.startswith(f"wrote {out}: wiphy_split 100, wiphy 2,")
    finally:
        kernel.close()
    replay = Fixture.from_json(out.read_text())
    assert replay.meta["scrubbed"] is False
    assert payloads(replay.messages["scan"]) == payloads(build().messages["scan"])


def test_recording_on_a_kernel_without_nl80211_fails_in_one_line_and_writes_nothing(
    tmp_path: Path,
) -> None:
    out = tmp_path / "here.json"
    result = CliRunner().invoke(command_line(), ["--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stderr == f"hostcore: {NO_NL80211}\n"
    assert not out.exists()
