"""What ``/sys/class/net/<name>`` adds to a link: speed, duplex, driver, wireless.

Only the device's own namespace has its devices under this process's /sys (a
sysfs mount shows the namespace of whoever mounted it), so a named namespace's
links go without these facts. The name always comes from a netlink dump, never
from a request; a device that goes away mid-read simply has no facts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Duplex = Literal["full", "half"]
_READ_BYTES = 64


@dataclass(frozen=True)
class DeviceFacts:
    speed_mbps: int | None = None
    duplex: Duplex | None = None
    driver: str | None = None
    wireless: bool = False


def _read(path: str) -> str | None:
    # speed and duplex answer EINVAL while the link is down: no value, not an error.
    try:
        with open(path, "rb") as file:  # noqa: PTH123 - a few small reads per request
            return file.read(_READ_BYTES).decode("ascii", "replace").strip()
    except OSError:
        return None


def device_facts(class_net: Path, name: str) -> DeviceFacts:
    device = f"{class_net}/{name}"
    speed = _read(f"{device}/speed")
    duplex = _read(f"{device}/duplex")
    try:
        driver: str | None = os.path.basename(os.readlink(f"{device}/device/driver"))  # noqa: PTH119,PTH115
    except OSError:
        driver = None
    return DeviceFacts(
        speed_mbps=int(speed) if speed is not None and speed.isdigit() and speed != "0" else None,
        duplex=duplex if duplex in ("full", "half") else None,  # type: ignore[arg-type]
        driver=driver or None,
        wireless=os.path.exists(f"{device}/wireless") or os.path.exists(f"{device}/phy80211"),  # noqa: PTH110
    )
