from __future__ import annotations

from pathlib import Path

import pytest

from hostcore.builtin.system.parsers import (
    REAL_FILESYSTEMS,
    CpuInfo,
    CpuTimes,
    DmiInfo,
    InterfaceTrafficRead,
    LoadAverageRead,
    MemInfo,
    Mount,
    OsReleaseRead,
    PackageRead,
    TemperatureRead,
    clean_dmi_value,
    parse_cpuinfo,
    parse_device_tree_string,
    parse_dpkg_status,
    parse_loadavg,
    parse_meminfo,
    parse_millidegrees,
    parse_mounts,
    parse_net_dev,
    parse_os_release,
    parse_proc_stat_cpu,
    parse_stat_btime,
    parse_uptime,
    read_dmi,
    read_hwmon_temperatures,
    read_temperatures,
    read_text,
    read_thermal_zones,
    real_mounts,
)
from tests.builtin.system.trees import RPI, X86


def fixture_text(root: Path, relative: str) -> str:
    return (root / relative).read_text()


# --- os-release -----------------------------------------------------------------------


def test_os_release_of_raspberry_pi_os() -> None:
    assert parse_os_release(fixture_text(RPI, "etc/os-release")) == OsReleaseRead(
        name="Debian GNU/Linux",
        version="12 (bookworm)",
        version_id="12",
        pretty_name="Debian GNU/Linux 12 (bookworm)",
        id="debian",
        version_codename="bookworm",
    )


def test_os_release_of_ubuntu() -> None:
    assert parse_os_release(fixture_text(X86, "usr/lib/os-release")) == OsReleaseRead(
        name="Ubuntu",
        version="24.04.1 LTS (Noble Numbat)",
        version_id="24.04",
        pretty_name="Ubuntu 24.04.1 LTS",
        id="ubuntu",
        version_codename="noble",
    )


def test_os_release_quotes_escapes_and_comments() -> None:
    text = (
        "# a comment\n"
        "\n"
        "NAME='Single \"quoted\"'\n"
        'PRETTY_NAME="Say \\"hi\\" for \\$5 \\\\ no more"\n'
        "  ID=plain  \n"
        "VERSION=unquoted\\ escaped\n"
        'VERSION_ID="unbalanced\n'
        "garbage line without equals\n"
        "lowercase=ignored\n"
    )
    assert parse_os_release(text) == OsReleaseRead(
        name='Single "quoted"',
        pretty_name='Say "hi" for $5 \\ no more',
        id="plain",
        version="unquoted escaped",
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('ID="a\\nb"', "a\\nb"),  # inside double quotes \n is not an escape
        ("ID=a\\nb", "anb"),  # outside quotes a backslash escapes any character
        ("ID='a\\\"b'", 'a\\"b'),  # nothing is an escape inside single quotes
        ("ID=\"a\"'b'c", "abc"),  # adjacent quoted parts join
        ("ID=", ""),
        ("ID='open", None),
    ],
)
def test_os_release_shell_quoting(line: str, expected: str | None) -> None:
    assert parse_os_release(line).id == expected


def test_os_release_later_assignment_wins() -> None:
    assert parse_os_release("ID=first\nID=second\n").id == "second"


def test_os_release_empty() -> None:
    assert parse_os_release("") == OsReleaseRead()


# --- device tree and DMI --------------------------------------------------------------


def test_device_tree_strings_of_a_pi() -> None:
    model = (RPI / "proc/device-tree/model").read_bytes()
    serial = (RPI / "proc/device-tree/serial-number").read_bytes()
    assert model.endswith(b"\0")
    assert parse_device_tree_string(model) == "Raspberry Pi 4 Model B Rev 1.4"
    assert parse_device_tree_string(serial) == "10000000a744c93f"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", None),
        (b"\0", None),
        (b"  \n\0", None),
        (b"no terminator", "no terminator"),
        (b"first\0second\0", "first"),
        (b"bad \xff byte\0", "bad \ufffd byte"),
    ],
)
def test_device_tree_string_edge_cases(data: bytes, expected: str | None) -> None:
    assert parse_device_tree_string(data) == expected


def test_dmi_of_a_thinkpad() -> None:
    assert read_dmi(X86) == DmiInfo(
        sys_vendor="LENOVO",
        product_name="20XW0055GE",
        product_version="ThinkPad X1 Carbon Gen 9",
        product_serial="PF2Y8K3L",
        board_name="20XW0055GE",
    )


def test_no_dmi_on_a_pi() -> None:
    assert read_dmi(RPI) == DmiInfo()


def test_unreadable_dmi_serial_is_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    real_read_bytes = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "product_serial":
            raise PermissionError(13, "Permission denied", str(path))
        return real_read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    dmi = read_dmi(X86)
    assert dmi.product_serial is None
    assert dmi.sys_vendor == "LENOVO"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, None),
        ("", None),
        ("To be filled by O.E.M.\n", None),
        ("Default string\n", None),
        ("System Product Name\n", None),
        ("  ASUSTeK COMPUTER INC.  \n", "ASUSTeK COMPUTER INC."),
    ],
)
def test_dmi_placeholders(raw: str | None, expected: str | None) -> None:
    assert clean_dmi_value(raw) == expected


# --- cpuinfo --------------------------------------------------------------------------


def test_cpuinfo_of_a_pi_4() -> None:
    assert parse_cpuinfo(fixture_text(RPI, "proc/cpuinfo")) == CpuInfo(
        model="Cortex-A72",
        count=4,
        hardware="BCM2835",
        revision="c03114",
        serial="10000000a744c93f",
        board_model="Raspberry Pi 4 Model B Rev 1.4",
    )


def test_cpuinfo_of_a_thinkpad() -> None:
    assert parse_cpuinfo(fixture_text(X86, "proc/cpuinfo")) == CpuInfo(
        model="11th Gen Intel(R) Core(TM) i5-1135G7 @ 2.40GHz", count=8
    )


def test_cpuinfo_big_little_cores_are_joined() -> None:
    text = "".join(
        f"processor\t: {n}\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n"
        for n, part in enumerate(["0xd05", "0xd05", "0xd0b", "0xd0b"])
    )
    assert parse_cpuinfo(text) == CpuInfo(model="Cortex-A55 + Cortex-A76", count=4)


def test_cpuinfo_decoded_core_beats_generic_armv7_model_name() -> None:
    text = (
        "processor\t: 0\nmodel name\t: ARMv7 Processor rev 5 (v7l)\nCPU implementer\t: 0x41\n"
        "CPU part\t: 0xc07\n\nHardware\t: Allwinner sun8i Family\nSerial\t\t: 0000000000000000\n"
    )
    info = parse_cpuinfo(text)
    assert info.model == "Cortex-A7"
    assert info.hardware == "Allwinner sun8i Family"
    assert info.serial is None


@pytest.mark.parametrize(
    ("text", "model"),
    [
        ("processor\t: 0\nCPU implementer\t: 0x51\nCPU part\t: 0x801\nHardware\t: Qcom\n", "Qcom"),
        (
            "processor\t: 0\nCPU implementer\t: 0x51\nCPU part\t: 0x801\nModel\t: Board X\n",
            "Board X",
        ),
        ("processor\t: 0\nCPU implementer\t: 0x51\nCPU part\t: 0x801\n", "CPU part 0x801"),
        (
            "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n",
            "ARMv7 Processor rev 4 (v7l)",
        ),
    ],
)
def test_cpuinfo_model_fallbacks(text: str, model: str) -> None:
    assert parse_cpuinfo(text).model == model


def test_cpuinfo_empty_and_garbage() -> None:
    assert parse_cpuinfo("") == CpuInfo(model=None, count=0)
    assert parse_cpuinfo("garbage\n:::\nmodel name\t:\n") == CpuInfo(model=None, count=0)


# --- meminfo, loadavg, uptime, stat ---------------------------------------------------


def test_meminfo_of_a_pi() -> None:
    assert parse_meminfo(fixture_text(RPI, "proc/meminfo")) == MemInfo(
        total=3884376 * 1024,
        available=3326220 * 1024,
        free=2641684 * 1024,
        buffers=48092 * 1024,
        cached=717452 * 1024,
        swap_total=204796 * 1024,
        swap_free=194556 * 1024,
    )


def test_meminfo_of_a_thinkpad() -> None:
    assert parse_meminfo(fixture_text(X86, "proc/meminfo")) == MemInfo(
        total=16048528 * 1024,
        available=12254012 * 1024,
        free=9123456 * 1024,
        buffers=312344 * 1024,
        cached=3521088 * 1024,
        swap_total=4194300 * 1024,
        swap_free=4194300 * 1024,
    )


def test_meminfo_missing_fields_and_garbage() -> None:
    text = "MemTotal:  1024 kB\nMemFree: lots kB\nnonsense\nSwapTotal:\nBuffers: 7\n"
    assert parse_meminfo(text) == MemInfo(
        total=1024 * 1024,
        available=None,
        free=None,
        buffers=7,
        cached=None,
        swap_total=None,
        swap_free=None,
    )


def test_loadavg() -> None:
    assert parse_loadavg(fixture_text(RPI, "proc/loadavg")) == LoadAverageRead(
        load1=0.42, load5=0.31, load15=0.24
    )
    assert parse_loadavg(fixture_text(X86, "proc/loadavg")) == LoadAverageRead(
        load1=1.23, load5=0.98, load15=0.87
    )
    assert parse_loadavg("") is None
    assert parse_loadavg("0.1 0.2") is None
    assert parse_loadavg("a b c") is None


def test_uptime() -> None:
    assert parse_uptime(fixture_text(RPI, "proc/uptime")) == 183724.51
    assert parse_uptime(fixture_text(X86, "proc/uptime")) == 5421.07
    assert parse_uptime("") is None
    assert parse_uptime("soon") is None


def test_stat_btime() -> None:
    assert parse_stat_btime(fixture_text(RPI, "proc/stat")) == 1731988800
    assert parse_stat_btime(fixture_text(X86, "proc/stat")) == 1732170000
    assert parse_stat_btime("") is None
    assert parse_stat_btime("btime\nbtime soon\n") is None


def test_proc_stat_cpu_of_a_pi() -> None:
    cpus = parse_proc_stat_cpu(fixture_text(RPI, "proc/stat"))
    assert list(cpus) == ["cpu", "cpu0", "cpu1", "cpu2", "cpu3"]
    assert cpus["cpu0"] == CpuTimes(412345, 1203, 198765, 17634567, 23456, 0, 45678, 0)
    assert cpus["cpu0"].total == 412345 + 1203 + 198765 + 17634567 + 23456 + 45678
    assert cpus["cpu0"].idle_all == 17634567 + 23456
    assert cpus["cpu"].total == sum(cpus[f"cpu{n}"].total for n in range(4))


def test_proc_stat_cpu_of_a_thinkpad() -> None:
    cpus = parse_proc_stat_cpu(fixture_text(X86, "proc/stat"))
    assert len(cpus) == 9
    assert cpus["cpu7"] == CpuTimes(79012, 95, 20234, 444987, 912, 0, 521, 0)


def test_proc_stat_cpu_old_kernel_and_garbage() -> None:
    text = "cpu  1 2 3 4\ncpu0 1 2 3 4\ncpux 1 2 3 4\ncpu1 a b c d\ncpu2 1 2\ncpufreq 5 5 5 5\n"
    assert parse_proc_stat_cpu(text) == {"cpu": CpuTimes(1, 2, 3, 4), "cpu0": CpuTimes(1, 2, 3, 4)}
    assert parse_proc_stat_cpu("") == {}


# --- mounts ---------------------------------------------------------------------------


def test_mounts_of_a_pi_decode_octal_escapes() -> None:
    mounts = parse_mounts(fixture_text(RPI, "proc/mounts"))
    assert len(mounts) == 21
    assert mounts[0] == Mount("/dev/mmcblk0p2", "/", "ext4", ("rw", "noatime"))
    assert mounts[-1].mountpoint == "/media/pi/USB Stick"
    assert mounts[-1].fstype == "exfat"


def test_real_mounts_of_a_pi() -> None:
    real = real_mounts(parse_mounts(fixture_text(RPI, "proc/mounts")))
    # The bind mount of /dev/mmcblk0p2 on /srv/backup is the same space as /.
    assert [(m.device, m.mountpoint, m.fstype) for m in real] == [
        ("/dev/mmcblk0p2", "/", "ext4"),
        ("/dev/mmcblk0p1", "/boot/firmware", "vfat"),
        ("/dev/sda1", "/media/pi/USB Stick", "exfat"),
    ]


def test_real_mounts_of_a_thinkpad_leave_out_snaps_fuse_and_nfs() -> None:
    real = real_mounts(parse_mounts(fixture_text(X86, "proc/mounts")))
    assert [(m.device, m.mountpoint, m.fstype) for m in real] == [
        ("/dev/nvme0n1p2", "/", "ext4"),
        ("/dev/nvme0n1p1", "/boot/efi", "vfat"),
    ]


def test_mounts_edge_cases() -> None:
    text = "short line\n\n/dev/sdb1 /mnt/tab\\011and\\134slash xfs rw 0 0\n"
    assert parse_mounts(text) == [Mount("/dev/sdb1", "/mnt/tab\tand\\slash", "xfs", ("rw",))]
    assert parse_mounts("") == []
    assert {"tmpfs", "proc", "sysfs", "squashfs", "nfs4"}.isdisjoint(REAL_FILESYSTEMS)


# --- net/dev --------------------------------------------------------------------------


def test_net_dev_of_a_pi() -> None:
    interfaces = parse_net_dev(fixture_text(RPI, "proc/net/dev"))
    assert [i.name for i in interfaces] == ["lo", "eth0", "wlan0"]
    # The kernel writes "eth0:2345678901" with no space once a counter is wide.
    assert interfaces[1] == InterfaceTrafficRead(
        name="eth0",
        rx_bytes=2345678901,
        rx_packets=3456789,
        rx_errors=0,
        rx_dropped=12,
        tx_bytes=123456789,
        tx_packets=987654,
        tx_errors=0,
        tx_dropped=0,
    )
    assert interfaces[2].rx_errors == 3


def test_net_dev_of_a_thinkpad() -> None:
    interfaces = parse_net_dev(fixture_text(X86, "proc/net/dev"))
    assert [i.name for i in interfaces] == ["lo", "wlp0s20f3", "docker0"]
    assert interfaces[2].tx_dropped == 21


def test_net_dev_garbage() -> None:
    text = "Inter-|   Receive\n face |bytes\neth0: 1 2 3\nwlan0: " + "x " * 16 + "\n"
    assert parse_net_dev(text) == []
    assert parse_net_dev("") == []


# --- temperatures ---------------------------------------------------------------------


def test_temperatures_of_a_pi() -> None:
    # hwmon0 "cpu_thermal" mirrors thermal zone "cpu-thermal"; rpi_volt has no temperature.
    assert read_temperatures(RPI) == [
        TemperatureRead(sensor="cpu-thermal", label=None, celsius=48.692)
    ]


def test_temperatures_of_a_thinkpad() -> None:
    assert read_temperatures(X86) == [
        TemperatureRead(sensor="acpitz", label=None, celsius=43.0),
        TemperatureRead(sensor="nvme", label="Composite", celsius=38.85),
        TemperatureRead(sensor="coretemp", label="Package id 0", celsius=52.0),
        TemperatureRead(sensor="coretemp", label="Core 0", celsius=50.0),
    ]


def test_hwmon_alone_includes_the_thermal_mirror() -> None:
    assert read_hwmon_temperatures(RPI) == [
        TemperatureRead(sensor="cpu_thermal", label="temp1", celsius=48.692)
    ]


def test_no_temperatures_without_thermal_or_hwmon(tmp_path: Path) -> None:
    assert read_thermal_zones(tmp_path) == []
    assert read_hwmon_temperatures(tmp_path) == []
    assert read_temperatures(tmp_path) == []


def test_unreadable_and_odd_sensors_are_skipped(tmp_path: Path) -> None:
    thermal = tmp_path / "sys/class/thermal"
    for zone, temp in (
        ("thermal_zone10", "30000"),
        ("thermal_zone2", "oops"),
        ("thermal_zone1", ""),
    ):
        (thermal / zone).mkdir(parents=True)
        (thermal / zone / "temp").write_text(temp + "\n")
    (thermal / "thermal_zone3").mkdir()  # no temp file, no type
    (thermal / "thermal_zone10" / "type").write_text("soc-thermal\n")
    hwmon = tmp_path / "sys/class/hwmon/hwmon0"
    hwmon.mkdir(parents=True)
    (hwmon / "temp2_input").write_text("-5500\n")
    (hwmon / "temp10_input").write_text("61000\n")
    (hwmon / "tempX_input").write_text("1\n")
    assert read_temperatures(tmp_path) == [
        TemperatureRead(sensor="soc-thermal", label=None, celsius=30.0),
        TemperatureRead(sensor="hwmon0", label="temp2", celsius=-5.5),
        TemperatureRead(sensor="hwmon0", label="temp10", celsius=61.0),
    ]


def test_millidegrees() -> None:
    assert parse_millidegrees("48692\n") == 48.692
    assert parse_millidegrees(None) is None
    assert parse_millidegrees("") is None


# --- dpkg -----------------------------------------------------------------------------


def test_dpkg_status_of_a_pi() -> None:
    wanted = ["hostapd", "iw", "wpasupplicant", "network-manager", "dnsmasq-base", "nope"]
    found = parse_dpkg_status(fixture_text(RPI, "var/lib/dpkg/status"), wanted)
    assert list(found) == wanted
    assert found["hostapd"] == PackageRead(
        name="hostapd", installed=True, version="2:2.10-12", architecture="arm64"
    )
    assert found["iw"].version == "5.19-1"
    assert found["wpasupplicant"].version == "2:2.10-12+rpt1"
    # Config files left behind, half-installed and unknown are all "not installed".
    for name in ("network-manager", "dnsmasq-base", "nope"):
        assert found[name] == PackageRead(name=name, installed=False)


def test_dpkg_status_continuation_lines_are_not_fields() -> None:
    found = parse_dpkg_status(fixture_text(RPI, "var/lib/dpkg/status"), ["this"])
    assert found["this"].installed is False


def test_dpkg_status_of_a_thinkpad_multiarch_and_triggers() -> None:
    found = parse_dpkg_status(
        fixture_text(X86, "var/lib/dpkg/status"),
        ["libc6", "libc6:amd64", "wpasupplicant", "hostapd", "libc6:arm64", "libc6"],
    )
    assert list(found) == ["libc6", "libc6:amd64", "wpasupplicant", "hostapd", "libc6:arm64"]
    assert found["libc6"].architecture == "i386"  # the first stanza dpkg lists
    assert found["libc6:amd64"] == PackageRead(
        name="libc6:amd64", installed=True, version="2.39-0ubuntu8.3", architecture="amd64"
    )
    assert found["wpasupplicant"].installed is True  # triggers-pending is configured
    assert found["hostapd"].installed is False
    assert found["libc6:arm64"].installed is False


def test_dpkg_status_edge_cases() -> None:
    assert parse_dpkg_status("", ["iw"]) == {"iw": PackageRead(name="iw", installed=False)}
    assert parse_dpkg_status("garbage\n\n\nStatus: install ok installed\n", []) == {}
    text = "Package: a\nStatus: install ok installed\n  \t\nPackage: b\nStatus: broken\n"
    found = parse_dpkg_status(text, ["a", "b"])
    assert found["a"] == PackageRead(name="a", installed=True)
    assert found["b"].installed is False


# --- reading under a root -------------------------------------------------------------


def test_read_text_missing_and_directory(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    assert read_text(tmp_path, "missing") is None
    assert read_text(tmp_path, "dir") is None
