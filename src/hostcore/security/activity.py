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
from typing import NamedTuple

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.config import ActivitySettings
from hostcore.db.engine import Database, affected_rows
from hostcore.security.models import Activity

log = logging.getLogger(__name__)
MAX_BUFFER = 100_000


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


class ActivityRecorder:
    def __init__(self, db: Database, settings: ActivitySettings) -> None:
        self.db = db
        self.settings = settings
        self._buffer: list[ActivityRecord] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
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
        self._task = asyncio.create_task(self._run(), name="hostcore-activity-writer")

    async def _run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.settings.flush_interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("activity: writing a batch failed; it will be retried")

    async def flush(self) -> int:
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        try:
            async with self.db.session() as session, session.begin():
                await session.execute(insert(Activity), [entry._asdict() for entry in batch])
        except Exception:
            self._buffer = batch + self._buffer
            raise
        return len(batch)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
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
