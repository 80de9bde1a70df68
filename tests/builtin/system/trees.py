"""The captured /proc, /sys and /etc trees the system plugin's tests read."""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "system"
RPI = FIXTURES / "rpi"  # Raspberry Pi-like: device-tree model, thermal zone
X86 = FIXTURES / "x86"  # PC: DMI, hwmon


def copy_tree(source: Path, tmp_path: Path) -> Path:
    """A writable copy of a fixture tree, to change one file in."""
    return Path(shutil.copytree(source, tmp_path / source.name))
