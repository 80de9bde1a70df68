"""Settings and request models of the system plugin; inputs are validated strictly here.

A unit name, hostname or timezone that passes these models is safe to hand to
systemd: no path separators, no shell metacharacters, bounded length, and a
timezone that exists in the zoneinfo database.
"""

from __future__ import annotations

import re
import zoneinfo
from functools import cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

UNIT_TYPES = (
    "service",
    "socket",
    "target",
    "timer",
    "mount",
    "automount",
    "path",
    "swap",
    "slice",
    "scope",
    "device",
)
_UNIT = re.compile(
    r"\A[A-Za-z0-9_][A-Za-z0-9:_.\\-]*(@[A-Za-z0-9:_.\\-]*)?\.(" + "|".join(UNIT_TYPES) + r")\Z"
)
_HOST_LABEL = re.compile(r"\A(?!-)[A-Za-z0-9-]{1,63}(?<!-)\Z")
MAX_UNIT_LENGTH = 255
MAX_HOSTNAME_LENGTH = 64  # Linux HOST_NAME_MAX
MAX_LOGS_LIMIT = 100_000


def check_unit_name(name: str) -> str:
    if len(name) > MAX_UNIT_LENGTH:
        raise ValueError(f"a unit name has at most {MAX_UNIT_LENGTH} characters")
    if ".." in name or not _UNIT.match(name):
        raise ValueError(
            "not a systemd unit name: letters, digits and ':_.-\\@' ending in a unit type "
            "such as .service"
        )
    return name


def check_hostname(name: str) -> str:
    """RFC 1123 host name: dot-separated labels of letters, digits and inner hyphens."""
    if not 1 <= len(name) <= MAX_HOSTNAME_LENGTH:
        raise ValueError(f"a hostname has 1 to {MAX_HOSTNAME_LENGTH} characters")
    if not all(_HOST_LABEL.match(label) for label in name.split(".")):
        raise ValueError(
            "not an RFC 1123 hostname: labels of 1-63 letters, digits and hyphens, "
            "not starting or ending with a hyphen, separated by dots"
        )
    return name


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def check_timezone(name: str) -> str:
    # Like every validator's message here, this one never repeats the input: it goes
    # back to the client in the 422.
    if name not in _timezones():
        raise ValueError("not a timezone in the zoneinfo database, such as Europe/Berlin")
    return name


UnitName = Annotated[str, Field(max_length=MAX_UNIT_LENGTH), AfterValidator(check_unit_name)]
Hostname = Annotated[str, Field(max_length=MAX_HOSTNAME_LENGTH), AfterValidator(check_hostname)]
Timezone = Annotated[str, Field(max_length=64), AfterValidator(check_timezone)]
PackageName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]{0,127}$")]
UnitAction = Literal["start", "stop", "restart"]


class SystemSettings(BaseModel):
    """``[plugins.system]``."""

    model_config = ConfigDict(extra="forbid")

    root: Path = Field(Path("/"), description="Where /proc, /sys and /etc are read from.")
    allowed_units: list[UnitName] = Field(
        default_factory=lambda: [
            "ssh.service",
            "systemd-timesyncd.service",
            "NetworkManager.service",
            "wpa_supplicant.service",
            "hostapd.service",
            "bluetooth.service",
        ],
        description="The only units that may be read, started, stopped or restarted.",
    )
    packages: list[PackageName] = Field(
        default_factory=lambda: [
            "systemd",
            "iw",
            "wpasupplicant",
            "hostapd",
            "bluez",
            "network-manager",
        ],
        description="Debian packages whose versions GET /packages reports.",
    )
    logs_max_limit: int = Field(1000, ge=1, le=MAX_LOGS_LIMIT)
    dbus_timeout_s: float = Field(5.0, gt=0, le=60)
    stats_interval_s: float = Field(1.0, ge=0.1, le=60)
    max_power_delay_s: int = Field(3600, ge=0, le=86400)


# Request bodies are strict: JSON's own types only, so "60" or true is not a number of
# seconds and a client's typing mistake is a 422 rather than a guess.
STRICT_BODY = ConfigDict(strict=True, extra="forbid")


class PowerRequest(BaseModel):
    model_config = STRICT_BODY

    delay_s: int = Field(0, ge=0, le=86400, description="Seconds to wait before going down.")


class TimezoneUpdate(BaseModel):
    model_config = STRICT_BODY

    timezone: Timezone


class HostnameUpdate(BaseModel):
    model_config = STRICT_BODY

    hostname: Hostname
