"""802.11 information elements of a scan result: the SSID and the security on offer. Pure.

Parsed from the raw bytes nl80211 gives (pyroute2's own decoder stops at valid but
short elements, such as an RSN element that ends after its pairwise suites, as
802.11 allows). A truncated element ends the list instead of raising; what a
neighbour's access point sends is untrusted and shown safely: an SSID is bytes,
given as text only when it is printable UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

SSID, RSN, VENDOR = 0, 48, 221
WPA_OUI_TYPE = b"\x00\x50\xf2\x01"  # Microsoft's WPA (version 1) element
IEEE_OUI = b"\x00\x0f\xac"
WPA_OUI = b"\x00\x50\xf2"
AKMS = {
    1: "802.1X",
    2: "PSK",
    3: "FT-802.1X",
    4: "FT-PSK",
    5: "802.1X-SHA256",
    6: "PSK-SHA256",
    8: "SAE",
    9: "FT-SAE",
    11: "802.1X-SUITE-B",
    12: "802.1X-SUITE-B-192",
    18: "OWE",
    24: "SAE-EXT-KEY",
}
CIPHERS = {
    1: "WEP-40",
    2: "TKIP",
    4: "CCMP",
    5: "WEP-104",
    8: "GCMP",
    9: "GCMP-256",
    10: "CCMP-256",
}
CAPABILITY_PRIVACY = 0x0010
# Key management only WPA3 (and Enhanced Open) networks use: a mix with PSK is transition mode.
WPA3_AKMS = frozenset({"SAE", "FT-SAE", "SAE-EXT-KEY", "OWE", "802.1X-SUITE-B-192"})


def elements(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(element id, body) pairs, in order; a truncated element ends them."""
    offset = 0
    while offset + 2 <= len(data):
        element, size = data[offset], data[offset + 1]
        if offset + 2 + size > len(data):
            return
        yield element, data[offset + 2 : offset + 2 + size]
        offset += 2 + size


@dataclass(frozen=True)
class Security:
    protocol: str  # open, WEP, WPA, WPA2/WPA3 (RSN)
    key_management: list[str] = field(default_factory=list)
    pairwise: list[str] = field(default_factory=list)
    group: str | None = None


def _suites(body: bytes, offset: int, oui: bytes, names: dict[int, str]) -> tuple[list[str], int]:
    """A count and that many 4-byte suites from ``offset``; what is missing is absent."""
    if len(body) < offset + 2:
        return [], len(body)
    count = int.from_bytes(body[offset : offset + 2], "little")
    found = []
    position = offset + 2
    for _ in range(count):
        suite = body[position : position + 4]
        if len(suite) < 4:
            break
        if suite[:3] == oui:
            found.append(names.get(suite[3], f"unknown-{suite[3]}"))
        else:
            found.append("vendor")
        position += 4
    return found, position


def _cipher_suite_list(body: bytes, oui: bytes) -> tuple[str | None, list[str], list[str]]:
    """Group cipher, pairwise ciphers, AKMs of an RSN or WPA body (after its version)."""
    group = None
    if len(body) >= 6:
        suite = body[2:6]
        group = CIPHERS.get(suite[3], f"unknown-{suite[3]}") if suite[:3] == oui else "vendor"
    pairwise, offset = _suites(body, 6, oui, CIPHERS)
    akms, _ = _suites(body, offset, oui, AKMS)
    # 802.11: an absent list means the default, CCMP (RSN) or TKIP (WPA), and 802.1X.
    return group, pairwise, akms or ["802.1X"]


def security(data: bytes, capability: int) -> Security:
    rsn = wpa = None
    for element, body in elements(data):
        if element == RSN and rsn is None:
            rsn = body
        elif element == VENDOR and body[:4] == WPA_OUI_TYPE and wpa is None:
            wpa = body[4:]
    if rsn is not None:
        group, pairwise, akms = _cipher_suite_list(rsn, IEEE_OUI)
        modern = [akm in WPA3_AKMS for akm in akms]
        protocol = "WPA3" if all(modern) else "WPA2/WPA3" if any(modern) else "WPA2"
        return Security(protocol, akms, pairwise or ["CCMP"], group)
    if wpa is not None:
        group, pairwise, akms = _cipher_suite_list(wpa, WPA_OUI)
        return Security("WPA", akms, pairwise or ["TKIP"], group)
    if capability & CAPABILITY_PRIVACY:
        return Security("WEP")
    return Security("open")


def ssid(data: bytes) -> bytes | None:
    """The SSID element's bytes; None when there is none."""
    for element, body in elements(data):
        if element == SSID:
            return body
    return None
