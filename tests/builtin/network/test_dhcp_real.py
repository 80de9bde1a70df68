"""Real DHCP: dnsmasq leases an address to dhcpcd across a veth pair between two
throwaway namespaces, and :func:`read_leases` reads the lease dhcpcd wrote.

dhcpcd keeps its leases in /var/lib/dhcpcd and its pid file and control socket under
/run. It runs in a mount namespace of its own (``ip netns exec`` makes one, a slave of
the host's, so nothing mounted in it reaches the host) with the test's directory
mounted over /var/lib/dhcpcd and a tmpfs over /run, and with no hook script, so the
host's leases and /etc/resolv.conf are never touched: the test checks both.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hostcore.builtin.network.leases import DHCPCD_DIRECTORY, read_leases
from tests.builtin.network.netns import Netns, namespaces, require_namespaces, veth

SERVER_IF, CLIENT_IF = "dhcps0", "dhcpc0"
SERVER = "10.77.0.1"
POOL = ("10.77.0.50", "10.77.0.99")
DNS = ("10.77.0.53", "10.77.0.54")
DOMAIN = "lab.example"
LEASE_TIME_S = 600
DHCP_SERVER_PORT = 67

# A short timeout inside dhcpcd, a longer one around it: either way the test ends.
DHCPCD_TIMEOUT_S = 10
DHCPCD_EXIT_S = DHCPCD_TIMEOUT_S + 5
DNSMASQ_READY_S = 5.0
POLL_S = 0.02

HOST_RESOLV_CONF = Path("/etc/resolv.conf")
HOST_LEASES = Path("/") / DHCPCD_DIRECTORY

# Ask for what the test checks, as Debian's dhcpcd.conf does. No random start delay,
# no udev, no ARP probing and no IPv4LL fallback: the link is private, and the test
# should not wait seconds for what a real network needs.
DHCPCD_CONF = """\
option domain_name_servers, domain_name
require dhcp_server_identifier
nodelay
nodev
noarp
noipv4ll
"""
# $1 the test's lease directory, $2 the configuration, $3 the interface, $4 how long
# dhcpcd tries (then it exits, failing). No hook script
# ("--script /dev/null"): the hooks would write /etc/resolv.conf and the hostname.
DHCPCD_IN_PRIVATE_DIRECTORIES = (
    'mount --bind "$1" /var/lib/dhcpcd && mount -t tmpfs tmpfs /run && '
    'exec dhcpcd --nobackground --oneshot --ipv4only --timeout "$4" '
    '--config "$2" --script /dev/null "$3"'
)


@pytest.fixture
def dhcp_namespaces() -> Iterator[tuple[Netns, Netns]]:
    """A server and a client namespace joined by a veth pair; skips (fails under CI)
    without root, dnsmasq or dhcpcd."""
    require_namespaces("dnsmasq", "dhcpcd")
    with namespaces(2) as (server, client):
        veth(server, SERVER_IF, client, CLIENT_IF)
        server.ip("addr", "add", f"{SERVER}/24", "dev", SERVER_IF)
        yield server, client


def start_dnsmasq(server: Netns, tmp_path: Path) -> subprocess.Popen[bytes]:
    log = tmp_path / "dnsmasq.log"
    with log.open("wb") as output:
        dnsmasq = server.start(
            "dnsmasq",
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--port=0",  # no DNS: only DHCP
            f"--interface={SERVER_IF}",
            "--bind-interfaces",
            "--no-ping",  # else it pings an address for seconds before offering it
            "--leasefile-ro",
            f"--pid-file={tmp_path / 'dnsmasq.pid'}",
            "--log-facility=-",
            f"--dhcp-range={POOL[0]},{POOL[1]},255.255.255.0,{LEASE_TIME_S}",
            f"--dhcp-option=option:router,{SERVER}",
            f"--dhcp-option=option:dns-server,{DNS[0]},{DNS[1]}",
            f"--dhcp-option=option:domain-name,{DOMAIN}",
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + DNSMASQ_READY_S
    while not listens_on_udp(dnsmasq.pid, DHCP_SERVER_PORT):
        if dnsmasq.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"dnsmasq did not start serving DHCP:\n{log.read_text()}")
        time.sleep(POLL_S)
    return dnsmasq


def listens_on_udp(pid: int, port: int) -> bool:
    """Whether process ``pid``, once it is dnsmasq, has a UDP socket on ``port`` in its
    network namespace (``/proc/<pid>/net`` is that namespace's)."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() != "dnsmasq":
            return False  # still "ip netns exec", whose /proc/<pid>/net may be the host's
        lines = Path(f"/proc/{pid}/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1].endswith(f":{port:04X}") for line in lines)


def run_dhcpcd(client: Netns, tmp_path: Path, lease_directory: Path) -> None:
    config = tmp_path / "dhcpcd.conf"
    config.write_text(DHCPCD_CONF)
    log = tmp_path / "dhcpcd.log"
    with log.open("wb") as output:
        dhcpcd = client.start(
            "sh",
            "-c",
            DHCPCD_IN_PRIVATE_DIRECTORIES,
            "sh",
            str(lease_directory),
            str(config),
            CLIENT_IF,
            str(DHCPCD_TIMEOUT_S),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        status = dhcpcd.wait(DHCPCD_EXIT_S)
    except subprocess.TimeoutExpired:
        status = None  # the namespace's teardown stops it
    if status != 0:
        pytest.fail(f"dhcpcd got no lease (exit status {status}):\n{log.read_text()}")


def file_written(path: Path) -> datetime:
    path.write_bytes(b"")
    return datetime.fromtimestamp(path.stat().st_mtime_ns / 1e9, UTC)


def host_files(directory: Path) -> dict[str, tuple[int, int]] | None:
    """Each file's size and mtime, to tell that nothing in ``directory`` changed."""
    try:
        with os.scandir(directory) as entries:
            return {
                entry.name: (entry.stat().st_size, entry.stat().st_mtime_ns) for entry in entries
            }
    except FileNotFoundError:
        return None


def test_the_lease_dhcpcd_got_from_dnsmasq_is_read_as_the_server_gave_it(
    dhcp_namespaces: tuple[Netns, Netns], tmp_path: Path
) -> None:
    server, client = dhcp_namespaces
    resolv_conf = HOST_RESOLV_CONF.read_bytes()
    host_leases = host_files(HOST_LEASES)
    root = tmp_path / "root"
    lease_directory = root / DHCPCD_DIRECTORY
    lease_directory.mkdir(parents=True)

    start_dnsmasq(server, tmp_path)
    before = file_written(tmp_path / "before")
    run_dhcpcd(client, tmp_path, lease_directory)
    after = file_written(tmp_path / "after")

    (lease,) = read_leases(root, {client.index(CLIENT_IF): CLIENT_IF})
    assert lease.model_dump(exclude={"address", "obtained", "expires"}) == {
        "interface": CLIENT_IF,
        "client": "dhcpcd",
        "prefix_length": 24,
        "server": SERVER,
        "routers": [SERVER],
        "dns": list(DNS),
        "domain": DOMAIN,
        "lease_time_s": LEASE_TIME_S,
    }
    first, last = (ipaddress.IPv4Address(address) for address in POOL)
    assert first <= ipaddress.IPv4Address(lease.address) <= last
    # dhcpcd writes the file when it binds: after the file written before it started,
    # before the one written after it exited (the same clock dates all three).
    assert lease.obtained is not None
    assert before <= lease.obtained <= after
    assert lease.expires == lease.obtained + timedelta(seconds=LEASE_TIME_S)

    (link,) = json.loads(client.ip("-j", "addr", "show", "dev", CLIENT_IF))
    (kernel,) = [address for address in link["addr_info"] if address["family"] == "inet"]
    assert (kernel["local"], kernel["prefixlen"], kernel.get("dynamic")) == (
        lease.address,
        24,
        True,
    )
    assert 0 < kernel["valid_life_time"] <= LEASE_TIME_S

    assert HOST_RESOLV_CONF.read_bytes() == resolv_conf
    assert host_files(HOST_LEASES) == host_leases
