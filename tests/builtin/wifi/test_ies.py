"""Information elements as neighbours' access points send them: valid, short and hostile."""

from __future__ import annotations

from hostcore.builtin.wifi.ies import elements, security, ssid

RSN_PSK_CCMP = bytes.fromhex("0100000fac040100000fac040100000fac020000")
WPA1_PSK_TKIP = bytes.fromhex("0050f20101000050f20201000050f20201000050f202")


def element(number: int, body: bytes) -> bytes:
    return bytes([number, len(body)]) + body


def test_a_truncated_element_ends_the_list_without_an_error() -> None:
    data = element(0, b"Lab") + bytes([48, 40]) + b"\x01\x00"
    assert list(elements(data)) == [(0, b"Lab")]
    assert ssid(data) == b"Lab"


def test_rsn_wpa_wep_and_open() -> None:
    assert security(element(48, RSN_PSK_CCMP), 0).key_management == ["PSK"]
    wpa = security(element(221, WPA1_PSK_TKIP), 0x10)
    assert (wpa.protocol, wpa.key_management, wpa.pairwise) == ("WPA", ["PSK"], ["TKIP"])
    assert security(b"", 0x10).protocol == "WEP"
    assert security(element(0, b"x"), 0).protocol == "open"


def test_unknown_and_vendor_suites_are_named_not_trusted() -> None:
    body = bytes.fromhex("0100000fac040100aabbcc070100000fac63")
    offered = security(element(48, body), 0)
    assert offered.pairwise == ["vendor"] and offered.key_management == ["unknown-99"]


def test_a_suite_count_larger_than_the_element_stops_at_its_end() -> None:
    body = bytes.fromhex("0100000fac04ff00000fac04")
    assert security(element(48, body), 0).pairwise == ["CCMP"]
