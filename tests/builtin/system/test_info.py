from __future__ import annotations

import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from hostcore.builtin.system import info as info_module
from hostcore.builtin.system.info import (
    SystemInfoCache,
    SystemInfoRead,
    installed_packages,
    read_hostname,
    read_os_release,
    system_info,
)
from hostcore.builtin.system.parsers import OsReleaseRead, PackageRead
from hostcore.errors import Unavailable
from tests.builtin.system.trees import RPI, X86, copy_tree

VERSION = "9.9.9"


def test_system_info_of_a_pi() -> None:
    assert system_info(RPI, hostcore_version=VERSION, architecture="aarch64") == SystemInfoRead(
        hostname="raspberrypi",
        fqdn="raspberrypi",
        os=OsReleaseRead(
            name="Debian GNU/Linux",
            version="12 (bookworm)",
            version_id="12",
            pretty_name="Debian GNU/Linux 12 (bookworm)",
            id="debian",
            version_codename="bookworm",
        ),
        kernel_release="6.6.51+rpt-rpi-v8",
        kernel_version=(
            "Linux version 6.6.51+rpt-rpi-v8 (serge@raspberrypi.com) (aarch64-linux-gnu-gcc-12 "
            "(Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) #1 SMP PREEMPT "
            "Debian 1:6.6.51-1+rpt3 (2024-10-08)"
        ),
        architecture="aarch64",
        model="Raspberry Pi 4 Model B Rev 1.4",
        serial="10000000a744c93f",
        cpu_model="Cortex-A72",
        cpu_count=4,
        memory_total_bytes=3977601024,
        boot_time=1731988800.0,
        uptime_s=183724.51,
        hostcore_version=VERSION,
    )


def test_system_info_of_a_thinkpad() -> None:
    assert system_info(X86, hostcore_version=VERSION) == SystemInfoRead(
        hostname="thinkpad",
        fqdn="thinkpad",
        os=OsReleaseRead(
            name="Ubuntu",
            version="24.04.1 LTS (Noble Numbat)",
            version_id="24.04",
            pretty_name="Ubuntu 24.04.1 LTS",
            id="ubuntu",
            version_codename="noble",
        ),
        kernel_release="6.8.0-48-generic",
        kernel_version=(
            "Linux version 6.8.0-48-generic (buildd@lcy02-amd64-010) (x86_64-linux-gnu-gcc-13 "
            "(Ubuntu 13.2.0-23ubuntu4) 13.2.0, GNU ld (GNU Binutils for Ubuntu) 2.42) "
            "#48-Ubuntu SMP PREEMPT_DYNAMIC Fri Sep 27 14:04:52 UTC 2024"
        ),
        # Not the host: without an architecture argument nothing in the tree names it.
        architecture=None,
        model="LENOVO 20XW0055GE",
        serial="PF2Y8K3L",
        cpu_model="11th Gen Intel(R) Core(TM) i5-1135G7 @ 2.40GHz",
        cpu_count=8,
        memory_total_bytes=16433692672,
        boot_time=1732170000.0,
        uptime_s=5421.07,
        hostcore_version=VERSION,
    )


def test_unreadable_dmi_serial_leaves_serial_empty(monkeypatch: pytest.MonkeyPatch) -> None:
    real_read_bytes = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "product_serial":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    info = system_info(X86, hostcore_version=VERSION)
    assert info.serial is None
    assert info.model == "LENOVO 20XW0055GE"


def test_pi_without_device_tree_falls_back_to_cpuinfo(tmp_path: Path) -> None:
    root = copy_tree(RPI, tmp_path)
    shutil.rmtree(root / "proc/device-tree")
    info = system_info(root, hostcore_version=VERSION)
    assert info.model == "Raspberry Pi 4 Model B Rev 1.4"
    assert info.serial == "10000000a744c93f"


def test_hostname_falls_back_to_etc_hostname(tmp_path: Path) -> None:
    root = copy_tree(RPI, tmp_path)
    (root / "proc/sys/kernel/hostname").unlink()
    (root / "etc/hostname").write_text("# set by the imager\n\nwlanpi-7f3a\n")
    assert read_hostname(root) == "wlanpi-7f3a"
    assert system_info(root, hostcore_version=VERSION).fqdn == "wlanpi-7f3a"
    (root / "etc/hostname").unlink()
    assert read_hostname(root) is None


def test_os_release_lookup_order(tmp_path: Path) -> None:
    root = copy_tree(RPI, tmp_path)
    (root / "usr/lib").mkdir(parents=True)
    (root / "usr/lib/os-release").write_text("ID=vendor\n")
    assert read_os_release(root) == read_os_release(RPI)
    (root / "etc/os-release").unlink()
    assert read_os_release(root) == OsReleaseRead(id="vendor")
    (root / "usr/lib/os-release").unlink()
    assert read_os_release(root) is None


def test_sparse_proc_gives_nulls_not_errors(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text("cpu  1 0 1 8\ncpu0 1 0 1 8\ncpu1 0 0 0 0\n")
    (tmp_path / "proc/uptime").write_text("100.00 150.00\n")
    before = time.time()
    info = system_info(tmp_path, hostcore_version=VERSION)
    after = time.time()
    assert info.cpu_count == 2  # from /proc/stat when there is no cpuinfo
    assert info.boot_time is not None
    # Now (as read during the call) less the uptime, to the hundredth of a second.
    assert before - 100 - 0.005 <= info.boot_time <= after - 100 + 0.005
    assert info.model_dump(exclude={"boot_time", "uptime_s", "cpu_count"}) == {
        "hostname": None,
        "fqdn": None,
        "os": None,
        "kernel_release": None,
        "kernel_version": None,
        "architecture": None,
        "model": None,
        "serial": None,
        "cpu_model": None,
        "memory_total_bytes": None,
        "hostcore_version": VERSION,
    }


def test_no_proc_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="procfs"):
        system_info(tmp_path, hostcore_version=VERSION)


def test_installed_packages_keep_the_order_asked() -> None:
    assert installed_packages(RPI, ["wpasupplicant", "network-manager", "hostapd", "iw"]) == [
        PackageRead(
            name="wpasupplicant", installed=True, version="2:2.10-12+rpt1", architecture="arm64"
        ),
        PackageRead(name="network-manager", installed=False),
        PackageRead(name="hostapd", installed=True, version="2:2.10-12", architecture="arm64"),
        PackageRead(name="iw", installed=True, version="5.19-1", architecture="arm64"),
    ]
    assert installed_packages(X86, []) == []


def test_installed_packages_without_dpkg_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match="dpkg"):
        installed_packages(tmp_path, ["iw"])


def test_system_info_of_this_machine() -> None:
    info = system_info(Path("/"), hostcore_version=VERSION)
    uname = os.uname()
    assert info.hostname == uname.nodename
    assert info.fqdn
    assert info.kernel_release == uname.release
    assert info.architecture == platform.machine()
    assert info.cpu_count is not None and info.cpu_count >= 1
    assert info.memory_total_bytes is not None and info.memory_total_bytes > 0
    assert info.uptime_s is not None and info.uptime_s > 0
    assert info.os is not None
    info.model_dump_json()


def test_the_fqdn_is_resolved_once_per_ttl_and_per_hostname(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hostcore.builtin.system import info

    asked: list[str] = []

    def getfqdn() -> str:
        asked.append("dns")
        return f"host-{len(asked)}.example"

    monkeypatch.setattr(info.socket, "getfqdn", getfqdn)
    monkeypatch.setattr(info, "_fqdn_cache", {})
    clock = [1000.0]
    monkeypatch.setattr(info.time, "monotonic", lambda: clock[0])
    assert info.cached_fqdn("pi") == "host-1.example"
    assert info.cached_fqdn("pi") == "host-1.example"
    clock[0] += info.FQDN_TTL_S - 1
    assert info.cached_fqdn("pi") == "host-1.example"
    assert info.cached_fqdn("renamed") == "host-2.example", "a new hostname resolves"
    clock[0] += info.FQDN_TTL_S
    assert info.cached_fqdn("renamed") == "host-3.example", "and so does an old answer"
    assert len(asked) == 3


# --- answered from memory while it holds --------------------------------------------------


class Counted:
    """``system_info`` counting its full reads."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reads = 0
        real = info_module.system_info

        def counted(*args: Any, **kwargs: Any) -> SystemInfoRead:
            self.reads += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(info_module, "system_info", counted)


async def test_info_is_read_once_and_uptime_advances_with_the_boot_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_tree(RPI, tmp_path)
    counted = Counted(monkeypatch)
    clock = [1000.0]
    monkeypatch.setattr(info_module, "_boottime", lambda: clock[0])
    cache = SystemInfoCache(root, hostcore_version=VERSION)
    first = await cache.get()
    clock[0] += 12.5
    second = await cache.get()
    assert counted.reads == 1, "the second answer needs no file and no thread"
    assert first.uptime_s is not None and second.uptime_s == round(first.uptime_s + 12.5, 2)
    assert second.model_copy(update={"uptime_s": first.uptime_s}) == first


async def test_a_new_hostname_or_os_is_seen_at_the_next_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_tree(RPI, tmp_path)
    counted = Counted(monkeypatch)
    cache = SystemInfoCache(root, hostcore_version=VERSION)
    await cache.get()
    (root / "proc/sys/kernel/hostname").write_text("renamed\n")
    assert (await cache.get()).hostname == "renamed"
    release = root / "etc/os-release"
    staged = release.with_name("os-release.new")
    staged.write_text(release.read_text().replace("bookworm", "trixie"))
    staged.replace(release)  # as an upgrade does: a new file
    upgraded = await cache.get()
    assert upgraded.os is not None and "trixie" in (upgraded.os.version_codename or "")
    assert counted.reads == 3
    await cache.get()
    assert counted.reads == 3


async def test_the_fqdn_is_read_again_after_its_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_tree(RPI, tmp_path)
    counted = Counted(monkeypatch)
    clock = [0.0]
    monkeypatch.setattr(info_module, "_boottime", lambda: clock[0])
    cache = SystemInfoCache(root, hostcore_version=VERSION)
    await cache.get()
    clock[0] += info_module.FQDN_TTL_S
    await cache.get()
    assert counted.reads == 2
