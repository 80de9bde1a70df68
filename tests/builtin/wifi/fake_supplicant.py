# ruff: noqa: N802 - the fakes' methods are D-Bus members, named as the real daemons name them
"""A fake wpa_supplicant 2.10 (and a tiny NetworkManager) on a private D-Bus, with scripted
access points in the air.

A wired port (``supplicant_daemons.py``) shows no scans, BSSs, PSK or SAE; this fake
does, speaking what wpa_supplicant 2.10 speaks (``wpa_supplicant/dbus/dbus_new*.c``):

* **Names and types**: ``fi.w1.wpa_supplicant1`` at ``/fi/w1/wpa_supplicant1``, interface
  objects ``…/Interfaces/N``, networks ``…/Networks/N``, BSSs ``…/BSSs/N``; the members
  hostcore uses with wpa_supplicant's signatures, property types and access, and its
  error names (``test_fake_supplicant.py`` checks them against the real daemon).
* **AddNetwork** converts values as ``set_network_properties()`` does (``ay`` to hex,
  strings quoted unless the key is in ``dont_quote``, numbers in decimal) and parses
  them as ``wpa_config_set()`` does: a refused value is
  ``org.freedesktop.DBus.Error.InvalidArgs``, after a ``NetworkAdded`` and before a
  ``NetworkRemoved``. ``Properties`` shows a network as ``wpa_config_get_all()`` does
  (the subset of its keys kept here): ssid quoted, or hex when it has a byte outside
  32..126; never psk, password or sae_password.
* **Property changes are batched** as ``wpa_dbus_mark_property_changed()`` batches them:
  sent 5 ms after the first change, or right after a method's reply, with the values
  of that moment, as ``org.freedesktop.DBus.Properties.PropertiesChanged`` followed by
  the deprecated ``fi.w1.wpa_supplicant1.Interface.PropertiesChanged``.
  ``DisconnectReason`` is sent at once, as wpa_supplicant flushes it.
* **A SelectNetwork plays out** against the :class:`AccessPoint` list, with
  wpa_supplicant's (SME) states: scanning → ``BSSAdded``… ``ScanDone`` → authenticating
  → associating → associated → 4way_handshake → group_handshake → completed. A wrong
  PSK falls back from 4way_handshake to disconnected (the AP deauthenticates, reason
  15), the network is disabled for a while (``WRONG_KEY``) and one more scan finds
  nothing to join. A wrong SAE password falls back from authenticating to
  disconnected (hostapd refuses the confirm) and is retried after a new scan. An SSID
  not in the air gives a ``ScanDone`` every ``scan_interval_s`` and no BSS. A hidden AP
  beacons an empty SSID; it answers with its name only a probe for it (a network
  with ``scan_ssid=1``). An AP that does not answer leaves the attempt authenticating
  until ``SME_AUTH_TIMEOUT`` (5 s), then it is retried.

The fakes run on an event loop of their own (:class:`OnItsOwnLoop`), each daemon on its
own connection. ``hanging`` makes wpa_supplicant swallow every method call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from dbus_fast import (
    BusType,
    DBusError,
    Message,
    MessageType,
    NameFlag,
    PropertyAccess,
    RequestNameReply,
    Variant,
)
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusBool, DBusInt32, DBusObjectPath, DBusSignature, DBusStr
from dbus_fast.service import ServiceInterface, dbus_method, dbus_property, dbus_signal

from tests.builtin.system.fakes import STARTUP_TIMEOUT_S, NoOutput, OnItsOwnLoop

T = TypeVar("T")

NAME = "fi.w1.wpa_supplicant1"
ROOT = "/fi/w1/wpa_supplicant1"
INTERFACE = "fi.w1.wpa_supplicant1.Interface"
NETWORK = "fi.w1.wpa_supplicant1.Network"
BSS = "fi.w1.wpa_supplicant1.BSS"
PROPERTIES = "org.freedesktop.DBus.Properties"
ERROR = "fi.w1.wpa_supplicant1."
DBUS_INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
DBUS_UNKNOWN_METHOD = "org.freedesktop.DBus.Error.UnknownMethod"
NM_NAME = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
NM_DEVICE = "org.freedesktop.NetworkManager.Device"

FLUSH_S = 0.005  # WPA_DBUS_SEND_PROP_CHANGED_TIMEOUT, dbus_new_helpers.c: 5000 us
SME_AUTH_TIMEOUT_S = 5.0  # sme.c
WLAN_REASON_DEAUTH_LEAVING = 3
WLAN_REASON_4WAY_HANDSHAKE_TIMEOUT = 15
SSID_MAX_LEN = 32

Dict = Annotated[dict[str, Variant], DBusSignature("a{sv}")]
Paths = Annotated[list[str], DBusSignature("ao")]
Bytes = Annotated[bytes, DBusSignature("ay")]


def _typed(signature: str) -> Any:
    return Annotated[Any, DBusSignature(signature)]


# --- the air -------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessPoint:
    """One BSS in the air. ``key``: the passphrase (psk) or password (sae)."""

    ssid: bytes
    bssid: str
    security: Literal["open", "psk", "sae"] = "psk"
    key: str | None = None
    hidden: bool = False
    frequency: int = 2437
    signal: int = -48
    answers: bool = True  # False: it never answers authentication

    @property
    def akm(self) -> str:
        """The key management wpa_supplicant picks for it (its RSN element's one AKM)."""
        return {"open": "NONE", "psk": "WPA-PSK", "sae": "SAE"}[self.security]

    def accepts(self, network: Network) -> bool:
        if self.security == "psk":
            if isinstance(network.psk, bytes):
                return self.key is not None and network.psk == psk_of(self.key, self.ssid)
            return network.psk is not None and network.psk == self.key
        if self.security == "sae":
            return network.sae_password is not None and network.sae_password == self.key.encode()
        return True

    def beacon_ssid(self) -> bytes:
        return b"" if self.hidden else self.ssid

    def ies(self) -> bytes:
        """Its SSID element and, when secured, an RSN element (CCMP, one AKM)."""
        ssid = self.beacon_ssid()
        elements = bytes([0, len(ssid)]) + ssid
        if self.security != "open":
            akm = {"psk": 2, "sae": 8}[self.security]
            capabilities = b"\xc0\x00" if self.security == "sae" else b"\x00\x00"  # MFPR|MFPC
            rsn = (
                b"\x01\x00" + b"\x00\x0f\xac\x04" + b"\x01\x00\x00\x0f\xac\x04"
                + b"\x01\x00\x00\x0f\xac" + bytes([akm]) + capabilities
            )  # fmt: skip
            elements += bytes([48, len(rsn)]) + rsn
        return elements


def psk_of(passphrase: str, ssid: bytes) -> bytes:
    """The PSK a passphrase stands for (IEEE 802.11i: PBKDF2-SHA1, 4096 rounds)."""
    return hashlib.pbkdf2_hmac("sha1", passphrase.encode(), ssid, 4096, 32)


@dataclass
class Timing:
    """How long each step takes; a real radio takes milliseconds, a scan seconds."""

    step_s: float = 0.02  # between states; below FLUSH_S states are merged, as for real
    scan_s: float = 0.02
    scan_interval_s: float = 0.05  # wpa_supplicant's scan_interval is 5 s
    auth_timeout_s: float = SME_AUTH_TIMEOUT_S
    results_valid_s: float = 5.0  # scan_res_valid_for_connect


# --- networks as wpa_supplicant stores them ----------------------------------------------

# set_network_properties(), dbus_new_handlers.c: strings of these keys are not quoted.
DONT_QUOTE = frozenset(
    {
        "key_mgmt", "proto", "pairwise", "auth_alg", "group", "eap", "bssid", "scan_freq",
        "freq_list", "scan_ssid", "bssid_hint", "bssid_ignore", "bssid_accept",
        "bssid_blacklist", "bssid_whitelist", "group_mgmt", "ignore_broadcast_ssid",
    }
)  # fmt: skip
# wpa_config_write_key_mgmt(), config.c: the order the names are written in.
KEY_MGMT_ORDER = (
    "WPA-PSK", "WPA-EAP", "IEEE8021X", "NONE", "WPA-NONE", "FT-PSK", "FT-EAP",
    "FT-EAP-SHA384", "WPA-PSK-SHA256", "WPA-EAP-SHA256", "WPS", "SAE", "FT-SAE", "OWE",
)  # fmt: skip
EAP_METHODS = frozenset({"PEAP", "TTLS", "TLS", "PWD", "MSCHAPV2", "GTC", "MD5"})
_INT_RANGES = {"scan_ssid": (0, 1), "ieee80211w": (0, 3), "priority": (-(2**31), 2**31 - 1)}
_STRINGS = ("identity", "password", "sae_password", "phase2")
_SECRETS = frozenset({"psk", "password", "sae_password"})


class Refused(Exception):
    """wpa_config_set() refused a value."""


def _quoted_or_hex(value: str) -> bytes:
    """wpa_config_parse_string(): ``"text"`` (up to the last quote, which must end it)
    or hex."""
    if value.startswith('"'):
        end = value.rfind('"')
        if end == 0 or end != len(value) - 1:
            raise Refused(value)
        return value[1:end].encode()
    if len(value) % 2 or not _is_hex(value):
        raise Refused(value)
    return bytes.fromhex(value)


def shown(value: bytes) -> str:
    """wpa_config_write_string(): quoted, or hex when a byte is outside 32..126."""
    if any(byte < 32 or byte >= 127 for byte in value):
        return value.hex()
    return '"' + value.decode() + '"'


@dataclass
class Network:
    """One configured network (``struct wpa_ssid``), the fields hostcore's requests set."""

    id: int
    ssid: bytes | None = None
    key_mgmt: tuple[str, ...] = ("WPA-PSK", "WPA-EAP")  # DEFAULT_KEY_MGMT
    psk: str | bytes | None = None  # a passphrase, or the 32-byte PSK itself
    sae_password: bytes | None = None
    identity: bytes | None = None
    password: bytes | None = None
    phase2: bytes | None = None
    eap: tuple[str, ...] = ()
    scan_ssid: int = 0
    ieee80211w: int = 3  # MGMT_FRAME_PROTECTION_DEFAULT
    priority: int = 0
    bssid: str | None = None
    disabled: bool = True  # AddNetwork adds a disabled network; SelectNetwork enables it
    temp_disabled: bool = False

    def set(self, key: str, value: str) -> None:
        """wpa_config_set() of one (already converted) value."""
        if key == "ssid":
            ssid = _quoted_or_hex(value)
            if not 0 < len(ssid) <= SSID_MAX_LEN:
                raise Refused(key)
            self.ssid = ssid
        elif key == "psk":
            self.psk = _psk(value)
        elif key in _STRINGS:
            setattr(self, key, _quoted_or_hex(value))
        elif key == "key_mgmt":
            names = value.split()
            if not names or not set(names) <= set(KEY_MGMT_ORDER):
                raise Refused(key)
            self.key_mgmt = tuple(name for name in KEY_MGMT_ORDER if name in names)
        elif key == "eap":
            methods = value.split()
            if not methods or not set(methods) <= EAP_METHODS:
                raise Refused(key)
            self.eap = tuple(methods)
        elif key in _INT_RANGES:
            low, high = _INT_RANGES[key]
            try:
                number = int(value)
            except ValueError:
                raise Refused(key) from None
            if not low <= number <= high:
                raise Refused(key)
            setattr(self, key, number)
        elif key == "bssid":
            parts = value.split(":")
            if len(parts) != 6 or not all(len(p) == 2 and _is_hex(p) for p in parts):
                raise Refused(key)
            self.bssid = value.lower()
        else:
            raise Refused(key)

    def properties(self) -> dict[str, Variant]:
        """``Properties`` as wpa_config_get_all(…, 0) shows them (no keys), these fields."""
        shown_values = {}
        if self.ssid is not None:
            shown_values["ssid"] = shown(self.ssid)
        shown_values["scan_ssid"] = str(self.scan_ssid)
        if self.bssid is not None:
            shown_values["bssid"] = self.bssid
        shown_values["proto"] = "WPA RSN"
        shown_values["key_mgmt"] = " ".join(self.key_mgmt)
        shown_values["pairwise"] = "CCMP TKIP"
        shown_values["group"] = "CCMP TKIP"
        if self.eap:
            shown_values["eap"] = " ".join(self.eap)
        if self.identity is not None:
            shown_values["identity"] = shown(self.identity)
        if self.phase2 is not None:
            shown_values["phase2"] = shown(self.phase2)
        shown_values["priority"] = str(self.priority)
        shown_values["disabled"] = "1" if self.disabled else "0"
        shown_values["ieee80211w"] = str(self.ieee80211w)
        return {key: Variant("s", value) for key, value in shown_values.items()}


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def _psk(value: str) -> str | bytes:
    """wpa_config_parse_psk(): a quoted passphrase of 8..63 characters without control
    characters, or 64 hex digits."""
    if value.startswith('"'):
        end = value.rfind('"')
        passphrase = value[1:end] if end > 0 else value[1:]
        if not 8 <= len(passphrase) <= 63 or any(ord(c) < 32 or ord(c) == 127 for c in passphrase):
            raise Refused("psk")
        return passphrase
    if len(value) != 64 or not _is_hex(value):
        raise Refused("psk")
    return bytes.fromhex(value)


def converted(key: str, value: Variant) -> str:
    """set_network_properties(): a D-Bus value as the text wpa_config_set() gets."""
    if value.signature == "ay":
        if not value.value:
            raise Refused(key)
        return bytes(value.value).hex()
    if value.signature == "s":
        return value.value if key in DONT_QUOTE else f'"{value.value}"'
    if value.signature in ("u", "i"):
        return str(value.value)
    raise Refused(key)


def key_mgmt_txt(akm: str) -> str:
    """wpa_key_mgmt_txt(akm, proto), wpa_common.c, for a network whose proto is the
    default ``WPA RSN`` (hostcore sets none): what ``CurrentAuthMode`` answers."""
    return {"WPA-PSK": "WPA2-PSK+WPA-PSK", "WPA-PSK-SHA256": "WPA2-PSK-SHA256"}.get(akm, akm)


# --- property batching ----------------------------------------------------------------


class _Batched(ServiceInterface):
    """Marks changed properties and sends them together (wpa_dbus_mark_property_changed)."""

    TYPES: ClassVar[Mapping[str, str]] = {}

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._dirty: list[str] = []
        self._flush_handle: asyncio.TimerHandle | None = None

    def _value(self, name: str) -> Any:
        raise NotImplementedError

    def mark(self, *names: str) -> None:
        self._dirty += [name for name in names if name not in self._dirty]
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)

    def flush_soon(self) -> None:
        """After a method's reply, as wpa_dbus_flush_all_changed_properties() does."""
        asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        names, self._dirty = self._dirty, []
        if not names:
            return
        values = {name: self._value(name) for name in names}
        self.emit_properties_changed(values)
        self.PropertiesChanged({n: Variant(self.TYPES[n], v) for n, v in values.items()})

    @dbus_signal()
    def PropertiesChanged(self, properties: dict[str, Variant]) -> Dict:
        """Deprecated by wpa_supplicant, still sent after the standard one."""
        return properties


# --- the objects ------------------------------------------------------------------------


class FakeBSS(ServiceInterface):
    """fi.w1.wpa_supplicant1.BSS: one scan result (wpas_dbus_bss_properties, read-only)."""

    def __init__(self, ap: AccessPoint, ssid: bytes) -> None:
        super().__init__(BSS)
        self.ap = ap
        self.ssid = ssid

    def all(self) -> dict[str, Variant]:
        return {
            "SSID": Variant("ay", self.ssid),
            "BSSID": Variant("ay", bytes.fromhex(self.ap.bssid.replace(":", ""))),
            "Privacy": Variant("b", self.ap.security != "open"),
            "Mode": Variant("s", "infrastructure"),
            "Signal": Variant("n", self.ap.signal),
            "Frequency": Variant("q", self.ap.frequency),
            "Rates": Variant("au", [54000000, 48000000, 36000000, 24000000, 12000000, 6000000]),
            "WPA": Variant("a{sv}", {}),
            "RSN": Variant("a{sv}", self._rsn()),
            "IEs": Variant("ay", self.ap.ies()),
            "Age": Variant("u", 0),
        }

    def _rsn(self) -> dict[str, Variant]:
        if self.ap.security == "open":
            return {}
        key_mgmt = {"psk": "wpa-psk", "sae": "sae"}[self.ap.security]
        return {
            "KeyMgmt": Variant("as", [key_mgmt]),
            "Pairwise": Variant("as", ["ccmp"]),
            "Group": Variant("s", "ccmp"),
        }

    @dbus_property(access=PropertyAccess.READ)
    def SSID(self) -> Bytes:
        return self.ssid

    @dbus_property(access=PropertyAccess.READ)
    def BSSID(self) -> Bytes:
        return bytes.fromhex(self.ap.bssid.replace(":", ""))

    @dbus_property(access=PropertyAccess.READ)
    def Privacy(self) -> DBusBool:
        return self.ap.security != "open"

    @dbus_property(access=PropertyAccess.READ)
    def Mode(self) -> DBusStr:
        return "infrastructure"

    @dbus_property(access=PropertyAccess.READ)
    def Signal(self) -> _typed("n"):
        return self.ap.signal

    @dbus_property(access=PropertyAccess.READ)
    def Frequency(self) -> _typed("q"):
        return self.ap.frequency

    @dbus_property(access=PropertyAccess.READ)
    def Rates(self) -> _typed("au"):
        return self.all()["Rates"].value

    @dbus_property(access=PropertyAccess.READ)
    def WPA(self) -> Dict:
        return {}

    @dbus_property(access=PropertyAccess.READ)
    def RSN(self) -> Dict:
        return self._rsn()

    @dbus_property(access=PropertyAccess.READ)
    def IEs(self) -> Bytes:
        return self.ap.ies()

    @dbus_property(access=PropertyAccess.READ)
    def Age(self) -> _typed("u"):
        return 0


class FakeNetwork(_Batched):
    """fi.w1.wpa_supplicant1.Network (wpas_dbus_network_properties: both readwrite)."""

    TYPES: ClassVar[Mapping[str, str]] = {"Properties": "a{sv}", "Enabled": "b"}

    def __init__(self, network: Network) -> None:
        super().__init__(NETWORK)
        self.network = network

    def _value(self, name: str) -> Any:
        return self.network.properties() if name == "Properties" else not self.network.disabled

    def all(self) -> dict[str, Variant]:
        return {name: Variant(self.TYPES[name], self._value(name)) for name in self.TYPES}

    @dbus_property()
    def Properties(self) -> Dict:
        return self.network.properties()

    @Properties.setter  # type: ignore[no-redef]
    def Properties(self, values: Dict) -> None:
        raise DBusError(DBUS_INVALID_ARGS, "invalid message format")

    @dbus_property()
    def Enabled(self) -> DBusBool:
        return not self.network.disabled

    @Enabled.setter  # type: ignore[no-redef]
    def Enabled(self, value: DBusBool) -> None:
        self.network.disabled = not value
        self.mark("Enabled")


class FakeInterface(_Batched):
    """fi.w1.wpa_supplicant1.Interface of one network interface, and its attempts."""

    TYPES: ClassVar[Mapping[str, str]] = {
        "State": "s", "Scanning": "b", "Ifname": "s", "Driver": "s", "CurrentBSS": "o",
        "CurrentNetwork": "o", "CurrentAuthMode": "s", "BSSs": "ao", "Networks": "ao",
        "DisconnectReason": "i", "AuthStatusCode": "i",
    }  # fmt: skip

    def __init__(self, daemon: FakeSupplicant, path: str, ifname: str, driver: str) -> None:
        super().__init__(INTERFACE)
        self.daemon = daemon
        self.path = path
        self.ifname = ifname
        self.driver = driver
        self.state = "inactive"  # no enabled network: wpa_supplicant does not scan
        self.states: list[str] = []  # every state it went through, for tests
        self.scanning = False
        self.current_bss = "/"
        self.current_network = "/"
        self.auth_mode = "INACTIVE"
        self.disconnect_reason = 0
        self.auth_status_code = 0
        self.networks: dict[int, FakeNetwork] = {}
        self.bsss: dict[tuple[str, bytes], tuple[str, FakeBSS]] = {}
        self.added: list[dict[str, Any]] = []  # AddNetwork's arguments, as received
        self.removed: list[str] = []
        self.saved: list[list[dict[str, Variant]]] = []  # each SaveConfig's networks
        self.scans_done = 0
        self._next_bss = 0
        self._attempt: asyncio.Task[None] | None = None
        self._attempt_network: int | None = None
        self._last_scan = -1e9  # the loop's time of the last scan's end

    def _value(self, name: str) -> Any:
        return {
            "State": self.state, "Scanning": self.scanning, "Ifname": self.ifname,
            "Driver": self.driver, "CurrentBSS": self.current_bss,
            "CurrentNetwork": self.current_network, "CurrentAuthMode": self.auth_mode,
            "BSSs": [path for path, _ in self.bsss.values()],
            "Networks": [self._network_path(i) for i in sorted(self.networks)],
            "DisconnectReason": self.disconnect_reason, "AuthStatusCode": self.auth_status_code,
        }[name]  # fmt: skip

    def _network_path(self, network_id: int) -> str:
        return f"{self.path}/Networks/{network_id}"

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        self.state = state
        self.states.append(state)
        self.mark("State")

    # -- properties --

    @dbus_property(access=PropertyAccess.READ)
    def State(self) -> DBusStr:
        return self.state

    @dbus_property(access=PropertyAccess.READ)
    def Scanning(self) -> DBusBool:
        return self.scanning

    @dbus_property(access=PropertyAccess.READ)
    def Ifname(self) -> DBusStr:
        return self.ifname

    @dbus_property(access=PropertyAccess.READ)
    def Driver(self) -> DBusStr:
        return self.driver

    @dbus_property(access=PropertyAccess.READ)
    def CurrentBSS(self) -> DBusObjectPath:
        return self.current_bss

    @dbus_property(access=PropertyAccess.READ)
    def CurrentNetwork(self) -> DBusObjectPath:
        return self.current_network

    @dbus_property(access=PropertyAccess.READ)
    def CurrentAuthMode(self) -> DBusStr:
        return self.auth_mode

    @dbus_property(access=PropertyAccess.READ)
    def BSSs(self) -> Paths:
        listed = [path for path, _ in self.bsss.values()]
        self.daemon.listed_bsss(self)
        return listed

    @dbus_property(access=PropertyAccess.READ)
    def Networks(self) -> Paths:
        return [self._network_path(i) for i in sorted(self.networks)]

    @dbus_property(access=PropertyAccess.READ)
    def DisconnectReason(self) -> DBusInt32:
        return self.disconnect_reason

    @dbus_property(access=PropertyAccess.READ)
    def AuthStatusCode(self) -> DBusInt32:
        return self.auth_status_code

    # -- signals --

    @dbus_signal()
    def ScanDone(self, success: bool) -> DBusBool:
        return success

    @dbus_signal()
    def BSSAdded(self, path: str, properties: dict[str, Variant]) -> _typed("oa{sv}"):
        return [path, properties]

    @dbus_signal()
    def BSSRemoved(self, path: str) -> DBusObjectPath:
        return path

    @dbus_signal()
    def NetworkAdded(self, path: str, properties: dict[str, Variant]) -> _typed("oa{sv}"):
        return [path, properties]

    @dbus_signal()
    def NetworkRemoved(self, path: str) -> DBusObjectPath:
        return path

    @dbus_signal()
    def NetworkSelected(self, path: str) -> DBusObjectPath:
        return path

    @dbus_signal()
    def EAP(self, status: str, parameter: str) -> _typed("ss"):
        return [status, parameter]

    # -- methods --

    @dbus_method()
    def AddNetwork(self, args: Dict) -> DBusObjectPath:
        self.added.append({key: value.value for key, value in args.items()})
        # wpa_supplicant_add_network() announces the network before its values are set.
        network_id = max(self.networks, default=-1) + 1
        network = FakeNetwork(Network(network_id))
        path = self._network_path(network_id)
        self.networks[network_id] = network
        self.daemon.export(path, network)
        self.NetworkAdded(path, network.all())
        self.mark("Networks")
        try:
            for key, value in args.items():
                network.network.set(key, converted(key, value))
        except Refused:
            self._remove(network_id)
            self.flush_soon()
            raise DBusError(DBUS_INVALID_ARGS, "invalid message format") from None
        self.flush_soon()
        return path

    def _network_id(self, path: str) -> int:
        prefix = f"{self.path}/Networks/"
        number = path[len(prefix) :] if path.startswith(prefix) else ""
        if not number.isdigit():
            raise DBusError(ERROR + "InvalidArgs", "Did not receive correct message arguments.")
        if int(number) not in self.networks:
            raise DBusError(
                ERROR + "NetworkUnknown", "There is no such a network in this interface."
            )
        return int(number)

    def _remove(self, network_id: int) -> None:
        path = self._network_path(network_id)
        self.networks.pop(network_id)
        self.NetworkRemoved(path)
        self.daemon.unexport(path)
        self.removed.append(path)
        self.mark("Networks")

    @dbus_method()
    def RemoveNetwork(self, path: DBusObjectPath) -> NoOutput:
        network_id = self._network_id(path)
        if self._attempt_network == network_id:
            self._stop_attempt()
        if self.current_network == path:
            self._deauthenticate()
        self._remove(network_id)
        if self.state == "scanning" and not self._enabled():
            self._set_state("inactive")
        self.flush_soon()

    @dbus_method()
    def SelectNetwork(self, path: DBusObjectPath) -> NoOutput:
        network_id = self._network_id(path)
        self._stop_attempt()
        if self.current_network != "/":
            self._deauthenticate()
        for other_id, other in self.networks.items():
            disabled = other_id != network_id
            if other.network.disabled != disabled:
                other.network.disabled = disabled
                other.mark("Enabled")
        self.networks[network_id].network.temp_disabled = False
        self.current_network = path  # wpa_s->current_ssid, from now on
        self.mark("CurrentNetwork")
        self._attempt_network = network_id
        self._attempt = asyncio.get_running_loop().create_task(self._connect(network_id))
        self.NetworkSelected(path)
        self.flush_soon()

    @dbus_method()
    def Disconnect(self) -> NoOutput:
        if self.current_network == "/":  # wpa_s->current_ssid
            raise DBusError(ERROR + "NotConnected", "This interface is not connected")
        self._stop_attempt()
        self._deauthenticate()
        self.flush_soon()

    @dbus_method()
    def SaveConfig(self) -> NoOutput:
        if not self.daemon.update_config:
            raise DBusError(
                ERROR + "UnknownError", "Not allowed to update configuration (update_config=0)"
            )
        self.saved.append([n.network.properties() for n in self.networks.values()])

    @dbus_method()
    def Scan(self, args: Dict) -> NoOutput:
        kind = args.get("Type")
        if kind is None or kind.value not in ("active", "passive"):
            raise DBusError(ERROR + "InvalidArgs", "Did not receive correct message arguments.")
        asyncio.get_running_loop().create_task(self._scan(probe=()))

    # -- what happens in the air --

    def _enabled(self) -> list[Network]:
        return [n.network for n in self.networks.values() if not n.network.disabled]

    def _stop_attempt(self) -> None:
        attempt, self._attempt = self._attempt, None
        self._attempt_network = None
        if attempt is not None:
            attempt.cancel()

    def _deauthenticate(self, reason: int = -WLAN_REASON_DEAUTH_LEAVING) -> None:
        """wpa_supplicant_deauthenticate() / a disconnect event: the reason is sent at once."""
        if self.state in _ATTEMPTING or self.current_network != "/":
            self.disconnect_reason = reason
            self.mark("DisconnectReason")
            self.flush()
        self.current_bss = self.current_network = "/"
        self.auth_mode = "INACTIVE"
        self.mark("CurrentBSS", "CurrentNetwork", "CurrentAuthMode")
        self._set_state("disconnected")

    async def _scan(self, probe: Iterable[bytes]) -> None:
        """One scan: the BSSs heard (hidden ones by name only when probed for), then
        ``ScanDone``, as _wpa_supplicant_event_scan_results() orders them."""
        self.scanning = True
        self.mark("Scanning")
        if self.state not in ("completed",):
            self._set_state("scanning")
        await asyncio.sleep(self.daemon.timing.scan_s)
        probed = set(probe)
        for ap in self.daemon.air:
            heard = [ap.beacon_ssid()] + ([ap.ssid] if ap.hidden and ap.ssid in probed else [])
            for ssid in heard:
                self.hear(ap, ssid)
        self.scanning = False
        self.mark("Scanning")
        self.scans_done += 1
        self._last_scan = asyncio.get_running_loop().time()
        self.ScanDone(True)

    def hear(self, ap: AccessPoint, ssid: bytes) -> str:
        """A BSS of ``ap`` heard with ``ssid`` (added to the table when new); its path."""
        key = (ap.bssid, ssid)
        if key in self.bsss:
            return self.bsss[key][0]
        path = f"{self.path}/BSSs/{self._next_bss}"
        self._next_bss += 1
        bss = FakeBSS(ap, ssid)
        self.bsss[key] = (path, bss)
        self.daemon.export(path, bss)
        self.BSSAdded(path, bss.all())
        self.mark("BSSs")
        return path

    def expire(self, bssid: str) -> None:
        """The BSSs of ``bssid`` leave the table (BSS expiry, or a flush)."""
        for key in [key for key in self.bsss if key[0] == bssid]:
            path, _ = self.bsss.pop(key)
            self.daemon.unexport(path)
            self.BSSRemoved(path)
            self.mark("BSSs")

    def _candidate(self, network: Network) -> tuple[str, FakeBSS] | None:
        """The strongest BSS of the network's SSID and security (and BSSID, if pinned)."""
        found = [
            (path, bss)
            for path, bss in self.bsss.values()
            if bss.ssid == network.ssid
            and bss.ap.akm in network.key_mgmt + (("WPA-PSK",) if "WPA-PSK-SHA256" in
                                                  network.key_mgmt else ())
            and (network.bssid is None or network.bssid == bss.ap.bssid)
        ]  # fmt: skip
        return max(found, key=lambda item: item[1].ap.signal, default=None)

    async def _connect(self, network_id: int) -> None:
        timing = self.daemon.timing
        network = self.networks[network_id].network
        probe = [network.ssid] if network.scan_ssid and network.ssid else []
        # wpa_supplicant_fast_associate(): recent scan results are used without a scan.
        recent = asyncio.get_running_loop().time() - self._last_scan < timing.results_valid_s
        while True:
            if not recent:
                await self._scan(probe)
            recent = False
            candidate = self._candidate(network)
            if candidate is None:
                await asyncio.sleep(timing.scan_interval_s)
                continue
            outcome = await self._join(network_id, *candidate)
            if outcome == "completed":
                return
            if outcome == "wrong_key":
                # wpas_auth_failed("WRONG_KEY"): disabled for a while; one more scan
                # (wpa_supplicant_req_scan(0, 100000)) finds nothing it may join.
                network.temp_disabled = True
                await asyncio.sleep(timing.step_s)
                await self._scan(probe)
                return
            await asyncio.sleep(timing.step_s)

    async def _join(self, network_id: int, bss_path: str, bss: FakeBSS) -> str:
        timing = self.daemon.timing
        network = self.networks[network_id].network
        ap = bss.ap
        self.current_network = self._network_path(network_id)
        self.mark("CurrentNetwork")
        self._set_state("authenticating")
        if not ap.answers:
            await asyncio.sleep(timing.auth_timeout_s)  # sme_event_auth_timed_out()
            self._deauthenticate(0)
            return "failed"
        await asyncio.sleep(timing.step_s)
        if ap.security == "sae" and not ap.accepts(network):
            # hostapd answers a confirm that does not verify with status 1; sme_event_auth()
            # fails the attempt (AuthStatusCode stays: that path returns before setting it).
            self._set_state("disconnected")
            return "failed"
        self._set_state("associating")
        await asyncio.sleep(timing.step_s)
        self.current_bss = bss_path
        self.mark("CurrentBSS")
        self._set_state("associated")
        await asyncio.sleep(timing.step_s)
        if ap.security != "open":
            self._set_state("4way_handshake")
            await asyncio.sleep(timing.step_s)
            if not ap.accepts(network):
                await asyncio.sleep(timing.step_s)  # the AP retries message 1, then gives up
                self._deauthenticate(WLAN_REASON_4WAY_HANDSHAKE_TIMEOUT)
                return "wrong_key"
            self._set_state("group_handshake")
            await asyncio.sleep(timing.step_s)
        self.auth_mode = key_mgmt_txt(ap.akm)
        self.mark("CurrentAuthMode")
        self._set_state("completed")
        return "completed"


_ATTEMPTING = frozenset(
    {"authenticating", "associating", "associated", "4way_handshake", "group_handshake",
     "completed"}
)  # fmt: skip


class FakeSupplicant(ServiceInterface):
    """fi.w1.wpa_supplicant1 at /fi/w1/wpa_supplicant1.

    ``interfaces``: ifname -> driver of the interfaces it manages from the start;
    ``creatable``: the names CreateInterface can add (the host has them)."""

    def __init__(
        self,
        air: list[AccessPoint],
        *,
        interfaces: Mapping[str, str],
        creatable: Iterable[str],
        update_config: bool,
        timing: Timing,
    ) -> None:
        super().__init__(NAME)
        self.air = air
        self.update_config = update_config
        self.timing = timing
        self.creatable = set(creatable)
        self.initial = dict(interfaces)
        self.interfaces: dict[str, FakeInterface] = {}
        self.objects: dict[str, ServiceInterface] = {}  # what is exported under ROOT
        self.bus: MessageBus
        self._next = 0
        # Called with the interface each time its BSSs are listed (a test's race).
        self.on_bss_listing: Callable[[FakeInterface], None] | None = None

    def export(self, path: str, interface: ServiceInterface) -> None:
        self.objects[path] = interface
        self.bus.export(path, interface)

    def unexport(self, path: str) -> None:
        del self.objects[path]
        self.bus.unexport(path)

    def listed_bsss(self, interface: FakeInterface) -> None:
        if self.on_bss_listing is not None:  # once the answer is on its way
            asyncio.get_running_loop().call_soon(self.on_bss_listing, interface)

    def export_initial(self) -> None:
        for ifname, driver in self.initial.items():
            self._add(ifname, driver)

    def _add(self, ifname: str, driver: str) -> FakeInterface:
        path = f"{ROOT}/Interfaces/{self._next}"
        self._next += 1
        interface = FakeInterface(self, path, ifname, driver)
        self.interfaces[ifname] = interface
        self.export(path, interface)
        return interface

    @dbus_method()
    def CreateInterface(self, args: Dict) -> DBusObjectPath:
        ifname = args.get("Ifname")
        if ifname is None or ifname.signature != "s":
            raise DBusError(ERROR + "InvalidArgs", "Did not receive correct message arguments.")
        if ifname.value in self.interfaces:
            raise DBusError(
                ERROR + "InterfaceExists", "wpa_supplicant already controls this interface."
            )
        if ifname.value not in self.creatable:
            raise DBusError(ERROR + "UnknownError", "wpa_supplicant couldn't grab this interface.")
        driver = args.get("Driver")
        interface = self._add(ifname.value, driver.value.split(",")[0] if driver else "nl80211")
        self.InterfaceAdded(interface.path, {})
        return interface.path

    @dbus_method()
    def GetInterface(self, ifname: DBusStr) -> DBusObjectPath:
        if ifname not in self.interfaces:
            raise DBusError(
                ERROR + "InterfaceUnknown", "wpa_supplicant knows nothing about this interface."
            )
        return self.interfaces[ifname].path

    @dbus_method()
    def RemoveInterface(self, path: DBusObjectPath) -> NoOutput:
        for ifname, interface in list(self.interfaces.items()):
            if interface.path == path:
                interface._stop_attempt()
                del self.interfaces[ifname]
                self.unexport(path)
                self.InterfaceRemoved(path)
                return
        raise DBusError(
            ERROR + "InterfaceUnknown", "wpa_supplicant knows nothing about this interface."
        )

    @dbus_signal()
    def InterfaceAdded(self, path: str, properties: dict[str, Variant]) -> _typed("oa{sv}"):
        return [path, properties]

    @dbus_signal()
    def InterfaceRemoved(self, path: str) -> DBusObjectPath:
        return path

    @dbus_property(access=PropertyAccess.READ)
    def Interfaces(self) -> Paths:
        return [interface.path for interface in self.interfaces.values()]

    @dbus_property(access=PropertyAccess.READ)
    def EapMethods(self) -> _typed("as"):
        return sorted(EAP_METHODS)


# --- NetworkManager -----------------------------------------------------------------------


class FakeNetworkManager(ServiceInterface):
    """org.freedesktop.NetworkManager: the devices it knows, by interface name."""

    def __init__(self, managed: Mapping[str, bool]) -> None:
        super().__init__(NM_NAME)
        self.devices = {
            ifname: (f"{NM_PATH}/Devices/{number}", FakeDevice(ifname, is_managed))
            for number, (ifname, is_managed) in enumerate(managed.items(), start=1)
        }

    @dbus_method()
    def GetDeviceByIpIface(self, iface: DBusStr) -> DBusObjectPath:
        if iface not in self.devices:
            raise DBusError(
                "org.freedesktop.NetworkManager.UnknownDevice",
                "No device found for the requested iface.",
            )
        return self.devices[iface][0]


class FakeDevice(ServiceInterface):
    def __init__(self, ifname: str, managed: bool) -> None:
        super().__init__(NM_DEVICE)
        self.ifname = ifname
        self.managed = managed

    @dbus_property(access=PropertyAccess.READ)
    def Interface(self) -> DBusStr:
        return self.ifname

    @dbus_property()
    def Managed(self) -> DBusBool:
        return self.managed

    @Managed.setter  # type: ignore[no-redef]
    def Managed(self, value: DBusBool) -> None:
        self.managed = value


# --- running them ---------------------------------------------------------------------------


@dataclass
class FakeWifiDaemons(OnItsOwnLoop):
    """wpa_supplicant (unless ``supplicant`` is False) and, when ``networkmanager`` maps
    interface names to their ``Managed``, NetworkManager, on ``address``."""

    address: str
    air: list[AccessPoint] = field(default_factory=list)
    supplicant_running: bool = True
    networkmanager: Mapping[str, bool] | None = None
    interfaces: Mapping[str, str] = field(default_factory=lambda: {"wlan0": "nl80211"})
    creatable: Iterable[str] = ("wlan1",)
    update_config: bool = True
    timing: Timing = field(default_factory=Timing)
    hanging: bool = False  # wpa_supplicant receives method calls and never answers
    swallowed: list[str] = field(default_factory=list)

    thread_name = "fake-wifi-daemons"

    def __post_init__(self) -> None:
        self.supplicant = FakeSupplicant(
            self.air,
            interfaces=self.interfaces,
            creatable=self.creatable,
            update_config=self.update_config,
            timing=self.timing,
        )
        self._buses: list[MessageBus] = []

    def interface(self, ifname: str = "wlan0") -> FakeInterface:
        return self.supplicant.interfaces[ifname]

    def run(self, function: Callable[[], T]) -> T:
        """``function()`` in the fakes' own thread (to read or change them safely)."""

        async def call() -> T:
            return function()

        return self._run(call())

    async def _connect(self) -> None:
        if self.supplicant_running:
            bus = await self._bus()
            self.supplicant.bus = bus
            bus.add_message_handler(self._as_libdbus_answers)
            self.supplicant.export(ROOT, self.supplicant)
            self.supplicant.export_initial()
            await self._own(bus, NAME)
        if self.networkmanager is not None:
            bus = await self._bus()
            manager = FakeNetworkManager(self.networkmanager)
            bus.export(NM_PATH, manager)
            for path, device in manager.devices.values():
                bus.export(path, device)
            await self._own(bus, NM_NAME)

    async def _bus(self) -> MessageBus:
        bus = await MessageBus(bus_address=self.address, bus_type=BusType.SYSTEM).connect()
        self._buses.append(bus)
        return bus

    async def _own(self, bus: MessageBus, name: str) -> None:
        reply = await bus.request_name(name, NameFlag.DO_NOT_QUEUE)
        if reply is not RequestNameReply.PRIMARY_OWNER:
            raise RuntimeError(f"{name} is already taken on {self.address}")

    def _as_libdbus_answers(self, message: Message) -> Message | bool | None:
        """Hang when told to; else answer what wpa_supplicant's libdbus answers and dbus-fast
        would answer otherwise: an object path nobody registered (a removed network or
        BSS) is UnknownMethod, an unknown property InvalidArgs."""
        if message.message_type is not MessageType.METHOD_CALL:
            return None
        if self.hanging:
            self.swallowed.append(str(message.member))
            return True
        target = self.supplicant.objects.get(message.path or "")
        if target is None and message.interface != "org.freedesktop.DBus.Introspectable":
            text = (
                f'Method "{message.member}" with signature "{message.signature}" on interface '
                f'"{message.interface}" doesn\'t exist\n'
            )
            return Message.new_error(message, DBUS_UNKNOWN_METHOD, text)
        if (
            target is not None
            and message.interface == PROPERTIES
            and message.member in ("Get", "Set")
            and message.body[0] == target.name
            and message.body[1] not in {p.name for p in ServiceInterface._get_properties(target)}
        ):
            return Message.new_error(message, DBUS_INVALID_ARGS, "No such property")
        return None

    async def _disconnect(self) -> None:
        buses, self._buses = self._buses, []
        for bus in buses:
            bus.disconnect()
        for bus in buses:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(STARTUP_TIMEOUT_S):
                    await bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
        current = asyncio.current_task()
        pending = [task for task in asyncio.all_tasks() if task is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
