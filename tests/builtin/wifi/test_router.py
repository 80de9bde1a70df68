"""The Wi-Fi plugin over HTTP: the real kernel here has no nl80211 (503); a fake kernel's radios."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.builtin.wifi.nl80211 import NO_NL80211, Nl80211
from hostcore.config import Settings
from tests.builtin.network.netns import namespaces, require_namespaces
from tests.builtin.wifi.fake_nl80211 import FakeKernel, serve_app
from tests.builtin.wifi.nl80211_fixtures import build
from tests.helpers import bearer

API = "/api/v1/wifi"


@pytest.fixture
def real(settings_factory: Callable[..., Settings]) -> Iterator[TestClient]:
    with TestClient(create_app(settings_factory()), raise_server_exceptions=False) as client:
        client.headers.update(bearer(client))
        yield client


@pytest.fixture
def faked(settings_factory: Callable[..., Settings]) -> Iterator[TestClient]:
    kernel = FakeKernel(build())
    with TestClient(create_app(settings_factory()), raise_server_exceptions=False) as client:
        serve_app(client, kernel)
        client.headers.update(bearer(client))
        yield client
    kernel.close()


@pytest.mark.parametrize("path", ["/interfaces", "/phys", "/phys/phy0"])
def test_a_kernel_without_nl80211_answers_503_naming_it(real: TestClient, path: str) -> None:
    response = real.get(f"{API}{path}")
    assert response.status_code == 503
    assert response.json() == {"error": "Unavailable", "detail": NO_NL80211}


def test_interfaces_and_radios_of_a_fake_kernel(faked: TestClient) -> None:
    interfaces = {i["name"]: i for i in faked.get(f"{API}/interfaces").json()}
    assert interfaces["wlan0"]["width"] == "80" and interfaces["mon0"]["type"] == "monitor"
    phys = faked.get(f"{API}/phys").json()
    assert [phy["name"] for phy in phys] == ["phy0", "phy1"]
    one = faked.get(f"{API}/phys/phy1")
    assert one.status_code == 200 and one.json()["bands"][1]["he"] is True


def test_an_unknown_radio_is_404_and_a_bad_name_422(faked: TestClient) -> None:
    assert faked.get(f"{API}/phys/phy9").status_code == 404
    assert faked.get(f"{API}/phys/phy%20x").status_code == 422


def test_reading_needs_wifi_read(faked: TestClient) -> None:
    other = bearer(faked, ["network:read"])
    assert faked.get(f"{API}/interfaces", headers=other).status_code == 403


def test_setting_the_country_asks_the_kernel_and_answers_the_domain(
    settings_factory: Callable[..., Settings],
) -> None:
    kernel = FakeKernel(build())
    with TestClient(create_app(settings_factory()), raise_server_exceptions=False) as client:
        serve_app(client, kernel)
        client.headers.update(bearer(client))
        answered = client.put(f"{API}/regulatory", json={"country": "US"})
        assert answered.status_code == 200 and answered.json()["country"] == "DE"  # applied later
        assert kernel.regulatory_requests == ["US"]
        for bad in ({"country": "us"}, {"country": "USA"}, {"country": "D"}, {"country": 49}, {}):
            assert client.put(f"{API}/regulatory", json=bad).status_code == 422
        assert kernel.regulatory_requests == ["US"]  # nothing invalid reached the kernel
        reader = bearer(client, ["wifi:read"])
        refused = client.put(f"{API}/regulatory", json={"country": "FR"}, headers=reader)
        assert refused.status_code == 403
    kernel.close()


def test_setting_the_country_on_a_kernel_without_nl80211_is_503(real: TestClient) -> None:
    response = real.put(f"{API}/regulatory", json={"country": "00"})
    assert response.status_code == 503 and response.json()["detail"] == NO_NL80211


def test_switching_to_monitor_and_back(settings_factory: Callable[..., Settings]) -> None:
    kernel = FakeKernel(build())
    with TestClient(create_app(settings_factory()), raise_server_exceptions=False) as client:
        serve_app(client, kernel)
        client.headers.update(bearer(client))
        switched = client.put(f"{API}/interfaces/wlan1/mode", json={"mode": "monitor"})
        assert switched.status_code == 200 and switched.json()["type"] == "monitor"
        types = {i["name"]: i["type"] for i in client.get(f"{API}/interfaces").json()}
        assert types["wlan1"] == "monitor"
        back = client.put(f"{API}/interfaces/wlan1/mode", json={"mode": "managed"})
        assert back.status_code == 200 and back.json()["type"] == "managed"
        asked = [
            r.attrs.get("NL80211_ATTR_IFTYPE") for r in kernel.requests if r.cmd == "SET_INTERFACE"
        ]
        assert asked == [6, 2]
        # The same mode again asks nothing.
        assert (
            client.put(f"{API}/interfaces/wlan1/mode", json={"mode": "managed"}).status_code == 200
        )
        assert sum(r.cmd == "SET_INTERFACE" for r in kernel.requests) == 2


def test_a_mode_the_radio_lacks_is_422_and_a_running_interface_409(
    settings_factory: Callable[..., Settings],
) -> None:
    kernel = FakeKernel(build())
    with TestClient(create_app(settings_factory()), raise_server_exceptions=False) as client:
        serve_app(client, kernel)
        client.headers.update(bearer(client))
        lacking = client.put(f"{API}/interfaces/wlan0/mode", json={"mode": "monitor"})
        assert lacking.status_code == 422
        assert lacking.json()["detail"] == "the radio of wlan0 (phy0) has no monitor mode"
        kernel.running.add(4)  # wlan1
        busy = client.put(f"{API}/interfaces/wlan1/mode", json={"mode": "monitor"})
        assert busy.status_code == 409 and "wlan1 is busy" in busy.json()["detail"]
        for bad in ({"mode": "ap"}, {"mode": "MONITOR"}, {}, {"mode": "monitor", "x": 1}):
            assert client.put(f"{API}/interfaces/wlan1/mode", json=bad).status_code == 422
        assert (
            client.put(f"{API}/interfaces/eth0/mode", json={"mode": "monitor"}).status_code == 404
        )
        reader = bearer(client, ["wifi:read"])
        denied = client.put(
            f"{API}/interfaces/wlan1/mode", json={"mode": "monitor"}, headers=reader
        )
        assert denied.status_code == 403
    kernel.close()


def test_reads_in_a_named_namespace_go_to_its_nl80211(
    settings_factory: Callable[..., Settings], tmp_path: Path
) -> None:
    own, moved = FakeKernel(build()), FakeKernel(build())
    (tmp_path / "radios").touch()  # what ip netns lists: a file per namespace
    entered: list[Path] = []

    def nl80211_in(namespace: Path) -> Nl80211:
        entered.append(namespace)
        return Nl80211(timeout_s=2.0, socket_factory=moved.socket)

    settings = settings_factory(f"plugins.wifi.netns_dir={tmp_path}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        wifi = client.app.state.wifi  # type: ignore[attr-defined]
        wifi.nl80211.close()
        wifi.nl80211 = Nl80211(timeout_s=2.0, socket_factory=own.socket)
        wifi.nl80211_in = nl80211_in
        client.headers.update(bearer(client))
        listed = client.get(f"{API}/interfaces", params={"netns": "radios"}).json()
        assert {i["netns"] for i in listed} == {"radios"}
        assert {i["netns"] for i in client.get(f"{API}/interfaces").json()} == {None}
        for path in ("/phys", "/interfaces/wlan0/link", "/interfaces/wlan0/stations",
                     "/interfaces/wlan0/scan-results"):  # fmt: skip
            assert client.get(f"{API}{path}", params={"netns": "radios"}).status_code == 200
        assert entered == [tmp_path / "radios"] * 5
        assert all(sock.closed for sock in moved.sockets)  # a socket per request, closed
        assert client.get(f"{API}/interfaces", params={"netns": "gone"}).status_code == 404
        assert client.get(f"{API}/interfaces", params={"netns": "../etc"}).status_code == 422
    own.close()
    moved.close()


def test_a_real_named_namespace_is_entered_and_has_no_nl80211_either(
    settings_factory: Callable[..., Settings],
) -> None:
    require_namespaces()
    with namespaces(1) as (namespace,), TestClient(create_app(settings_factory())) as client:
        client.headers.update(bearer(client))
        answer = client.get(f"{API}/interfaces", params={"netns": namespace.name})
        assert answer.status_code == 503 and answer.json()["detail"] == NO_NL80211
