"""Settings and request models of the Wi-Fi plugin; names are validated strictly here."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from hostcore.builtin.wifi.parsers import BssRead
from hostcore.netnames import InterfaceName
from hostcore.netns import NETNS_DIR_DEFAULT

# A radio's name (phy0, or what `iw phy … set name` gave it): only compared with the
# names nl80211 lists.
PhyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class WifiSettings(BaseModel):
    """``[plugins.wifi]``."""

    model_config = ConfigDict(extra="forbid")

    netns_dir: Path = Field(
        NETNS_DIR_DEFAULT, description="Where named network namespaces are (ip netns)."
    )
    nl80211_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Bounds each nl80211 request (a dump, a scan trigger)."
    )
    connect_timeout_s: float = Field(
        30.0,
        gt=0,
        le=120,
        description="How long a connect job waits for wpa_supplicant to reach completed.",
    )
    supplicant_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Bounds each call to wpa_supplicant and NetworkManager."
    )
    supplicant_driver: str = Field(
        "nl80211,wext",
        pattern=r"^[a-z0-9_]{1,16}(,[a-z0-9_]{1,16}){0,3}$",
        description="The driver wpa_supplicant uses for an interface hostcore adds to it.",
    )
    scan_timeout_s: float = Field(
        15.0,
        gt=0,
        le=120,
        description="How long a scan may take: passive scans of DFS channels are slow.",
    )


class ScanStart(BaseModel):
    """A scan job's parameters (the route takes the interface from its path)."""

    model_config = ConfigDict(strict=True, extra="forbid")

    interface: InterfaceName


class ScanResultsRead(BaseModel):
    """What a scan job ends with."""

    interface: str
    networks: list[BssRead]


class RegulatoryUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    country: str = Field(
        pattern=r"^([A-Z]{2}|00)$",
        description="ISO 3166-1 alpha-2 (DE, US …), or 00 for the world domain.",
    )


class ModeUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    mode: Literal["managed", "monitor"] = Field(
        description="managed: joins networks (a station); monitor: captures every frame."
    )


Security = Literal["open", "psk", "sae", "eap"]
MAC_PATTERN = r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$"
# What wpa_supplicant keeps as a quoted string: no control characters (C0 or C1).
_NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
PASSPHRASE_HEX = 64  # a raw PSK: 64 hex digits


class ConnectCreate(BaseModel):
    """``POST /interfaces/{ifname}/connect``. The secret is write-only: no answer, log
    line or activity row ever holds it."""

    model_config = ConfigDict(strict=True, extra="forbid", hide_input_in_errors=True)

    ssid: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        description="The network's name (1 to 32 bytes in UTF-8); any bytes: use ssid_hex.",
    )
    ssid_hex: str | None = Field(
        None,
        pattern=r"^([0-9a-fA-F]{2}){1,32}$",
        description="The name as hex bytes, for one that is not UTF-8 (as scans show it).",
    )
    security: Security = Field(
        description="open; psk (WPA2/WPA3 personal, transition mode included); sae (WPA3 "
        "personal only); eap (WPA2/WPA3 enterprise, PEAP or TTLS with MSCHAPv2)."
    )
    secret: SecretStr | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="psk: a passphrase of 8 to 63 printable ASCII characters, or 64 hex "
        "digits; sae and eap: the password. Never shown again.",
    )
    identity: str | None = Field(
        None, min_length=1, max_length=128, pattern=_NO_CONTROLS, description="eap: the user."
    )
    bssid: str | None = Field(None, pattern=MAC_PATTERN, description="Join this AP only.")
    hidden: bool = Field(False, description="The network hides its name: probe for it.")

    @model_validator(mode="after")
    def _consistent(self) -> ConnectCreate:
        if (self.ssid is None) == (self.ssid_hex is None):
            raise ValueError("give the network's name as ssid or as ssid_hex, not both")
        if self.ssid is not None and len(self.ssid.encode()) > 32:
            raise ValueError("ssid is longer than 32 bytes in UTF-8")
        secret = self.secret.get_secret_value() if self.secret is not None else None
        if self.security == "open":
            if secret is not None:
                raise ValueError("an open network takes no secret")
        elif secret is None:
            raise ValueError(f"security {self.security} needs a secret")
        elif not re.fullmatch(_NO_CONTROLS, secret):
            raise ValueError("the secret may not hold control characters")
        if self.security == "psk" and secret is not None and not _passphrase(secret):
            raise ValueError(
                "a WPA passphrase is 8 to 63 printable ASCII characters, or 64 hex digits"
            )
        if (self.identity is not None) != (self.security == "eap"):
            raise ValueError("identity is needed for eap, and only for eap")
        if secret is not None and not _encodable(secret):
            raise ValueError("the secret is not valid Unicode text")
        kept = {"ssid": self.ssid_bytes, "identity": (self.identity or "").encode()}
        if self.security in ("sae", "eap") and secret is not None:
            kept["secret"] = secret.encode()
        for field, value in kept.items():
            if not survives_config_file(value):
                raise ValueError(
                    f"wpa_supplicant cannot keep this {field} in its file (a '\"' and a '#' "
                    "together would end the line early)"
                )
        return self

    @property
    def ssid_bytes(self) -> bytes:
        if self.ssid_hex is not None:
            return bytes.fromhex(self.ssid_hex)
        assert self.ssid is not None
        return self.ssid.encode()


def survives_config_file(value: bytes) -> bool:
    """Whether wpa_supplicant writes ``value`` so that it reads it back the same: it
    writes printable text in quotes without escaping, and reads a '#' after a quote
    that closes as the start of a comment (config_file.c). Other text it writes in hex."""
    printable = all(0x20 <= byte <= 0x7E for byte in value)
    return not (printable and b'"' in value and b"#" in value)


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _passphrase(secret: str) -> bool:
    if len(secret) == PASSPHRASE_HEX:
        return all(c in "0123456789abcdefABCDEF" for c in secret)
    return 8 <= len(secret) <= 63 and all(" " <= c <= "~" for c in secret)


class ConnectStart(BaseModel):
    """A connect job's parameters: the request and the interface from the path. Its JSON
    (the job's digest) shows the secret as stars."""

    model_config = ConfigDict(extra="forbid")

    interface: InterfaceName
    network: ConnectCreate


class ConnectedRead(BaseModel):
    """What a connect job ends with, once wpa_supplicant reached ``completed``."""

    interface: str
    state: str = Field(description="wpa_supplicant's state: completed.")
    network_id: int = Field(description="The saved network's id (DELETE …/networks/{id}).")
    ssid: str | None
    ssid_hex: str
    bssid: str | None = Field(description="The access point joined (None on a wired port).")
    auth_mode: str | None = Field(description="WPA2-PSK, SAE, EAP-PEAP … as wpa_supplicant says.")
    saved: bool = Field(
        description="Whether wpa_supplicant wrote it to its configuration file (it needs "
        "update_config=1); otherwise it is kept until wpa_supplicant restarts."
    )


class SavedNetworkRead(BaseModel):
    """A network wpa_supplicant has, never with its secret."""

    id: int
    ssid: str | None = Field(description="The name as text, when it is UTF-8.")
    ssid_hex: str | None
    security: str = Field(description="open, psk, sae, eap, or wpa_supplicant's key_mgmt.")
    identity: str | None
    bssid: str | None
    hidden: bool
    enabled: bool
    current: bool = Field(description="The network wpa_supplicant uses now.")


class DisconnectedRead(BaseModel):
    interface: str
    was_connected: bool
    state: str = Field(description="wpa_supplicant's state now (disconnected).")
