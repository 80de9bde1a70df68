"""Joining a network through wpa_supplicant: what is sent, and what the signals mean.

Pure: :func:`network_args` turns a validated request into wpa_supplicant's network
properties; :class:`ConnectWatch` reads the interface's signals and says when the
attempt ended and how; :func:`saved_network` reads a network back without secrets.
The D-Bus calls are :mod:`hostcore.builtin.wifi.supplicant`'s, the flow the service's.

How an attempt ends (wpa_supplicant 2.10 has no signal that names a wrong key):

* ``completed`` after our ``NetworkSelected``: connected.
* ``EAP`` ``("completion", "failure")``: the server refused the identity or password.
* psk: a 4-way handshake that falls back to a lower state: the key is wrong (the AP
  cannot check the handshake's MIC). sae: an authentication that falls back before
  association: the password is wrong (the SAE confirm did not verify).
* Two ended scans without a BSS of the SSID: the network is not in range.
* ``interface_disabled``: the interface went away or down.
* Another network selected meanwhile (another connect): superseded. wpa_supplicant
  stopping: a 503.
* Otherwise the connect timeout ends it: not found if no BSS of the SSID was ever
  seen, else a timeout.
"""

from __future__ import annotations

import hashlib
from typing import Any

from dbus_fast import Variant

from hostcore.builtin.wifi.schemas import ConnectCreate, SavedNetworkRead
from hostcore.builtin.wifi.supplicant import INTERFACE, Signal
from hostcore.dbus import PROPERTIES_INTERFACE
from hostcore.errors import Unavailable, UpstreamFailed

SCANS_BEFORE_NOT_FOUND = 2  # wpa_supplicant's first scan after a select may cover few channels
_FALLBACK_STATES = frozenset({"disconnected", "inactive", "scanning"})
_EAP_METHODS = "PEAP TTLS"
RAW_PSK_HEX_DIGITS = 64  # a validated psk this long is the key itself, in hex
PBKDF2_ROUNDS, PSK_BYTES = 4096, 32
_EAP_PHASE2 = "auth=MSCHAPV2"


class ConnectFailed(UpstreamFailed):
    """The attempt to join a network ended without a connection."""


class WrongKey(ConnectFailed):
    pass


class AuthenticationFailed(ConnectFailed):
    pass


class NetworkNotFound(ConnectFailed):
    pass


class ConnectTimeout(ConnectFailed):
    pass


class InterfaceDisabled(ConnectFailed):
    pass


class Superseded(ConnectFailed):
    pass


def network_args(request: ConnectCreate, *, wired: bool) -> dict[str, Variant]:
    """wpa_supplicant's properties for ``request``: the SSID as bytes and numbers as
    numbers, so no value needs quoting by anyone. ``wired``: the interface uses
    wpa_supplicant's wired driver (802.1X on a port: no WPA key handshake follows EAP)."""
    args: dict[str, Variant] = {"ssid": Variant("ay", request.ssid_bytes)}
    if request.hidden:
        args["scan_ssid"] = Variant("i", 1)
    if request.bssid is not None:
        args["bssid"] = Variant("s", request.bssid.lower())
    secret = request.secret.get_secret_value() if request.secret is not None else ""
    if request.security == "open":
        args["key_mgmt"] = Variant("s", "NONE")
    elif request.security == "psk":
        args["key_mgmt"] = Variant("s", "WPA-PSK WPA-PSK-SHA256")
        args["ieee80211w"] = Variant("i", 1)  # protected management frames if the AP can
        # The key itself, as bytes: a raw one as given, a passphrase turned into it as
        # WPA does (so wpa_supplicant never holds the passphrase, and its file a key in hex).
        args["psk"] = Variant("ay", psk_key(secret, request.ssid_bytes))
    elif request.security == "sae":
        args["key_mgmt"] = Variant("s", "SAE")
        args["ieee80211w"] = Variant("i", 2)  # WPA3 requires them
        args["sae_password"] = Variant("s", secret)
    else:
        if wired:
            args["key_mgmt"] = Variant("s", "IEEE8021X")
        else:
            args["key_mgmt"] = Variant("s", "WPA-EAP WPA-EAP-SHA256")
            args["ieee80211w"] = Variant("i", 1)
        args["eap"] = Variant("s", _EAP_METHODS)
        args["identity"] = Variant("s", request.identity or "")
        args["password"] = Variant("s", secret)
        args["phase2"] = Variant("s", _EAP_PHASE2)
    return args


def psk_key(secret: str, ssid: bytes) -> bytes:
    """The 256-bit WPA key: 64 hex digits as they are, else PBKDF2-SHA1 of the passphrase
    with the SSID as salt, 4096 rounds (IEEE 802.11 Annex J.4)."""
    if len(secret) == RAW_PSK_HEX_DIGITS:
        return bytes.fromhex(secret)
    return hashlib.pbkdf2_hmac("sha1", secret.encode(), ssid, PBKDF2_ROUNDS, PSK_BYTES)


class ConnectWatch:
    """Reads one attempt's signals; :meth:`feed` answers ``"completed"``, raises the
    failure, or returns None while the attempt goes on."""

    def __init__(self, security: str, ssid: bytes, *, seen: bool, wired: bool) -> None:
        self.security = security
        self.ssid = ssid
        self.wired = wired  # a port: no scans, no BSSs
        self.seen = seen  # a BSS of the SSID is (or was) known to wpa_supplicant
        self.network: str | None = None  # the network this attempt added
        self.selected = False
        self.state: str | None = None
        self.states: list[str] = []
        self.scans_without = 0

    def feed(self, signal: Signal) -> str | None:
        if signal.member == "NameOwnerChanged":
            raise Unavailable("wpa_supplicant stopped (or restarted) during the connect")
        if signal.member == "NetworkSelected" and signal.interface == INTERFACE:
            ours = signal.body[:1] == [self.network]
            if self.selected and not ours:
                raise Superseded("another network was selected meanwhile")
            self.selected = self.selected or ours
        elif signal.member == "BSSAdded" and signal.interface == INTERFACE:
            found = _value(signal.body[1], "SSID") if len(signal.body) > 1 else None
            self.seen = self.seen or (found is not None and bytes(found) == self.ssid)
        elif signal.member == "ScanDone" and signal.interface == INTERFACE:
            if not self.seen:
                self.scans_without += 1
                if self.scans_without >= SCANS_BEFORE_NOT_FOUND:
                    raise self.not_found()
        elif signal.member == "EAP" and signal.body[:2] == ["completion", "failure"]:
            raise AuthenticationFailed(
                "the network's authentication server refused the identity or password"
            )
        elif (
            signal.member == "PropertiesChanged"
            and signal.interface == PROPERTIES_INTERFACE
            and signal.body[:1] == [INTERFACE]
        ):
            state = _value(signal.body[1], "State")
            if isinstance(state, str):
                return self._state(state)
        return None

    def _state(self, state: str) -> str | None:
        before, self.state = self.state, state
        self.states.append(state)
        if not self.selected:
            return None
        if state == "completed":
            return state
        if state == "interface_disabled":
            raise InterfaceDisabled("the interface was disabled (removed, or set down)")
        if state in _FALLBACK_STATES:
            if before == "4way_handshake" and self.security == "psk":
                raise WrongKey("the access point did not accept the key: the passphrase is wrong")
            if before == "authenticating" and self.security == "sae":
                raise WrongKey("SAE authentication failed: the password is most likely wrong")
        return None

    def not_found(self) -> NetworkNotFound:
        return NetworkNotFound("no access point of this network is in range")

    def timed_out(self, timeout_s: float) -> ConnectFailed:
        if not self.seen and not self.wired:
            return self.not_found()
        reached = self.state or "nothing"
        return ConnectTimeout(f"not connected within {timeout_s:g} s (reached {reached})")


def _value(properties: Any, name: str) -> Any:
    if not isinstance(properties, dict):
        return None
    value = properties.get(name)
    return value.value if isinstance(value, Variant) else value


# -- reading networks back ---------------------------------------------------------


def config_bytes(value: object) -> bytes | None:
    """A string wpa_supplicant shows for a configured value: ``"text"`` quoted, or hex."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1].encode()
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def security_of(key_mgmt: str) -> str:
    names = set(key_mgmt.split())
    if names == {"NONE"}:
        return "open"
    if names & {"WPA-EAP", "WPA-EAP-SHA256", "IEEE8021X"}:
        return "eap"
    if names & {"WPA-PSK", "WPA-PSK-SHA256"}:
        return "psk"
    if names == {"SAE"}:
        return "sae"
    return key_mgmt


def network_id(path: str) -> int:
    """wpa_supplicant's network id, the last part of its object path."""
    return int(path.rsplit("/", 1)[1])


def saved_network(
    path: str, properties: dict[str, Any], *, enabled: bool, current: bool
) -> SavedNetworkRead:
    """A network as the API shows it: only the values named here, never a secret."""
    ssid = config_bytes(properties.get("ssid"))
    identity = config_bytes(properties.get("identity"))
    bssid = properties.get("bssid")
    return SavedNetworkRead(
        id=network_id(path),
        ssid=_text(ssid),
        ssid_hex=ssid.hex() if ssid is not None else None,
        security=security_of(str(properties.get("key_mgmt", ""))),
        identity=_text(identity),
        bssid=bssid if isinstance(bssid, str) and bssid not in ("", "any") else None,
        hidden=properties.get("scan_ssid") == "1",
        enabled=enabled,
        current=current,
    )


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None
