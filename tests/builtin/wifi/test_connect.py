"""What a connect sends wpa_supplicant, and how its signals end an attempt (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from dbus_fast import Variant

from hostcore.builtin.wifi.connect import (
    AuthenticationFailed,
    ConnectTimeout,
    ConnectWatch,
    InterfaceDisabled,
    NetworkNotFound,
    WrongKey,
    config_bytes,
    network_args,
    saved_network,
    security_of,
)
from hostcore.builtin.wifi.schemas import ConnectCreate
from hostcore.builtin.wifi.supplicant import INTERFACE, Signal
from hostcore.dbus import PROPERTIES_INTERFACE

NETWORK = "/fi/w1/wpa_supplicant1/Interfaces/0/Networks/3"


def request(**fields: Any) -> ConnectCreate:
    return ConnectCreate.model_validate({"ssid": "HomeNet", **fields})


def plain(args: dict[str, Variant]) -> dict[str, Any]:
    return {name: (variant.signature, variant.value) for name, variant in args.items()}


def test_each_security_maps_to_wpa_supplicants_key_management() -> None:
    assert plain(network_args(request(security="open"), wired=False)) == {
        "ssid": ("ay", b"HomeNet"),
        "key_mgmt": ("s", "NONE"),
    }
    psk = plain(network_args(request(ssid="IEEE", security="psk", secret="password"), wired=False))
    assert psk["key_mgmt"] == ("s", "WPA-PSK WPA-PSK-SHA256")
    # IEEE 802.11 Annex J.4.2's test vector: the key, never the passphrase, is sent.
    key = "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
    assert psk["psk"] == ("ay", bytes.fromhex(key))
    assert psk["ieee80211w"] == ("i", 1)
    sae = plain(network_args(request(security="sae", secret="x"), wired=False))
    assert sae["key_mgmt"] == ("s", "SAE") and sae["ieee80211w"] == ("i", 2)
    assert sae["sae_password"] == ("s", "x") and "psk" not in sae
    eap = request(security="eap", secret="pw", identity="alice")
    wireless = plain(network_args(eap, wired=False))
    assert wireless["key_mgmt"] == ("s", "WPA-EAP WPA-EAP-SHA256")
    assert wireless["identity"] == ("s", "alice") and wireless["password"] == ("s", "pw")
    assert plain(network_args(eap, wired=True))["key_mgmt"] == ("s", "IEEE8021X")


def test_the_ssid_goes_as_bytes_and_options_as_numbers() -> None:
    odd = request(ssid='a"b\nc', security="open", hidden=True, bssid="AA:BB:CC:DD:EE:FF")
    args = plain(network_args(odd, wired=False))
    assert args["ssid"] == ("ay", b'a"b\nc') and args["scan_ssid"] == ("i", 1)
    assert args["bssid"] == ("s", "aa:bb:cc:dd:ee:ff")
    raw = ConnectCreate.model_validate({"ssid_hex": "ff00fe", "security": "open"})
    assert plain(network_args(raw, wired=False))["ssid"] == ("ay", b"\xff\x00\xfe")


@pytest.mark.parametrize(
    "fields",
    [
        {"ssid": "x" * 33, "security": "open"},
        {"ssid": "é" * 17, "security": "open"},  # 34 bytes
        {"ssid": "a", "ssid_hex": "61", "security": "open"},
        {"security": "open"},
        {"ssid": "a", "security": "open", "secret": "password"},
        {"ssid": "a", "security": "psk", "secret": "short"},
        {"ssid": "a", "security": "psk", "secret": "new\nline pass"},
        {"ssid": "a", "security": "psk", "secret": "nul\x00in the passphrase"},
        {"ssid": "a", "security": "psk", "secret": "ü" * 10},
        {"ssid": "a", "security": "psk", "secret": "g" * 64},
        {"ssid": "a", "security": "sae", "secret": "tab\there"},
        {"ssid": "a", "security": "eap", "secret": "password"},
        {"ssid": "a", "security": "psk", "secret": "password", "identity": "bob"},
        {"ssid": "a", "security": "eap", "secret": "pw", "identity": "bo\nb"},
        {"ssid": "a", "security": "wep", "secret": "password"},
        {"ssid": "a", "security": "open", "bssid": "ff:ff:ff:ff:ff"},
        {"ssid_hex": "zz", "security": "open"},
        {"ssid": "a", "security": "open", "extra": 1},
        {"ssid": 'a"#b', "security": "open"},
        {"ssid": "a", "security": "sae", "secret": '"#secret'},
        {"ssid": "a", "security": "eap", "secret": "pw", "identity": 'x"y#z'},
        {"ssid": "a", "security": "sae", "secret": "c1\u0085control"},
        {"ssid": "a", "security": "sae", "secret": "lone\ud800surrogate"},
    ],
)
def test_hostile_or_inconsistent_requests_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ConnectCreate.model_validate(fields)


def test_quotes_or_hashes_alone_are_fine_and_a_passphrase_may_hold_both() -> None:
    for ssid in ('a"b', "a#b", 'é"#'):  # the last is written in hex: it survives
        request(ssid=ssid, security="open")
    request(security="psk", secret='"#abcdefgh')  # only its key reaches wpa_supplicant


def test_a_raw_psk_of_64_hex_digits_goes_as_the_key_itself() -> None:
    raw = plain(network_args(request(security="psk", secret="0a" * 32), wired=False))
    assert raw["psk"] == ("ay", b"\n" * 32)  # a string would be a (too long) passphrase


def signal(member: str, *body: Any, interface: str = INTERFACE) -> Signal:
    return Signal(member, interface, list(body))


def state(name: str) -> Signal:
    return signal(
        "PropertiesChanged",
        INTERFACE,
        {"State": Variant("s", name)},
        [],
        interface=PROPERTIES_INTERFACE,
    )


def watch(security: str = "psk", *, seen: bool = True, wired: bool = False) -> ConnectWatch:
    found = ConnectWatch(security, b"HomeNet", seen=seen, wired=wired)
    found.network = NETWORK
    return found


def test_completed_counts_only_after_our_network_was_selected() -> None:
    attempt = watch()
    assert attempt.feed(state("completed")) is None  # the previous network's
    assert (
        attempt.feed(signal("NetworkSelected", "/fi/w1/wpa_supplicant1/Interfaces/0/Networks/1"))
        is None
    )
    assert attempt.feed(state("completed")) is None
    attempt.feed(signal("NetworkSelected", NETWORK))
    for name in ("scanning", "authenticating", "associating", "associated", "4way_handshake"):
        assert attempt.feed(state(name)) is None
    assert attempt.feed(state("completed")) == "completed"


def test_a_handshake_that_falls_back_is_a_wrong_key_for_psk_only() -> None:
    attempt = watch("psk")
    attempt.feed(signal("NetworkSelected", NETWORK))
    attempt.feed(state("4way_handshake"))
    with pytest.raises(WrongKey):
        attempt.feed(state("disconnected"))
    sae = watch("sae")
    sae.feed(signal("NetworkSelected", NETWORK))
    sae.feed(state("authenticating"))
    with pytest.raises(WrongKey, match="SAE"):
        sae.feed(state("scanning"))
    eap = watch("eap")
    eap.feed(signal("NetworkSelected", NETWORK))
    eap.feed(state("4way_handshake"))
    assert eap.feed(state("disconnected")) is None  # eap's own signal says it
    with pytest.raises(AuthenticationFailed):
        eap.feed(signal("EAP", "completion", "failure"))


def test_scans_without_the_network_end_the_attempt_as_not_found() -> None:
    attempt = watch(seen=False)
    attempt.feed(signal("NetworkSelected", NETWORK))
    assert attempt.feed(signal("ScanDone", True)) is None
    with pytest.raises(NetworkNotFound):
        attempt.feed(signal("ScanDone", True))
    found = watch(seen=False)
    found.feed(signal("BSSAdded", "/bss/1", {"SSID": Variant("ay", b"HomeNet")}))
    found.feed(signal("ScanDone", True))
    assert found.feed(signal("ScanDone", True)) is None
    assert isinstance(found.timed_out(30), ConnectTimeout)
    assert isinstance(watch(seen=False).timed_out(30), NetworkNotFound)
    assert isinstance(watch(seen=False, wired=True).timed_out(30), ConnectTimeout)


def test_a_disabled_interface_ends_the_attempt() -> None:
    attempt = watch()
    attempt.feed(signal("NetworkSelected", NETWORK))
    with pytest.raises(InterfaceDisabled):
        attempt.feed(state("interface_disabled"))


def test_saved_networks_are_read_back_without_secrets() -> None:
    shown = {
        "ssid": "6122620a63",
        "key_mgmt": "WPA-PSK WPA-PSK-SHA256",
        "psk": "*",
        "scan_ssid": "1",
        "bssid": "aa:bb:cc:dd:ee:ff",
    }
    network = saved_network(NETWORK, shown, enabled=True, current=False)
    assert network.id == 3 and network.ssid == 'a"b\nc' and network.ssid_hex == "6122620a63"
    assert network.security == "psk" and network.hidden and network.bssid == "aa:bb:cc:dd:ee:ff"
    assert "*" not in network.model_dump_json()  # only the values named are read back
    assert config_bytes('"HomeNet"') == b"HomeNet" and config_bytes("zz") is None
    assert saved_network(NETWORK, {"ssid": "ff"}, enabled=False, current=False).ssid is None
    assert [security_of(k) for k in ("NONE", "SAE", "WPA-EAP", "IEEE8021X", "OWE")] == [
        "open",
        "sae",
        "eap",
        "eap",
        "OWE",
    ]
