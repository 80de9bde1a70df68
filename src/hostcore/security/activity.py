"""Activity: one row per request, buffered in memory and written in batches.

``record`` only appends to a list, so the request path never waits for the
store. A background task flushes every ``flush_interval_s`` (or sooner when
the buffer reaches ``batch_size``), and ``close`` flushes what is left.

How a batch reaches the store is the hot part, measured with
``bench/auth.py``: it runs once per few hundred requests, but every request
pays for it.

- A SQLite file gets its own plain ``sqlite3`` connection, used from a thread:
  each slice of at most ``SLICE_ROWS`` rows is ONE multi-row ``INSERT`` in one
  transaction. SQLite runs a statement with the GIL released, so inserting the
  rows (the B-tree work, several microseconds a row) happens beside the event
  loop, not on it, and the thread takes the GIL back once per slice. (An
  ``executemany``, in a thread or through the aiosqlite driver, takes it back
  after every row, and each hand-over waits for the loop's thread; on the loop
  it cost every request the row's insert.) The connection never waits for a
  lock (``busy_timeout=0``): when another process is writing, the slice is
  retried moments later. The WAL checkpoint, which may ``fsync``, runs in a
  thread with its own connection.
- Any other store (PostgreSQL, in-memory SQLite) goes through the engine's
  driver with ``executemany``.

Retention (``retention_days``, ``max_rows``) is enforced as the rows come in:
once every ``PRUNE_EVERY_ROWS`` rows written the writer deletes the rows past
either limit, a bounded slice at a time (as many as it wrote since, and some),
oldest first, so the table never grows past its limits by more than that many
rows, however fast requests arrive; an idle store is checked once a minute.
Row ids only grow, so "past ``max_rows``" is an id comparison, not a count. The
lowest and highest id are asked as two subqueries (:data:`ID_BOUNDS_SQL`,
:func:`id_bounds`): SQLite reads one end of the row id's B-tree for a query with a
single ``min()`` or ``max()``, but scans the whole table for a query with both, and a
full table scan once every ``PRUNE_EVERY_ROWS`` rows cost every request more as the
table grew (``bench/deploy.py`` showed it: a tenth of a worker's time at 500,000 rows).

The table has no index but its row id: an index on ``at`` was more than half of
the work of writing a row. Rows are written in about time order (each worker
writes what it buffered once per ``flush_interval_s``, so the rows of several
workers interleave by that much), so the ids order them by time, roughly:
retention looks at the lowest ids only, and a time range is searched from the id
:func:`first_id_since` finds by bisecting the ids (about twenty lookups of a row
by its id for a million rows) for ``WRITTEN_WITHIN_S`` before the range, then
filtered by time. After the clock is stepped back, rows are no longer in time
order across the step: retention then waits for the rows written before it, and
a range that begins before the step may begin at it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.config import ActivitySettings
from hostcore.db.engine import Database, affected_rows, sqlite_path
from hostcore.security.models import Activity

log = logging.getLogger(__name__)
MAX_BUFFER = 100_000
MAX_ATTEMPTS = 5
# Rows per SQLite transaction: 124 rows of 8 values stay within the 999 parameters an
# SQLite older than 3.32 takes in one statement.
SLICE_ROWS = 124
CHECKPOINT_EVERY_SLICES = 64
LOCKED_RETRY_S = 0.02
PRUNE_EVERY_ROWS = 1024
PRUNE_SLACK_ROWS = 128  # deleted per pass beyond the rows written since the last one
IDLE_PRUNE_EVERY_S = 60.0
# A row reaches the store within flush_interval_s (60 s at most) of its time, the
# retries of a busy store included, in all but a failing store's case.
WRITTEN_WITHIN_S = 120.0


class ActivityRecord(NamedTuple):
    """One request, field by field. The request path records a plain tuple of these
    fields (an :data:`ActivityRow`): one is made per request."""

    at: float
    request_id: str
    principal: str | None
    method: str
    route: str
    status: int
    duration_ms: float
    client: str | None


ActivityRow = tuple[float, str, str | None, str, str, int, float, str | None]
_COLUMNS = ActivityRecord._fields
_INSERT = f"INSERT INTO activity ({', '.join(_COLUMNS)}) VALUES "  # noqa: S608
_PLACEHOLDERS: dict[str, Callable[[int], str]] = {
    "qmark": lambda n: "?",
    "numeric_dollar": lambda n: f"${n}",
    "numeric": lambda n: f":{n}",
    "format": lambda n: "%s",
}


def _insert_sql(paramstyle: str) -> str:
    placeholder = _PLACEHOLDERS[paramstyle]
    return _INSERT + "(" + ", ".join(placeholder(n) for n in range(1, len(_COLUMNS) + 1)) + ")"


class StoreBusy(Exception):
    """Another connection holds the write lock; try again shortly."""


def _begin(connection: sqlite3.Connection) -> None:
    """Take the write lock now, or raise StoreBusy: another connection holds it."""
    try:
        connection.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF in (
            sqlite3.SQLITE_BUSY,
            sqlite3.SQLITE_LOCKED,
        ):
            raise StoreBusy(str(exc)) from None
        raise


# Highest and lowest id, each read from its end of the row id's B-tree (module docstring).
ID_BOUNDS_SQL = "SELECT (SELECT max(id) FROM activity), (SELECT min(id) FROM activity)"


def id_bounds_query() -> Any:
    """The highest and lowest id, as :data:`ID_BOUNDS_SQL` asks them (a ``Select``)."""
    return select(
        select(func.max(Activity.id)).scalar_subquery(),
        select(func.min(Activity.id)).scalar_subquery(),
    )


async def id_bounds(session: AsyncSession) -> tuple[int | None, int | None]:
    """The highest and lowest id; both None in an empty table."""
    newest, oldest = (await session.execute(id_bounds_query())).one()
    return newest, oldest


def _prune_sqlite(connection: sqlite3.Connection, cutoff: float, max_rows: int, limit: int) -> int:
    # The oldest rows are the lowest ids: look at the first ``limit`` of them only.
    aged = connection.execute(
        "DELETE FROM activity WHERE id IN (SELECT id FROM "
        "(SELECT id, at FROM activity ORDER BY id LIMIT ?) WHERE at < ?)",
        (limit, cutoff),
    ).rowcount
    newest, oldest = connection.execute(ID_BOUNDS_SQL).fetchone()
    if newest is None or newest - oldest < max_rows:
        return int(aged)
    boundary = min(newest - max_rows, oldest + limit - 1)
    counted = connection.execute("DELETE FROM activity WHERE id <= ?", (boundary,)).rowcount
    return int(aged + counted)


def _multi_row_insert(rows: int) -> str:
    one = "(" + ", ".join("?" * len(_COLUMNS)) + ")"
    return _INSERT + ", ".join([one] * rows)


class _SqliteWriter:
    """Slices of rows into one SQLite file, never waiting for a lock. Its methods block:
    call them from a thread, one at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connection: sqlite3.Connection | None = None
        self._slices = 0
        self._insert_sql: dict[int, str] = {}

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            # The schema (and WAL mode, a property of the file) come from the migrations.
            # Used from worker threads, one call at a time (the recorder awaits each).
            connection = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute("PRAGMA wal_autocheckpoint=0")  # see checkpoint()
            self._connection = connection
        return self._connection

    def write(self, rows: list[ActivityRow]) -> None:
        """One transaction, one statement: the GIL is released while SQLite inserts."""
        connection = self._connect()
        sql = self._insert_sql.get(len(rows))
        if sql is None:
            sql = self._insert_sql[len(rows)] = _multi_row_insert(len(rows))
        values = [value for row in rows for value in row]
        _begin(connection)
        try:
            connection.execute(sql, values)
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        self._slices += 1

    def prune(self, cutoff: float, max_rows: int, limit: int) -> int:
        """Delete up to ``limit`` rows older than ``cutoff`` or past the newest
        ``max_rows``, oldest first; how many went. Raises StoreBusy like ``write``."""
        connection = self._connect()
        _begin(connection)
        try:
            removed = _prune_sqlite(connection, cutoff, max_rows, limit)
            connection.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                connection.execute("ROLLBACK")
            raise
        return removed

    def checkpoint_due(self) -> bool:
        return self._slices >= CHECKPOINT_EVERY_SLICES

    def checkpoint(self) -> None:
        """Copy the WAL back into the file. It may fsync: call it from a thread. Its own
        connection, so the loop's writes never share one with a thread. A failure is
        logged, never raised: the rows are written, and the next checkpoint catches up."""
        self._slices = 0
        try:
            connection = sqlite3.connect(self.path, timeout=0, isolation_level=None)
            try:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            finally:
                connection.close()
        except sqlite3.Error:
            log.exception("activity: WAL checkpoint failed; the next one retries")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


class ActivityRecorder:
    """Buffers records and writes them in batches from one background task."""

    def __init__(self, db: Database, settings: ActivitySettings) -> None:
        self.db = db
        self.settings = settings
        self._buffer: list[ActivityRow] = []
        self._wake = asyncio.Event()
        self._arrived = asyncio.Event()  # a row came into an empty buffer
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._failures = 0
        self._pruned_at = time.monotonic()
        self._unpruned = 0
        self.dropped = 0
        path = sqlite_path(db.url)
        self._sqlite = _SqliteWriter(path) if path is not None else None

    def record(self, entry: ActivityRow) -> None:
        if len(self._buffer) >= MAX_BUFFER:
            # The store is far behind; losing rows beats exhausting memory.
            self.dropped += 1
            return
        if not self._buffer:
            self._arrived.set()
        self._buffer.append(entry)
        if len(self._buffer) >= self.settings.batch_size:
            self._wake.set()

    def start(self) -> None:
        # A new event per start: an event belongs to the loop that first waits on it,
        # and an app may be started again in another loop (tests, a restarted server).
        self._wake = asyncio.Event()
        self._arrived = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="hostcore-activity-writer")

    async def _run(self) -> None:
        while not self._closing:
            if not self._buffer:
                # Nothing to write: sleep until a row comes, or the idle store's retention
                # check is due (an idle server wakes once a minute, not every interval),
                # then at most flush_interval_s for more rows to join it.
                due = IDLE_PRUNE_EVERY_S - (time.monotonic() - self._pruned_at)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(due, 0.0)):
                        await self._arrived.wait()
                self._arrived.clear()
                if self._closing:
                    break
                if not self._buffer:
                    await self._prune_idle()
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.flush_interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                self._failures = 0
            except StoreBusy:
                await asyncio.sleep(LOCKED_RETRY_S)  # not a failure: another writer's turn
                self._wake.set()
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
        """Write what is buffered, then apply retention; rows that could not be written
        stay buffered."""
        written = await self._write_buffer()  # counts into _unpruned slice by slice
        if (
            self._unpruned >= PRUNE_EVERY_ROWS
            or time.monotonic() - self._pruned_at >= IDLE_PRUNE_EVERY_S
        ):
            await self.prune(self._unpruned + PRUNE_SLACK_ROWS)
            self._pruned_at = time.monotonic()
            self._unpruned = 0
        return written

    async def _prune_idle(self) -> None:
        try:
            await self.flush()
        except StoreBusy:
            self._pruned_at = time.monotonic() - IDLE_PRUNE_EVERY_S + LOCKED_RETRY_S
        except Exception:
            log.exception("activity: applying retention failed; retried in a minute")
            self._pruned_at = time.monotonic()

    async def prune(self, limit: int) -> int:
        """Delete up to ``limit`` rows past the retention limits, oldest first."""
        cutoff = time.time() - self.settings.retention_days * 86400
        max_rows = self.settings.max_rows
        if self._sqlite is not None:
            removed = 0
            while removed < limit:
                step = await asyncio.to_thread(
                    self._sqlite.prune, cutoff, max_rows, min(SLICE_ROWS, limit - removed)
                )
                removed += step
                if not step:
                    break
            return removed
        async with self.db.session() as session, session.begin():
            return await apply_retention(session, self.settings, limit=limit)

    async def _write_buffer(self) -> int:
        if self._sqlite is None:
            return await self._flush_engine()
        written = 0
        # The rows buffered now, and not those that arrive meanwhile: they wait for the next
        # flush (batch_size rows or flush_interval_s). A writer chasing them under load
        # writes ever smaller slices, each a transaction and a thread's round trip.
        due = len(self._buffer)
        while written < due and self._buffer:
            batch = self._buffer[: min(SLICE_ROWS, due - written)]
            await asyncio.to_thread(self._sqlite.write, batch)  # raises with the rows buffered
            del self._buffer[: len(batch)]
            written += len(batch)
            self._unpruned += len(batch)  # also when a later slice finds the store busy
            if self._sqlite.checkpoint_due():
                await asyncio.to_thread(self._sqlite.checkpoint)
        return written

    async def _flush_engine(self) -> int:
        if not self._buffer:
            return 0
        batch, self._buffer = self._buffer, []
        try:
            # Plain tuples, not the ORM: its per-row work would cost more than the
            # request being recorded.
            async with self.db.engine.begin() as connection:
                sql = _insert_sql(connection.dialect.paramstyle)
                await connection.exec_driver_sql(sql, batch)
        except BaseException:
            self._buffer = batch + self._buffer
            raise
        self._unpruned += len(batch)
        return len(batch)

    async def close(self) -> None:
        """Let the writer finish its batch (never cancel it mid-transaction), then flush."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            self._arrived.set()
            await self._task
            self._task = None
        try:
            deadline = time.monotonic() + self.db.busy_timeout_s
            while True:
                try:
                    await self.flush()
                    if not self._buffer:  # rows recorded while it wrote: one more
                        break
                    continue
                except StoreBusy:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(LOCKED_RETRY_S)
        finally:
            if self._sqlite is not None:
                self._sqlite.close()
                await asyncio.to_thread(self._sqlite.checkpoint)


async def apply_retention(
    session: AsyncSession, settings: ActivitySettings, *, limit: int | None = None
) -> int:
    """Delete rows older than the retention age, then the oldest beyond ``max_rows``
    (at most ``limit`` of each when given); how many went."""
    cutoff = time.time() - settings.retention_days * 86400
    if limit is None:
        aged = select(Activity.id).where(Activity.at < cutoff)
    else:
        # The oldest rows are the lowest ids: look at the first ``limit`` of them only.
        head = select(Activity.id, Activity.at).order_by(Activity.id).limit(limit).subquery()
        aged = select(head.c.id).where(head.c.at < cutoff)
    removed = affected_rows(
        await session.execute(delete(Activity).where(Activity.id.in_(aged.scalar_subquery())))
    )
    newest, oldest = await id_bounds(session)
    if newest is None or oldest is None or newest - oldest < settings.max_rows:
        return removed
    boundary = newest - settings.max_rows
    if limit is not None:
        boundary = min(boundary, oldest + limit - 1)
    result = await session.execute(delete(Activity).where(Activity.id <= boundary))
    return removed + affected_rows(result)


async def first_id_since(session: AsyncSession, since: float) -> int | None:
    """The id of the first row whose time is ``since`` or later, None when there is none;
    found by bisecting the ids, as rows are written in about time order. A query for the
    rows since a time starts WRITTEN_WITHIN_S before it (:func:`range_start`)."""
    high, low = await id_bounds(session)
    if high is None or low is None:
        return None

    async def first_from(start: int) -> tuple[int, float] | None:
        # Ids have gaps where retention deleted rows: the first row at or after ``start``
        # (None: retention, in this or another process, has just deleted the rest).
        statement = (
            select(Activity.id, Activity.at)
            .where(Activity.id >= start)
            .order_by(Activity.id)
            .limit(1)
        )
        found = (await session.execute(statement)).first()
        return None if found is None else (int(found[0]), float(found[1]))

    while low < high:
        middle = (low + high) // 2
        found = await first_from(middle)
        if found is None or found[1] >= since:
            high = middle
        else:
            low = middle + 1
    found = await first_from(low)
    return found[0] if found is not None and found[1] >= since else None


async def range_start(session: AsyncSession, since: float) -> int | None:
    """The id from which every row of time ``since`` or later is found (filter by time
    from there), None when no row is that recent: rows of several workers are written
    out of order by up to WRITTEN_WITHIN_S."""
    return await first_id_since(session, since - WRITTEN_WITHIN_S)
