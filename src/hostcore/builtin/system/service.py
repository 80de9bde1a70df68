"""The system plugin's service: the rules (allowed units, limits), no HTTP.

Everything that could block runs in a thread (file reads) or is an async
D-Bus call bounded by a timeout; a request that waits on a slow daemon never
holds up the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from pathlib import Path

from hostcore import __version__
from hostcore.builtin.system.dbus import (
    HostnameRead,
    PowerActionRead,
    SystemBus,
    TimeRead,
    UnitJobRead,
    UnitRead,
)
from hostcore.builtin.system.info import (
    HOSTNAME_FILES,
    SystemInfoCache,
    SystemInfoRead,
    file_state,
    installed_packages,
)
from hostcore.builtin.system.journal import LogEntryRead, read_logs
from hostcore.builtin.system.parsers import PackageRead
from hostcore.builtin.system.schemas import SystemSettings, UnitAction
from hostcore.builtin.system.stats import StatsCollector, SystemStatsRead
from hostcore.errors import BadRequest, Forbidden, NotFound
from hostcore.responses import Encoded
from hostcore.runner import Runner

DEFAULT_LOG_LINES = 100


class SystemService:
    def __init__(
        self, config: SystemSettings, runner: Runner, *, shared_stats: Path | None = None
    ) -> None:
        """``shared_stats``: the file gunicorn's workers share one stats sample through."""
        self.config = config
        self.runner = runner
        self.bus = SystemBus(timeout_s=config.dbus_timeout_s)
        self.collector = StatsCollector(
            config.root, interval_s=config.stats_interval_s, shared=shared_stats
        )
        self._info = SystemInfoCache(config.root, hostcore_version=__version__)
        self._encoded_sample: SystemStatsRead | None = None
        self._encoded: Encoded | None = None
        # What hostnamed and timedated read their answers from, which others may change
        # without them (sethostname(2), an edited file, a new /etc/localtime link):
        # looked at on every read, a stat or a procfs read each.
        root = config.root
        self._kernel_hostname = str(root / HOSTNAME_FILES[0])
        self._name_files = [str(root / "etc/hostname"), str(root / "etc/machine-info")]
        self._localtime = str(root / "etc/localtime")

    async def start(self) -> None:
        await self.collector.start()

    async def stop(self) -> None:
        await self.collector.stop()
        await self.bus.close()

    def _require_allowed(self, unit: str) -> None:
        # Checked before anything is sent to systemd.
        if unit not in self.config.allowed_units:
            raise Forbidden(f"unit {unit} is not on the allowed-units list")

    async def info(self) -> SystemInfoRead:
        return await self._info.get()

    async def stats_sample(self) -> Encoded:
        """The newest sample as JSON, encoded once per sample: every consumer polling
        within one interval gets the same bytes (and the same ETag)."""
        sample = await self.collector.current()
        if sample is not self._encoded_sample:
            self._encoded = Encoded.of(sample)
            self._encoded_sample = sample
        assert self._encoded is not None
        return self._encoded

    async def units(self) -> list[UnitRead]:
        """Every allowed unit; one that is not installed shows as load_state not-found.

        Those systemd's signals keep current are answered at once; the others are read
        together (one task each)."""
        found: list[UnitRead | None] = []
        for name in self.config.allowed_units:
            try:
                found.append(self.bus.known_unit(name))
            except NotFound:
                found.append(_missing_unit(name))
        if all(unit is not None for unit in found):
            return [unit for unit in found if unit is not None]
        allowed = self.config.allowed_units
        names = [name for name, unit in zip(allowed, found, strict=True) if unit is None]
        read = iter(await asyncio.gather(*(self._unit_or_missing(name) for name in names)))
        return [unit if unit is not None else next(read) for unit in found]

    async def _unit_or_missing(self, name: str) -> UnitRead:
        try:
            return await self.bus.unit(name)
        except NotFound:
            return _missing_unit(name)

    async def unit(self, name: str) -> UnitRead:
        self._require_allowed(name)
        return await self.bus.unit(name)

    async def control(self, name: str, action: UnitAction) -> UnitJobRead:
        self._require_allowed(name)
        if action == "start":
            return await self.bus.start_unit(name)
        if action == "stop":
            return await self.bus.stop_unit(name)
        return await self.bus.restart_unit(name)

    async def power(self, action: str, delay_s: int) -> PowerActionRead:
        if delay_s > self.config.max_power_delay_s:
            raise BadRequest(f"delay_s may be at most {self.config.max_power_delay_s}")
        if action == "reboot":
            return await self.bus.reboot(delay_s)
        return await self.bus.power_off(delay_s)

    async def time(self) -> TimeRead:
        return await self.bus.time_settings(self._time_key())

    async def set_timezone(self, timezone: str) -> TimeRead:
        return await self.bus.set_timezone(timezone)

    async def hostname(self) -> HostnameRead:
        return await self.bus.hostname(self._names_key())

    def _names_key(self) -> Hashable:
        try:
            with open(self._kernel_hostname, "rb") as kernel:  # noqa: PTH123 - per request
                running: bytes | None = kernel.read(256)
        except OSError:
            running = None
        return running, *(file_state(path) for path in self._name_files)

    def _time_key(self) -> Hashable:
        # The link itself: a new zone is a new link (a new inode), its target unchanged.
        return file_state(self._localtime, follow_symlinks=False)

    async def set_hostname(self, name: str) -> HostnameRead:
        return await self.bus.set_hostname(name)

    async def logs(
        self, unit: str | None, priority: int | None, since: float | None, limit: int | None
    ) -> list[LogEntryRead]:
        if unit is not None:
            self._require_allowed(unit)
        limit = min(DEFAULT_LOG_LINES, self.config.logs_max_limit) if limit is None else limit
        if limit > self.config.logs_max_limit:
            raise BadRequest(f"limit may be at most {self.config.logs_max_limit}")
        # Without a unit, only the allowed units' entries: the journal holds more than
        # a consumer of this API should read.
        units = [unit] if unit is not None else list(self.config.allowed_units)
        return await read_logs(
            self.runner, units=units, priority=priority, since=since, limit=limit
        )

    async def packages(self) -> list[PackageRead]:
        return await asyncio.to_thread(installed_packages, self.config.root, self.config.packages)


def _missing_unit(name: str) -> UnitRead:
    """What a unit systemd does not know looks like in the list."""
    return UnitRead(
        name=name,
        description="",
        load_state="not-found",
        active_state="inactive",
        sub_state="dead",
        since=None,
    )
