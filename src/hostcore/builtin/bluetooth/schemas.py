"""Settings, request and response models of the Bluetooth plugin.

Adapters are named as BlueZ names them (``hci0``), devices by their address
(``AA:BB:CC:DD:EE:FF``); both are checked strictly here and only ever compared with
the object paths BlueZ lists, never turned into a path by hand.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

AdapterName = Annotated[str, StringConstraints(pattern=r"^hci[0-9]{1,3}$")]
Address = Annotated[
    str,
    StringConstraints(pattern=r"^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$", to_upper=True),
]
Capability = Literal[
    "DisplayOnly", "DisplayYesNo", "KeyboardOnly", "NoInputNoOutput", "KeyboardDisplay"
]
Transport = Literal["auto", "bredr", "le"]
PairingKind = Literal[
    "confirmation", "passkey", "pin_code", "authorization", "service", "display_passkey",
    "display_pin_code",
]  # fmt: skip


class BluetoothSettings(BaseModel):
    """``[plugins.bluetooth]``."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(5.0, gt=0, le=60, description="Bounds each call to BlueZ.")
    pair_timeout_s: float = Field(
        90.0, gt=0, le=300, description="How long a pairing may take, answers included."
    )
    request_timeout_s: float = Field(
        30.0,
        gt=0,
        le=55,
        description="A pairing question nobody answers is rejected after this long (below "
        "BlueZ's own 60 s, after which it cancels the question itself).",
    )
    agent_capability: Capability = Field(
        "KeyboardDisplay",
        description="What hostcore's agent tells BlueZ it can do (a client answers for it).",
    )
    default_agent: bool = Field(
        True,
        description="Ask to be BlueZ's default agent, so a phone pairing with the device "
        "asks hostcore (incoming pairing needs it).",
    )
    discovery_max_s: float = Field(
        300.0, gt=0, le=3600, description="The longest discovery a job may ask for."
    )

    @model_validator(mode="after")
    def _answers_fit_in_a_pairing(self) -> BluetoothSettings:
        if self.request_timeout_s >= self.pair_timeout_s:
            raise ValueError("request_timeout_s must be shorter than pair_timeout_s")
        return self


class UuidRead(BaseModel):
    uuid: str
    name: str | None = Field(description="The service, where it is a known one.")


class AdapterRead(BaseModel):
    name: str = Field(description="hci0 …")
    address: str
    address_type: str | None = Field(description="public or random.")
    system_name: str | None = Field(description="The name the system gives (BlueZ's Name).")
    alias: str | None = Field(description="The name shown to others.")
    device_class: int | None
    powered: bool
    power_state: str | None = Field(
        None, description="on, off, off-enabling, on-disabling, off-blocked (BlueZ 5.66+)."
    )
    discoverable: bool
    discoverable_timeout_s: int
    pairable: bool
    pairable_timeout_s: int
    discovering: bool
    roles: list[str] = Field(description="central, peripheral, central-peripheral.")
    uuids: list[UuidRead]


class DeviceRead(BaseModel):
    address: str
    adapter: str = Field(description="The adapter that knows it (hci0 …).")
    address_type: str | None = Field(description="public or random.")
    name: str | None = Field(description="The name the device gives itself.")
    alias: str | None = Field(description="The name shown for it (its name, or one set).")
    device_class: int | None = Field(description="Class of Device (BR/EDR).")
    appearance: int | None = Field(description="GAP appearance (LE).")
    icon: str | None
    paired: bool
    bonded: bool | None = Field(None, description="Keys kept (BlueZ 5.69+; null before).")
    trusted: bool
    blocked: bool
    connected: bool
    rssi_dbm: int | None = Field(description="While discovering: the last signal strength.")
    tx_power_dbm: int | None
    services_resolved: bool | None
    legacy_pairing: bool | None
    preferred_bearer: str | None = Field(None, description="BlueZ 5.79+, when both exist.")
    uuids: list[UuidRead]


class AdapterUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    powered: bool | None = None
    alias: str | None = Field(
        None, min_length=1, max_length=248, pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The name others see (248 bytes at most in UTF-8).",
    )  # fmt: skip
    discoverable: bool | None = None
    discoverable_timeout_s: int | None = Field(
        None, ge=0, le=86400, description="0: until turned off."
    )
    pairable: bool | None = None
    pairable_timeout_s: int | None = Field(None, ge=0, le=86400, description="0: until off.")


class FlagUpdate(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    value: bool


class DiscoveryStart(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")

    duration_s: float = Field(10.0, gt=0, le=3600, description="How long to discover.")
    transport: Transport = Field("auto", description="auto, bredr (classic) or le.")


class DiscoveryJob(BaseModel):
    """A discovery job's parameters."""

    model_config = ConfigDict(extra="forbid")

    adapter: AdapterName
    start: DiscoveryStart


class DiscoveredRead(BaseModel):
    adapter: str
    transport: Transport
    devices: list[DeviceRead] = Field(description="Every device seen during the discovery.")


class PairJob(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: Address
    adapter: AdapterName | None = None


class PairingAnswer(BaseModel):
    """An answer to a pairing question: ``accept``, and for a passkey the digits the
    other device shows, for a PIN code the PIN."""

    model_config = ConfigDict(strict=True, extra="forbid")

    accept: bool
    passkey: int | None = Field(None, ge=0, le=999999)
    pin_code: str | None = Field(None, pattern=r"^[\x21-\x7e]{1,16}$")


class PairingRequestRead(BaseModel):
    id: str
    kind: PairingKind = Field(
        description="confirmation (compare the passkey), passkey (type the one the other "
        "device shows), pin_code, authorization (a just-works pairing), service (a "
        "service the device wants), display_passkey / display_pin_code (type it on the "
        "other device; nothing to answer but a rejection)."
    )
    adapter: str
    address: str
    name: str | None
    passkey: int | None = Field(description="The passkey to compare, or to type there.")
    pin_code: str | None = Field(description="The PIN to type on the other device.")
    service: str | None = Field(description="service: the UUID asked for.")
    incoming: bool = Field(description="The other device started it (not a pair job).")
    job_id: str | None
    state: Literal["pending", "accepted", "rejected", "expired", "cancelled"]
    created_at: float
    expires_at: float
