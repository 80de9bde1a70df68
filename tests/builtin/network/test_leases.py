from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hostcore.builtin.network.leases import (
    MAX_DOMAIN_CHARS,
    MAX_FILES_PER_DIRECTORY,
    MAX_LEASE_FILE_BYTES,
    LeaseRead,
    read_leases,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "network" / "leases"
DHCPCD = FIXTURES / "dhcpcd"
DHCLIENT = FIXTURES / "dhclient"
NETWORKD = FIXTURES / "networkd"
NETWORKMANAGER = FIXTURES / "networkmanager"

DHCPCD_DIR = "var/lib/dhcpcd"
DHCLIENT_DIR = "var/lib/dhcp"
NETWORKD_DIR = "run/systemd/netif/leases"
NM_DIR = "var/lib/NetworkManager"
NM_WLAN0 = "internal-5f8e2b71-3c4d-4e6a-9b2f-0d1c7a8e9f30-wlan0.lease"
NM_WLAN0_OTHER = "internal-c2a9d4e0-7b1f-4f38-8a65-3e0b9d2c41a7-wlan0.lease"

# Git keeps no mtimes: every copied file is dated this, unless a test says otherwise.
WRITTEN = datetime(2026, 11, 30, 11, 11, 29, tzinfo=UTC)


def tree(tmp_path: Path, *sources: Path) -> Path:
    """A writable copy of fixture trees, merged, every file written at WRITTEN."""
    root = tmp_path / "root"
    root.mkdir()
    for source in sources:
        shutil.copytree(source, root, dirs_exist_ok=True)
    for path in root.rglob("*"):
        if path.is_file():
            date(path, WRITTEN)
    return root


def date(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def only(leases: list[LeaseRead], interface: str, client: str) -> LeaseRead:
    matching = [lease for lease in leases if (lease.interface, lease.client) == (interface, client)]
    assert len(matching) == 1, leases
    return matching[0]


# --- dhcpcd -----------------------------------------------------------------------------


def test_a_dhcpcd_lease_is_the_servers_ack_dated_by_its_file(tmp_path: Path) -> None:
    leases = read_leases(tree(tmp_path, DHCPCD), {2: "eth0", 3: "wlan0"})
    assert only(leases, "eth0", "dhcpcd") == LeaseRead(
        interface="eth0",
        client="dhcpcd",
        address="192.168.50.133",
        prefix_length=24,
        server="192.168.50.1",
        routers=["192.168.50.1"],
        dns=["192.168.50.1", "9.9.9.9"],
        domain="home.arpa",
        lease_time_s=43200,
        obtained=WRITTEN,
        expires=WRITTEN + timedelta(hours=12),
    )


def test_an_infinite_dhcpcd_lease_has_no_lease_time_and_never_expires(tmp_path: Path) -> None:
    lease = only(read_leases(tree(tmp_path, DHCPCD), {3: "wlan0"}), "wlan0", "dhcpcd")
    assert lease.address == "192.168.50.142"
    assert lease.domain is None
    assert (lease.lease_time_s, lease.obtained, lease.expires) == (None, WRITTEN, None)


@pytest.mark.parametrize(
    ("file_name", "ifnames", "interface"),
    [
        ("wlan0-HomeNet.lease", {3: "wlan0"}, "wlan0"),
        ("wlan0-Home-Net.lease", {3: "wlan0"}, "wlan0"),
        ("br-lan-Guest.lease", {3: "br", 4: "br-lan"}, "br-lan"),
        ("wlan0-A-network-with-a-long-name.lease", {}, "wlan0"),
        ("wlan0-HomeNet.lease", {}, "wlan0-HomeNet"),  # could be an interface's own name
        ("eth0.lease", {}, "eth0"),
    ],
)
def test_a_dhcpcd_lease_file_is_named_by_its_interface_and_a_wireless_ones_ssid(
    tmp_path: Path, file_name: str, ifnames: dict[int, str], interface: str
) -> None:
    root = tmp_path / "root"
    (root / DHCPCD_DIR).mkdir(parents=True)
    shutil.copy(DHCPCD / DHCPCD_DIR / "eth0.lease", root / DHCPCD_DIR / file_name)
    assert [lease.interface for lease in read_leases(root, ifnames)] == [interface]


def test_a_dhcpcd_file_name_that_names_no_interface_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / DHCPCD_DIR).mkdir(parents=True)
    shutil.copy(DHCPCD / DHCPCD_DIR / "eth0.lease", root / DHCPCD_DIR / ":bad.lease")
    assert read_leases(root, {}) == []


def test_dhcpcd_lease6_files_are_not_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / DHCPCD_DIR).mkdir(parents=True)
    shutil.copy(DHCPCD / DHCPCD_DIR / "eth0.lease", root / DHCPCD_DIR / "eth0.lease6")
    assert read_leases(root, {}) == []


@pytest.mark.parametrize("kept", [0, 100, 239, 240, 260, 306], ids=lambda kept: f"{kept}-bytes")
def test_a_truncated_dhcpcd_lease_is_skipped_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, kept: int
) -> None:
    root = tree(tmp_path, DHCPCD)
    lease_file = root / DHCPCD_DIR / "eth0.lease"
    assert len(lease_file.read_bytes()) == 307  # 306 bytes ends just before the end option
    lease_file.write_bytes(lease_file.read_bytes()[:kept])
    with caplog.at_level(logging.DEBUG, logger="hostcore.builtin.network.leases"):
        leases = read_leases(root, {2: "eth0", 3: "wlan0"})
    assert [lease.interface for lease in leases] == ["wlan0"]
    assert f"lease file {lease_file} skipped" in caplog.text


def mangled(offset: int, value: bytes) -> Callable[[bytes], bytes]:
    return lambda data: data[:offset] + value + data[offset + len(value) :]


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(mangled(0, b"\x01"), id="a-request-not-a-reply"),
        pytest.param(mangled(236, b"\x63\x82\x53\x00"), id="no-magic-cookie"),
        pytest.param(mangled(242, b"\x06"), id="a-nak"),  # option 53's value, 5 in the ACK
        pytest.param(mangled(16, bytes(4)), id="no-address"),
        pytest.param(mangled(241, b"\xff"), id="an-option-longer-than-the-message"),
        pytest.param(lambda data: data[:-1] + b"\x00", id="no-end-option"),
        pytest.param(lambda data: data[:-1] + b"\x34\x01\x07\xff", id="an-invalid-overload"),
    ],
)
def test_a_dhcpcd_file_that_is_no_valid_dhcpack_is_skipped(
    tmp_path: Path, mangle: Callable[[bytes], bytes]
) -> None:
    root = tree(tmp_path, DHCPCD)
    lease_file = root / DHCPCD_DIR / "eth0.lease"
    lease_file.write_bytes(mangle(lease_file.read_bytes()))
    assert [lease.interface for lease in read_leases(root, {3: "wlan0"})] == ["wlan0"]


def option(code: int, value: bytes) -> bytes:
    return bytes((code, len(value))) + value


def dhcp_ack(options: bytes, *, sname: bytes = b"", file: bytes = b"") -> bytes:
    """A DHCPACK for 10.1.2.3 (RFC 2131's layout), to write what no capture shows."""
    header = bytearray(236)
    header[0] = 2  # BOOTREPLY
    header[16:20] = bytes((10, 1, 2, 3))
    header[44 : 44 + len(sname)] = sname
    header[108 : 108 + len(file)] = file
    return bytes(header) + b"\x63\x82\x53\x63" + option(53, b"\x05") + options + b"\xff"


def read_one_dhcpcd(tmp_path: Path, message: bytes) -> LeaseRead:
    root = tmp_path / "root"
    (root / DHCPCD_DIR).mkdir(parents=True)
    (root / DHCPCD_DIR / "eth0.lease").write_bytes(message)
    (lease,) = read_leases(root, {})
    return lease


def test_a_repeated_dhcp_option_is_concatenated_as_rfc_3396_says(tmp_path: Path) -> None:
    lease = read_one_dhcpcd(
        tmp_path,
        dhcp_ack(
            option(6, bytes((10, 1, 2, 53)))
            + option(15, b"long.")
            + option(6, bytes((10, 1, 2, 54)))
            + option(15, b"example")
        ),
    )
    assert (lease.dns, lease.domain) == (["10.1.2.53", "10.1.2.54"], "long.example")


def test_options_overloaded_into_the_file_and_sname_fields_are_read(tmp_path: Path) -> None:
    lease = read_one_dhcpcd(
        tmp_path,
        dhcp_ack(
            option(52, b"\x03") + option(51, (3600).to_bytes(4, "big")),
            file=option(3, bytes((10, 1, 2, 1))) + b"\xff",
            sname=option(54, bytes((10, 1, 2, 1))) + b"\xff",
        ),
    )
    assert (lease.routers, lease.server, lease.lease_time_s) == (["10.1.2.1"], "10.1.2.1", 3600)


def test_a_dhcp_option_of_the_wrong_length_is_left_out_not_the_lease(tmp_path: Path) -> None:
    lease = read_one_dhcpcd(
        tmp_path,
        dhcp_ack(
            option(1, bytes((255, 255, 0)))
            + option(3, bytes((10, 1, 2, 1, 10, 1)))
            + option(54, bytes((10, 1, 2)))
            + option(51, b"\x0e\x10")
        ),
    )
    assert lease.address == "10.1.2.3"
    assert (lease.prefix_length, lease.routers, lease.server, lease.lease_time_s) == (
        None,
        [],
        None,
        None,
    )


@pytest.mark.parametrize(
    ("mask", "prefix_length"),
    [
        ((255, 255, 255, 0), 24),
        ((255, 255, 252, 0), 22),
        ((0, 0, 0, 0), 0),
        ((255, 0, 255, 0), None),
    ],
)
def test_the_prefix_length_is_that_of_the_subnet_mask_when_it_is_a_prefix(
    tmp_path: Path, mask: tuple[int, ...], prefix_length: int | None
) -> None:
    lease = read_one_dhcpcd(tmp_path, dhcp_ack(option(1, bytes(mask))))
    assert lease.prefix_length == prefix_length


@pytest.mark.parametrize(
    ("sent", "domain"),
    [
        (b"example.com\x00", "example.com"),
        ("bücher.example".encode(), None),
        (b"evil\x1b[2Jexample", None),
        (b"a" * (MAX_DOMAIN_CHARS + 1), None),
    ],
    ids=["trailing-nul", "not-ascii", "control-characters", "too-long"],
)
def test_a_domain_that_is_not_printable_ascii_is_left_out(
    tmp_path: Path, sent: bytes, domain: str | None
) -> None:
    lease = read_one_dhcpcd(tmp_path, dhcp_ack(option(15, sent)))
    assert (lease.address, lease.domain) == ("10.1.2.3", domain)


# --- dhclient ---------------------------------------------------------------------------


def test_the_last_dhclient_lease_block_for_an_interface_is_the_current_one(tmp_path: Path) -> None:
    leases = read_leases(tree(tmp_path, DHCLIENT), {})
    assert only(leases, "eth0", "dhclient") == LeaseRead(
        interface="eth0",
        client="dhclient",
        address="10.20.30.141",
        prefix_length=24,
        server="10.20.30.1",
        routers=["10.20.30.1"],
        dns=["10.20.30.1", "1.1.1.1"],
        domain="office.example.com",
        lease_time_s=3600,
        obtained=datetime(2026, 11, 30, 11, 12, 1, tzinfo=UTC),
        expires=datetime(2026, 11, 30, 12, 12, 1, tzinfo=UTC),
    )


def test_dhclient_epoch_times_of_db_time_format_local_are_read(tmp_path: Path) -> None:
    lease = only(read_leases(tree(tmp_path, DHCLIENT), {}), "enp1s0", "dhclient")
    expires = datetime.fromtimestamp(1796123527, UTC)
    assert (lease.address, lease.routers, lease.domain) == (
        "192.168.50.189",
        ["192.168.50.254"],
        "corp.example",
    )
    assert (lease.lease_time_s, lease.obtained, lease.expires) == (
        86400,
        expires - timedelta(days=1),
        expires,
    )


def test_an_infinite_dhclient_lease_never_expires(tmp_path: Path) -> None:
    lease = only(read_leases(tree(tmp_path, DHCLIENT), {}), "wlan0", "dhclient")
    assert (lease.address, lease.lease_time_s, lease.expires) == ("192.168.50.169", None, None)
    # dhclient wrote bound time + 2**32 - 1 seconds: the bound time is still known.
    assert lease.obtained == datetime(2026, 11, 30, 11, 12, 6, tzinfo=UTC)


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_a_dhclient_lease_that_expires_never_has_no_expiry(tmp_path: Path) -> None:
    root = tree(tmp_path, DHCLIENT)
    rewrite(
        root / DHCLIENT_DIR / "dhclient.eth0.leases", "expire 1 2026/11/30 12:12:01", "expire never"
    )
    lease = only(read_leases(root, {}), "eth0", "dhclient")
    assert (lease.lease_time_s, lease.obtained, lease.expires) == (3600, None, None)


def test_dhclient_lease6_blocks_and_the_default_duid_are_passed_over(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / DHCLIENT_DIR).mkdir(parents=True)
    lease6 = (DHCLIENT / DHCLIENT_DIR / "dhclient6.leases").read_text()
    ipv4 = (DHCLIENT / DHCLIENT_DIR / "dhclient.leases").read_text()
    (root / DHCLIENT_DIR / "dhclient6.leases").write_text(lease6)
    assert read_leases(root, {}) == []
    (root / DHCLIENT_DIR / "dhclient6.leases").write_text(lease6 + ipv4)
    assert [lease.address for lease in read_leases(root, {})] == ["192.168.50.169"]


@pytest.mark.parametrize(
    "cut",
    [
        pytest.param(lambda text: text[:-2], id="inside-the-last-block"),
        pytest.param(lambda text: text[:-40], id="inside-a-statement"),
        pytest.param(lambda text: text.replace('"office.example.com";', '"office'), id="string"),
        pytest.param(lambda text: text + "}\n", id="unbalanced-brace"),
    ],
)
def test_a_dhclient_file_cut_short_is_skipped_not_an_error(
    tmp_path: Path, cut: Callable[[str], str]
) -> None:
    root = tree(tmp_path, DHCLIENT)
    path = root / DHCLIENT_DIR / "dhclient.eth0.leases"
    path.write_text(cut(path.read_text()))
    assert [lease.interface for lease in read_leases(root, {})] == ["enp1s0", "wlan0"]


@pytest.mark.parametrize("interface", ["../../etc", "eth0 up", "a-name-sixteen-c", "", "."])
def test_a_dhclient_lease_for_an_interface_name_linux_would_refuse_is_dropped(
    tmp_path: Path, interface: str
) -> None:
    root = tree(tmp_path, DHCLIENT)
    rewrite(root / DHCLIENT_DIR / "dhclient.enp1s0.leases", '"enp1s0"', f'"{interface}"')
    assert [lease.interface for lease in read_leases(root, {})] == ["eth0", "wlan0"]


@pytest.mark.parametrize(
    ("written", "domain"),
    [
        (r'"corp\056example"', "corp.example"),
        (r'"corp\001example"', None),
        (r'"corp\"example"', 'corp"example'),
        ("corp.example", None),  # not a string
    ],
)
def test_dhclient_string_escapes_are_decoded_before_the_domain_is_checked(
    tmp_path: Path, written: str, domain: str | None
) -> None:
    root = tree(tmp_path, DHCLIENT)
    rewrite(root / DHCLIENT_DIR / "dhclient.enp1s0.leases", '"corp.example"', written)
    lease = only(read_leases(root, {}), "enp1s0", "dhclient")
    assert (lease.address, lease.domain) == ("192.168.50.189", domain)


def test_of_two_dhclient_files_for_one_interface_the_newer_is_current(tmp_path: Path) -> None:
    root = tree(tmp_path, DHCLIENT)
    other = root / DHCLIENT_DIR / "dhclient.leases"
    rewrite(other, '"wlan0"', '"eth0"')
    date(other, WRITTEN - timedelta(seconds=1))
    assert only(read_leases(root, {}), "eth0", "dhclient").address == "10.20.30.141"
    date(other, WRITTEN + timedelta(seconds=1))
    assert only(read_leases(root, {}), "eth0", "dhclient").address == "192.168.50.169"


# --- systemd-networkd -------------------------------------------------------------------


def test_a_networkd_lease_is_named_through_the_ifindex_mapping(tmp_path: Path) -> None:
    leases = read_leases(tree(tmp_path, NETWORKD), {2: "eth0", 3: "enp3s0"})
    assert only(leases, "eth0", "systemd-networkd") == LeaseRead(
        interface="eth0",
        client="systemd-networkd",
        address="192.168.50.184",
        prefix_length=24,
        server="192.168.50.1",
        routers=["192.168.50.1"],
        dns=["192.168.50.1", "9.9.9.9"],
        domain="home.arpa",
        lease_time_s=43200,
        # networkd rewrites the file with the link's state: its mtime does not date the lease.
        obtained=None,
        expires=None,
    )


def test_systemd_255_and_later_write_the_lifetime_as_a_timespan(tmp_path: Path) -> None:
    lease = only(read_leases(tree(tmp_path, NETWORKD), {3: "enp3s0"}), "enp3s0", "systemd-networkd")
    assert (lease.address, lease.prefix_length, lease.lease_time_s) == ("10.0.8.23", 22, 30 * 3600)
    assert (lease.routers, lease.dns, lease.domain) == (
        ["10.0.8.1"],
        ["10.0.8.1", "10.0.8.2"],
        "branch.example.net",
    )


def test_an_ifindex_missing_from_the_mapping_is_shown_as_its_number(tmp_path: Path) -> None:
    leases = read_leases(tree(tmp_path, NETWORKD), {2: "eth0", 7: "bad/name"})
    assert [lease.interface for lease in leases] == ["3", "eth0"]


@pytest.mark.parametrize(
    ("lifetime", "seconds"),
    [
        ("43200", 43200),
        ("12h", 43200),
        ("1d 6h", 108000),
        ("1y 2month 1w 1d 1h 1min 1s", 31557600 + 2 * 2629800 + 604800 + 86400 + 3661),
        ("infinity", None),
        ("4294967295", None),
        ("1.5h", None),
        ("12 h", None),
        ("", None),
    ],
)
def test_a_networkd_lifetime_is_seconds_or_a_systemd_timespan(
    tmp_path: Path, lifetime: str, seconds: int | None
) -> None:
    root = tree(tmp_path, NETWORKD)
    rewrite(root / NETWORKD_DIR / "3", "LIFETIME=1d 6h", f"LIFETIME={lifetime}")
    assert only(read_leases(root, {}), "3", "systemd-networkd").lease_time_s == seconds


def test_a_networkd_file_without_an_address_or_with_a_bad_name_is_skipped(tmp_path: Path) -> None:
    root = tree(tmp_path, NETWORKD)
    rewrite(root / NETWORKD_DIR / "3", "ADDRESS=10.0.8.23", "ADDRESS=10.0.8")
    (root / NETWORKD_DIR / "2").rename(root / NETWORKD_DIR / "02")
    assert read_leases(root, {}) == []


# --- NetworkManager ---------------------------------------------------------------------


def test_networkmanagers_internal_client_records_only_the_address(tmp_path: Path) -> None:
    root = tree(tmp_path, NETWORKMANAGER)
    date(root / NM_DIR / NM_WLAN0, WRITTEN + timedelta(minutes=5))
    assert only(read_leases(root, {}), "wlan0", "NetworkManager") == LeaseRead(
        interface="wlan0",
        client="NetworkManager",
        address="192.168.178.34",
        prefix_length=None,
        server=None,
        routers=[],
        dns=[],
        domain=None,
        lease_time_s=None,
        obtained=WRITTEN + timedelta(minutes=5),
        expires=None,
    )


def test_of_several_lease_files_for_one_interface_the_newest_is_current(tmp_path: Path) -> None:
    root = tree(tmp_path, NETWORKMANAGER)
    date(root / NM_DIR / NM_WLAN0_OTHER, WRITTEN + timedelta(days=1))
    assert only(read_leases(root, {}), "wlan0", "NetworkManager").address == "10.44.0.17"
    date(root / NM_DIR / NM_WLAN0, WRITTEN + timedelta(days=2))
    assert only(read_leases(root, {}), "wlan0", "NetworkManager").address == "192.168.178.34"


def test_an_interface_name_holding_a_dash_is_read_after_the_connection_uuid(
    tmp_path: Path,
) -> None:
    lease = only(read_leases(tree(tmp_path, NETWORKMANAGER), {}), "br-lan", "NetworkManager")
    assert lease.address == "192.168.1.2"


def test_networkmanagers_dhclient_leases_are_read_in_dhclients_format(tmp_path: Path) -> None:
    lease = only(read_leases(tree(tmp_path, NETWORKMANAGER), {}), "enp0s31f6", "NetworkManager")
    assert (lease.address, lease.domain, lease.lease_time_s, lease.expires) == (
        "172.16.4.131",
        "lan",
        7200,
        datetime(2026, 11, 30, 13, 16, 5, tzinfo=UTC),
    )


def test_an_older_internal_lease_in_networkds_format_expires_a_lifetime_after_it_was_written(
    tmp_path: Path,
) -> None:
    # NetworkManager before 1.22 ran systemd's DHCP client and saved its lease the same way.
    root = tree(tmp_path, NETWORKMANAGER)
    shutil.copy(NETWORKD / NETWORKD_DIR / "2", root / NM_DIR / NM_WLAN0)
    date(root / NM_DIR / NM_WLAN0, WRITTEN + timedelta(days=2))
    lease = only(read_leases(root, {}), "wlan0", "NetworkManager")
    assert (lease.address, lease.lease_time_s) == ("192.168.50.184", 43200)
    assert lease.expires == WRITTEN + timedelta(days=2, hours=12)


# --- every client -----------------------------------------------------------------------


def test_leases_are_sorted_by_interface_then_client(tmp_path: Path) -> None:
    root = tree(tmp_path, DHCPCD, DHCLIENT, NETWORKD, NETWORKMANAGER)
    leases = read_leases(root, {2: "eth0", 3: "wlan0"})
    assert [(lease.interface, lease.client) for lease in leases] == [
        ("br-lan", "NetworkManager"),
        ("enp0s31f6", "NetworkManager"),
        ("enp1s0", "dhclient"),
        ("eth0", "dhclient"),
        ("eth0", "dhcpcd"),
        ("eth0", "systemd-networkd"),
        ("wlan0", "NetworkManager"),
        ("wlan0", "dhclient"),
        ("wlan0", "dhcpcd"),
        ("wlan0", "systemd-networkd"),
    ]


def test_a_lease_reads_as_json_with_utc_times(tmp_path: Path) -> None:
    lease = only(read_leases(tree(tmp_path, DHCPCD), {}), "eth0", "dhcpcd")
    assert lease.model_dump(mode="json")["obtained"] == "2026-11-30T11:11:29Z"


@pytest.mark.parametrize("root", ["missing", "empty", "file"])
def test_no_lease_directory_means_no_leases(tmp_path: Path, root: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("")
    for directory in (DHCPCD_DIR, DHCLIENT_DIR, NETWORKD_DIR, NM_DIR):
        (tmp_path / "empty" / directory).mkdir(parents=True)
    assert read_leases(tmp_path / root, {2: "eth0"}) == []


def test_a_symlink_in_a_lease_directory_is_not_followed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tree(tmp_path, DHCPCD, NETWORKD)
    (root / DHCPCD_DIR / "eth0.lease").rename(tmp_path / "elsewhere")
    (root / DHCPCD_DIR / "eth0.lease").symlink_to(tmp_path / "elsewhere")
    (root / NETWORKD_DIR / "2").unlink()
    (root / NETWORKD_DIR / "2").symlink_to("3")
    with caplog.at_level(logging.DEBUG, logger="hostcore.builtin.network.leases"):
        leases = read_leases(root, {2: "eth0", 3: "enp3s0"})
    assert [(lease.interface, lease.client) for lease in leases] == [
        ("enp3s0", "systemd-networkd"),
        ("wlan0-HomeNet", "dhcpcd"),
    ]
    assert f"lease file {root / DHCPCD_DIR / 'eth0.lease'} skipped: a symbolic link" in caplog.text


def test_what_is_not_a_regular_file_is_skipped_without_blocking(tmp_path: Path) -> None:
    root = tree(tmp_path, DHCPCD)
    (root / DHCPCD_DIR / "eth0.lease").unlink()
    os.mkfifo(root / DHCPCD_DIR / "eth0.lease")  # opening it for reading would wait for a writer
    (root / DHCPCD_DIR / "eth1.lease").mkdir()
    assert [lease.interface for lease in read_leases(root, {3: "wlan0"})] == ["wlan0"]


@pytest.mark.parametrize(
    ("size", "read"), [(MAX_LEASE_FILE_BYTES, True), (MAX_LEASE_FILE_BYTES + 1, False)]
)
def test_a_lease_file_larger_than_the_limit_is_skipped(
    tmp_path: Path, size: int, read: bool
) -> None:
    root = tree(tmp_path, DHCPCD)
    lease_file = root / DHCPCD_DIR / "eth0.lease"
    data = lease_file.read_bytes()  # what follows the end option is padding, to a decoder
    lease_file.write_bytes(data + bytes(size - len(data)))
    assert ("eth0" in [lease.interface for lease in read_leases(root, {3: "wlan0"})]) is read


def test_at_most_the_limit_of_files_is_read_per_directory(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "root"
    (root / DHCPCD_DIR).mkdir(parents=True)
    message = (DHCPCD / DHCPCD_DIR / "eth0.lease").read_bytes()
    for number in range(MAX_FILES_PER_DIRECTORY + 10):
        (root / DHCPCD_DIR / f"veth{number}.lease").write_bytes(message)
    with caplog.at_level(logging.DEBUG, logger="hostcore.builtin.network.leases"):
        assert len(read_leases(root, {})) == MAX_FILES_PER_DIRECTORY
    assert f"more than {MAX_FILES_PER_DIRECTORY} lease files" in caplog.text


def test_a_skipped_file_is_logged_by_name_never_by_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tree(tmp_path, DHCLIENT, NETWORKD)
    rewrite(root / DHCLIENT_DIR / "dhclient.eth0.leases", '"office.example.com";', '"secret-host')
    rewrite(root / NETWORKD_DIR / "3", "ADDRESS=10.0.8.23", "ADDRESS=secret-host")
    with caplog.at_level(logging.DEBUG, logger="hostcore.builtin.network.leases"):
        read_leases(root, {})
    assert "dhclient.eth0.leases skipped" in caplog.text
    assert f"{root / NETWORKD_DIR / '3'} skipped" in caplog.text
    assert "secret" not in caplog.text


@pytest.mark.parametrize("number", ["\u00b2", "\u0663\u0660", "9" * 5000])
def test_a_number_that_is_no_ascii_number_is_no_lease_data_not_an_error(
    tmp_path: Path, number: str
) -> None:
    leases = tmp_path / "var/lib/dhcp"
    leases.mkdir(parents=True)
    (leases / "dhclient.leases").write_text(
        "lease {\n"
        '  interface "eth0";\n'
        "  fixed-address 192.168.50.189;\n"
        f"  option dhcp-lease-time {number};\n"
        f"  expire epoch {number};\n"
        "}\n"
    )
    networkd = tmp_path / "run/systemd/netif/leases"
    networkd.mkdir(parents=True)
    (networkd / "2").write_text(f"ADDRESS=10.1.2.3\nLIFETIME={number}\n")

    found = {lease.client: lease for lease in read_leases(tmp_path, {2: "wlan0"})}

    assert found["dhclient"].address == "192.168.50.189"
    assert found["dhclient"].lease_time_s is None and found["dhclient"].expires is None
    assert found["systemd-networkd"].lease_time_s is None
