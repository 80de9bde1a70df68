"""The store's files: the database and its WAL and shared-memory files are private."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from hostcore.db.engine import Database


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems run with: files 0644 unless a mode says otherwise."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


async def write_something(db: Database) -> None:
    async with db.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE IF NOT EXISTS t (x INTEGER)"))
        await connection.execute(text("INSERT INTO t VALUES (1)"))


async def test_the_database_its_wal_and_its_shm_are_0600(tmp_path: Path, usual_umask: None) -> None:
    path = tmp_path / "data" / "hostcore.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await write_something(db)
        assert mode(path.parent) == 0o700
        for name in ("hostcore.db", "hostcore.db-wal", "hostcore.db-shm"):
            assert mode(path.parent / name) == 0o600, name
    finally:
        await db.dispose()


async def test_a_readable_database_of_ours_is_tightened(tmp_path: Path, usual_umask: None) -> None:
    path = tmp_path / "hostcore.db"
    db = Database(f"sqlite+aiosqlite:///{path}")
    await write_something(db)
    await db.dispose()
    for name in ("hostcore.db", "hostcore.db-wal", "hostcore.db-shm"):
        if (tmp_path / name).exists():
            (tmp_path / name).chmod(0o644)
    again = Database(f"sqlite+aiosqlite:///{path}")
    try:
        await write_something(again)
        for name in ("hostcore.db", "hostcore.db-wal", "hostcore.db-shm"):
            assert mode(tmp_path / name) == 0o640, name
    finally:
        await again.dispose()
