"""The Bluetooth plugin over HTTP, against the fake bluetoothd on the private bus."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings
from tests.builtin.bluetooth.fake_bluez import FakeBluez, Peer, Timing
from tests.helpers import bearer

API = "/api/v1/bluetooth"
PAIRING = "bluetooth.pairing"
WITHIN_S = 10.0  # bounds a wait only something that never happens would reach
PHONE = Peer("AA:BB:CC:DD:EE:03", "Pixel", kind="dual", pairing="confirmation", passkey=123456,
             rssi=-70, uuids=("00001116-0000-1000-8000-00805f9b34fb",))  # fmt: skip
KEYBOARD = Peer("AA:BB:CC:DD:EE:04", "Keyboard", pairing="passkey-entry", passkey=4711)
SPEAKER = Peer("AA:BB:CC:DD:EE:07", "Speaker", pairing="passkey-display", passkey=42)
WATCH = Peer("C4:00:00:00:00:02", "Watch", kind="le", address_type="random", appearance=0x00C1)
HEADSET = Peer("00:1B:66:AA:00:01", "Headset", kind="bredr", device_class=0x240404,
               uuids=("0000110b-0000-1000-8000-00805f9b34fb",))  # fmt: skip
STUBBORN = Peer("AA:BB:CC:DD:EE:05", "Stubborn", pairing="rejects")


@dataclass
class Rig:
    client: TestClient
    bluez: FakeBluez


def until(predicate: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WITHIN_S
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"waited in vain for {what}"
        time.sleep(0.02)


def ended(client: TestClient, location: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(location).json()
        return job if job["state"] not in ("queued", "running") else None

    found: dict[str, Any] = until(done, "the job to end")
    return found


RigFactory = Callable[..., Rig]


@pytest.fixture
def rig_factory(
    private_bus: str, settings_factory: Callable[..., Settings]
) -> Iterator[RigFactory]:
    made: list[tuple[FakeBluez, TestClient]] = []

    def make(*overrides: str, absent: bool = False, powered: bool = True) -> Rig:
        bluez = FakeBluez(private_bus, absent=absent, timing=Timing(time_scale=0.05)).start()
        if not absent:
            bluez.add_adapter("hci0", powered=powered)
        settings = settings_factory(
            'plugins.enabled=["auth","bluetooth"]',  # the others would only slow each test
            "plugins.bluetooth.timeout_s=2",
            *overrides,
        )
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        made.append((bluez, client))
        client.__enter__()
        client.headers.update(bearer(client))
        if not absent:
            until(lambda: bluez.called("RequestDefaultAgent"), "hostcore's agent")
        return Rig(client, bluez)

    yield make
    for bluez, client in reversed(made):
        client.__exit__(None, None, None)
        bluez.stop()


@pytest.fixture
def rig(rig_factory: RigFactory) -> Rig:
    return rig_factory()


def test_adapters_are_read_from_bluez_and_changed_in_order(rig: Rig) -> None:
    (adapter,) = rig.client.get(f"{API}/adapters").json()
    assert adapter["name"] == "hci0" and adapter["address"] == "00:1A:7D:DA:71:13"
    assert adapter["powered"] is True and adapter["pairable"] is True  # our agent is default
    changed = rig.client.patch(
        f"{API}/adapters/hci0",
        json={"alias": "wlanpi-1", "discoverable": True, "discoverable_timeout_s": 120},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["alias"] == "wlanpi-1" and body["discoverable"] is True
    assert body["discoverable_timeout_s"] == 120
    sets = [call.args[1] for call in rig.bluez.called("Set")]
    assert sets.index("DiscoverableTimeout") < sets.index("Discoverable")
    assert rig.client.get(f"{API}/adapters/hci0").json()["alias"] == "wlanpi-1"
    assert rig.client.get(f"{API}/adapters/hci9").status_code == 404
    for bad in ({"alias": "x\ny"}, {"powered": "yes"}, {"discoverable_timeout_s": -1}, {"x": 1}):
        assert rig.client.patch(f"{API}/adapters/hci0", json=bad).status_code == 422
    assert rig.client.get(f"{API}/adapters/hcix").status_code == 422


def test_an_adapter_blocked_by_rfkill_cannot_be_powered(rig_factory: RigFactory) -> None:
    rig = rig_factory(powered=False)
    rig.bluez.set_rfkill_blocked("hci0", True)
    refused = rig.client.patch(f"{API}/adapters/hci0", json={"powered": True})
    assert refused.status_code == 409 and "rfkill" in refused.json()["detail"]


def test_discovery_is_a_job_listing_what_it_found_for_the_transport(rig: Rig) -> None:
    for peer in (PHONE, WATCH, HEADSET):
        rig.bluez.add_peer("hci0", peer)
    started = rig.client.post(
        f"{API}/adapters/hci0/discovery", json={"duration_s": 0.6, "transport": "le"}
    )
    assert started.status_code == 202, started.text
    job = ended(rig.client, started.headers["location"])
    assert job["state"] == "succeeded", job
    found = {device["address"] for device in job["result"]["devices"]}
    assert found == {PHONE.address, WATCH.address}  # the headset is BR/EDR only
    assert job["message"] == "2 devices found"
    assert sorted(line.split()[1] for line in job["log"]) == sorted(found)  # as they came
    assert all(device["rssi_dbm"] is not None for device in job["result"]["devices"])
    assert rig.bluez.called("StopDiscovery")
    listed = rig.client.get(f"{API}/adapters/hci0/devices").json()
    assert {device["address"] for device in listed} >= found
    assert rig.client.get(f"{API}/adapters/hci0").json()["discovering"] is False


def test_cancelling_a_discovery_stops_it(rig: Rig) -> None:
    started = rig.client.post(f"{API}/adapters/hci0/discovery", json={"duration_s": 60})
    location = started.headers["location"]
    until(lambda: rig.bluez.called("StartDiscovery"), "the discovery")
    assert rig.client.delete(location).status_code in (200, 202)
    assert ended(rig.client, location)["state"] == "cancelled"
    until(lambda: rig.bluez.called("StopDiscovery"), "the discovery to stop")


def test_pairing_waits_for_the_clients_confirmation_of_the_passkey(rig: Rig) -> None:
    rig.bluez.add_device("hci0", PHONE)
    started = rig.client.post(f"{API}/devices/{PHONE.address}/pair")
    assert started.status_code == 202, started.text
    location = started.headers["location"]
    waiting = until(
        lambda: (
            (job := rig.client.get(location).json())["message"]
            and "awaiting_confirmation" in job["message"]
            and job
        ),
        "the job to wait for a confirmation",
    )
    assert "123456" in waiting["message"]
    (question,) = rig.client.get(f"{API}/pairing-requests").json()
    assert question["kind"] == "confirmation" and question["passkey"] == 123456
    assert question["job_id"] == waiting["id"] and question["incoming"] is False
    assert question["id"] in waiting["message"]
    answered = rig.client.post(f"{API}/pairing/{question['id']}/confirm", json={"accept": True})
    assert answered.status_code == 200 and answered.json()["state"] == "accepted"
    job = ended(rig.client, location)
    assert job["state"] == "succeeded", job
    assert job["result"]["paired"] is True and job["result"]["address"] == PHONE.address
    again = rig.client.post(f"{API}/devices/{PHONE.address}/pair")
    assert again.status_code == 409 and "already paired" in again.json()["detail"]


def test_a_rejected_confirmation_fails_the_pairing(rig: Rig) -> None:
    rig.bluez.add_device("hci0", PHONE)
    location = rig.client.post(f"{API}/devices/{PHONE.address}/pair").headers["location"]
    question = until(lambda: rig.client.get(f"{API}/pairing-requests").json(), "the question")[0]
    rig.client.post(f"{API}/pairing-requests/{question['id']}", json={"accept": False})
    job = ended(rig.client, location)
    # The kernel turns any refusal of the local agent into "authentication failed".
    assert job["state"] == "failed" and job["error"]["error"] == "AuthenticationFailed", job
    assert rig.client.get(f"{API}/devices/{PHONE.address}").json()["paired"] is False


def test_a_passkey_typed_by_the_client_reaches_bluez(rig: Rig) -> None:
    rig.bluez.add_device("hci0", KEYBOARD)
    location = rig.client.post(f"{API}/devices/{KEYBOARD.address}/pair").headers["location"]
    question = until(lambda: rig.client.get(f"{API}/pairing-requests").json(), "the question")[0]
    assert question["kind"] == "passkey"
    missing = rig.client.post(f"{API}/pairing-requests/{question['id']}", json={"accept": True})
    assert missing.status_code == 422
    typed = {"accept": True, "passkey": KEYBOARD.passkey}
    assert (
        rig.client.post(f"{API}/pairing-requests/{question['id']}", json=typed).status_code == 200
    )
    assert ended(rig.client, location)["state"] == "succeeded"


def test_a_peer_that_refuses_and_an_unpowered_adapter(rig_factory: RigFactory) -> None:
    rig = rig_factory()
    rig.bluez.add_device("hci0", STUBBORN)
    job = ended(
        rig.client, rig.client.post(f"{API}/devices/{STUBBORN.address}/pair").headers["location"]
    )
    assert job["error"]["error"] == "AuthenticationRejected", job
    rig.client.patch(f"{API}/adapters/hci0", json={"powered": False})
    rig.bluez.add_device("hci0", KEYBOARD)
    off = rig.client.post(f"{API}/devices/{KEYBOARD.address}/pair")
    assert off.status_code == 409 and "powered off" in off.json()["detail"]


def test_cancelling_a_pairing_cancels_it_in_bluez(rig: Rig) -> None:
    rig.bluez.add_device("hci0", PHONE)
    location = rig.client.post(f"{API}/devices/{PHONE.address}/pair").headers["location"]
    question = until(lambda: rig.client.get(f"{API}/pairing-requests").json(), "the question")[0]
    rig.client.delete(location)
    assert ended(rig.client, location)["state"] == "cancelled"
    until(lambda: rig.bluez.called("CancelPairing"), "CancelPairing")
    until(lambda: rig.client.get(f"{API}/pairing-requests").json() == [], "the question to close")
    closed = rig.client.post(f"{API}/pairing-requests/{question['id']}", json={"accept": True})
    assert closed.status_code == 409


def test_a_phone_pairing_with_the_device_asks_the_client(rig: Rig) -> None:
    hub = rig.client.app.state.events  # type: ignore[attr-defined]
    published: list[tuple[str, Any, bool]] = []
    publish = hub.publish
    hub.publish = lambda topic, data, forward=False: (
        published.append((topic, data, forward)),
        publish(topic, data, forward=forward),
    )
    rig.client.patch(f"{API}/adapters/hci0", json={"discoverable": True})
    outcome = rig.bluez.start_incoming_pairing("hci0", PHONE)
    question = until(lambda: rig.client.get(f"{API}/pairing-requests").json(), "the question")[0]
    assert question["incoming"] is True and question["address"] == PHONE.address
    assert question["kind"] == "confirmation" and question["job_id"] is None
    rig.client.post(f"{API}/pairing-requests/{question['id']}", json={"accept": True})
    assert outcome.result(WITHIN_S) == "paired"
    assert rig.client.get(f"{API}/devices/{PHONE.address}").json()["paired"] is True
    told = [(data.state, forward) for topic, data, forward in published if topic == PAIRING]
    assert told == [("pending", True), ("accepted", True)]  # to every worker's subscribers


def test_an_unanswered_incoming_pairing_is_rejected_after_the_timeout(
    rig_factory: RigFactory,
) -> None:
    rig = rig_factory("plugins.bluetooth.request_timeout_s=0.3")
    rig.client.patch(f"{API}/adapters/hci0", json={"discoverable": True})
    outcome = rig.bluez.start_incoming_pairing("hci0", PHONE)
    assert outcome.result(WITHIN_S) == "failed"
    assert rig.client.get(f"{API}/pairing-requests").json() == []


def test_devices_trusted_blocked_connected_and_forgotten(rig: Rig) -> None:
    rig.bluez.add_device("hci0", HEADSET, paired=True)
    device = rig.client.get(f"{API}/devices/{HEADSET.address.lower()}").json()
    assert device["paired"] is True and device["uuids"][0]["name"] == "Audio Sink"
    assert device["bonded"] is True and device["device_class"] == 0x240404
    trusted = rig.client.put(f"{API}/devices/{HEADSET.address}/trusted", json={"value": True})
    assert trusted.status_code == 200 and trusted.json()["trusted"] is True
    connected = rig.client.post(f"{API}/devices/{HEADSET.address}/connect")
    assert connected.status_code == 200 and connected.json()["connected"] is True
    paired = rig.client.get(f"{API}/adapters/hci0/devices", params={"connected": "true"}).json()
    assert [d["address"] for d in paired] == [HEADSET.address]
    blocked = rig.client.put(f"{API}/devices/{HEADSET.address}/blocked", json={"value": True})
    assert blocked.json()["blocked"] is True and blocked.json()["connected"] is False
    assert rig.client.delete(f"{API}/devices/{HEADSET.address}").status_code == 204
    until(lambda: rig.client.get(f"{API}/devices/{HEADSET.address}").status_code == 404, "gone")
    for bad in ("AA:BB:CC:DD:EE", "AA:BB:CC:DD:EE:GG", "AABBCCDDEEFF"):
        assert rig.client.get(f"{API}/devices/{bad}").status_code == 422


def test_a_missing_or_hanging_bluetoothd_is_a_503_naming_it(rig_factory: RigFactory) -> None:
    absent = rig_factory(absent=True)
    answer = absent.client.get(f"{API}/adapters")
    assert answer.status_code == 503 and "BlueZ (bluetoothd)" in answer.json()["detail"]
    hanging = rig_factory("plugins.bluetooth.timeout_s=0.3")
    hanging.bluez.hanging = True
    hanging.client.app.state.bluetooth.bluez._objects = None  # type: ignore[attr-defined]
    answer = hanging.client.get(f"{API}/adapters")
    assert answer.status_code == 503 and "did not answer within 0.3 s" in answer.json()["detail"]


def test_scopes_guard_reading_controlling_and_pairing(rig: Rig) -> None:
    reader = bearer(rig.client, ["bluetooth:read"])
    assert rig.client.get(f"{API}/adapters", headers=reader).status_code == 200
    assert rig.client.patch(f"{API}/adapters/hci0", json={}, headers=reader).status_code == 403
    assert rig.client.get(f"{API}/pairing-requests", headers=reader).status_code == 403
    controller = bearer(rig.client, ["bluetooth:control"])
    rig.bluez.add_device("hci0", PHONE)
    assert (
        rig.client.post(f"{API}/devices/{PHONE.address}/pair", headers=controller).status_code
        == 403
    )


def test_bluez_restarting_drops_the_cache_and_the_agent_comes_back(
    rig: Rig, private_bus: str
) -> None:
    assert rig.client.get(f"{API}/adapters").json()[0]["address"] == "00:1A:7D:DA:71:13"
    rig.bluez.stop()
    again = FakeBluez(private_bus, timing=Timing(time_scale=0.05)).start()
    try:
        again.add_adapter("hci0", "00:1A:7D:DA:71:99", powered=True)
        until(lambda: again.called("RegisterAgent"), "the agent, registered again")
        adapters = rig.client.get(f"{API}/adapters").json()
        assert [adapter["address"] for adapter in adapters] == ["00:1A:7D:DA:71:99"]
    finally:
        again.stop()


def test_a_discovery_longer_than_allowed_is_refused_before_a_job(rig_factory: RigFactory) -> None:
    rig = rig_factory("plugins.bluetooth.discovery_max_s=5")
    refused = rig.client.post(f"{API}/adapters/hci0/discovery", json={"duration_s": 6})
    assert refused.status_code == 422 and "limited to 5 s" in refused.json()["detail"]
    assert rig.client.get("/api/v1/jobs").json() == []


def test_a_pairing_that_takes_too_long_is_cancelled_in_bluez(rig_factory: RigFactory) -> None:
    rig = rig_factory(
        "plugins.bluetooth.pair_timeout_s=0.5",
        "plugins.bluetooth.request_timeout_s=0.4",
        "plugins.bluetooth.timeout_s=0.3",  # the hanging daemon's other calls end soon too
    )
    rig.bluez.add_device("hci0", PHONE)
    rig.client.get(f"{API}/devices/{PHONE.address}")  # known to the cache
    rig.bluez.hanging = True  # Pair is never answered
    location = rig.client.post(f"{API}/devices/{PHONE.address}/pair").headers["location"]
    job = ended(rig.client, location)
    assert job["state"] == "failed" and job["error"]["error"] == "AuthenticationTimeout", job
    until(lambda: "CancelPairing" in rig.bluez.swallowed, "CancelPairing")


def test_rejecting_a_passkey_to_type_there_cancels_the_pairing(rig: Rig) -> None:
    rig.bluez.add_device("hci0", SPEAKER)
    location = rig.client.post(f"{API}/devices/{SPEAKER.address}/pair").headers["location"]
    shown = until(lambda: rig.client.get(f"{API}/pairing-requests").json(), "the passkey")[0]
    assert shown["kind"] == "display_passkey" and shown["passkey"] == SPEAKER.passkey
    rig.client.post(f"{API}/pairing-requests/{shown['id']}", json={"accept": False})
    until(lambda: rig.bluez.called("CancelPairing"), "CancelPairing")
    assert ended(rig.client, location)["state"] == "failed"
    assert rig.client.get(f"{API}/devices/{SPEAKER.address}").json()["paired"] is False


def test_the_agent_is_reported_gone_while_bluetoothd_is(rig: Rig, private_bus: str) -> None:
    def health() -> dict[str, Any]:
        plugins = rig.client.get("/api/v1/plugins").json()
        found: dict[str, Any] = next(p for p in plugins if p["name"] == "bluetooth")["health"]
        return found

    until(lambda: health()["agent_registered"] is True, "the agent")
    rig.bluez.stop()
    until(lambda: health()["agent_registered"] is False, "the agent to be gone")
