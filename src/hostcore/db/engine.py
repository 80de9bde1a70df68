"""Engine and sessions. SQLite gets WAL, a busy timeout and foreign keys on every connection."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InvalidRequestError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from hostcore.config import Settings
from hostcore.errors import ConfigError, Unavailable
from hostcore.files import PRIVATE_DIRECTORY, checked_file, private_file
from hostcore.redaction import redact_database_url

# The page cache of one SQLite connection (SQLite's default is 2000 KiB).
SQLITE_CACHE_KIB = 512
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def affected_rows(result: object) -> int:
    """Rows an UPDATE/DELETE touched (the async Result type hides ``rowcount``)."""
    return int(getattr(result, "rowcount", 0) or 0)


def sqlite_path(url: URL) -> Path | None:
    """The database file of a SQLite URL (None for other backends and in-memory)."""
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


class Database:
    """One engine and session factory per process (per worker)."""

    def __init__(self, url: str, *, pool_size: int = 5, busy_timeout_ms: int = 5000) -> None:
        try:
            self.url = make_url(url)
        except Exception as exc:
            raise ConfigError(f"database.url is not a valid database URL: {exc}") from None
        self.busy_timeout_s = busy_timeout_ms / 1000
        # A statement's parameters (a password hash, a jti) never appear in an error's
        # text, which the log keeps.
        options: dict[str, Any] = {"pool_pre_ping": False, "hide_parameters": True}
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        path = sqlite_path(self.url)
        if path is not None:
            _private_store(path)
        if self.is_sqlite:
            options["connect_args"] = {"timeout": busy_timeout_ms / 1000}
        if path is not None or not self.is_sqlite:
            options["pool_size"] = pool_size
            options["max_overflow"] = pool_size
        try:
            self.engine: AsyncEngine = create_async_engine(self.url, **options)
        except (ImportError, ArgumentError, InvalidRequestError, ValueError) as exc:
            # A URL whose driver is not installed (postgresql:// without +asyncpg, or
            # asyncpg missing), a synchronous driver (sqlite:// without +aiosqlite), or
            # options the dialect refuses.
            hint = ""
            if isinstance(exc, ImportError) and exc.name == "asyncpg":
                hint = " (install hostcore's PostgreSQL support: pip install 'hostcore[postgres]')"
            raise ConfigError(
                f"database.url {self.describe()} cannot be used: {type(exc).__name__}: {exc}{hint}"
            ) from None
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas(busy_timeout_ms))
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Database:
        return cls(
            settings.database_url(),
            pool_size=settings.database.pool_size,
            busy_timeout_ms=settings.database.busy_timeout_ms,
        )

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def check(self) -> None:
        """Connect once; ``Unavailable``, naming the store, when that fails."""
        try:
            async with self.engine.connect():
                pass
        except (OSError, SQLAlchemyError) as exc:
            # A DBAPI error's own text would add the statement and a link; its cause is enough.
            reason = exc.orig if isinstance(exc, DBAPIError) else exc
            raise Unavailable(f"cannot open the store {self.describe()}: {reason}") from exc

    def describe(self) -> str:
        """The URL without its credentials (password, ``?password=``, …), for logs."""
        return redact_database_url(self.url)


def _private_store(path: Path) -> None:
    """The database file exists before SQLite opens it, so it is 0600 rather than the
    umask's 0644; SQLite gives its -wal and -shm files the database file's mode. The
    directory is checked as the data directory when it is one (``hostcore serve``)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIRECTORY)
    except OSError as exc:
        message = f"cannot create the database directory {path.parent}: {exc.strerror}"
        raise ConfigError(message) from None
    private_file(path, what="database")
    for suffix in ("-wal", "-shm"):
        checked_file(path.with_name(path.name + suffix), what="database file")


def _sqlite_pragmas(busy_timeout_ms: int) -> Any:
    def apply(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA foreign_keys=ON")
        # FULL: a commit is on the disk before it is answered (a token, a key, a revocation
        # must survive a power cut; WAL's NORMAL may roll the last ones back). These
        # writes are few; the activity table has its own writer, where NORMAL is enough.
        cursor.execute("PRAGMA synchronous=FULL")
        # Each connection keeps its own page cache, 2 MiB by default, filled as the
        # activity table grows; the kernel caches the file anyway.
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.close()

    return apply


def _wal(cursor: Any, patience_s: float) -> None:
    """WAL mode, a property of the file. Switching needs the file to itself, and SQLite
    does not wait for that: two processes opening a new store at once (workers, the
    CLI) may find it locked, and the one that lost finds WAL set by the other."""
    deadline = time.monotonic() + patience_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except Exception as exc:  # the driver's OperationalError, by whichever module
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            cursor.execute("PRAGMA journal_mode")
            mode = cursor.fetchone()
            if mode is not None and str(mode[0]).lower() == "wal":
                return
            time.sleep(0.02)  # in the driver's thread, at connect time
