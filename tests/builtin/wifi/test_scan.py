"""Scans: the trigger, the wait for the kernel's end of scan (or abort), and the job."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.builtin.wifi.nl80211 import Nl80211
from hostcore.config import Settings
from hostcore.errors import Conflict, Unavailable
from tests.builtin.wifi.fake_nl80211 import FakeKernel, serve_app
from tests.builtin.wifi.nl80211_fixtures import WLAN0, build
from tests.helpers import bearer

API = "/api/v1/wifi"
# Bounds a wait that only a job that never ends would reach.
WITHIN_S = 10.0


async def scan_once(kernel: FakeKernel, ifindex: int, timeout_s: float = 2.0) -> bool:
    nl80211 = Nl80211(timeout_s=2.0, socket_factory=kernel.socket)
    try:
        return await nl80211.scan(ifindex, timeout_s=timeout_s)
    finally:
        nl80211.close()


@pytest.mark.parametrize(("outcome", "results"), [("done", True), ("aborted", False)])
async def test_a_scan_ends_with_new_results_or_the_kernels_abort(
    outcome: str, results: bool
) -> None:
    kernel = FakeKernel(build(), scan_outcome=outcome)
    try:
        assert await scan_once(kernel, WLAN0) is results
    finally:
        kernel.close()
    asked = [request.cmd for request in kernel.requests]
    assert "TRIGGER_SCAN" in asked


async def test_a_scan_that_never_ends_is_given_up_after_its_timeout() -> None:
    kernel = FakeKernel(build(), scan_outcome="never")
    try:
        with pytest.raises(Unavailable, match=r"did not end within 0\.2 s"):
            await scan_once(kernel, WLAN0, timeout_s=0.2)
    finally:
        kernel.close()


async def test_a_second_scan_while_one_runs_is_busy_and_a_monitor_cannot_scan() -> None:
    kernel = FakeKernel(build(), scan_outcome="never")
    nl80211 = Nl80211(timeout_s=2.0, socket_factory=kernel.socket)
    try:
        with pytest.raises(Unavailable):
            await nl80211.scan(WLAN0, timeout_s=0.1)  # still scanning in the kernel
        with pytest.raises(Conflict, match="busy"):
            await nl80211.scan(WLAN0, timeout_s=0.1)
        with pytest.raises(Unavailable, match="does not support"):
            await nl80211.scan(5, timeout_s=0.1)  # mon0
    finally:
        nl80211.close()
        kernel.close()


@pytest.fixture
def faked(settings_factory: Callable[..., Settings]) -> Iterator[tuple[TestClient, FakeKernel]]:
    kernel = FakeKernel(build(), scan_delay=0.2)
    app = create_app(settings_factory("plugins.wifi.scan_timeout_s=2"))
    with TestClient(app, raise_server_exceptions=False) as client:
        serve_app(client, kernel)
        client.headers.update(bearer(client))
        yield client, kernel
    kernel.close()


def until_ended(client: TestClient, location: str) -> dict[str, Any]:
    deadline = time.monotonic() + WITHIN_S
    while True:
        job: dict[str, Any] = client.get(location).json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}"
        time.sleep(0.02)


def test_a_scan_job_ends_with_the_networks_found(faked: tuple[TestClient, FakeKernel]) -> None:
    client, _ = faked
    started = client.post(f"{API}/interfaces/wlan0/scans")
    assert started.status_code == 202, started.text
    again = client.post(f"{API}/interfaces/wlan0/scans")
    assert again.status_code == 409  # one scan per interface at a time
    job = until_ended(client, started.headers["location"])
    assert job["state"] == "succeeded", job
    networks = job["result"]["networks"]
    assert job["result"]["interface"] == "wlan0" and networks[0]["ssid"] == "HomeNet"


def test_a_scan_job_on_a_monitor_interface_fails_saying_why(
    faked: tuple[TestClient, FakeKernel],
) -> None:
    client, _ = faked
    job = until_ended(client, client.post(f"{API}/interfaces/mon0/scans").headers["location"])
    assert job["state"] == "failed" and "does not support" in job["error"]["detail"]


def test_scanning_needs_wifi_scan_and_a_known_interface(
    faked: tuple[TestClient, FakeKernel],
) -> None:
    client, _ = faked
    reader = bearer(client, ["wifi:read"])
    assert client.post(f"{API}/interfaces/wlan0/scans", headers=reader).status_code == 403
    assert client.post(f"{API}/interfaces/wlan9/scans").status_code == 404
