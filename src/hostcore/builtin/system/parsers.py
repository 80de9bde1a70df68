"""Turn what Linux exposes in /proc, /sys and /var/lib/dpkg into typed values.

The ``parse_*`` functions are pure: text or bytes in, values out, no I/O. They never
raise on odd input; a line they do not understand is skipped and a figure they cannot
find comes back as ``None``. What goes straight into a response is a pydantic ``...Read``
model; intermediate records (CPU times, mounts, DMI strings) are frozen dataclasses.

sysfs keeps one value per file, so thermal zones, hwmon chips and DMI are read by walking
directories: those few ``read_*`` functions live here too, next to the parsing they do,
and every file they open goes through :func:`read_text` under a ``root`` (``/`` in
production, a fixture tree in tests). Treat them as blocking: call them from a thread.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

KIB = 1024


class OsReleaseRead(BaseModel):
    """The identifying fields of os-release(5)."""

    model_config = ConfigDict(frozen=True)

    name: str | None = None
    version: str | None = None
    version_id: str | None = None
    pretty_name: str | None = None
    id: str | None = None
    version_codename: str | None = None


class TemperatureRead(BaseModel):
    """One temperature: ``sensor`` is the thermal zone type or hwmon chip name.

    ``label`` is the hwmon ``temp<N>_label`` (``temp<N>`` when the chip has no label)
    and ``None`` for a thermal zone.
    """

    model_config = ConfigDict(frozen=True)

    sensor: str
    label: str | None
    celsius: float


class PackageRead(BaseModel):
    """A Debian package: ``installed`` is true only when dpkg has it configured."""

    model_config = ConfigDict(frozen=True)

    name: str
    installed: bool
    version: str | None = None
    architecture: str | None = None


class InterfaceTrafficRead(BaseModel):
    """The kernel's counters for one network interface since it came up."""

    model_config = ConfigDict(frozen=True)

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


class LoadAverageRead(BaseModel):
    """Run-queue averages over 1, 5 and 15 minutes."""

    model_config = ConfigDict(frozen=True)

    load1: float
    load5: float
    load15: float


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """What /proc/cpuinfo says about the processor and, on a Raspberry Pi, the board."""

    model: str | None
    count: int
    hardware: str | None = None
    revision: str | None = None
    serial: str | None = None
    board_model: str | None = None


@dataclass(frozen=True, slots=True)
class MemInfo:
    """The /proc/meminfo figures hostcore uses, in bytes (``None`` when absent)."""

    total: int | None
    available: int | None
    free: int | None
    buffers: int | None
    cached: int | None
    swap_total: int | None
    swap_free: int | None


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Jiffies one CPU (or all of them) spent in each state since boot."""

    user: int = 0
    nice: int = 0
    system: int = 0
    idle: int = 0
    iowait: int = 0
    irq: int = 0
    softirq: int = 0
    steal: int = 0

    @property
    def idle_all(self) -> int:
        return self.idle + self.iowait

    @property
    def total(self) -> int:
        # guest and guest_nice are already counted in user and nice, so they stay out.
        return (
            self.user
            + self.nice
            + self.system
            + self.idle
            + self.iowait
            + self.irq
            + self.softirq
            + self.steal
        )


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of /proc/mounts, octal escapes decoded."""

    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class DmiInfo:
    """SMBIOS strings from /sys/class/dmi/id; vendor placeholders come back as ``None``."""

    sys_vendor: str | None = None
    product_name: str | None = None
    product_version: str | None = None
    product_serial: str | None = None
    board_name: str | None = None


# --- reading under a root -------------------------------------------------------------


def read_text(root: Path, relative: str, *, errors: str = "replace") -> str | None:
    """The text of ``root/relative``, or ``None`` when it is missing or unreadable.

    Unreadable covers PermissionError (DMI serials are root-only) and the EIO/ENODATA
    some sysfs attributes return.
    """
    try:
        return (root / relative).read_bytes().decode("utf-8", errors)
    except OSError:
        return None


def read_bytes(root: Path, relative: str) -> bytes | None:
    """The bytes of ``root/relative``, or ``None`` when it is missing or unreadable."""
    try:
        return (root / relative).read_bytes()
    except OSError:
        return None


def _numbered_entries(directory: Path, prefix: str) -> list[tuple[int, str]]:
    """``(N, name)`` for each entry named ``<prefix><N>``, in numeric order."""
    try:
        with os.scandir(directory) as entries:
            names = [entry.name for entry in entries]
    except OSError:
        return []
    found = []
    for name in names:
        suffix = name.removeprefix(prefix)
        if suffix != name and suffix.isdigit():
            found.append((int(suffix), name))
    return sorted(found)


# --- os-release, device tree, DMI -----------------------------------------------------

_OS_RELEASE_KEYS = {
    "NAME": "name",
    "VERSION": "version",
    "VERSION_ID": "version_id",
    "PRETTY_NAME": "pretty_name",
    "ID": "id",
    "VERSION_CODENAME": "version_codename",
}
_OS_RELEASE_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def _shell_unquote(value: str) -> str | None:
    """A shell word with its quotes and backslash escapes undone; ``None`` if unbalanced."""
    out: list[str] = []
    quote: str | None = None
    chars = iter(value)
    for char in chars:
        if quote == "'":
            if char == "'":
                quote = None
            else:
                out.append(char)
        elif char == "\\":
            escaped = next(chars, "")
            # Inside double quotes a backslash only escapes $ ` " \ (POSIX shell).
            if quote == '"' and escaped not in '$`"\\':
                out.append(char)
            out.append(escaped)
        elif char == quote:
            quote = None
        elif quote is None and char in "'\"":
            quote = char
        else:
            out.append(char)
    return None if quote else "".join(out)


def parse_os_release(text: str) -> OsReleaseRead:
    """Parse os-release(5): shell-style ``KEY=value`` lines, quoted or not, ``#`` comments.

    Quotes and backslash escapes follow the POSIX shell, as the format requires; a line
    that is not an assignment or has unbalanced quotes is skipped.
    """
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _OS_RELEASE_LINE.match(line.strip())
        if match is None or match[1] not in _OS_RELEASE_KEYS:
            continue
        value = _shell_unquote(match[2])
        if value is not None:
            values[_OS_RELEASE_KEYS[match[1]]] = value
    return OsReleaseRead(**values)


def parse_device_tree_string(data: bytes) -> str | None:
    """A device-tree string property (``model``, ``serial-number``): NUL-terminated."""
    value = data.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    return value or None


_DMI_PLACEHOLDERS = frozenset(
    {
        "",
        "0",
        "0123456789",
        "123456789",
        "default string",
        "n/a",
        "none",
        "not applicable",
        "not specified",
        "o.e.m.",
        "oem",
        "system manufacturer",
        "system product name",
        "system serial number",
        "system version",
        "to be filled by o.e.m.",
        "type1productconfigid",
    }
)


def clean_dmi_value(text: str | None) -> str | None:
    """A DMI string, or ``None`` for the placeholders firmware vendors leave in."""
    if text is None:
        return None
    value = text.strip()
    return None if value.lower() in _DMI_PLACEHOLDERS else value


def read_dmi(root: Path) -> DmiInfo:
    """SMBIOS identity from ``sys/class/dmi/id`` (absent on boards without SMBIOS).

    ``product_serial`` is readable by root only; unreadable counts as absent.
    """
    directory = "sys/class/dmi/id"
    return DmiInfo(
        sys_vendor=clean_dmi_value(read_text(root, f"{directory}/sys_vendor")),
        product_name=clean_dmi_value(read_text(root, f"{directory}/product_name")),
        product_version=clean_dmi_value(read_text(root, f"{directory}/product_version")),
        product_serial=clean_dmi_value(read_text(root, f"{directory}/product_serial")),
        board_name=clean_dmi_value(read_text(root, f"{directory}/board_name")),
    )


# --- /proc/cpuinfo --------------------------------------------------------------------

# (implementer, part) -> core name, as lscpu names them; the cores found on SBCs.
_ARM_CORES = {
    ("0x41", "0xb76"): "ARM1176",
    ("0x41", "0xc07"): "Cortex-A7",
    ("0x41", "0xc08"): "Cortex-A8",
    ("0x41", "0xc09"): "Cortex-A9",
    ("0x41", "0xc0e"): "Cortex-A17",
    ("0x41", "0xc0f"): "Cortex-A15",
    ("0x41", "0xd03"): "Cortex-A53",
    ("0x41", "0xd04"): "Cortex-A35",
    ("0x41", "0xd05"): "Cortex-A55",
    ("0x41", "0xd07"): "Cortex-A57",
    ("0x41", "0xd08"): "Cortex-A72",
    ("0x41", "0xd09"): "Cortex-A73",
    ("0x41", "0xd0a"): "Cortex-A75",
    ("0x41", "0xd0b"): "Cortex-A76",
    ("0x41", "0xd0c"): "Neoverse-N1",
    ("0x41", "0xd0d"): "Cortex-A77",
    ("0x41", "0xd41"): "Cortex-A78",
    ("0x41", "0xd44"): "Cortex-X1",
    ("0x41", "0xd46"): "Cortex-A510",
    ("0x41", "0xd47"): "Cortex-A710",
    ("0x41", "0xd80"): "Cortex-A520",
    ("0x41", "0xd81"): "Cortex-A720",
}
# 32-bit ARM kernels put a generic "ARMv7 Processor rev 4 (v7l)" in "model name".
_GENERIC_ARM_MODEL = re.compile(r"^ARMv\d", re.IGNORECASE)
_ALL_ZEROS = re.compile(r"^0+$")


def parse_cpuinfo(text: str) -> CpuInfo:
    """Parse /proc/cpuinfo: the CPU model, how many processors, and Pi board lines.

    The model is x86's ``model name``; on ARM the core decoded from ``CPU implementer``
    and ``CPU part`` (``Cortex-A72``, big.LITTLE cores joined by `` + ``), preferred to
    a generic ``ARMv7 Processor`` model name; then ``Hardware``, then ``Model``, then the
    raw ``CPU part``. ``count`` is the number of ``processor`` entries (online CPUs).
    """
    count = 0
    model_name: str | None = None
    implementer: str | None = None
    parts: list[str] = []
    top: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "processor":
            count += 1
        elif key == "model name" and model_name is None:
            model_name = value or None
        elif key == "CPU implementer":
            implementer = value
        elif key == "CPU part":
            if value and value not in parts:
                parts.append(value)
        elif key in ("Hardware", "Revision", "Serial", "Model") and value:
            top[key] = value
    cores = [_ARM_CORES.get((implementer or "", part)) for part in parts]
    known_cores = [core for core in cores if core is not None]
    decoded = " + ".join(known_cores) if known_cores and len(known_cores) == len(cores) else None
    if model_name is not None and not (decoded and _GENERIC_ARM_MODEL.match(model_name)):
        model: str | None = model_name
    else:
        model = (
            decoded
            or top.get("Hardware")
            or top.get("Model")
            or (f"CPU part {parts[0]}" if parts else None)
        )
    serial = top.get("Serial")
    return CpuInfo(
        model=model,
        count=count,
        hardware=top.get("Hardware"),
        revision=top.get("Revision"),
        serial=None if serial is None or _ALL_ZEROS.fullmatch(serial) else serial,
        board_model=top.get("Model"),
    )


# --- memory, load, uptime, /proc/stat -------------------------------------------------

_MEMINFO_KEYS = {
    "MemTotal": "total",
    "MemAvailable": "available",
    "MemFree": "free",
    "Buffers": "buffers",
    "Cached": "cached",
    "SwapTotal": "swap_total",
    "SwapFree": "swap_free",
}


def parse_meminfo(text: str) -> MemInfo:
    """Parse /proc/meminfo into bytes (the kernel writes kB, meaning KiB)."""
    values: dict[str, int | None] = dict.fromkeys(_MEMINFO_KEYS.values())
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        field = _MEMINFO_KEYS.get(key.strip())
        if not sep or field is None:
            continue
        words = rest.split()
        if not words or not words[0].isdigit():
            continue
        scale = KIB if len(words) > 1 and words[1] == "kB" else 1
        values[field] = int(words[0]) * scale
    return MemInfo(**values)


def parse_loadavg(text: str) -> LoadAverageRead | None:
    """Parse /proc/loadavg (``0.08 0.03 0.01 1/187 1234``)."""
    words = text.split()
    try:
        return LoadAverageRead(load1=float(words[0]), load5=float(words[1]), load15=float(words[2]))
    except (IndexError, ValueError):
        return None


def parse_uptime(text: str) -> float | None:
    """Seconds since boot from /proc/uptime (``12345.67 48890.12``)."""
    words = text.split()
    try:
        return float(words[0])
    except (IndexError, ValueError):
        return None


def parse_stat_btime(text: str) -> int | None:
    """Boot time (Unix seconds) from the ``btime`` line of /proc/stat."""
    for line in text.splitlines():
        words = line.split()
        if len(words) == 2 and words[0] == "btime" and words[1].isdigit():
            return int(words[1])
    return None


def parse_proc_stat_cpu(text: str) -> dict[str, CpuTimes]:
    """The ``cpu`` and ``cpuN`` lines of /proc/stat, keyed ``"cpu"``, ``"cpu0"``, …

    Kernels older than the field list give fewer columns; the missing ones count as 0.
    """
    found: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu"):
            continue
        words = line.split()
        name = words[0]
        if name != "cpu" and not name[3:].isdigit():
            continue
        try:
            jiffies = [int(word) for word in words[1:9]]
        except ValueError:
            continue
        if len(jiffies) < 4:
            continue
        found[name] = CpuTimes(*jiffies)
    return found


# --- mounts ---------------------------------------------------------------------------

_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")

# Filesystems on local storage, whose usage means something. Left out: pseudo filesystems
# (proc, sysfs, cgroup, devtmpfs, ...), tmpfs (RAM, shown as memory), squashfs (read-only
# images, always full), and network or FUSE filesystems, where statvfs can hang.
# fuseblk is ntfs-3g on a local disk. overlay is kept because an overlay root is the
# root; on a Docker host each container's overlay shares the device name "overlay" and
# the first one stands for them all (see real_mounts).
REAL_FILESYSTEMS = frozenset(
    {
        "btrfs",
        "exfat",
        "ext2",
        "ext3",
        "ext4",
        "f2fs",
        "fuseblk",
        "hfsplus",
        "jfs",
        "ntfs",
        "ntfs3",
        "overlay",
        "reiserfs",
        "vfat",
        "xfs",
        "zfs",
    }
)


def _decode_octal(field: str) -> str:
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match[1], 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    """Parse /proc/mounts (fstab format), decoding ``\\040`` and the other octal escapes."""
    mounts = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 4:
            continue
        device, mountpoint, fstype, options = words[:4]
        mounts.append(
            Mount(
                device=_decode_octal(device),
                mountpoint=_decode_octal(mountpoint),
                fstype=fstype,
                options=tuple(options.split(",")),
            )
        )
    return mounts


def real_mounts(mounts: Iterable[Mount]) -> list[Mount]:
    """The mounts of :data:`REAL_FILESYSTEMS`, each device once (its first mount).

    A device mounted twice (bind mounts) would otherwise report the same space twice.
    """
    seen: set[str] = set()
    kept = []
    for mount in mounts:
        if mount.fstype in REAL_FILESYSTEMS and mount.device not in seen:
            seen.add(mount.device)
            kept.append(mount)
    return kept


# --- /proc/net/dev --------------------------------------------------------------------


def parse_net_dev(text: str) -> list[InterfaceTrafficRead]:
    """Parse /proc/net/dev: one entry per interface, in the kernel's order."""
    interfaces = []
    for line in text.splitlines():
        name, sep, rest = line.partition(":")
        name = name.strip()
        words = rest.split()
        if not sep or not name or "|" in name or len(words) < 16:
            continue
        try:
            counters = [int(word) for word in words[:16]]
        except ValueError:
            continue
        interfaces.append(
            InterfaceTrafficRead(
                name=name,
                rx_bytes=counters[0],
                rx_packets=counters[1],
                rx_errors=counters[2],
                rx_dropped=counters[3],
                tx_bytes=counters[8],
                tx_packets=counters[9],
                tx_errors=counters[10],
                tx_dropped=counters[11],
            )
        )
    return interfaces


# --- temperatures ---------------------------------------------------------------------


def parse_millidegrees(text: str | None) -> float | None:
    """A sysfs temperature (millidegrees Celsius) in degrees, or ``None``."""
    if text is None:
        return None
    try:
        return int(text.strip()) / 1000
    except ValueError:
        return None


def _sensor_key(name: str) -> str:
    # hwmon names may not contain "-", so the hwmon mirror of thermal zone
    # "cpu-thermal" is named "cpu_thermal".
    return name.replace("-", "_")


def read_thermal_zones(root: Path) -> list[TemperatureRead]:
    """``sys/class/thermal/thermal_zone*``: one reading per zone, named by its type.

    A zone whose temperature cannot be read (some report EINVAL or ENODATA) is skipped.
    """
    directory = root / "sys/class/thermal"
    readings = []
    for _, zone in _numbered_entries(directory, "thermal_zone"):
        celsius = parse_millidegrees(read_text(directory, f"{zone}/temp"))
        sensor = (read_text(directory, f"{zone}/type") or "").strip() or zone
        if celsius is not None:
            readings.append(TemperatureRead(sensor=sensor, label=None, celsius=celsius))
    return readings


def read_hwmon_temperatures(root: Path, *, skip_chips: Iterable[str] = ()) -> list[TemperatureRead]:
    """``sys/class/hwmon/hwmon*/temp<N>_input`` with their ``temp<N>_label``.

    Chips whose name is in ``skip_chips`` ("-" and "_" alike) are left out.
    """
    directory = root / "sys/class/hwmon"
    skipped = {_sensor_key(name) for name in skip_chips}
    readings = []
    for _, chip in _numbered_entries(directory, "hwmon"):
        sensor = (read_text(directory, f"{chip}/name") or "").strip() or chip
        if _sensor_key(sensor) in skipped:
            continue
        try:
            with os.scandir(directory / chip) as entries:
                files = [entry.name for entry in entries]
        except OSError:
            continue
        inputs = sorted(
            int(name[4:-6])
            for name in files
            if name.startswith("temp") and name.endswith("_input") and name[4:-6].isdigit()
        )
        for number in inputs:
            celsius = parse_millidegrees(read_text(directory, f"{chip}/temp{number}_input"))
            if celsius is None:
                continue
            label = (read_text(directory, f"{chip}/temp{number}_label") or "").strip()
            readings.append(
                TemperatureRead(sensor=sensor, label=label or f"temp{number}", celsius=celsius)
            )
    return readings


def read_temperatures(root: Path) -> list[TemperatureRead]:
    """Thermal zones, then hwmon chips; empty when the device has neither.

    The kernel mirrors every thermal zone as an hwmon chip of the same name; those
    mirrors are left out so each sensor is reported once.
    """
    zones = read_thermal_zones(root)
    return zones + read_hwmon_temperatures(root, skip_chips={zone.sensor for zone in zones})


# --- dpkg -----------------------------------------------------------------------------

# Configured packages; "triggers-*" are configured ones with triggers still to run.
_INSTALLED_STATES = frozenset({"installed", "triggers-awaited", "triggers-pending"})


def parse_dpkg_status(text: str, wanted: Iterable[str]) -> dict[str, PackageRead]:
    """Look up ``wanted`` packages in dpkg's ``status`` database (deb822 stanzas).

    Returns one entry per wanted name, in the order given. A name may carry an
    architecture (``libc6:i386``); without one the first installed architecture wins.
    Packages dpkg knows but has not configured (config files left, half-installed,
    unpacked) and unknown names are ``installed=False`` with no version.
    """
    names = list(dict.fromkeys(wanted))
    lookup = set(names)
    found: dict[str, PackageRead] = {}

    def finish(stanza: dict[str, str]) -> None:
        package = stanza.get("Package")
        if package is None:
            return
        state = stanza.get("Status", "").split()
        if len(state) != 3 or state[2] not in _INSTALLED_STATES:
            return
        architecture = stanza.get("Architecture")
        for key in (package, f"{package}:{architecture}"):
            if key in lookup and key not in found:
                found[key] = PackageRead(
                    name=key,
                    installed=True,
                    version=stanza.get("Version"),
                    architecture=architecture,
                )

    stanza: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            finish(stanza)
            stanza = {}
        elif line[0] not in " \t":
            key, sep, value = line.partition(":")
            if sep and key in ("Package", "Status", "Version", "Architecture"):
                stanza[key] = value.strip()
    finish(stanza)
    return {name: found.get(name) or PackageRead(name=name, installed=False) for name in names}
