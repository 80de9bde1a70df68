"""Activity: one row per request, buffered in memory and written in batches.

``record`` only appends to a list, so the request path never waits for the
store. A background task flushes every ``flush_interval_s`` (or sooner when
the buffer reaches ``batch_size``), and ``close`` flushes what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import NamedTuple

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.config import ActivitySettings
from hostcore.db.engine import Database, affected_rows
from hostcore.security.models import Activity

log = logging.getLogger(__name__)
MAX_BUFFER = 100_000
MAX_ATTEMPTS = 5


class ActivityRecord(NamedTuple):
    """One request; a tuple because one is made per request."""

    at: float
    request_id: str
    principal: str | None
    method: str
    route: str
    status: int
    duration_ms: float
    client: str | None


_COLUMNS = ActivityRecord._fields
_PLACEHOLDERS: dict[str, Callable[[int], str]] = {
    "qmark": lambda n: "?",
    "numeric_dollar": lambda n: f"${n}",
    "numeric": lambda n: f":{n}",
    "format": lambda n: "%s",
}


def _insert_sql(paramstyle: str) -> str:
    placeholder = _PLACEHOLDERS[paramstyle]
    values = ", ".join(placeholder(n) for n in range(1, len(_COLUMNS) + 1))
    return f"INSERT INTO activity ({', '.join(_COLUMNS)}) VALUES ({values})"  # noqa: S608


class ActivityRecorder:
    """Buffers records and writes them in batches from one background task."""

    def __init__(self, db: Database, settings: ActivitySettings) -> None:
        self.db = db
        self.settings = settings
        self._buffer: list[ActivityRecord] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self.dropped = 0

    def record(self, entry: ActivityRecord) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            # The store is far behind; losing rows beats exhausting memory.
            self.dropped += 1
            return
        self._buffer.append(entry)
        if len(self._buffer) >= self.settings.batch_size:
            self._wake.set()

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="hostcore-activity-writer")

    async def _run(self) -> None:
        while not self._closing:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                self._failures = 0
            except Exception:
                self._failures += 1
                if self._failures < MAX_ATTEMPTS:
                    log.exception("activity: writing a batch failed; it will be retried")
                    continue
                # A batch the store keeps refusing must not stop every later record.
                self.dropped += len(self._buffer)
                log.exception(
                    "activity: dropped %d records after %d failures",
                    len(self._buffer),
                    self._failures,
                )
                self._buffer = []
                self._failures = 0

    async def flush(self) -> int:
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        try:
            # Plain tuples through the driver's executemany: the ORM's per-row work
            # would cost more than the request being recorded.
            async with self.db.engine.begin() as connection:
                sql = _insert_sql(connection.dialect.paramstyle)
                await connection.exec_driver_sql(sql, batch)
        except BaseException:
            self._buffer = batch + self._buffer
            raise
        return len(batch)

    async def close(self) -> None:
        """Let the writer finish its batch (never cancel it mid-transaction), then flush."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await self._task
            self._task = None
        await self.flush()


async def apply_retention(session: AsyncSession, settings: ActivitySettings) -> int:
    """Delete rows older than the retention age, then the oldest beyond ``max_rows``."""
    cutoff = time.time() - settings.retention_days * 86400
    removed = affected_rows(await session.execute(delete(Activity).where(Activity.at < cutoff)))
    count = await session.scalar(select(func.count()).select_from(Activity)) or 0
    if count > settings.max_rows:
        boundary = await session.scalar(
            select(Activity.id).order_by(Activity.id.desc()).offset(settings.max_rows).limit(1)
        )
        if boundary is not None:
            result = await session.execute(delete(Activity).where(Activity.id <= boundary))
            removed += affected_rows(result)
    return removed
