"""Settings and request models of the Wi-Fi plugin; names are validated strictly here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from hostcore.builtin.wifi.parsers import BssRead
from hostcore.netnames import InterfaceName

# A radio's name (phy0, or what `iw phy … set name` gave it): only compared with the
# names nl80211 lists.
PhyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class WifiSettings(BaseModel):
    """``[plugins.wifi]``."""

    model_config = ConfigDict(extra="forbid")

    nl80211_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Bounds each nl80211 request (a dump, a scan trigger)."
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
