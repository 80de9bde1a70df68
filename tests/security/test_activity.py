"""The activity writer on its own: slices, a store another process is writing to, shutdown."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hostcore.config import ActivitySettings
from hostcore.db.engine import Database
from hostcore.db.migrate import lineages, migration_lock, upgrade
from hostcore.security import activity
from hostcore.security.activity import ActivityRecord, ActivityRecorder, StoreBusy
from tests.helpers import wait_until


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}", busy_timeout_ms=2000)
    async with migration_lock(database):
        await upgrade(database, lineages({}))
    yield database
    await database.dispose()


# Bounds a wait that only a hang would reach.
HANG_GUARD_S = 30.0

# Recent, so retention by age keeps the rows; whole eighths, so floats compare exactly.
RECENT = float(int(time.time()) - 3600)


def entry(n: int, principal: str | None = "client:tester") -> ActivityRecord:
    return ActivityRecord(
        at=RECENT + n / 8,
        request_id=f"req-{n}",
        principal=principal,
        method="GET",
        route="/api/v1/auth/whoami",
        status=200 if n % 7 else 429,
        duration_ms=0.125 * n,
        client="127.0.0.1" if n % 2 else None,
    )


def rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT at, request_id, principal, method, route, status, duration_ms, client "
            "FROM activity ORDER BY id"
        ).fetchall()


def store_file(db: Database) -> Path:
    assert db.url.database is not None
    return Path(db.url.database)


async def test_rows_are_written_exactly_in_order_across_slices(db: Database) -> None:
    recorder = ActivityRecorder(db, ActivitySettings(batch_size=100_000))
    count = activity.SLICE_ROWS * 3 + 5
    sent = [entry(n, principal=None if n % 5 == 0 else "client:tester") for n in range(count)]
    for record in sent:
        recorder.record(record)
    assert await recorder.flush() == count
    assert rows(store_file(db)) == [tuple(record) for record in sent]
    await recorder.close()


async def test_a_store_locked_by_another_writer_keeps_the_rows_and_does_not_wait(
    db: Database,
) -> None:
    recorder = ActivityRecorder(db, ActivitySettings())
    recorder.record(entry(1))
    holder = sqlite3.connect(store_file(db), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process mid-write
    try:
        with pytest.raises(StoreBusy):
            await recorder.flush()
        # The loop must not wait for the lock: the writer's connection never waits.
        assert recorder._sqlite is not None
        busy_timeout = recorder._sqlite._connect().execute("PRAGMA busy_timeout").fetchone()
        assert busy_timeout == (0,)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await recorder.flush() == 1
    assert [row[1] for row in rows(store_file(db))] == ["req-1"]
    await recorder.close()


async def test_the_writer_task_retries_a_busy_store_without_dropping(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = ActivityRecorder(db, ActivitySettings(flush_interval_s=0.05))
    busy: list[StoreBusy] = []
    real_flush = recorder.flush

    async def counted_flush() -> int:
        try:
            return await real_flush()
        except StoreBusy as exc:
            busy.append(exc)
            raise

    monkeypatch.setattr(recorder, "flush", counted_flush)
    holder = sqlite3.connect(store_file(db), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    recorder.start()
    try:
        for n in range(10):
            recorder.record(entry(n))
        await wait_until(lambda: len(busy) >= 3, HANG_GUARD_S, "flushes to meet the lock")
        assert rows(store_file(db)) == []
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    await wait_until(lambda: len(rows(store_file(db))) == 10, HANG_GUARD_S, "the ten rows")
    assert recorder.dropped == 0
    await recorder.close()


async def test_close_waits_out_a_short_lock_and_checkpoints(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints: list[int] = []
    original = activity._SqliteWriter.checkpoint

    def counting(writer: activity._SqliteWriter) -> None:
        checkpoints.append(len(rows(store_file(db))))
        original(writer)

    monkeypatch.setattr(activity._SqliteWriter, "checkpoint", counting)
    recorder = ActivityRecorder(db, ActivitySettings(flush_interval_s=60))
    recorder.start()
    for n in range(3):
        recorder.record(entry(n))
    holder = sqlite3.connect(store_file(db), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    asyncio.get_running_loop().call_later(0.2, holder.execute, "ROLLBACK")
    await recorder.close()
    holder.close()
    assert len(rows(store_file(db))) == 3
    assert checkpoints == [3], "one checkpoint, after the last rows"


async def test_the_wal_is_checkpointed_while_running(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activity, "SLICE_ROWS", 2)
    monkeypatch.setattr(activity, "CHECKPOINT_EVERY_SLICES", 3)
    recorder = ActivityRecorder(db, ActivitySettings())
    checkpoints = 0
    original = activity._SqliteWriter.checkpoint

    def counting(writer: activity._SqliteWriter) -> None:
        nonlocal checkpoints
        checkpoints += 1
        original(writer)

    monkeypatch.setattr(activity._SqliteWriter, "checkpoint", counting)
    for n in range(12):
        recorder.record(entry(n))
    assert await recorder.flush() == 12
    assert checkpoints == 2  # 6 slices of 2 rows, one checkpoint every 3
    await recorder.close()


async def test_a_failing_checkpoint_loses_no_rows(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(activity, "SLICE_ROWS", 2)
    recorder = ActivityRecorder(db, ActivitySettings())
    recorder.record(entry(0))
    assert await recorder.flush() == 1  # the writer's own connection is open from here on

    def broken(*args: object, **kwargs: object) -> sqlite3.Connection:
        raise sqlite3.OperationalError("disk I/O error")

    # Only the checkpoint opens a connection now.
    monkeypatch.setattr(activity.sqlite3, "connect", broken)
    monkeypatch.setattr(activity, "CHECKPOINT_EVERY_SLICES", 1)
    for n in range(1, 7):
        recorder.record(entry(n))
    assert await recorder.flush() == 6
    monkeypatch.undo()
    assert len(rows(store_file(db))) == 7
    assert "WAL checkpoint failed" in caplog.text
    await recorder.close()


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        found: int = connection.execute("SELECT count(*) FROM activity").fetchone()[0]
        return found


async def test_rows_past_max_rows_go_as_new_rows_arrive(db: Database) -> None:
    settings = ActivitySettings(batch_size=100_000, max_rows=1000)
    recorder = ActivityRecorder(db, settings)
    now = time.time()
    sent = activity.PRUNE_EVERY_ROWS + 200
    for n in range(sent):
        recorder.record(entry(n)._replace(at=now))
    assert await recorder.flush() == sent
    kept = rows(store_file(db))
    assert len(kept) == 1000
    assert kept[0][1] == f"req-{sent - 1000}" and kept[-1][1] == f"req-{sent - 1}"


async def test_rows_older_than_the_retention_age_go(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activity, "PRUNE_EVERY_ROWS", 1)
    recorder = ActivityRecorder(db, ActivitySettings(batch_size=100_000, retention_days=30))
    now = time.time()
    for n in range(5):
        recorder.record(entry(n)._replace(at=now - 31 * 86400))
    for n in range(5, 8):
        recorder.record(entry(n)._replace(at=now))
    await recorder.flush()
    assert [row[1] for row in rows(store_file(db))] == ["req-5", "req-6", "req-7"]


async def test_retention_work_per_batch_is_bounded(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table far past its limit shrinks over several batches, not in one long stall."""
    monkeypatch.setattr(activity, "PRUNE_EVERY_ROWS", 1)
    path = store_file(db)
    now = time.time()
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO activity (at, request_id, principal, method, route, status,"
            " duration_ms, client) VALUES (?, ?, NULL, 'GET', '/x', 200, 0.1, NULL)",
            [(now, f"old-{n}") for n in range(3000)],
        )
    recorder = ActivityRecorder(db, ActivitySettings(batch_size=100_000, max_rows=1000))
    recorder.record(entry(0)._replace(at=now))
    await recorder.flush()
    assert count_rows(path) == 3001 - (1 + activity.PRUNE_SLACK_ROWS)
    while count_rows(path) > 1000:
        recorder.record(entry(1)._replace(at=now))
        await recorder.flush()
    assert count_rows(path) == 1000


def test_the_table_has_no_index_but_its_id(db: Database) -> None:
    """Every request writes a row: an index on ``at`` was more than half of that work."""
    with sqlite3.connect(store_file(db)) as connection:
        indexes = connection.execute("PRAGMA index_list('activity')").fetchall()
    assert indexes == []


def test_the_lowest_and_highest_id_are_read_without_scanning_the_table(db: Database) -> None:
    """Retention asks for both ends of the ids once every PRUNE_EVERY_ROWS rows. SQLite
    scans the whole table for ``SELECT max(id), min(id)`` (its min/max shortcut takes a
    single aggregate), which cost every request more as the table grew."""
    from sqlalchemy.dialects import sqlite

    statement = activity.id_bounds_query().compile(
        dialect=sqlite.dialect(), compile_kwargs={"literal_binds": True}
    )
    with sqlite3.connect(store_file(db)) as connection:
        connection.executemany(
            "INSERT INTO activity (at, request_id, method, route, status, duration_ms) "
            "VALUES (?, 'r', 'GET', '/', 200, 0)",
            [(RECENT + n,) for n in range(5)],
        )
        # "SCAN activity", or "SCAN TABLE activity" before SQLite 3.36.
        scan = re.compile(r"SCAN (TABLE )?activity\b")
        for sql in (activity.ID_BOUNDS_SQL, str(statement)):
            plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}")]
            assert plan, sql
            assert not [step for step in plan if scan.match(step)], plan
            assert connection.execute(sql).fetchone() == (5, 1)
        # What the plan check tells apart: both aggregates in one query scan.
        plan = connection.execute("EXPLAIN QUERY PLAN SELECT max(id), min(id) FROM activity")
        assert [step for (_, _, _, step) in plan if scan.match(step)]


async def test_first_id_since_finds_a_time_range_by_bisecting_ids_with_gaps(
    any_store: Database,
) -> None:
    from sqlalchemy import insert

    from hostcore.security.models import Activity

    # Gaps where retention deleted rows, and runs of rows with the same time.
    table = [(n, RECENT + n // 3) for n in range(5, 400) if n % 11 and n % 13]
    async with any_store.session() as session, session.begin():
        await session.execute(
            insert(Activity),
            [
                {"id": row_id, "at": at, "request_id": f"r-{row_id}", "principal": None}
                | {"method": "GET", "route": "/x", "status": 200, "duration_ms": 0.1}
                | {"client": None}
                for row_id, at in table
            ],
        )
    async with any_store.session() as session:
        for since in [RECENT - 5, RECENT, RECENT + 0.5, *(RECENT + k for k in range(1, 140, 7))]:
            expected = next((row_id for row_id, at in table if at >= since), None)
            assert await activity.first_id_since(session, since) == expected, since
        assert await activity.first_id_since(session, RECENT + 10_000) is None


async def test_first_id_since_in_an_empty_table_is_none(db: Database) -> None:
    async with db.session() as session:
        assert await activity.first_id_since(session, 0.0) is None


async def test_retention_by_age_looks_at_the_oldest_rows_only(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Retention walks the lowest ids (rows are written in time order), a bounded number
    of them: an aged row written after the clock was stepped back waits for the rows
    before it, but goes once it is among the oldest."""
    monkeypatch.setattr(activity, "PRUNE_EVERY_ROWS", 1)
    monkeypatch.setattr(activity, "PRUNE_SLACK_ROWS", 2)
    recorder = ActivityRecorder(db, ActivitySettings(batch_size=100_000, retention_days=30))
    now = time.time()
    aged = now - 31 * 86400
    for n in range(4):
        recorder.record(entry(n)._replace(at=aged))
    for n in range(4, 10):
        recorder.record(entry(n)._replace(at=now))
    recorder.record(entry(10)._replace(at=aged))  # after a step back of the clock
    await recorder.flush()  # looks at the first 11 + 2 rows: all of them
    assert [row[1] for row in rows(store_file(db))] == [f"req-{n}" for n in range(4, 10)]


async def test_the_activity_queries_answer_a_time_range_from_its_first_id(db: Database) -> None:
    from hostcore.builtin.auth import service

    # As several workers write: one flushed its rows of 50-54 s before another its rows
    # of 10-49 s, so ids are in time order only roughly.
    order = [*range(10), *range(50, 55), *range(10, 50)]
    with sqlite3.connect(store_file(db)) as connection:
        connection.executemany(
            "INSERT INTO activity (at, request_id, principal, method, route, status,"
            " duration_ms, client) VALUES (?, ?, ?, 'GET', '/x', 200, 0.5, NULL)",
            [(RECENT + n, f"r-{n}", "client:a" if n % 2 else "client:b") for n in order],
        )
    async with db.session() as session:
        late = await service.query_activity(
            session, principal=None, since=RECENT + 45, status=None, limit=100
        )
        assert sorted(row.request_id for row in late) == sorted(f"r-{n}" for n in range(45, 55))
        found = await service.query_activity(
            session, principal="client:a", since=RECENT + 40, status=None, limit=100
        )
        newest_first = (49, 47, 45, 43, 41, 53, 51)  # by id: the order they were written
        assert [row.request_id for row in found] == [f"r-{n}" for n in newest_first]
        stats = await service.activity_stats(session, since=RECENT + 45)
        assert {(s.principal, s.requests) for s in stats} == {("client:a", 5), ("client:b", 5)}
        assert (
            await service.query_activity(
                session, principal=None, since=RECENT + 55, status=None, limit=100
            )
            == []
        )
        assert await service.activity_stats(session, since=RECENT + 55) == []


async def test_first_id_since_while_retention_deletes_the_rows_is_none(db: Database) -> None:
    """Another worker's retention may delete the rows between the lookups: no row, no 500."""
    path = store_file(db)
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO activity (at, request_id, principal, method, route, status,"
            " duration_ms, client) VALUES (?, 'r', NULL, 'GET', '/x', 200, 0.1, NULL)",
            [(RECENT + n,) for n in range(8)],
        )
    async with db.session() as session:
        execute = session.execute
        calls = 0

        async def deleting_after_the_first(statement: Any, *args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            result = await execute(statement, *args, **kwargs)
            calls += 1
            if calls == 1:
                with sqlite3.connect(path) as other:
                    other.execute("DELETE FROM activity")
            return result

        session.execute = deleting_after_the_first  # type: ignore[method-assign]
        assert await activity.first_id_since(session, RECENT + 3) is None


async def test_retention_through_the_engine_takes_the_oldest_rows_a_bounded_slice_at_a_time(
    any_store: Database,
) -> None:
    """The path of stores other than a SQLite file (PostgreSQL): aged rows among the
    oldest ``limit``, then the oldest beyond ``max_rows``, at most ``limit`` of each."""
    from sqlalchemy import func, insert, select

    from hostcore.security.models import Activity

    now = time.time()
    aged = now - 31 * 86400
    times = [aged] * 6 + [now] * 1100
    async with any_store.session() as session, session.begin():
        await session.execute(
            insert(Activity),
            [
                {"at": at, "request_id": f"r-{n}", "principal": None, "method": "GET"}
                | {"route": "/x", "status": 200, "duration_ms": 0.1, "client": None}
                for n, at in enumerate(times)
            ],
        )
    settings = ActivitySettings(retention_days=30, max_rows=1000)

    async def remaining() -> tuple[int, str]:
        async with any_store.session() as session:
            count = await session.scalar(select(func.count()).select_from(Activity))
            first = await session.scalar(select(Activity.request_id).order_by(Activity.id))
        return int(count or 0), str(first)

    async with any_store.session() as session, session.begin():
        assert await activity.apply_retention(session, settings, limit=4) == 4 + 4
    assert await remaining() == (1098, "r-8")
    async with any_store.session() as session, session.begin():
        await activity.apply_retention(session, settings)
    assert await remaining() == (1000, "r-106")


async def test_an_idle_writer_does_not_wake_and_a_row_is_written_within_the_interval(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = ActivityRecorder(db, ActivitySettings(flush_interval_s=0.05))
    flushes: list[int] = []
    real_flush = recorder.flush

    async def counted_flush() -> int:
        flushes.append(len(recorder._buffer))
        return await real_flush()

    monkeypatch.setattr(recorder, "flush", counted_flush)
    recorder.start()
    try:
        await asyncio.sleep(0.3)  # six intervals with nothing to write
        assert flushes == []
        recorder.record(entry(1))
        await wait_until(lambda: len(rows(store_file(db))) == 1, HANG_GUARD_S, "the row")
        await asyncio.sleep(0.3)
        assert len(flushes) <= 2, "back to sleep once the buffer is empty"
    finally:
        await recorder.close()


async def test_an_idle_store_still_loses_its_old_rows_within_the_idle_period(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(activity, "IDLE_PRUNE_EVERY_S", 0.2)
    path = store_file(db)
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO activity (at, request_id, principal, method, route, status,"
            " duration_ms, client) VALUES (?, ?, NULL, 'GET', '/x', 200, 0.1, NULL)",
            [(time.time() - 31 * 86400, f"old-{n}") for n in range(3)],
        )
    recorder = ActivityRecorder(db, ActivitySettings(retention_days=30))
    recorder.start()
    try:
        await wait_until(lambda: rows(path) == [], HANG_GUARD_S, "the idle prune")
    finally:
        await recorder.close()
