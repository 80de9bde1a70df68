"""What the device is: host and OS names, kernel, board, CPU, memory, boot time, packages.

Every file is read under ``root`` (``Path("/")`` in production, a fixture tree in tests).
The entry points are plain synchronous functions that read files: call them with
``asyncio.to_thread``; :class:`SystemInfoCache` does, once, for ``GET /system/info``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import socket
import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

from hostcore.builtin.system.parsers import (
    OsReleaseRead,
    PackageRead,
    parse_cpuinfo,
    parse_device_tree_string,
    parse_dpkg_status,
    parse_meminfo,
    parse_os_release,
    parse_proc_stat_cpu,
    parse_stat_btime,
    parse_uptime,
    read_bytes,
    read_dmi,
    read_text,
)
from hostcore.errors import Unavailable

HOST_ROOT = Path("/")
DPKG_STATUS = "var/lib/dpkg/status"
FQDN_TTL_S = 300.0
# hostname -> (fqdn, when resolved). getfqdn() asks DNS; on an offline device that is a
# resolver timeout of several seconds, which one lookup per 5 minutes is enough to pay.
_fqdn_cache: dict[str | None, tuple[str, float]] = {}


def cached_fqdn(hostname: str | None) -> str:
    """``socket.getfqdn()``, remembered for ``FQDN_TTL_S`` per hostname (a rename resolves)."""
    now = time.monotonic()
    known = _fqdn_cache.get(hostname)
    if known is not None and now - known[1] < FQDN_TTL_S:
        return known[0]
    fqdn = socket.getfqdn()
    _fqdn_cache.clear()
    _fqdn_cache[hostname] = (fqdn, now)
    return fqdn


class SystemInfoRead(BaseModel):
    """The identity of the device and its software; figures it cannot find are null."""

    hostname: str | None
    fqdn: str | None
    os: OsReleaseRead | None
    kernel_release: str | None
    kernel_version: str | None
    architecture: str | None
    model: str | None
    serial: str | None
    cpu_model: str | None
    cpu_count: int | None
    memory_total_bytes: int | None
    boot_time: float | None
    uptime_s: float | None
    hostcore_version: str


HOSTNAME_FILES = ("proc/sys/kernel/hostname", "etc/hostname")


def read_hostname(root: Path) -> str | None:
    """The kernel's hostname, else the first entry of ``etc/hostname``."""
    return _first_hostname(str(root / name) for name in HOSTNAME_FILES)


def _first_hostname(paths: Iterable[str]) -> str | None:
    for path in paths:  # in order, each read only when the one before named nobody
        try:
            # A string path and open(): asked per request, where pathlib costs more.
            with open(path, "rb") as handle:  # noqa: PTH123
                text = handle.read().decode("utf-8", "replace")
        except OSError:
            continue
        for line in text.splitlines():
            name = line.strip()
            if name and not name.startswith("#"):
                return name
    return None


def read_os_release(root: Path) -> OsReleaseRead | None:
    """``etc/os-release``, else ``usr/lib/os-release`` (the lookup os-release(5) asks for)."""
    for relative in ("etc/os-release", "usr/lib/os-release"):
        text = read_text(root, relative)
        if text is not None:
            return parse_os_release(text)
    return None


def _first_line(text: str | None) -> str | None:
    line = (text or "").strip().split("\n", 1)[0].strip()
    return line or None


def _device_tree(root: Path, name: str) -> str | None:
    data = read_bytes(root, f"proc/device-tree/{name}")
    return None if data is None else parse_device_tree_string(data)


def system_info(
    root: Path, *, hostcore_version: str, architecture: str | None = None
) -> SystemInfoRead:
    """Describe the device under ``root``. Blocking (file reads, maybe DNS): use a thread.

    - ``fqdn`` comes from ``socket.getfqdn()`` (which may query DNS; cached for
      ``FQDN_TTL_S``) only when ``root`` is ``/``; under any other root the machine's
      resolver says nothing about that tree, so it is the hostname.
    - ``architecture`` is the ``architecture`` argument when given, else
      ``platform.machine()`` when ``root`` is ``/``, else ``None``: no file in a root
      names the kernel's machine type, so a fixture passes it in.
    - ``model`` is the device-tree model (Raspberry Pi and other boards), else the DMI
      ``sys_vendor product_name`` (PCs), else the Pi ``Model`` line of /proc/cpuinfo.
    - ``serial`` is the device-tree serial number, else the cpuinfo ``Serial``, else the
      DMI product serial (readable by root only).

    Raises :class:`~hostcore.errors.Unavailable` only when ``root/proc`` is missing.
    """
    if not (root / "proc").is_dir():
        raise Unavailable(f"procfs is not mounted at {root / 'proc'}")
    on_host = root == HOST_ROOT
    hostname = read_hostname(root)
    fqdn = cached_fqdn(hostname) if on_host else hostname
    cpuinfo = parse_cpuinfo(read_text(root, "proc/cpuinfo") or "")
    stat = read_text(root, "proc/stat") or ""
    dmi = read_dmi(root)
    dmi_model = " ".join(part for part in (dmi.sys_vendor, dmi.product_name) if part)
    uptime = parse_uptime(read_text(root, "proc/uptime") or "")
    btime = parse_stat_btime(stat)
    if btime is not None:
        boot_time: float | None = float(btime)
    elif uptime is not None:
        boot_time = round(time.time() - uptime, 2)
    else:
        boot_time = None
    cpu_count = cpuinfo.count or sum(name != "cpu" for name in parse_proc_stat_cpu(stat)) or None
    return SystemInfoRead(
        hostname=hostname,
        fqdn=fqdn,
        os=read_os_release(root),
        kernel_release=_first_line(read_text(root, "proc/sys/kernel/osrelease")),
        kernel_version=_first_line(read_text(root, "proc/version")),
        architecture=architecture or ((platform.machine() or None) if on_host else None),
        model=_device_tree(root, "model") or dmi_model or cpuinfo.board_model,
        serial=_device_tree(root, "serial-number") or cpuinfo.serial or dmi.product_serial,
        cpu_model=cpuinfo.model,
        cpu_count=cpu_count,
        memory_total_bytes=parse_meminfo(read_text(root, "proc/meminfo") or "").total,
        boot_time=boot_time,
        uptime_s=uptime,
        hostcore_version=hostcore_version,
    )


def installed_packages(root: Path, names: Iterable[str]) -> list[PackageRead]:
    """Whether each Debian package in ``names`` is installed, and which version.

    One entry per distinct name, in the order given. Blocking (reads dpkg's status
    database, a few MB on a desktop): use a thread. Raises
    :class:`~hostcore.errors.Unavailable` when the system has no dpkg database.
    """
    text = read_text(root, DPKG_STATUS)
    if text is None:
        raise Unavailable(f"no dpkg status database at {root / DPKG_STATUS}")
    return list(parse_dpkg_status(text, names).values())


OS_RELEASE_FILES = ("etc/os-release", "usr/lib/os-release")
FileState = tuple[int, int, int] | None


def file_state(path: str, *, follow_symlinks: bool = True) -> FileState:
    """What tells a file's change apart cheaply (one ``stat``): inode, mtime, size;
    None when it is missing. Replaced by a rename or a new symlink: a new inode."""
    try:
        found = os.stat(path, follow_symlinks=follow_symlinks)  # noqa: PTH116 - per request
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def _boottime() -> float:
    """Seconds since boot, suspend included: the clock /proc/uptime reads."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class SystemInfoCache:
    """``system_info`` read in full once, then answered from memory while what it
    describes holds, without a thread.

    Nearly all of it is fixed until the host reboots, and a reboot restarts hostcore.
    Per call only the hostname (one small procfs read) and the state of the
    os-release files (a ``stat`` each) are looked at: a new hostname or an upgraded OS
    reads everything again at once, and so does the first call after ``FQDN_TTL_S``
    (the FQDN may need DNS, which only the full read, in a thread, asks). Uptime is the
    uptime read then plus the boot-time clock's advance since, to the /proc/uptime
    figure's hundredth of a second.
    """

    def __init__(self, root: Path, *, hostcore_version: str) -> None:
        self.root = root
        self.hostcore_version = hostcore_version
        self._cached: SystemInfoRead | None = None
        self._key: tuple[object, ...] | None = None
        self._read_at = 0.0  # the boot-time clock at the full read
        # Strings, not Paths: asked on every request.
        self._hostname_files = [str(root / name) for name in HOSTNAME_FILES]
        self._release_files = [str(root / name) for name in OS_RELEASE_FILES]

    def _current_key(self) -> tuple[object, ...]:
        releases = tuple(file_state(path) for path in self._release_files)
        return _first_hostname(self._hostname_files), releases

    async def get(self) -> SystemInfoRead:
        key = self._current_key()
        cached = self._cached
        since = _boottime() - self._read_at
        if cached is not None and key == self._key and since < FQDN_TTL_S:
            if cached.uptime_s is None:
                return cached
            return cached.model_copy(update={"uptime_s": round(cached.uptime_s + since, 2)})
        read_at = _boottime()
        info = await asyncio.to_thread(
            system_info, self.root, hostcore_version=self.hostcore_version
        )
        self._cached, self._key, self._read_at = info, key, read_at
        return info
