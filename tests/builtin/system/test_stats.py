from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path

import pytest

from hostcore.builtin.system import stats as stats_module
from hostcore.builtin.system.parsers import (
    CpuTimes,
    LoadAverageRead,
    MemInfo,
    Mount,
    TemperatureRead,
)
from hostcore.builtin.system.stats import (
    CpuUsageRead,
    MemoryRead,
    StatsCollector,
    SwapRead,
    SystemStatsRead,
    busy_percent,
    cpu_usage,
    disk_usage,
    memory_usage,
)
from hostcore.errors import Unavailable
from tests.builtin.system.trees import RPI, X86, copy_tree
from tests.helpers import wait_until


def advance_stat(root: Path, deltas: dict[str, list[int]]) -> None:
    """Add jiffies to the ``cpuN`` lines of root/proc/stat, and their sum to ``cpu``."""
    path = root / "proc/stat"
    lines = path.read_text().splitlines()
    total = [sum(column) for column in zip(*deltas.values(), strict=True)]
    for index, line in enumerate(lines):
        name, *values = line.split()
        step = total if name == "cpu" else deltas.get(name)
        if step is not None:
            bumped = [int(value) + add for value, add in zip(values, step + [0] * 10, strict=False)]
            lines[index] = " ".join([name if name != "cpu" else "cpu ", *map(str, bumped)])
    # Atomically, as the kernel does, so the collector's thread never reads half a file.
    staged = path.with_name("stat.new")
    staged.write_text("\n".join(lines) + "\n")
    staged.replace(path)


def test_first_sample_of_a_pi() -> None:
    stats = StatsCollector(RPI).sample()
    assert stats.cpu == CpuUsageRead(count=4, percent=None, per_core=None)
    assert stats.load == LoadAverageRead(load1=0.42, load5=0.31, load15=0.24)
    assert stats.memory == MemoryRead(
        total_bytes=3977601024,
        available_bytes=3406049280,
        used_bytes=571551744,
        free_bytes=2705084416,
        percent=14.4,
    )
    assert stats.swap == SwapRead(
        total_bytes=209711104, used_bytes=10485760, free_bytes=199225344, percent=5.0
    )
    assert stats.temperatures == [TemperatureRead(sensor="cpu-thermal", label=None, celsius=48.692)]
    assert stats.network.rx_bytes == 2402467913  # eth0 + wlan0, not lo
    assert stats.network.tx_bytes == 133333332
    assert [interface.name for interface in stats.network.interfaces] == ["lo", "eth0", "wlan0"]
    assert stats.process_count == 3
    assert stats.uptime_s == 183724.51


def test_first_sample_of_a_thinkpad() -> None:
    stats = StatsCollector(X86).sample()
    assert stats.cpu.count == 8
    assert stats.memory == MemoryRead(
        total_bytes=16433692672,
        available_bytes=12548108288,
        used_bytes=3885584384,
        free_bytes=9342418944,
        percent=23.6,
    )
    assert stats.swap == SwapRead(
        total_bytes=4294963200, used_bytes=0, free_bytes=4294963200, percent=0.0
    )
    assert stats.temperatures == [
        TemperatureRead(sensor="acpitz", label=None, celsius=43.0),
        TemperatureRead(sensor="nvme", label="Composite", celsius=38.85),
        TemperatureRead(sensor="coretemp", label="Package id 0", celsius=52.0),
        TemperatureRead(sensor="coretemp", label="Core 0", celsius=50.0),
    ]
    assert (stats.network.rx_bytes, stats.network.tx_bytes) == (3456789012, 234573568)
    assert stats.process_count == 4


def test_cpu_percent_between_two_samples(tmp_path: Path) -> None:
    root = copy_tree(RPI, tmp_path)
    collector = StatsCollector(root)
    collector.sample()
    #           user nice system idle iowait irq softirq steal
    advance_stat(
        root,
        {
            "cpu0": [19, 0, 5, 71, 5, 0, 0, 0],  # 24 busy of 100
            "cpu1": [50, 0, 0, 50, 0, 0, 0, 0],  # 50 of 100
            "cpu2": [10, 0, 0, 90, 0, 0, 0, 0],  # 10 of 100
            "cpu3": [60, 10, 10, 10, 0, 5, 5, 0],  # 90 of 100
        },
    )
    assert collector.sample().cpu == CpuUsageRead(
        count=4, percent=43.5, per_core=[24.0, 50.0, 10.0, 90.0]
    )
    # Nothing happened since: every core idle by definition (no jiffies elapsed).
    assert collector.sample().cpu == CpuUsageRead(
        count=4, percent=0.0, per_core=[0.0, 0.0, 0.0, 0.0]
    )


def test_disks_are_statted_under_the_root(tmp_path: Path) -> None:
    root = copy_tree(RPI, tmp_path)
    (root / "media/pi/USB Stick").mkdir(parents=True)
    disks = StatsCollector(root).sample().disks
    # /boot/firmware does not exist under the root, so it is skipped.
    assert [(d.device, d.mountpoint, d.fstype) for d in disks] == [
        ("/dev/mmcblk0p2", "/", "ext4"),
        ("/dev/sda1", "/media/pi/USB Stick", "exfat"),
    ]
    for disk in disks:
        assert disk.total_bytes > 0
        assert disk.used_bytes + disk.free_bytes <= disk.total_bytes
        assert 0.0 <= disk.percent <= 100.0


def test_disk_paths_that_are_not_utf8_are_printable(tmp_path: Path) -> None:
    mountpoint = "/caf\udce9"  # b"/caf\xe9" read with surrogateescape
    (tmp_path / mountpoint.lstrip("/")).mkdir()
    [disk] = disk_usage(tmp_path, [Mount("/dev/sdz1", mountpoint, "ext4", ("rw",))])
    assert disk.mountpoint == "/caf\ufffd"
    disk.model_dump_json()


def test_no_temperatures_without_thermal_or_hwmon(tmp_path: Path) -> None:
    root = copy_tree(RPI, tmp_path)
    shutil.rmtree(root / "sys")
    assert StatsCollector(root).sample().temperatures == []


def test_sparse_proc_gives_empty_figures(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text("cpu  1 0 1 8\n")
    (tmp_path / "proc/meminfo").write_text("MemTotal: 1000 kB\nMemFree: 500 kB\n")
    stats = StatsCollector(tmp_path).sample()
    assert stats.load is None
    assert stats.uptime_s is None
    assert stats.disks == []
    assert stats.temperatures == []
    assert stats.network.interfaces == []
    assert stats.process_count == 0
    assert stats.memory.available_bytes == 500 * 1024


@pytest.mark.parametrize("missing", ["proc/stat", "proc/meminfo"])
def test_missing_core_sources_are_unavailable(tmp_path: Path, missing: str) -> None:
    root = copy_tree(RPI, tmp_path)
    (root / missing).unlink()
    with pytest.raises(Unavailable, match=missing):
        StatsCollector(root).sample()


def test_memory_without_memavailable_estimates_it() -> None:
    memory, swap = memory_usage(
        MemInfo(
            total=1000, available=None, free=100, buffers=50, cached=250, swap_total=0, swap_free=0
        )
    )
    assert memory == MemoryRead(
        total_bytes=1000, available_bytes=400, used_bytes=600, free_bytes=100, percent=60.0
    )
    assert swap == SwapRead(total_bytes=0, used_bytes=0, free_bytes=0, percent=0.0)


def test_busy_percent_stays_in_range() -> None:
    before = CpuTimes(user=100, idle=100, iowait=50)
    assert busy_percent(before, before) == 0.0
    # iowait running backwards must not push the result below 0 or above 100.
    assert busy_percent(before, CpuTimes(user=100, idle=200, iowait=10)) == 0.0
    assert busy_percent(before, CpuTimes(user=300, idle=100, iowait=40)) == 100.0
    assert busy_percent(before, CpuTimes(user=101, idle=101, iowait=50)) == 50.0


def test_cpu_usage_with_a_core_come_online() -> None:
    previous = {"cpu": CpuTimes(idle=100), "cpu0": CpuTimes(idle=100)}
    current = {
        "cpu": CpuTimes(user=20, idle=180),
        "cpu0": CpuTimes(user=10, idle=190),
        "cpu1": CpuTimes(user=10, idle=90),
    }
    assert cpu_usage(previous, current) == CpuUsageRead(count=2, percent=20.0, per_core=[10.0, 0.0])
    assert cpu_usage(None, current) == CpuUsageRead(count=2, percent=None, per_core=None)


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        StatsCollector(RPI, interval_s=0)


async def test_a_read_within_the_interval_reads_nothing(tmp_path: Path) -> None:
    collector = StatsCollector(copy_tree(RPI, tmp_path), interval_s=3600)
    first = await collector.current()
    assert await collector.current() is first
    collector.interval_s = 1e-9
    assert await collector.current() is not first


# The collector has no event to wait on: its outcome is polled for, bounded.
COLLECTOR_WITHIN_S = 10.0


async def wait_for_sample(collector: StatsCollector, after: SystemStatsRead) -> SystemStatsRead:
    await wait_until(lambda: collector.newest is not after, COLLECTOR_WITHIN_S, "a new sample")
    assert collector.newest is not None
    return collector.newest


async def test_collector_task_keeps_the_latest_sample(tmp_path: Path) -> None:
    root = copy_tree(RPI, tmp_path)
    collector = StatsCollector(root, interval_s=0.05)
    await collector.start()
    try:
        first = await collector.current()
        assert first.cpu.percent is None
        assert await collector.current() is first  # no I/O between samples
        advance_stat(root, {f"cpu{n}": [25, 0, 0, 75] for n in range(4)})
        later = await wait_for_sample(collector, first)
        while later.cpu.percent == 0.0:  # samples taken before the rewrite
            later = await wait_for_sample(collector, later)
        assert later.cpu.percent == 25.0
        assert later.sampled_at >= first.sampled_at
        await collector.start()  # already running: no second task
    finally:
        await collector.stop()
    await collector.stop()


async def test_collector_survives_failing_samples(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = copy_tree(RPI, tmp_path)
    collector = StatsCollector(root, interval_s=0.01)
    caplog.set_level(logging.INFO, logger="hostcore.builtin.system.stats")
    await collector.start()
    try:
        good = await collector.current()
        stat = (root / "proc/stat").read_bytes()
        (root / "proc/stat").unlink()
        await wait_until(
            lambda: "sampling system stats failed" in caplog.messages,
            COLLECTOR_WITHIN_S,
            "the failure to be logged",
        )
        assert collector.newest is good  # the last good sample is still served
        (root / "proc/stat").write_bytes(stat)
        await wait_until(
            lambda: "sampling system stats works again" in caplog.messages,
            COLLECTOR_WITHIN_S,
            "the recovery to be logged",
        )
        # The first sample after the failures averages over them: it primes the next.
        await wait_until(lambda: collector.newest is not good, COLLECTOR_WITHIN_S, "a sample")
    finally:
        await collector.stop()
    assert caplog.messages.count("sampling system stats failed") == 1


async def test_start_on_a_broken_root_serves_503s(tmp_path: Path) -> None:
    collector = StatsCollector(tmp_path, interval_s=0.01)
    await collector.start()
    try:
        with pytest.raises(Unavailable):
            await collector.current()
    finally:
        await collector.stop()


def test_stats_of_this_machine() -> None:
    collector = StatsCollector(Path("/"))
    collector.sample()
    stats = collector.sample()
    assert stats.cpu.count >= 1
    assert stats.cpu.percent is not None and 0.0 <= stats.cpu.percent <= 100.0
    assert stats.memory.total_bytes > 0
    assert stats.process_count >= 1
    assert all(disk.mountpoint.startswith("/") for disk in stats.disks)
    stats.model_dump_json()


# --- sampling only while someone reads ----------------------------------------------------


async def test_nobody_reading_means_no_sampling_and_a_read_restarts_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_module, "IDLE_AFTER_S", 0.2)
    monkeypatch.setattr(stats_module, "WAKE_PAIR_S", 0.01)
    collector = StatsCollector(copy_tree(RPI, tmp_path), interval_s=0.01)
    taken: list[SystemStatsRead] = []
    sample = collector.sample

    def counted() -> SystemStatsRead:
        taken.append(sample())
        return taken[-1]

    monkeypatch.setattr(collector, "sample", counted)
    await collector.start()
    try:
        assert len(taken) == 1, "the first sample, at start"
        await asyncio.sleep(0.3)  # nobody read: the sampler stays paused
        assert len(taken) == 1
        fresh = await collector.current()
        assert len(taken) == 3, "the first read after a pause takes a fresh pair"
        assert fresh is taken[-1] and fresh.cpu.percent is not None
        await wait_until(lambda: len(taken) > 5, COLLECTOR_WITHIN_S, "sampling to resume")
        assert await collector.current() is collector.newest  # running: no I/O to answer
    finally:
        await collector.stop()


async def test_readers_after_a_pause_share_one_fresh_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stats_module, "WAKE_PAIR_S", 0.05)
    collector = StatsCollector(copy_tree(RPI, tmp_path), interval_s=3600)
    calls = 0
    sample = collector.sample

    def counted() -> SystemStatsRead:
        nonlocal calls
        calls += 1
        return sample()

    monkeypatch.setattr(collector, "sample", counted)
    answers = await asyncio.gather(*(collector.current() for _ in range(5)))
    assert calls == 2 and all(answer is answers[0] for answer in answers)


async def test_the_cpu_figure_after_a_pause_is_that_of_the_fresh_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not the average over the pause: load that ended long ago does not show."""
    root = copy_tree(RPI, tmp_path)
    collector = StatsCollector(root, interval_s=0.01)
    collector.sample()
    advance_stat(root, {f"cpu{n}": [100, 0, 0, 0] for n in range(4)})  # busy, then idle
    await asyncio.sleep(0.05)  # the sample is stale: a pause

    real_sleep = asyncio.sleep

    async def idle_between(seconds: float) -> None:  # the pair's quarter second: all idle
        advance_stat(root, {f"cpu{n}": [0, 0, 0, 25] for n in range(4)})
        await real_sleep(0)

    monkeypatch.setattr(stats_module.asyncio, "sleep", idle_between)
    fresh = await collector.current()
    assert fresh.cpu.percent == 0.0


# --- gunicorn's workers: one sampler between them ----------------------------------------


def counting(collector: StatsCollector, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record when ``collector`` samples itself."""
    taken: list[float] = []
    sample = collector.sample

    def counted() -> SystemStatsRead:
        taken.append(time.monotonic())
        return sample()

    monkeypatch.setattr(collector, "sample", counted)
    return taken


async def test_workers_sharing_a_file_sample_once_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_tree(RPI, tmp_path)
    shared = tmp_path / "run" / "system-stats.json"
    shared.parent.mkdir()
    interval = 0.05
    first, second = (StatsCollector(root, interval_s=interval, shared=shared) for _ in "ab")
    taken = {"first": counting(first, monkeypatch), "second": counting(second, monkeypatch)}
    await first.start()
    await second.start()
    try:
        seen_by_second: set[float] = set()
        began = time.monotonic()
        while time.monotonic() - began < 1.0:  # both are read, as a poller's requests are
            await first.current()
            seen_by_second.add((await second.current()).sampled_at)
            await asyncio.sleep(interval / 5)
        ticks = 1.0 / interval
        both = len(taken["first"]) + len(taken["second"])
        assert both <= 1.4 * ticks, f"{both} samples in {ticks:g} intervals: two samplers"
        assert both >= 0.5 * ticks, "sampling went on"
        assert len(seen_by_second) >= 0.5 * ticks, "the second answered fresh samples"
        assert oct(shared.stat().st_mode & 0o777) == "0o600"

        await first.stop()  # one worker gone: the other samples for itself
        before = len(taken["second"])
        await wait_until(
            lambda: len(taken["second"]) > before + 3, COLLECTOR_WITHIN_S, "its own samples"
        )
    finally:
        await first.stop()
        await second.stop()


async def test_a_damaged_shared_file_is_ignored(tmp_path: Path) -> None:
    shared = tmp_path / "system-stats.json"
    shared.write_text("{not json")
    collector = StatsCollector(copy_tree(RPI, tmp_path), interval_s=3600, shared=shared)
    stats = await collector.current()
    assert stats.memory.total_bytes > 0
    assert json.loads(shared.read_text())["sample"]["sampled_at"] == stats.sampled_at


async def test_a_worker_taking_over_measures_from_the_shared_counters_not_its_own_old_ones(
    tmp_path: Path,
) -> None:
    root = copy_tree(RPI, tmp_path)
    shared = tmp_path / "system-stats.json"
    interval = 0.05
    first, second = (StatsCollector(root, interval_s=interval, shared=shared) for _ in "ab")
    second.sample()  # the second's own counters: from long before
    advance_stat(root, {f"cpu{n}": [1000, 0, 0, 0] for n in range(4)})  # busy, long ago
    await first.start()
    try:
        for _ in range(20):  # the first samples for both; the second takes its samples
            await first.current()
            await second.current()
            advance_stat(root, {f"cpu{n}": [0, 0, 0, 5] for n in range(4)})  # idle since
            await asyncio.sleep(interval / 2)
        assert first._lock_fd is not None and second._lock_fd is None
        await first.stop()  # the sampler goes: the second takes over
        await second.start()
        taken_over = await wait_for_sample(second, second.newest)  # type: ignore[arg-type]
        while second._lock_fd is None:
            advance_stat(root, {f"cpu{n}": [0, 0, 0, 5] for n in range(4)})
            taken_over = await wait_for_sample(second, taken_over)
        advance_stat(root, {f"cpu{n}": [0, 0, 0, 5] for n in range(4)})
        own = await wait_for_sample(second, taken_over)
        assert own.cpu.percent == 0.0, "idle since the last shared counters"
        shared_sample = json.loads(shared.read_text())["sample"]
        assert shared_sample["cpu"]["percent"] == 0.0
    finally:
        await first.stop()
        await second.stop()


async def test_a_stepped_wall_clock_does_not_make_an_old_shared_sample_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = copy_tree(RPI, tmp_path)
    shared = tmp_path / "system-stats.json"
    writer = StatsCollector(root, interval_s=0.05, shared=shared)
    assert writer._sampler()
    writer.sample()
    await asyncio.sleep(0.06)
    writer.sample()  # shared: a current window
    reader = StatsCollector(root, interval_s=0.05, shared=shared)
    reader._take_shared()
    assert reader.newest is not None
    await asyncio.sleep(0.15)  # older than two intervals by the monotonic clock
    later = StatsCollector(root, interval_s=0.05, shared=shared)
    monkeypatch.setattr(stats_module.time, "time", lambda: 0.0)  # the wall clock stepped back
    later._take_shared()
    assert later.newest is None, "too old, whatever the wall clock says"
    writer._release()
