"""The network plugin through the HTTP API, its own namespace a throwaway one the test made."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings
from hostcore.netns import NETNS_DIR_DEFAULT
from tests.builtin.network.fake_links import VlanNetlink
from tests.builtin.network.netns import Netns, veth
from tests.helpers import bearer

API = "/api/v1/network"
PUBLIC_IP_TIMEOUT_S = 0.3
# Longer than the client waits: only a hang would reach it.
SLOW_ANSWER_S = 3.0
DRIP_EVERY_S = 0.1


class PublicIpServer:
    """A loopback HTTP server standing in for a public-IP service; ``answer`` says what it
    sends next ("address", "garbage", "error", "slow"); ``hits`` counts requests."""

    def __init__(self) -> None:
        self.answer = "address"
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if owner.answer == "slow":
                    time.sleep(SLOW_ANSWER_S)
                if owner.answer == "drip":  # each byte within the read timeout, never done
                    self.send_response(200)
                    self.send_header("Content-Length", "64")
                    self.end_headers()
                    for _ in range(int(SLOW_ANSWER_S / DRIP_EVERY_S)):
                        self.wfile.write(b"1")
                        self.wfile.flush()
                        time.sleep(DRIP_EVERY_S)
                    return
                status, body = {
                    "address": (200, b"203.0.113.7\n"),
                    "garbage": (200, b"<html>you are 203.0.113.7</html>"),
                    "error": (500, b"backend down: secret detail"),
                    "slow": (200, b"203.0.113.8"),
                    "scoped": (200, b"fe80::1%<img src=x>"),
                    "loopback": (200, b"127.0.0.1"),
                }[owner.answer]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def __enter__(self) -> PublicIpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


@pytest.fixture
def public_ip_server() -> Iterator[PublicIpServer]:
    with PublicIpServer() as server:
        yield server


@pytest.fixture
def wired(two_namespaces: tuple[Netns, Netns]) -> tuple[Netns, Netns]:
    a, b = two_namespaces
    veth(a, "va", b, "vb")
    a.ip("addr", "add", "10.80.0.1/24", "dev", "va")
    a.ip("route", "add", "default", "via", "10.80.0.2")
    a.ip("link", "add", "vc", "type", "veth", "peer", "name", "vd")
    return a, b


@pytest.fixture
def api_factory(
    settings_factory: Callable[..., Settings], tmp_path: Path, wired: tuple[Netns, Netns]
) -> Iterator[Callable[..., TestClient]]:
    """``make(*overrides)``: a client of an app whose network plugin's own namespace is
    ``a`` (VLANs in memory, see fake_links.py), with a token holding every scope."""
    clients: list[TestClient] = []

    def make(*overrides: str, peer: tuple[str, int] = ("testclient", 50000)) -> TestClient:
        settings = settings_factory(
            'plugins.enabled=["auth","network"]',  # the others would only slow each test
            f"plugins.network.root={tmp_path}",
            f"plugins.network.lldpd_socket={tmp_path / 'lldpd.socket'}",
            "plugins.network.lldp_timeout_s=5",
            f"plugins.network.public_ip_timeout_s={PUBLIC_IP_TIMEOUT_S}",
            "ratelimit.default=1000000/minute",
            *overrides,
        )
        client = TestClient(create_app(settings), raise_server_exceptions=False, client=peer)
        client.__enter__()
        clients.append(client)
        network = client.app.state.network  # type: ignore[attr-defined]
        network.netlink = VlanNetlink(NETNS_DIR_DEFAULT, own=wired[0].path)
        client.headers.update(bearer(client))
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(api_factory: Callable[..., TestClient]) -> TestClient:
    return api_factory()


def test_interfaces_and_one_interface(api: TestClient) -> None:
    listing = api.get(f"{API}/interfaces")
    assert listing.status_code == 200
    names = {i["name"]: i for i in listing.json()}
    assert set(names) == {"lo", "va", "vc", "vd"}
    one = api.get(f"{API}/interfaces/va").json()
    assert one["kind"] == "veth" and one["addresses"][0]["address"] == "10.80.0.1"


def test_a_named_namespace_is_listed_with_netns(
    api: TestClient, wired: tuple[Netns, Netns]
) -> None:
    _, b = wired
    names = [i["name"] for i in api.get(f"{API}/interfaces", params={"netns": b.name}).json()]
    assert sorted(names) == ["lo", "vb"]
    assert b.name in {n["name"] for n in api.get(f"{API}/namespaces").json()}
    missing = api.get(f"{API}/interfaces", params={"netns": "hcnosuchns"})
    assert missing.status_code == 404 and missing.json()["error"] == "NotFound"


@pytest.mark.parametrize(
    "path",
    [
        "/interfaces/abcdefghijklmnop",  # 16 bytes
        "/interfaces/eth0:1",
        "/interfaces/%20eth0",
        "/interfaces/eth%0A0/stats",
        "/interfaces?netns=../../etc",
        "/interfaces?netns=-rf",
        "/routes?table=4294967296",
        "/routes?family=inet4",
    ],
)
def test_hostile_names_are_422_with_a_json_body(api: TestClient, path: str) -> None:
    response = api.get(f"{API}{path}")
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "ValidationError"


def test_an_unknown_interface_is_404(api: TestClient) -> None:
    for path in ("/interfaces/eth9", "/interfaces/eth9/stats"):
        response = api.get(f"{API}{path}")
        assert (
            response.status_code == 404 and response.json()["detail"] == "no interface named eth9"
        )


def test_stats_of_an_interface(api: TestClient) -> None:
    first = api.get(f"{API}/interfaces/va/stats").json()
    assert first["rates"] is None and first["counters"]["tx_bytes"] >= 0


def test_reading_needs_network_read_and_changing_network_control(
    api: TestClient,
) -> None:
    reader = bearer(api, ["network:read"])
    assert api.get(f"{API}/interfaces", headers=reader).status_code == 200
    refused = api.put(f"{API}/interfaces/vc/state", json={"state": "up"}, headers=reader)
    assert refused.status_code == 403
    assert api.get(f"{API}/public-ip", headers=reader).status_code == 403
    assert api.get(f"{API}/interfaces", headers={"Authorization": ""}).status_code == 401


def test_set_state_up_and_down_and_the_callers_path_is_protected(
    api: TestClient, wired: tuple[Netns, Netns]
) -> None:
    a, _ = wired
    up = api.put(f"{API}/interfaces/vc/state", json={"state": "up"})
    assert up.status_code == 200 and up.json()["admin_up"] is True
    assert "UP" in a.ip("-o", "link", "show", "vc").split(">")[0]
    down = api.put(f"{API}/interfaces/vc/state", json={"state": "down"})
    assert down.status_code == 200 and down.json()["admin_up"] is False
    # The test client has no address: the default route's interface is protected.
    refused = api.put(f"{API}/interfaces/va/state", json={"state": "down"})
    assert refused.status_code == 403 and "protected" in refused.json()["detail"]
    bad = api.put(f"{API}/interfaces/vc/state", json={"state": "sideways"})
    assert bad.status_code == 422


def test_vlans_through_the_api(api: TestClient, wired: tuple[Netns, Netns]) -> None:
    _, b = wired
    made = api.post(f"{API}/vlans", json={"parent": "va", "vlan_id": 42})
    assert made.status_code == 201 and made.json()["name"] == "va.42"
    assert api.post(f"{API}/vlans", json={"parent": "va", "vlan_id": 42}).status_code == 409
    assert api.delete(f"{API}/vlans/va.42").status_code == 204
    refused = api.delete(f"{API}/vlans/vc")
    assert refused.status_code == 409 and refused.json()["error"] == "Conflict"
    # The real kernel of namespace b has no 8021q.
    real = api.post(f"{API}/vlans", params={"netns": b.name}, json={"parent": "vb", "vlan_id": 5})
    assert real.status_code == 503 and "8021q" in real.json()["detail"], real.text


def test_routes_filtered_by_family_and_table(api: TestClient) -> None:
    main = api.get(f"{API}/routes").json()
    assert {r["table"] for r in main} == {254}
    assert any(r["destination"] == "default" and r["gateway"] == "10.80.0.2" for r in main)
    local = api.get(f"{API}/routes", params={"table": "local", "family": "inet"}).json()
    assert local and all(r["table"] == 255 and r["family"] == "inet" for r in local)
    assert api.get(f"{API}/neighbours").status_code == 200


def test_lldp_without_lldpd_is_503_naming_it(api: TestClient) -> None:
    response = api.get(f"{API}/lldp/neighbours")
    assert response.status_code == 503 and "lldpd" in response.json()["detail"]


def test_public_ip_is_off_until_configured(api: TestClient) -> None:
    response = api.get(f"{API}/public-ip")
    assert response.status_code == 503 and "public_ip_url" in response.json()["detail"]


def test_public_ip_is_fetched_once_and_cached(
    api_factory: Callable[..., TestClient], public_ip_server: PublicIpServer
) -> None:
    api = api_factory(f"plugins.network.public_ip_url={public_ip_server.url}")
    first = api.get(f"{API}/public-ip").json()
    second = api.get(f"{API}/public-ip").json()
    assert (first["address"], first["cached"]) == ("203.0.113.7", False)
    assert (second["address"], second["cached"]) == ("203.0.113.7", True)
    assert public_ip_server.hits == 1


@pytest.mark.parametrize(("answer", "status"), [("garbage", 502), ("error", 502), ("slow", 504)])
def test_a_public_ip_service_that_misbehaves_is_a_gateway_error_without_its_text(
    api_factory: Callable[..., TestClient],
    public_ip_server: PublicIpServer,
    answer: str,
    status: int,
) -> None:
    api = api_factory(f"plugins.network.public_ip_url={public_ip_server.url}")
    public_ip_server.answer = answer
    response = api.get(f"{API}/public-ip")
    assert response.status_code == status
    assert "203.0.113" not in response.text and "secret" not in response.text
    assert "img" not in response.text


def test_the_interface_list_revalidates_with_its_etag(
    api: TestClient, wired: tuple[Netns, Netns]
) -> None:
    a, _ = wired
    first = api.get(f"{API}/interfaces")
    etag = first.headers["etag"]
    unchanged = api.get(f"{API}/interfaces", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    a.ip("link", "set", "vc", "up")
    changed = api.get(f"{API}/interfaces", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag


@pytest.mark.parametrize(
    ("peer", "status"),
    [("10.80.0.9", 403), ("192.0.2.50", 403), ("127.0.0.1", 200)],
)
def test_the_interface_a_callers_address_comes_through_is_guarded(
    api_factory: Callable[..., TestClient], peer: str, status: int
) -> None:
    # va carries 10.80.0.0/24 and the default route; a local caller comes in over lo.
    api = api_factory(peer=(peer, 40000))
    response = api.put(f"{API}/interfaces/va/state", json={"state": "down"})
    assert response.status_code == status, response.text
