"""The per-username lockout count in the store, on SQLite and (when given) PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from hostcore.config import AuthSettings
from hostcore.db.engine import Database
from hostcore.security import lockout

SETTINGS = AuthSettings(login_max_failures=3, login_failure_window_s=900, login_lockout_s=300)
NOW = 1_800_000_000.0


@pytest.fixture
def db(any_store: Database) -> Database:
    return any_store


async def fail(db: Database, username: str, at: float) -> None:
    async with db.session() as session, session.begin():
        await lockout.record_failure(session, username, at, SETTINGS)


async def lock_ends(db: Database, username: str, at: float) -> float | None:
    async with db.session() as session:
        return lockout.lock_ends(await lockout.find(session, username), at)


async def test_the_limit_within_the_window_locks_for_the_lockout(db: Database) -> None:
    await fail(db, "alice", NOW)
    await fail(db, "alice", NOW + 10)
    assert await lock_ends(db, "alice", NOW + 11) is None
    await fail(db, "alice", NOW + 20)
    assert await lock_ends(db, "alice", NOW + 21) == NOW + 20 + 300
    assert await lock_ends(db, "alice", NOW + 320) is None, "the lockout ends"
    assert await lock_ends(db, "bob", NOW + 21) is None


async def test_failures_spread_beyond_the_window_do_not_lock(db: Database) -> None:
    for index in range(6):
        await fail(db, "alice", NOW + index * 500)
    assert await lock_ends(db, "alice", NOW + 2501) is None


async def test_concurrent_failures_are_all_counted(db: Database) -> None:
    await asyncio.gather(*(fail(db, "alice", NOW) for _ in range(3)))
    assert await lock_ends(db, "alice", NOW + 1) == NOW + 300


async def attempt(db: Database, username: str, at: float) -> float | None:
    async with db.session() as session, session.begin():
        return await lockout.attempt(session, username, at, SETTINGS)


async def test_of_attempts_sent_at_once_only_the_limit_go_ahead(db: Database) -> None:
    """Each is counted before its password is checked, so a burst cannot slip past."""
    outcomes = await asyncio.gather(*(attempt(db, "alice", NOW) for _ in range(10)))
    assert outcomes.count(None) == SETTINGS.login_max_failures
    assert set(outcomes) - {None} == {NOW + 300}


async def test_an_attempt_on_a_locked_username_is_refused_and_not_counted(db: Database) -> None:
    for _ in range(3):
        assert await attempt(db, "alice", NOW) is None
    for later in (NOW + 10, NOW + 299):
        assert await attempt(db, "alice", later) == NOW + 300, "the lock is not extended"
    assert await attempt(db, "alice", NOW + 300) is None, "the lock has ended"
    assert await attempt(db, "alice", NOW + 301) is None
    assert await attempt(db, "alice", NOW + 302) is None, "three more to the next lock"
    assert await attempt(db, "alice", NOW + 303) == NOW + 302 + 300


async def test_clear_forgets_the_count(db: Database) -> None:
    await fail(db, "alice", NOW)
    await fail(db, "alice", NOW)
    async with db.session() as session, session.begin():
        await lockout.clear(session, "alice")
    await fail(db, "alice", NOW)
    assert await lock_ends(db, "alice", NOW + 1) is None


async def test_prune_forgets_stale_counts_and_keeps_locks(db: Database) -> None:
    await fail(db, "stale", NOW)
    for _ in range(3):
        await fail(db, "locked", NOW + 800)
    await fail(db, "recent", NOW + 1000)
    async with db.session() as session, session.begin():
        assert await lockout.prune(session, NOW + 1000, SETTINGS) == 1
    async with db.session() as session:
        assert await lockout.find(session, "stale") is None
        assert await lockout.find(session, "locked") is not None
        assert await lockout.find(session, "recent") is not None
