"""Live figures (CPU, load, memory, disks, temperatures, network), sampled in the background.

:class:`StatsCollector` reads /proc and /sys under a ``root`` (``Path("/")`` in
production, a fixture tree in tests) on a worker thread every ``interval_s`` and keeps
the newest sample, so a request only picks up a ready object. Everything is read from
/proc and /sys rather than through psutil: psutil reads the same files but only at ``/``,
and one code path for the device and the fixtures keeps every figure tested.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import threading
import time
from dataclasses import astuple
from pathlib import Path

from pydantic import BaseModel

from hostcore.builtin.system.parsers import (
    CpuTimes,
    InterfaceTrafficRead,
    LoadAverageRead,
    MemInfo,
    Mount,
    TemperatureRead,
    parse_loadavg,
    parse_meminfo,
    parse_mounts,
    parse_net_dev,
    parse_proc_stat_cpu,
    parse_uptime,
    read_temperatures,
    read_text,
    real_mounts,
)
from hostcore.errors import Unavailable
from hostcore.files import replace_file

log = logging.getLogger(__name__)

LOOPBACK = "lo"


class CpuUsageRead(BaseModel):
    """Busy share of the CPUs since the previous sample, in percent (0-100 per core).

    ``percent`` and ``per_core`` are ``None`` in the first sample, which has nothing to
    compare with. A core that came online since the previous sample reports 0.0.
    """

    count: int
    percent: float | None
    per_core: list[float] | None


class MemoryRead(BaseModel):
    """RAM in bytes. ``used`` is ``total - available``, as ``free`` (procps 4) counts it."""

    total_bytes: int
    available_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float


class SwapRead(BaseModel):
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float


class DiskUsageRead(BaseModel):
    """Space on one mounted filesystem, as ``df`` shows it.

    ``free_bytes`` is what unprivileged users may still write; ``percent`` is
    ``used / (used + free)``, so blocks reserved for root do not count as free.
    """

    device: str
    mountpoint: str
    fstype: str
    total_bytes: int
    used_bytes: int
    free_bytes: int
    percent: float


class NetworkTrafficRead(BaseModel):
    """Counters since each interface came up; totals leave out the loopback."""

    rx_bytes: int
    tx_bytes: int
    interfaces: list[InterfaceTrafficRead]


class SystemStatsRead(BaseModel):
    sampled_at: float
    uptime_s: float | None
    cpu: CpuUsageRead
    load: LoadAverageRead | None
    memory: MemoryRead
    swap: SwapRead
    disks: list[DiskUsageRead]
    temperatures: list[TemperatureRead]
    network: NetworkTrafficRead
    process_count: int


def busy_percent(before: CpuTimes, after: CpuTimes) -> float:
    """Share of the jiffies between two readings not spent idle or waiting for I/O."""
    elapsed = after.total - before.total
    if elapsed <= 0:
        return 0.0
    busy = elapsed - (after.idle_all - before.idle_all)
    # iowait may run backwards on some kernels; keep the result in range.
    return round(min(max(busy / elapsed * 100, 0.0), 100.0), 1)


def _percent(part: int, whole: int) -> float:
    return round(part / whole * 100, 1) if whole > 0 else 0.0


def _core_number(name: str) -> int:
    return int(name[3:])


def cpu_usage(previous: dict[str, CpuTimes] | None, current: dict[str, CpuTimes]) -> CpuUsageRead:
    """CPU usage between two parsed /proc/stat readings (``previous`` ``None``: unknown)."""
    cores = sorted((name for name in current if name != "cpu"), key=_core_number)
    if previous is None or "cpu" not in previous or "cpu" not in current:
        return CpuUsageRead(count=len(cores), percent=None, per_core=None)
    return CpuUsageRead(
        count=len(cores),
        percent=busy_percent(previous["cpu"], current["cpu"]),
        per_core=[
            busy_percent(previous[name], current[name]) if name in previous else 0.0
            for name in cores
        ],
    )


def memory_usage(meminfo: MemInfo) -> tuple[MemoryRead, SwapRead]:
    """RAM and swap from /proc/meminfo.

    Kernels before 3.14 have no MemAvailable; free + buffers + page cache stands in.
    """
    total = meminfo.total or 0
    free = meminfo.free or 0
    available = meminfo.available
    if available is None:
        available = min(free + (meminfo.buffers or 0) + (meminfo.cached or 0), total)
    swap_total = meminfo.swap_total or 0
    swap_free = min(meminfo.swap_free or 0, swap_total)
    return (
        MemoryRead(
            total_bytes=total,
            available_bytes=available,
            used_bytes=total - available,
            free_bytes=free,
            percent=_percent(total - available, total),
        ),
        SwapRead(
            total_bytes=swap_total,
            used_bytes=swap_total - swap_free,
            free_bytes=swap_free,
            percent=_percent(swap_total - swap_free, swap_total),
        ),
    )


def _printable(text: str) -> str:
    # Mount paths are read with surrogateescape so os.statvfs gets the exact bytes;
    # JSON needs valid UTF-8.
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def disk_usage(root: Path, mounts: list[Mount]) -> list[DiskUsageRead]:
    """statvfs of each mount at ``root/<mountpoint>``; mountpoints missing there are skipped.

    Under a fixture root the mountpoints of its /proc/mounts mostly do not exist, and on
    the device a mount can vanish between reading /proc/mounts and statvfs.
    """
    usage = []
    for mount in mounts:
        try:
            fs = os.statvfs(root / mount.mountpoint.lstrip("/"))
        except OSError:
            continue
        total = fs.f_blocks * fs.f_frsize
        used = (fs.f_blocks - fs.f_bfree) * fs.f_frsize
        free = fs.f_bavail * fs.f_frsize
        usage.append(
            DiskUsageRead(
                device=_printable(mount.device),
                mountpoint=_printable(mount.mountpoint),
                fstype=mount.fstype,
                total_bytes=total,
                used_bytes=used,
                free_bytes=free,
                percent=_percent(used, used + free),
            )
        )
    return usage


def network_traffic(interfaces: list[InterfaceTrafficRead]) -> NetworkTrafficRead:
    counted = [interface for interface in interfaces if interface.name != LOOPBACK]
    return NetworkTrafficRead(
        rx_bytes=sum(interface.rx_bytes for interface in counted),
        tx_bytes=sum(interface.tx_bytes for interface in counted),
        interfaces=interfaces,
    )


def count_processes(root: Path) -> int:
    """The numeric entries of ``root/proc``: one per process."""
    try:
        with os.scandir(root / "proc") as entries:
            return sum(entry.name.isdigit() for entry in entries)
    except OSError:
        return 0


# Nobody has read stats for this long: the background sampling pauses until a read.
IDLE_AFTER_S = 60.0
# The first read after a pause takes two samples this far apart: CPU usage is measured
# between two samples, and one taken after a long pause would be that pause's average.
# (/proc/stat counts in 1/100 s: over 0.25 s that is 4 % of one core at most.)
WAKE_PAIR_S = 0.25


class StatsCollector:
    """Samples system figures in the background, while someone reads them, and hands out
    the newest sample.

    ``await start()`` takes a first sample and starts an asyncio task that runs
    :meth:`sample` on a worker thread every ``interval_s`` seconds while stats were
    read (:meth:`current`) within ``IDLE_AFTER_S``; ``await stop()`` ends it. CPU usage
    is measured between consecutive samples, so the background interval is its window;
    the first read after a pause answers from a fresh pair of samples ``WAKE_PAIR_S``
    apart (and restarts the sampling), so its CPU figure is current too. An idle device
    does no sampling at all.

    ``shared`` (gunicorn's workers, a file in the run directory) makes the workers'
    collectors one sampler. Of the collectors whose stats are being read, the one
    holding an exclusive ``flock`` on ``<shared>.lock`` samples and writes each sample
    to the file, with its /proc/stat counters and the (system-wide) monotonic clock;
    the others try the lock once an interval and, while a reader asks, take the newest
    sample from the file (one ``stat`` a request, the file read when it changed). A
    collector that stops being read lets the lock go; one whose holder died gets it
    from the kernel. A collector that takes over measures CPU from the newest shared
    counters, never from its own old ones (see :meth:`sample`).
    """

    def __init__(
        self, root: Path = Path("/"), interval_s: float = 1.0, *, shared: Path | None = None
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.root = root
        self.interval_s = interval_s
        self.shared = shared
        self._lock = threading.Lock()
        self._previous_cpu: dict[str, CpuTimes] | None = None
        self._previous_at = -math.inf  # monotonic time of those counters
        self._latest: SystemStatsRead | None = None
        self._latest_at = -math.inf
        self._adopted_mtime = 0  # of the shared file, when its sample was last taken
        self._lock_fd: int | None = None  # open while this collector samples for all
        self._task: asyncio.Task[None] | None = None
        self._read_at = -math.inf
        self._wanted: asyncio.Event | None = None  # set by a read while sampling pauses
        self._waking: asyncio.Future[SystemStatsRead] | None = None

    @property
    def newest(self) -> SystemStatsRead | None:
        """The newest sample this collector holds, without reading anything."""
        return self._latest

    def sample(self) -> SystemStatsRead:
        """Read everything now. Blocking (a few file reads and statvfs calls): use a thread.

        CPU usage is relative to the previous counters: this collector's last sample, or
        a newer one another worker shared (``None`` on the first). A sample is shared
        when this collector holds the lock and its CPU window is at most two intervals
        (never an average over a pause). Raises
        :class:`~hostcore.errors.Unavailable` when ``proc/stat`` or ``proc/meminfo``
        cannot be read; every other missing source gives ``None`` or an empty list.
        """
        root = self.root
        # One sample at a time, so each CPU reading is compared with the one before it.
        with self._lock:
            stat = read_text(root, "proc/stat")
            meminfo = read_text(root, "proc/meminfo")
            if stat is None or meminfo is None:
                missing = "proc/stat" if stat is None else "proc/meminfo"
                raise Unavailable(f"{root / missing} cannot be read")
            cpu_times = parse_proc_stat_cpu(stat)
            cpu = cpu_usage(self._previous_cpu, cpu_times)
            window_s = time.monotonic() - self._previous_at
            self._previous_cpu, self._previous_at = cpu_times, time.monotonic()
            memory, swap = memory_usage(parse_meminfo(meminfo))
            mounts = parse_mounts(read_text(root, "proc/mounts", errors="surrogateescape") or "")
            stats = SystemStatsRead(
                sampled_at=time.time(),
                uptime_s=parse_uptime(read_text(root, "proc/uptime") or ""),
                cpu=cpu,
                load=parse_loadavg(read_text(root, "proc/loadavg") or ""),
                memory=memory,
                swap=swap,
                disks=disk_usage(root, real_mounts(mounts)),
                temperatures=read_temperatures(root),
                network=network_traffic(parse_net_dev(read_text(root, "proc/net/dev") or "")),
                process_count=count_processes(root),
            )
            current = window_s <= 2 * self.interval_s
            # A CPU figure averaged over a pause is never served: it primes the next one
            # (a fresh pair's first sample; a worker's first after taking over).
            if current or self._latest is None:
                self._latest, self._latest_at = stats, time.monotonic()
            if current and self._lock_fd is not None:
                self._publish(stats, cpu_times)
        return stats

    # -- one sampler for several workers --

    def _publish(self, stats: SystemStatsRead, cpu_times: dict[str, CpuTimes]) -> None:
        """Write ``stats`` and its counters to the shared file (whole, by rename)."""
        shared = self.shared
        if shared is None:
            return
        document = {
            "monotonic": time.monotonic(),
            "cpu": {name: list(astuple(times)) for name, times in cpu_times.items()},
            "sample": stats.model_dump(mode="json"),
        }
        try:
            replace_file(shared, json.dumps(document).encode())
            self._adopted_mtime = shared.stat().st_mtime_ns
        except OSError as exc:
            log.debug("cannot share the stats sample in %s: %s", shared, exc)

    def _take_shared(self) -> None:
        """Take the shared sample if it changed since last taken and is current (two
        intervals, by the monotonic clock: a stepped wall clock changes nothing)."""
        shared = self.shared
        if shared is None:
            return
        try:
            mtime = shared.stat().st_mtime_ns
            if mtime == self._adopted_mtime:
                return
            document = json.loads(shared.read_bytes())
            at = float(document["monotonic"])
            age = time.monotonic() - at
            if not 0 <= age < 2 * self.interval_s or at <= self._latest_at:
                return
            stats = SystemStatsRead.model_validate(document["sample"])
            counters = {
                str(name): CpuTimes(*(int(value) for value in values))
                for name, values in document["cpu"].items()
            }
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            return  # nothing (usable) shared: this collector's own sample serves
        with self._lock:
            self._latest, self._latest_at, self._adopted_mtime = stats, at, mtime
            if at > self._previous_at:
                self._previous_cpu, self._previous_at = counters, at

    def _sampler(self) -> bool:
        """Whether this collector samples for every worker: holds, or now takes, the lock."""
        if self.shared is None or self._lock_fd is not None:
            return True
        path = self.shared.with_name(self.shared.name + ".lock")
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            log.debug("cannot open %s: %s; sampling alone", path, exc)
            return True
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(descriptor)
            return False
        self._lock_fd = descriptor
        return True

    def _release(self) -> None:
        descriptor, self._lock_fd = self._lock_fd, None
        if descriptor is not None:
            os.close(descriptor)  # closing the only descriptor lets the lock go

    async def current(self) -> SystemStatsRead:
        """The newest sample while the background sampling runs (this worker's or one
        another worker shared); after a pause, a fresh pair of samples (concurrent
        readers share it), which restarts the sampling."""
        self._read_at = time.monotonic()
        self._take_shared()
        stats = self._latest
        if stats is not None and time.monotonic() - self._latest_at < 2 * self.interval_s:
            if self._wanted is not None and not self._wanted.is_set():
                self._wanted.set()  # this worker's loop resumes (to take over if need be)
            return stats
        if self._waking is None:
            self._waking = asyncio.ensure_future(self._fresh_pair())
        return await asyncio.shield(self._waking)

    async def _fresh_pair(self) -> SystemStatsRead:
        try:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(WAKE_PAIR_S)
            self._sampler()  # the second of the pair is shared when nobody else samples
            return await asyncio.to_thread(self.sample)
        finally:
            self._waking = None
            self._was_read()  # the background sampling resumes after the pair

    def _was_read(self) -> None:
        self._read_at = time.monotonic()
        if self._wanted is not None:
            self._wanted.set()

    async def start(self) -> None:
        """Take a first sample, then sample every ``interval_s`` until :meth:`stop`."""
        if self._task is not None:
            return
        self._wanted = asyncio.Event()  # of this loop (an app may be started again)
        try:
            await asyncio.to_thread(self.sample)
        except Unavailable as exc:
            log.warning("system stats unavailable: %s", exc.detail)
        self._task = asyncio.create_task(self._run(), name="hostcore-system-stats")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._release()

    async def _run(self) -> None:
        failing = False
        wanted = self._wanted
        assert wanted is not None
        while True:
            if time.monotonic() - self._read_at >= IDLE_AFTER_S:
                self._release()  # another worker whose stats are read samples from now
                wanted.clear()
                await wanted.wait()  # nobody reads: no sampling until someone does
                continue
            await asyncio.sleep(self.interval_s)
            if not self._sampler():
                continue  # another worker samples for all; current() takes its samples
            try:
                await asyncio.to_thread(self.sample)
            except Exception:
                # Keep serving the last good sample; log once per run of failures.
                if not failing:
                    log.exception("sampling system stats failed")
                failing = True
            else:
                if failing:
                    log.info("sampling system stats works again")
                failing = False
