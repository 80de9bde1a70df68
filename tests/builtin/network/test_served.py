"""A real ``hostcore serve --workers 2`` started inside a namespace (``ip netns exec``): the
production path, its own namespace the process's, /sys/class/net remounted for it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.builtin.network.netns import Netns, veth
from tests.helpers import RealServer, start_real_server, stop_group

API = "/api/v1/network"


@pytest.fixture
def served(two_namespaces: tuple[Netns, Netns], tmp_path: Path) -> Iterator[RealServer]:
    device, _ = two_namespaces
    server = start_real_server(tmp_path, argv_prefix=device.exec_argv())
    try:
        yield server
    finally:
        stop_group(server.process)


def token(server: RealServer) -> dict[str, str]:
    issued = server.cli("token", "issue", "--client", "tester")
    assert issued.returncode == 0, issued.stderr
    return {"Authorization": f"Bearer {json.loads(issued.stdout)['access_token']}"}


@pytest.mark.integration
def test_a_server_in_a_namespace_reads_its_links_sysfs_and_guards_its_uplink(
    two_namespaces: tuple[Netns, Netns], served: RealServer
) -> None:
    device, upstream = two_namespaces
    veth(device, "uplink0", upstream, "peer0")
    device.ip("addr", "add", "10.95.0.1/24", "dev", "uplink0")
    device.ip("route", "add", "default", "via", "10.95.0.2")
    device.ip("link", "add", "spare0", "type", "veth", "peer", "name", "spare1")
    auth = token(served)

    with served.connection() as http:
        listing = http.get(f"{API}/interfaces", headers=auth)
        assert listing.status_code == 200, listing.text
        found = {i["name"]: i for i in listing.json()}
        assert set(found) == {"lo", "uplink0", "spare0", "spare1"}
        # veth reports 10 Gb/s full duplex in its own namespace's /sys.
        assert (found["uplink0"]["speed_mbps"], found["uplink0"]["duplex"]) == (10000, "full")

        # A unix-socket caller's address is unknown: the default route's link is guarded.
        refused = http.put(f"{API}/interfaces/uplink0/state", json={"state": "down"}, headers=auth)
        assert refused.status_code == 403, refused.text
        up = http.put(f"{API}/interfaces/spare0/state", json={"state": "up"}, headers=auth)
        assert up.status_code == 200 and up.json()["admin_up"] is True

        # Both workers answer the same bytes, so the ETag holds whichever one answers.
        etag = http.get(f"{API}/interfaces", headers=auth).headers["etag"]
        for _ in range(6):
            again = http.get(f"{API}/interfaces", headers={**auth, "If-None-Match": etag})
            assert again.status_code == 304
        device.ip("link", "set", "spare1", "up")
        changed = http.get(f"{API}/interfaces", headers={**auth, "If-None-Match": etag})
        assert changed.status_code == 200
        assert {i["name"]: i for i in changed.json()}["spare1"]["admin_up"] is True
