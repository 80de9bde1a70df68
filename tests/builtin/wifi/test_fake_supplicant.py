"""Joining Wi-Fi networks over HTTP against the fake wpa_supplicant, and the fake held to
the real one.

The fake (``fake_supplicant.py``) is first checked against the real wpa_supplicant 2.10:
what it exports on ``fi.w1.wpa_supplicant1*`` must exist identically on the real daemon,
and the same calls must be answered alike. Then PSK, SAE, open, hidden, pinned and
non-UTF-8 networks, the failures (wrong key, not in range), NetworkManager's claim, a
missing or hanging daemon, one connect at a time, cancelling and hostile input go
through the API, with nl80211 from the fake kernel (which lists wlan0, wlan1, mon0).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from fastapi.testclient import TestClient

from hostcore.app import create_app
from hostcore.config import Settings
from tests.builtin.wifi.fake_nl80211 import FakeKernel, serve_app
from tests.builtin.wifi.fake_supplicant import (
    BSS,
    INTERFACE,
    NAME,
    NETWORK,
    ROOT,
    AccessPoint,
    FakeInterface,
    FakeWifiDaemons,
    Timing,
    psk_of,
)
from tests.builtin.wifi.nl80211_fixtures import build
from tests.builtin.wifi.supplicant_daemons import wired_8021x
from tests.helpers import bearer

T = TypeVar("T")
API = "/api/v1/wifi"
# The plugins these tests need: building the others would only slow every test down.
ONLY_WIFI = 'plugins.enabled=["auth","wifi"]'
WITHIN_S = 20.0  # bounds a wait only a job or fake that never moves on would reach
PASSPHRASE = "correct horse battery"
SAE_PASSWORD = "wpa3 sae password"
ODD_KEY = 'pa"ss \\word'  # a quote and a backslash: sent as they are

HOME = AccessPoint(b"home", "02:00:00:00:01:01", "psk", PASSPHRASE, signal=-40)
HOME_FAR = AccessPoint(b"home", "02:00:00:00:01:02", "psk", PASSPHRASE, frequency=5180, signal=-71)
WPA3 = AccessPoint(b"wpa3", "02:00:00:00:02:01", "sae", SAE_PASSWORD)
CAFE = AccessPoint(b"cafe", "02:00:00:00:03:01", "open")
ATTIC = AccessPoint(b"attic", "02:00:00:00:04:01", "psk", "attic passphrase", hidden=True)
NOT_UTF8 = AccessPoint(b"\xffcaf\xe9\x00", "02:00:00:00:05:01", "psk", "latin-1 network")
ODD = AccessPoint(b'say "hi"\n}', "02:00:00:00:06:01", "psk", ODD_KEY)
SILENT = AccessPoint(b"silent", "02:00:00:00:07:01", "open", answers=False)
AIR = [HOME, HOME_FAR, WPA3, CAFE, ATTIC, NOT_UTF8, ODD, SILENT]

SUCCESS_STATES = [
    "scanning", "authenticating", "associating", "associated", "4way_handshake",
    "group_handshake", "completed",
]  # fmt: skip


# --- the rig ------------------------------------------------------------------------


@dataclass
class Rig:
    client: TestClient
    daemons: FakeWifiDaemons

    def interface(self) -> FakeInterface:
        return self.daemons.interface("wlan0")

    def read(self, function: Callable[[FakeInterface], T]) -> T:
        """``function(wlan0's fake interface)``, run in the fakes' thread."""
        return self.daemons.run(lambda: function(self.interface()))


RigFactory = Callable[..., Rig]


@pytest.fixture
def rig_factory(
    private_bus: str, settings_factory: Callable[..., Settings]
) -> Iterator[RigFactory]:
    """``make(*settings overrides, **FakeWifiDaemons fields)``: the fakes started, an app
    with the fake kernel's nl80211, a client with every scope."""
    with contextlib.ExitStack() as stack:

        def make(*overrides: str, **fields: Any) -> Rig:
            daemons = FakeWifiDaemons(private_bus, **{"air": list(AIR), **fields})
            stack.callback(daemons.stop)
            daemons.start()
            kernel = FakeKernel(build())
            stack.callback(kernel.close)
            app = create_app(
                settings_factory(ONLY_WIFI, "plugins.wifi.connect_timeout_s=10", *overrides)
            )
            client = stack.enter_context(TestClient(app, raise_server_exceptions=False))
            serve_app(client, kernel)
            client.headers.update(bearer(client))
            return Rig(client, daemons)

        yield make


@pytest.fixture
def rig(rig_factory: RigFactory) -> Rig:
    return rig_factory()


def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WITHIN_S
    while not predicate():
        assert time.monotonic() < deadline, f"still not {what}"
        time.sleep(0.01)


def until_ended(client: TestClient, location: str) -> dict[str, Any]:
    job: dict[str, Any] = {}
    until(lambda: (job.update(client.get(location).json()) or job["state"]) not in
          ("queued", "running"), "ended")  # fmt: skip
    return job


def start(client: TestClient, **body: Any) -> str:
    started = client.post(f"{API}/interfaces/wlan0/connect", json=body)
    assert started.status_code == 202, started.text
    location: str = started.headers["location"]
    return location


def connect(client: TestClient, **body: Any) -> dict[str, Any]:
    return until_ended(client, start(client, **body))


def networks(rig: Rig) -> list[dict[str, Any]]:
    listed = rig.client.get(f"{API}/interfaces/wlan0/networks")
    assert listed.status_code == 200, listed.text
    found: list[dict[str, Any]] = listed.json()
    return found


def psk(ssid: str = "home", secret: str = PASSPHRASE, **more: Any) -> dict[str, Any]:
    return {"ssid": ssid, "security": "psk", "secret": secret, **more}


# --- the fake against the real daemon ------------------------------------------------------


Members = dict[str, dict[str, Any]]


def members(xml: str) -> dict[str, Members]:
    """Per fi.w1.wpa_supplicant1* interface: methods (in, out signatures), signals
    (signature) and properties (type, access), from an Introspect answer."""
    found: dict[str, Members] = {}
    for interface in ET.fromstring(xml).iter("interface"):
        name = interface.get("name", "")
        if not name.startswith(NAME):
            continue

        def signature(element: ET.Element, direction: str | None) -> str:
            return "".join(
                arg.get("type", "")
                for arg in element.iter("arg")
                if direction is None or arg.get("direction", "in") == direction
            )

        found[name] = {
            "methods": {
                m.get("name"): (signature(m, "in"), signature(m, "out"))
                for m in interface.iter("method")
            },
            "signals": {s.get("name"): signature(s, None) for s in interface.iter("signal")},
            "properties": {
                p.get("name"): (p.get("type"), p.get("access")) for p in interface.iter("property")
            },
        }
    return found


def missing_from(real: dict[str, Members], fake: dict[str, Members]) -> list[str]:
    """What the fake exports that the real daemon does not export identically."""
    wrong = []
    for interface, kinds in fake.items():
        for kind, entries in kinds.items():
            for name, value in entries.items():
                theirs = real.get(interface, {}).get(kind, {}).get(name)
                if theirs != value:
                    wrong.append(f"{interface} {kind} {name}: fake {value}, real {theirs}")
    return wrong


# wpas_dbus_bss_properties[] in wpa_supplicant/dbus/dbus_new.c (2.10): every BSS property
# has a getter and no setter (read-only). A wired port has no BSS to introspect.
REAL_BSS_PROPERTIES = {
    "SSID": "ay", "BSSID": "ay", "Privacy": "b", "Mode": "s", "Signal": "n",
    "Frequency": "q", "Rates": "au", "WPA": "a{sv}", "RSN": "a{sv}", "WPS": "a{sv}",
    "IEs": "ay", "Age": "u",
}  # fmt: skip

PSK_NETWORK = {
    "ssid": Variant("ay", b'a"b\nc'),
    "key_mgmt": Variant("s", "WPA-PSK WPA-PSK-SHA256"),
    "psk": Variant("s", ODD_KEY),
    "ieee80211w": Variant("i", 1),
    "scan_ssid": Variant("i", 1),
    "bssid": Variant("s", "02:00:00:00:01:00"),
}
EAP_NETWORK = {
    "ssid": Variant("ay", b"corp"),
    "key_mgmt": Variant("s", "WPA-EAP WPA-EAP-SHA256"),
    "eap": Variant("s", "PEAP TTLS"),
    "identity": Variant("s", 'al"ice'),
    "password": Variant("s", "secret password"),
    "phase2": Variant("s", "auth=MSCHAPV2"),
}
# (label, path under the interface or None for the root, interface, member, signature,
# body): each is asked of both daemons, and must be answered alike.
CALLS: list[tuple[str, str | None, str, str, str, list[Any]]] = [
    ("unknown ifname", None, NAME, "GetInterface", "s", ["nosuch0"]),
    ("no Ifname", None, NAME, "CreateInterface", "a{sv}", [{}]),
    ("managed already", None, NAME, "CreateInterface", "a{sv}",
     [{"Ifname": Variant("s", "wlan0")}]),
    ("psk network", "", INTERFACE, "AddNetwork", "a{sv}", [PSK_NETWORK]),
    ("eap network", "", INTERFACE, "AddNetwork", "a{sv}", [EAP_NETWORK]),
    ("sae network", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"\xff\x00"), "key_mgmt": Variant("s", "SAE"),
       "sae_password": Variant("s", SAE_PASSWORD), "ieee80211w": Variant("i", 2)}]),
    ("64 hex digits as a string", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"x"), "psk": Variant("s", "ab" * 32)}]),
    ("32 bytes of PSK", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"x"), "psk": Variant("ay", b"\xab" * 32)}]),
    ("7-character passphrase", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"x"), "psk": Variant("s", "1234567")}]),
    ("control character", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"x"), "psk": Variant("s", "12345\n678")}]),
    ("33-byte ssid", "", INTERFACE, "AddNetwork", "a{sv}", [{"ssid": Variant("ay", b"x" * 33)}]),
    ("unknown key", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"x"), "nonsense": Variant("s", "1")}]),
    ("a boolean", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"x"), "scan_ssid": Variant("b", True)}]),
    ("bad bssid", "", INTERFACE, "AddNetwork", "a{sv}",
     [{"ssid": Variant("ay", b"x"), "bssid": Variant("s", "02:00:00:00:00:0g")}]),
    ("remove unknown", "", INTERFACE, "RemoveNetwork", "o", ["/Networks/77"]),
    ("remove elsewhere", "", INTERFACE, "RemoveNetwork", "o", ["/fi/w1/elsewhere"]),
    ("select unknown", "", INTERFACE, "SelectNetwork", "o", ["/Networks/77"]),
    ("not connected", "", INTERFACE, "Disconnect", "", []),
    ("scan without Type", "", INTERFACE, "Scan", "a{sv}", [{}]),
    ("no such property", "", "org.freedesktop.DBus.Properties", "Get", "ss",
     [INTERFACE, "Nonsense"]),
    ("removed network", "/Networks/77", "org.freedesktop.DBus.Properties", "GetAll", "s",
     [NETWORK]),
]  # fmt: skip


async def _introspect_and_ask(address: str) -> tuple[dict[str, Members], list[Any]]:
    """What the daemon owning fi.w1.wpa_supplicant1 exports (root, wlan0, a network),
    and how it answers ``CALLS`` (an added network: its properties and Enabled)."""
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()

    async def call(path: str, interface: str, member: str, signature: str, body: list[Any]) -> Any:
        async with asyncio.timeout(WITHIN_S):
            message = Message(destination=NAME, path=path, interface=interface, member=member,
                              signature=signature, body=body)  # fmt: skip
            return await bus.call(message)

    async def introspect(path: str) -> dict[str, Members]:
        reply = await call(path, "org.freedesktop.DBus.Introspectable", "Introspect", "", [])
        return members(reply.body[0])

    try:
        (wlan0,) = (await call(ROOT, NAME, "GetInterface", "s", ["wlan0"])).body
        exported = {**await introspect(ROOT), **await introspect(wlan0)}
        answers = []
        for label, under, interface, member, signature, body in CALLS:
            path = ROOT if under is None else wlan0 + under
            body = [wlan0 + b if isinstance(b, str) and b.startswith("/Networks") else b
                    for b in body]  # fmt: skip
            reply = await call(path, interface, member, signature, body)
            if reply.message_type is MessageType.ERROR:
                answers.append((label, reply.error_name))
            elif member == "AddNetwork":
                (network,) = reply.body
                exported.update(await introspect(network))
                (values,) = (await call(network, "org.freedesktop.DBus.Properties", "GetAll",
                                        "s", [NETWORK])).body  # fmt: skip
                shown = {k: v.value for k, v in values["Properties"].value.items()}
                answers.append((label, shown, values["Enabled"].value))
            else:
                answers.append((label, "answered"))
        return exported, answers
    finally:
        bus.disconnect()


def test_the_fake_exports_only_what_the_real_wpa_supplicant_exports_and_answers_alike(
    tmp_path: Path, private_bus: str
) -> None:
    fake_daemons = FakeWifiDaemons(private_bus, air=[], interfaces={"wlan0": "wired"}).start()
    try:
        fake, fake_answers = asyncio.run(_introspect_and_ask(private_bus))
        bss_path = fake_daemons.run(lambda: fake_daemons.interface().hear(HOME, HOME.ssid))
        fake_bss = asyncio.run(_introspect(private_bus, bss_path))
    finally:
        fake_daemons.stop()
    with wired_8021x(tmp_path, private_bus):
        real, real_answers = asyncio.run(_introspect_and_ask(private_bus))

    assert {INTERFACE, NETWORK, NAME} <= set(fake)
    assert missing_from(real, fake) == []
    assert fake_bss[BSS]["properties"] == {
        name: (signature, "read")
        for name, signature in REAL_BSS_PROPERTIES.items()
        if name in fake_bss[BSS]["properties"]
    }
    assert fake_bss[BSS]["methods"] == {}
    # Answers: the same error names; an added network shows the fake's values as the real
    # daemon shows them (the real one shows ~100 more defaults), and neither a secret.
    assert len(fake_answers) == len(real_answers) == len(CALLS)
    for fake_answer, real_answer in zip(fake_answers, real_answers, strict=True):
        if len(fake_answer) == 3:
            label, fake_shown, fake_enabled = fake_answer
            _, real_shown, real_enabled = real_answer
            assert fake_shown == {k: real_shown.get(k) for k in fake_shown}, label
            assert fake_enabled == real_enabled, label
            assert not {"psk", "password", "sae_password"} & (set(fake_shown) | set(real_shown))
        else:
            assert fake_answer == real_answer


async def _introspect(address: str, path: str) -> dict[str, Members]:
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    try:
        async with asyncio.timeout(WITHIN_S):
            message = Message(destination=NAME, path=path, member="Introspect",
                              interface="org.freedesktop.DBus.Introspectable")  # fmt: skip
            reply = await bus.call(message)
        return members(reply.body[0])
    finally:
        bus.disconnect()


# --- joining networks ----------------------------------------------------------------------


def test_a_psk_network_connects_through_every_state_and_answers_the_access_point(
    rig: Rig,
) -> None:
    job = connect(rig.client, **psk())
    assert job["state"] == "succeeded", job
    result = job["result"]
    assert result["bssid"] == HOME.bssid  # the stronger of the two "home" APs
    # wpa_key_mgmt_txt(WPA_KEY_MGMT_PSK, WPA_PROTO_WPA | WPA_PROTO_RSN): no proto is set.
    assert result["auth_mode"] == "WPA2-PSK+WPA-PSK"
    assert result["state"] == "completed" and result["saved"] is True
    assert result["ssid"] == "home" and result["ssid_hex"] == b"home".hex()
    assert rig.read(lambda wlan0: wlan0.states) == SUCCESS_STATES
    assert rig.read(lambda wlan0: len(wlan0.saved)) == 1


def test_a_wrong_passphrase_is_a_wrong_key_and_leaves_no_network(rig: Rig) -> None:
    job = connect(rig.client, **psk(secret="not the passphrase"))
    assert job["state"] == "failed"
    assert job["error"]["error"] == "WrongKey", job
    states = rig.read(lambda wlan0: list(wlan0.states))
    assert states[states.index("4way_handshake") + 1] == "disconnected"
    assert networks(rig) == []
    assert rig.read(lambda wlan0: wlan0.networks) == {}


def test_sae_connects_with_the_right_password(rig: Rig) -> None:
    job = connect(rig.client, ssid="wpa3", security="sae", secret=SAE_PASSWORD)
    assert job["state"] == "succeeded", job
    assert job["result"]["auth_mode"] == "SAE" and job["result"]["bssid"] == WPA3.bssid
    added = rig.read(lambda wlan0: wlan0.added[-1])
    assert added["key_mgmt"] == "SAE" and added["ieee80211w"] == 2


def test_a_wrong_sae_password_is_a_wrong_key(rig: Rig) -> None:
    job = connect(rig.client, ssid="wpa3", security="sae", secret="not the password")
    assert job["state"] == "failed"
    assert job["error"]["error"] == "WrongKey", job
    states = rig.read(lambda wlan0: list(wlan0.states))
    assert states[states.index("authenticating") + 1] == "disconnected"
    assert networks(rig) == []


def test_an_open_network_completes_without_a_handshake(rig: Rig) -> None:
    job = connect(rig.client, ssid="cafe", security="open")
    assert job["state"] == "succeeded", job
    assert job["result"]["auth_mode"] == "NONE"
    assert "4way_handshake" not in rig.read(lambda wlan0: wlan0.states)


def test_a_network_not_in_range_is_not_found_after_scans_without_it(rig: Rig) -> None:
    job = connect(rig.client, **psk(ssid="elsewhere"))
    assert job["state"] == "failed"
    assert job["error"]["error"] == "NetworkNotFound", job
    assert rig.read(lambda wlan0: wlan0.scans_done) >= 2
    assert networks(rig) == []


def test_a_hidden_network_is_found_only_when_probed_for(rig: Rig) -> None:
    unprobed = connect(rig.client, **psk(ssid="attic", secret="attic passphrase"))
    assert unprobed["state"] == "failed"
    assert unprobed["error"]["error"] == "NetworkNotFound", unprobed
    job = connect(rig.client, **psk(ssid="attic", secret="attic passphrase", hidden=True))
    assert job["state"] == "succeeded", job
    assert job["result"]["bssid"] == ATTIC.bssid
    assert rig.read(lambda wlan0: wlan0.added[-1]["scan_ssid"]) == 1
    (saved,) = networks(rig)
    assert saved["hidden"] is True and saved["ssid"] == "attic"


def test_a_pinned_bssid_joins_that_access_point_only(rig: Rig) -> None:
    job = connect(rig.client, **psk(bssid=HOME_FAR.bssid.upper()))
    assert job["state"] == "succeeded", job
    assert job["result"]["bssid"] == HOME_FAR.bssid  # not the stronger HOME
    (saved,) = networks(rig)
    assert saved["bssid"] == HOME_FAR.bssid


def test_a_raw_psk_of_64_hex_digits_connects(rig: Rig) -> None:
    raw = psk_of(PASSPHRASE, b"home").hex()
    job = connect(rig.client, **psk(secret=raw))
    assert job["state"] == "succeeded", job


def test_a_non_utf8_ssid_is_joined_by_its_hex(rig: Rig) -> None:
    job = connect(rig.client, ssid_hex=NOT_UTF8.ssid.hex(), security="psk",
                  secret="latin-1 network")  # fmt: skip
    assert job["state"] == "succeeded", job
    assert job["result"]["ssid"] is None and job["result"]["ssid_hex"] == NOT_UTF8.ssid.hex()
    assert rig.read(lambda wlan0: wlan0.added[-1]["ssid"]) == NOT_UTF8.ssid
    (saved,) = networks(rig)
    assert saved["ssid"] is None and saved["ssid_hex"] == NOT_UTF8.ssid.hex()


def test_states_wpa_supplicant_sends_together_still_complete(rig_factory: RigFactory) -> None:
    """Changes within 5 ms go out as one PropertiesChanged with the last state only."""
    rig = rig_factory(timing=Timing(step_s=0, scan_s=0))
    job = connect(rig.client, **psk())
    assert job["state"] == "succeeded", job


def test_saved_networks_are_listed_without_their_secrets(rig: Rig) -> None:
    assert connect(rig.client, **psk())["state"] == "succeeded"
    assert connect(rig.client, ssid="wpa3", security="sae", secret=SAE_PASSWORD)["state"] == (
        "succeeded"
    )
    listed = rig.client.get(f"{API}/interfaces/wlan0/networks")
    assert PASSPHRASE not in listed.text and SAE_PASSWORD not in listed.text
    by_name = {network["ssid"]: network for network in listed.json()}
    assert by_name["home"]["security"] == "psk" and by_name["wpa3"]["security"] == "sae"
    assert by_name["wpa3"]["current"] is True and by_name["home"]["current"] is False
    # SelectNetwork disabled home; the connect enables it again, as a fallback.
    assert by_name["wpa3"]["enabled"] is True and by_name["home"]["enabled"] is True
    jobs = rig.client.get("/api/v1/jobs").text
    assert PASSPHRASE not in jobs and SAE_PASSWORD not in jobs


def test_connecting_again_replaces_the_saved_network_of_that_name(rig: Rig) -> None:
    assert connect(rig.client, **psk())["state"] == "succeeded"
    assert connect(rig.client, **psk())["state"] == "succeeded"
    assert [network["ssid"] for network in networks(rig)] == ["home"]


def test_disconnect_then_forget(rig: Rig) -> None:
    network = connect(rig.client, ssid="cafe", security="open")["result"]["network_id"]
    left = rig.client.post(f"{API}/interfaces/wlan0/disconnect")
    assert left.json() == {"interface": "wlan0", "was_connected": True, "state": "disconnected"}
    assert rig.client.delete(f"{API}/interfaces/wlan0/networks/{network}").status_code == 204
    again = rig.client.post(f"{API}/interfaces/wlan0/disconnect")
    assert again.json()["was_connected"] is False
    assert rig.client.delete(f"{API}/interfaces/wlan0/networks/{network}").status_code == 404


def test_a_bss_that_expires_while_being_read_does_not_fail_the_connect(rig: Rig) -> None:
    assert connect(rig.client, ssid="cafe", security="open")["state"] == "succeeded"

    def expire_cafe(wlan0: FakeInterface) -> None:
        rig.daemons.supplicant.on_bss_listing = None
        wlan0.expire(CAFE.bssid)

    rig.daemons.run(lambda: setattr(rig.daemons.supplicant, "on_bss_listing", expire_cafe))
    job = connect(rig.client, ssid="cafe", security="open")
    assert job["state"] == "succeeded", job


# --- who may connect ------------------------------------------------------------------------


def test_networkmanager_managing_the_interface_is_409_naming_it(rig_factory: RigFactory) -> None:
    rig = rig_factory(networkmanager={"wlan0": True})
    listed = rig.client.get(f"{API}/interfaces/wlan0/networks")
    assert listed.status_code == 409 and "NetworkManager" in listed.json()["detail"]
    left = rig.client.post(f"{API}/interfaces/wlan0/disconnect")
    assert left.status_code == 409
    refused = rig.client.post(f"{API}/interfaces/wlan0/connect", json=psk())
    assert refused.status_code == 409 and "NetworkManager" in refused.json()["detail"]
    assert rig.client.get("/api/v1/jobs").json() == []  # refused before a job existed
    assert rig.read(lambda wlan0: wlan0.added) == []


@pytest.mark.parametrize("devices", [{"wlan0": False}, {"eth0": True}])
def test_networkmanager_not_managing_the_interface_lets_hostcore_connect(
    rig_factory: RigFactory, devices: dict[str, bool]
) -> None:
    rig = rig_factory(networkmanager=devices)
    assert rig.client.get(f"{API}/interfaces/wlan0/networks").status_code == 200
    assert connect(rig.client, ssid="cafe", security="open")["state"] == "succeeded"


def test_wpa_supplicant_absent_from_the_bus_is_503_naming_it(rig_factory: RigFactory) -> None:
    rig = rig_factory(supplicant_running=False)
    listed = rig.client.get(f"{API}/interfaces/wlan0/networks")
    assert listed.status_code == 503, listed.text
    assert listed.json()["error"] == "Unavailable"
    assert "wpa_supplicant" in listed.json()["detail"]
    refused = rig.client.post(f"{API}/interfaces/wlan0/connect", json=psk())
    assert refused.status_code == 503 and "wpa_supplicant" in refused.json()["detail"]


def test_a_hanging_wpa_supplicant_is_503_once_the_timeout_passes(
    rig_factory: RigFactory,
) -> None:
    rig = rig_factory("plugins.wifi.supplicant_timeout_s=0.3", hanging=True)
    listed = rig.client.get(f"{API}/interfaces/wlan0/networks")
    assert listed.status_code == 503, listed.text
    assert listed.json()["detail"] == "wpa_supplicant did not answer within 0.3 s"
    assert rig.daemons.swallowed == ["GetInterface"]


# --- one attempt at a time, and cancelling -------------------------------------------------


def _authenticating(rig: Rig) -> Callable[[], bool]:
    return lambda: rig.read(lambda wlan0: wlan0.state) == "authenticating"


def test_one_connect_at_a_time_per_interface(rig: Rig) -> None:
    first = start(rig.client, ssid="silent", security="open")  # never answers
    until(_authenticating(rig), "authenticating")
    second = rig.client.post(f"{API}/interfaces/wlan0/connect", json=psk())
    assert second.status_code == 409, second.text
    assert second.json()["error"] == "Conflict"
    assert PASSPHRASE not in second.text
    assert rig.client.delete(first).status_code in (200, 202)
    assert until_ended(rig.client, first)["state"] == "cancelled"


def test_cancelling_a_connect_removes_its_network(rig: Rig) -> None:
    location = start(rig.client, ssid="silent", security="open")
    until(_authenticating(rig), "authenticating")
    (added,) = rig.read(lambda wlan0: list(wlan0.networks))
    cancelled = rig.client.delete(location)
    assert cancelled.status_code in (200, 202), cancelled.text
    assert until_ended(rig.client, location)["state"] == "cancelled"
    until(lambda: rig.read(lambda wlan0: wlan0.networks) == {}, "removed")
    assert rig.read(lambda wlan0: wlan0.removed) == [f"{rig.interface().path}/Networks/{added}"]
    assert rig.read(lambda wlan0: (wlan0.state, wlan0.current_network)) == ("disconnected", "/")
    assert networks(rig) == []


# --- hostile input ---------------------------------------------------------------------------

SECRET_MARK = "SeCrEt-MaRk"  # in every refused secret: the answer must not hold it

REFUSED: list[tuple[str, dict[str, Any]]] = [
    ("33-byte ssid", {"ssid": "x" * 33, "security": "open"}),
    ("33 bytes in UTF-8", {"ssid": "é" * 17, "security": "open"}),
    ("33-byte ssid_hex", {"ssid_hex": "78" * 33, "security": "open"}),
    ("empty ssid", {"ssid": "", "security": "open"}),
    ("ssid and ssid_hex", {"ssid": "home", "ssid_hex": "686f6d65", "security": "open"}),
    ("no name", {"security": "open"}),
    ("open with a secret", {"ssid": "cafe", "security": "open", "secret": SECRET_MARK}),
    ("psk without a secret", {"ssid": "home", "security": "psk"}),
    ("newline in a passphrase", psk(secret=f"{SECRET_MARK}\nnetwork={{")),
    ("NUL in a passphrase", psk(secret=f"{SECRET_MARK}\x00tail")),
    ("short passphrase", psk(secret="Mark7")),
    ("64 non-hex", psk(secret=SECRET_MARK + "z" * (64 - len(SECRET_MARK)))),
    ("non-ASCII passphrase", psk(secret=f"{SECRET_MARK}é")),
    ("newline in an sae password", {"ssid": "wpa3", "security": "sae",
                                    "secret": f"{SECRET_MARK}\n"}),
    ("eap without identity", {"ssid": "corp", "security": "eap", "secret": SECRET_MARK}),
    ("identity with psk", psk(secret=SECRET_MARK + "xx", identity="alice")),
    ("newline in an identity", {"ssid": "corp", "security": "eap", "secret": SECRET_MARK,
                                "identity": "alice\nbob"}),
    ("extra field", psk(secret=SECRET_MARK + "xx", key_mgmt="NONE")),
    ("psk as a field", {"ssid": "home", "security": "psk", "psk": SECRET_MARK}),
    ("unknown security", {"ssid": "home", "security": "wep", "secret": SECRET_MARK}),
    ("bad bssid", psk(secret=SECRET_MARK + "xx", bssid="02:00:00:00:01:0g")),
    ("hidden as a string", psk(secret=SECRET_MARK + "xx", hidden="true")),
    ("ssid as a number", {"ssid": 7, "security": "open"}),
]  # fmt: skip


@pytest.mark.parametrize(("label", "body"), REFUSED, ids=[label for label, _ in REFUSED])
def test_hostile_requests_are_422_without_the_secret(
    rig: Rig, label: str, body: dict[str, Any]
) -> None:
    answer = rig.client.post(f"{API}/interfaces/wlan0/connect", json=body)
    assert answer.status_code == 422, (label, answer.text)
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]
    assert SECRET_MARK not in answer.text
    assert rig.read(lambda wlan0: wlan0.added) == []


@pytest.mark.parametrize(
    "ssid",
    ['say "hi"\n}', 'a"b', "line\nbreak", "tab\there", "nul\x00byte", "network={\n}", "é☃"],
)
def test_odd_but_valid_ssids_reach_add_network_as_their_exact_bytes(rig: Rig, ssid: str) -> None:
    job = connect(rig.client, ssid=ssid, security="psk", secret=ODD_KEY)
    added = rig.read(lambda wlan0: wlan0.added[-1])
    assert added["ssid"] == ssid.encode()
    assert added["psk"] == psk_of(ODD_KEY, ssid.encode())  # the key; never the passphrase
    if ssid.encode() == ODD.ssid:
        assert job["state"] == "succeeded", job
        (saved,) = networks(rig)
        assert saved["ssid"] == ssid and saved["ssid_hex"] == ssid.encode().hex()
    else:
        assert job["error"]["error"] == "NetworkNotFound", job
