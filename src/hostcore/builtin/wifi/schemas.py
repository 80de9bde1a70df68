"""Settings and request models of the Wi-Fi plugin; names are validated strictly here."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

# A radio's name (phy0, or what `iw phy … set name` gave it): only compared with the
# names nl80211 lists.
PhyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class WifiSettings(BaseModel):
    """``[plugins.wifi]``."""

    model_config = ConfigDict(extra="forbid")

    nl80211_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Bounds each nl80211 request (a dump, a scan trigger)."
    )
