"""read_neighbours against real lldpd daemons, each in a throwaway namespace, and real lldpcli.

Each lldpd runs in the foreground (``-d``), on one interface (``-I``), with its
own control socket (``-u``) and its own configuration (``-O``, so the host's
/etc/lldpd.conf and /etc/lldpd.d stay out), which makes it announce every
second. A pid file is only written when lldpd daemonizes, so ``-d`` needs none;
the privilege-separated child chroots into lldpd's built-in /run/lldpd, which
any number of instances share (it is created on first start and left there, as
the Debian service leaves it).

lldpcli is set-user-ID ``_lldpd``: the sockets live in a directory that user
can traverse, not under pytest's ``tmp_path`` (private to root). lldpcli runs in
this test's own namespace: a unix socket is reached by its path from any
network namespace.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from hostcore.builtin.network.lldp import MAX_TEXT_CHARS, LldpNeighbourRead, read_neighbours
from hostcore.config import RunnerSettings
from hostcore.errors import Unavailable
from hostcore.runner import Runner
from tests.builtin.network.netns import Netns, require_namespaces, veth

DISCOVERY_DEADLINE_S = 15.0
POLL_INTERVAL_S = 0.2
LLDPCLI_TIMEOUT_S = 5.0
# Announce every second, and ask to be kept for 10 s (tx-interval x tx-hold).
FAST_ANNOUNCEMENTS = ("configure lldp tx-interval 1", "configure lldp tx-hold 10")
ANNOUNCED_TTL_S = 10


@pytest.fixture
def lldpd_dir() -> Iterator[Path]:
    """A directory for control sockets, configuration and logs that ``_lldpd`` can traverse."""
    require_namespaces("lldpd", "lldpcli")
    directory = Path(tempfile.mkdtemp(prefix="hc-lldpd-"))
    directory.chmod(0o711)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def start_lldpd(
    namespace: Netns,
    directory: Path,
    name: str,
    interfaces: Sequence[str],
    configuration: Sequence[str],
    *options: str,
) -> Path:
    """Start lldpd in ``namespace`` (stopped by PID at teardown); returns its control socket."""
    config_file = directory / f"{name}.conf"
    config_file.write_text("".join(f"{line}\n" for line in configuration))
    config_file.chmod(0o644)
    control_socket = directory / f"{name}.sock"
    with (directory / f"{name}.log").open("wb") as log:
        namespace.start(
            "lldpd",
            "-d",
            *options,
            "-I",
            ",".join(interfaces),
            "-u",
            str(control_socket),
            "-O",
            str(config_file),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return control_socket


async def neighbours_once_heard(
    control_socket: Path, count: int = 1, *, log: Path | None = None
) -> list[LldpNeighbourRead]:
    """Poll until lldpd knows ``count`` neighbours; fails, with lldpd's log, at the deadline."""
    runner = Runner(RunnerSettings())
    deadline = time.monotonic() + DISCOVERY_DEADLINE_S
    while True:
        try:
            neighbours = await read_neighbours(
                runner, control_socket=control_socket, timeout_s=LLDPCLI_TIMEOUT_S
            )
        except Unavailable:
            neighbours = []  # lldpd has not opened its socket yet
        if len(neighbours) >= count:
            return neighbours
        if time.monotonic() > deadline:
            text = await asyncio.to_thread(log.read_text, errors="replace") if log else ""
            tail = text[-2000:]
            pytest.fail(f"lldpd at {control_socket} heard {len(neighbours)} neighbours:\n{tail}")
        await asyncio.sleep(POLL_INTERVAL_S)


def mac_address(namespace: Netns, ifname: str) -> str:
    address: str = json.loads(namespace.ip("-j", "link", "show", "dev", ifname))[0]["address"]
    return address


# --- a hand-built announcement ----------------------------------------------------------
# What any host on the link may send: terminal escapes, bidi overrides, invalid
# UTF-8, a port description past the bound, and a PVID (the test kernel has no
# VLAN support, so no lldpd here can announce one).

LLDP_MULTICAST = bytes.fromhex("0180c200000e")
ETHERTYPE_LLDP = 0x88CC
IEEE_802_1_OUI = bytes.fromhex("0080c2")
HOSTILE_SYSTEM_NAME = "evil\x1b[2J\x07\r\nswitch\u202egnp.exe"
HOSTILE_DESCRIPTION = (
    b"Cisco IOS Software\nTechnical Support: http://www.example.com/support\r\n"
    + b"\xff\xfe"
    + b"A" * 430
)
HOSTILE_PORT_DESCRIPTION = b"uplink " + b"-" * 300


def _tlv(kind: int, value: bytes) -> bytes:
    return struct.pack("!H", kind << 9 | len(value)) + value


def hostile_lldpdu() -> bytes:
    """The frame, with a zero source MAC for the sender to replace."""
    management = (
        bytes([5, 1]) + socket.inet_aton("203.0.113.9") + bytes([2]) + struct.pack("!I", 7) + b"\0"
    )
    tlvs = [
        _tlv(1, b"\x07chassis\x1bid"),  # chassis ID, locally assigned
        _tlv(2, b"\x05Gi1/0/7"),  # port ID, interface name
        _tlv(3, struct.pack("!H", 120)),  # TTL
        _tlv(4, HOSTILE_PORT_DESCRIPTION),
        _tlv(5, HOSTILE_SYSTEM_NAME.encode()),
        _tlv(6, HOSTILE_DESCRIPTION),
        _tlv(7, struct.pack("!HH", 0x0014, 0x0004)),  # bridge and router; bridge enabled
        _tlv(8, management),
        _tlv(127, IEEE_802_1_OUI + b"\x01" + struct.pack("!H", 42)),  # port VLAN ID
        _tlv(127, IEEE_802_1_OUI + b"\x03" + struct.pack("!HB", 42, 6) + b"voice\x07"),
        _tlv(0, b""),
    ]
    return LLDP_MULTICAST + bytes(6) + struct.pack("!H", ETHERTYPE_LLDP) + b"".join(tlvs)


def start_announcing(namespace: Netns, ifname: str, frame: bytes) -> None:
    """Send a raw Ethernet frame from ``ifname`` every half second, as a neighbour would,
    until teardown stops the sender; the interface's MAC is spliced in as the source."""
    program = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n"
        "s.bind((sys.argv[1], 0))\n"
        "frame = bytes.fromhex(sys.argv[2])\n"
        "frame = frame[:6] + s.getsockname()[4] + frame[12:]\n"
        "while True:\n"
        "    s.send(frame)\n"
        "    time.sleep(0.5)\n"
    )
    namespace.start(sys.executable, "-c", program, ifname, frame.hex())


# --- tests ----------------------------------------------------------------------------


async def test_each_lldpd_reads_the_other_as_its_lldp_neighbour(
    lldpd_dir: Path, two_namespaces: tuple[Netns, Netns]
) -> None:
    panel, switch = two_namespaces
    veth(panel, "lldp-a", switch, "lldp-b")
    switch.ip("addr", "add", "192.0.2.2/24", "dev", "lldp-b")
    panel_socket = start_lldpd(
        panel,
        lldpd_dir,
        "panel",
        ["lldp-a"],
        [*FAST_ANNOUNCEMENTS, "configure system hostname panel-a"],
    )
    switch_socket = start_lldpd(
        switch,
        lldpd_dir,
        "switch",
        ["lldp-b"],
        [
            *FAST_ANNOUNCEMENTS,
            "configure system hostname switch-b",
            "configure system description 'Lab switch B'",
        ],
    )

    (heard_by_panel,) = await neighbours_once_heard(panel_socket, log=lldpd_dir / "panel.log")
    (heard_by_switch,) = await neighbours_once_heard(switch_socket, log=lldpd_dir / "switch.log")

    switch_mac = mac_address(switch, "lldp-b")
    assert heard_by_panel.protocol == "LLDP"
    assert heard_by_panel.local_port == "lldp-a"
    assert (heard_by_panel.chassis_id_type, heard_by_panel.chassis_id) == ("mac", switch_mac)
    assert heard_by_panel.system_name == "switch-b"
    assert heard_by_panel.system_description == "Lab switch B"
    # lldpd's default port ID is the MAC, with the interface name as the description.
    assert (heard_by_panel.port_id_type, heard_by_panel.port_id) == ("mac", switch_mac)
    assert heard_by_panel.port_description == "lldp-b"
    assert heard_by_panel.ttl_s == ANNOUNCED_TTL_S
    assert "192.0.2.2" in heard_by_panel.management_addresses
    assert heard_by_panel.age_s is not None and heard_by_panel.age_s >= 0
    assert heard_by_panel.vlan_id is None

    assert (heard_by_switch.protocol, heard_by_switch.local_port) == ("LLDP", "lldp-b")
    assert heard_by_switch.system_name == "panel-a"
    assert heard_by_switch.port_id == mac_address(panel, "lldp-a")


async def test_a_cdp_only_neighbour_is_read_with_its_cdp_version(
    lldpd_dir: Path, two_namespaces: tuple[Netns, Netns]
) -> None:
    panel, switch = two_namespaces
    veth(panel, "cdp-a", switch, "Gi0-1")
    # -c: understand CDP; -ccc: send CDPv2 even with no CDP peer; -ll: no LLDP at all.
    panel_socket = start_lldpd(panel, lldpd_dir, "panel", ["cdp-a"], FAST_ANNOUNCEMENTS, "-c")
    start_lldpd(
        switch,
        lldpd_dir,
        "switch",
        ["Gi0-1"],
        [*FAST_ANNOUNCEMENTS, "configure system hostname cisco-like"],
        "-ccc",
        "-ll",
    )

    (neighbour,) = await neighbours_once_heard(panel_socket, log=lldpd_dir / "panel.log")

    assert (neighbour.protocol, neighbour.local_port) == ("CDPv2", "cdp-a")
    assert (neighbour.chassis_id_type, neighbour.chassis_id) == ("local", "cisco-like")
    assert (neighbour.port_id_type, neighbour.port_id) == ("ifname", "Gi0-1")
    assert neighbour.system_name == "cisco-like"


async def test_a_hostile_announcement_reaches_the_client_cleaned_and_bounded(
    lldpd_dir: Path, two_namespaces: tuple[Netns, Netns]
) -> None:
    panel, attacker = two_namespaces
    veth(panel, "lldp-a", attacker, "lldp-x")
    panel_socket = start_lldpd(panel, lldpd_dir, "panel", ["lldp-a"], FAST_ANNOUNCEMENTS)

    start_announcing(attacker, "lldp-x", hostile_lldpdu())
    (neighbour,) = await neighbours_once_heard(panel_socket, log=lldpd_dir / "panel.log")

    assert neighbour.system_name == "evil[2J switchgnp.exe"
    assert neighbour.chassis_id == "chassisid"
    assert neighbour.port_id == "Gi1/0/7"
    assert neighbour.vlan_id == 42
    assert neighbour.ttl_s == 120
    assert neighbour.management_addresses == ["203.0.113.9"]
    assert neighbour.port_description is not None
    assert len(neighbour.port_description) == MAX_TEXT_CHARS
    assert neighbour.port_description.endswith("-…")
    assert neighbour.system_description is not None
    assert neighbour.system_description.startswith(
        "Cisco IOS Software Technical Support: http://www.example.com/support \ufffd\ufffdAAA"
    )
    for text in neighbour.model_dump(mode="json").values():
        if isinstance(text, str):
            assert not [c for c in text if unicodedata.category(c) in {"Cc", "Cf", "Cs"}]


async def test_without_lldpd_lldpcli_cannot_connect_and_the_answer_is_unavailable(
    lldpd_dir: Path,
) -> None:
    absent = lldpd_dir / "lldpd.sock"

    with pytest.raises(Unavailable, match=r"lldpd is not running: its control socket at .* cannot"):
        await read_neighbours(
            Runner(RunnerSettings()), control_socket=absent, timeout_s=LLDPCLI_TIMEOUT_S
        )


async def test_a_socket_lldpcli_may_not_reach_is_unavailable_saying_so(tmp_path: Path) -> None:
    require_namespaces("lldpcli")  # root, whose tmp_path is its own; lldpcli runs as _lldpd
    private = tmp_path / "lldpd.sock"

    with pytest.raises(Unavailable, match=r"control socket at .* cannot be opened: permission"):
        await read_neighbours(
            Runner(RunnerSettings()), control_socket=private, timeout_s=LLDPCLI_TIMEOUT_S
        )
