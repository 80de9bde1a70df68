"""Connecting, saved networks and disconnecting against a real wpa_supplicant and hostapd.

802.1X (PEAP/MSCHAPv2) succeeds or fails for real on a veth pair; nl80211 is the fake
kernel's (it lists ``wlan0``, the name the supplicant's end of the wire has).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings
from tests.builtin.wifi.fake_nl80211 import FakeKernel, serve_app
from tests.builtin.wifi.nl80211_fixtures import build
from tests.builtin.wifi.supplicant_daemons import IDENTITY, PASSWORD, Wired8021X, wired_8021x
from tests.helpers import bearer

API = "/api/v1/wifi"
WITHIN_S = 30.0  # bounds a wait only a job that never ends would reach
WRONG = "not the password"


@pytest.fixture
def wired(
    tmp_path: Path,
    private_bus: str,
    settings_factory: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> Iterator[tuple[TestClient, Wired8021X]]:
    caplog.set_level(logging.DEBUG)
    daemons = tmp_path / "daemons"
    daemons.mkdir()
    kernel = FakeKernel(build())
    with wired_8021x(daemons, private_bus) as running:
        app = create_app(settings_factory("plugins.wifi.connect_timeout_s=15"))
        with TestClient(app, raise_server_exceptions=False) as client:
            serve_app(client, kernel)
            client.headers.update(bearer(client))
            yield client, running
    kernel.close()


def until_ended(client: TestClient, location: str) -> dict[str, Any]:
    deadline = time.monotonic() + WITHIN_S
    while True:
        job: dict[str, Any] = client.get(location).json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}"
        time.sleep(0.05)


def connect(client: TestClient, **body: Any) -> dict[str, Any]:
    started = client.post(f"{API}/interfaces/wlan0/connect", json=body)
    assert started.status_code == 202, started.text
    assert PASSWORD not in started.text
    return until_ended(client, started.headers["location"])


def eap(ssid: str = "corp", secret: str = PASSWORD) -> dict[str, Any]:
    return {"ssid": ssid, "security": "eap", "identity": IDENTITY, "secret": secret}


def test_8021x_with_the_right_password_connects_and_is_saved(
    wired: tuple[TestClient, Wired8021X],
) -> None:
    client, daemons = wired
    job = connect(client, **eap())
    assert job["state"] == "succeeded", (job, daemons.logs()[-3000:])
    result = job["result"]
    assert result["state"] == "completed" and result["auth_mode"] == "EAP-PEAP"
    assert result["saved"] is True and result["ssid"] == "corp" and result["bssid"] is None
    listed = client.get(f"{API}/interfaces/wlan0/networks")
    assert listed.status_code == 200
    (network,) = listed.json()
    assert network == {
        "id": result["network_id"],
        "ssid": "corp",
        "ssid_hex": b"corp".hex(),
        "security": "eap",
        "identity": IDENTITY,
        "bssid": None,
        "hidden": False,
        "enabled": True,
        "current": True,
    }
    assert 'ssid="corp"' in daemons.config_text()  # wpa_supplicant wrote its own file


def test_a_wrong_password_fails_the_job_and_leaves_no_network(
    wired: tuple[TestClient, Wired8021X],
) -> None:
    client, daemons = wired
    job = connect(client, **eap(secret=WRONG))
    assert job["state"] == "failed"
    assert job["error"]["error"] == "AuthenticationFailed", job
    assert client.get(f"{API}/interfaces/wlan0/networks").json() == []
    assert "network={" not in daemons.config_text()


def test_connecting_again_replaces_the_saved_network_of_that_name(
    wired: tuple[TestClient, Wired8021X],
) -> None:
    client, _ = wired
    assert connect(client, **eap())["state"] == "succeeded"
    assert connect(client, **eap())["state"] == "succeeded"
    assert connect(client, **eap(ssid="other"))["state"] == "succeeded"
    names = sorted(n["ssid"] for n in client.get(f"{API}/interfaces/wlan0/networks").json())
    assert names == ["corp", "other"]


def test_disconnect_and_forget(wired: tuple[TestClient, Wired8021X]) -> None:
    client, daemons = wired
    network = connect(client, **eap())["result"]["network_id"]
    left = client.post(f"{API}/interfaces/wlan0/disconnect")
    assert left.status_code == 200, left.text
    assert left.json() == {"interface": "wlan0", "was_connected": True, "state": "disconnected"}
    again = client.post(f"{API}/interfaces/wlan0/disconnect")
    assert again.json()["was_connected"] is False
    assert client.delete(f"{API}/interfaces/wlan0/networks/{network}").status_code == 204
    assert client.get(f"{API}/interfaces/wlan0/networks").json() == []
    assert "network={" not in daemons.config_text()
    gone = client.delete(f"{API}/interfaces/wlan0/networks/{network}")
    assert gone.status_code == 404 and gone.json()["error"] == "NotFound"


def test_a_hostile_ssid_goes_as_bytes_and_is_stored_hex_encoded(
    wired: tuple[TestClient, Wired8021X],
) -> None:
    client, daemons = wired
    hostile = 'a"b\n}\nnetwork={\x00'
    job = connect(client, **eap(ssid=hostile))
    assert job["state"] == "succeeded", job
    (network,) = client.get(f"{API}/interfaces/wlan0/networks").json()
    assert network["ssid"] == hostile and network["ssid_hex"] == hostile.encode().hex()
    config = daemons.config_text()
    assert config.count("network={") == 1
    assert f"ssid={hostile.encode().hex()}" in config


def test_secrets_appear_in_no_answer_log_line_or_store(
    wired: tuple[TestClient, Wired8021X],
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    client, _ = wired
    answers = []
    for secret in (PASSWORD, WRONG):
        started = client.post(f"{API}/interfaces/wlan0/connect", json=eap(secret=secret))
        answers.append(started.text)
        job = until_ended(client, started.headers["location"])
        answers.append(str(job))
    answers.append(client.get(f"{API}/interfaces/wlan0/networks").text)
    answers.append(client.get("/api/v1/jobs").text)
    answers.append(client.get("/api/v1/auth/activity").text)
    client.__exit__(None, None, None)  # the store flushed and closed
    for secret in (PASSWORD, WRONG):
        assert not any(secret in answer for answer in answers)
        assert secret not in caplog.text
        stored = [
            path
            for path in tmp_path.rglob("*")
            if path.is_file()
            and "daemons" not in path.parts
            and secret.encode() in path.read_bytes()
        ]
        assert stored == []


def test_an_interface_wpa_supplicant_does_not_manage_yet_is_added_to_it(
    wired: tuple[TestClient, Wired8021X],
) -> None:
    client, _ = wired
    # wlan1 exists for nl80211 only: wpa_supplicant is asked to add it, and its driver
    # (nl80211) fails on a machine without cfg80211.
    answer = client.get(f"{API}/interfaces/wlan1/networks")
    assert answer.status_code == 200 and answer.json() == []  # reading adds nothing
    job = until_ended(
        client,
        client.post(
            f"{API}/interfaces/wlan1/connect",
            json={"ssid": "x", "security": "open"},
        ).headers["location"],
    )
    assert job["state"] == "failed" and "wpa_supplicant" in job["error"]["detail"]
    assert job["error"]["error"] == "DBusCallFailed"


def test_a_failed_connect_puts_wpa_supplicant_back_on_the_network_it_had(
    wired: tuple[TestClient, Wired8021X],
) -> None:
    client, _ = wired
    assert connect(client, **eap())["state"] == "succeeded"
    failed = connect(client, **eap(ssid="corp", secret=WRONG))  # the same name, wrong password
    assert failed["error"]["error"] == "AuthenticationFailed"
    deadline = time.monotonic() + WITHIN_S
    while True:
        (network,) = client.get(f"{API}/interfaces/wlan0/networks").json()
        if network["current"]:
            break
        assert time.monotonic() < deadline, network
        time.sleep(0.05)
    assert network["ssid"] == "corp" and network["enabled"] is True  # not replaced, not disabled
