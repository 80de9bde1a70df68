"""The store: connecting, describing it without its password, and its files being private."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from hostcore.config import Settings
from hostcore.db.engine import Database
from hostcore.errors import ConfigError, Unavailable
from hostcore.redaction import REDACTED
from tests.helpers import free_port, mode


async def test_check_connects_to_a_usable_store(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hostcore.db'}")
    try:
        await db.check()
    finally:
        await db.dispose()


async def test_a_failed_statement_s_error_never_shows_its_parameters(tmp_path: Path) -> None:
    """Errors reach the log; parameters may be password hashes or token ids."""
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hostcore.db'}")
    secret = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"
    try:
        async with db.engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (a TEXT PRIMARY KEY)"))
            with pytest.raises(Exception) as failed:
                await connection.execute(
                    text("INSERT INTO t (a) VALUES (:a)"), [{"a": secret}, {"a": secret}]
                )
        assert "UNIQUE" in str(failed.value) and secret not in str(failed.value)
    finally:
        await db.dispose()


async def test_check_names_an_unreachable_store_without_its_password() -> None:
    db = Database(f"postgresql+asyncpg://hc:hunter2@127.0.0.1:{free_port()}/hostcore")
    try:
        with pytest.raises(Unavailable, match=r"cannot open the store postgresql\+asyncpg://hc:"):
            await db.check()
    finally:
        await db.dispose()


async def test_check_gives_the_drivers_reason_without_sqlalchemys_decoration(
    tmp_path: Path,
) -> None:
    (tmp_path / "hostcore.db").write_bytes(b"not a database" * 100)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hostcore.db'}")
    try:
        with pytest.raises(Unavailable) as raised:
            await db.check()
    finally:
        await db.dispose()
    assert str(raised.value).endswith(": file is not a database")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://hc:hunter2@db.local/hostcore",
        "postgresql+asyncpg://hc@db.local/hostcore?password=hunter2",
        "postgresql+asyncpg://hc@db.local/hostcore?ssl=require&sslpassword=hunter2",
    ],
)
def test_describe_hides_every_form_of_password(url: str) -> None:
    described = Database(url).describe()
    assert "hunter2" not in described
    assert described.startswith("postgresql+asyncpg://hc")
    assert REDACTED in described


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("postgresql+nosuchdriver://hc:hunter2@db.local/hc", "cannot be used: NoSuchModuleError"),
        ("notadb://hc:hunter2@db.local/hc", "cannot be used: NoSuchModuleError"),
        ("notadb://x", "cannot be used: NoSuchModuleError"),
        ("postgresql+asyncpg://hc:hunter2@db.local:notaport/hc", "is not a valid database URL"),
        ("://hc:hunter2@db.local/hc", "is not a valid database URL"),
        pytest.param("sqlite:///{tmp_path}/hostcore.db", "cannot be used", id="a sync driver"),
    ],
)
def test_a_store_url_that_cannot_be_used_is_a_configuration_error_without_its_password(
    url: str, reason: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as refused:
        Database(url.format(tmp_path=tmp_path))
    message = str(refused.value)
    assert message.startswith("database.url "), message
    assert reason in message
    assert "hunter2" not in message


# SQLite ignores the password parameter (SQLAlchemy says so); the store opens as usual.
@pytest.mark.filterwarnings("ignore:Query string argument:sqlalchemy.exc.SAWarning")
def test_the_startup_log_names_the_store_without_its_password(
    tmp_path: Path,
    settings_factory: Callable[..., Settings],
    app_factory: Callable[..., FastAPI],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'hostcore.db'}?password=hunter2"
    caplog.set_level(logging.INFO, logger="hostcore")
    with TestClient(app_factory(app_settings=settings_factory(f"database.url={url}"))):
        pass
    stores = [r.getMessage() for r in caplog.records if r.getMessage().startswith("store: ")]
    assert f"store: sqlite+aiosqlite:///{tmp_path / 'hostcore.db'}?password={REDACTED}" in stores
    assert "hunter2" not in caplog.text


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


def test_a_postgresql_url_without_asyncpg_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """asyncpg is the `postgres` extra: an embedded SQLite install does not carry it."""
    import builtins

    real = builtins.__import__

    def without_asyncpg(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] == "asyncpg":
            raise ModuleNotFoundError("No module named 'asyncpg'", name="asyncpg")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", without_asyncpg)
    with pytest.raises(ConfigError) as refused:
        Database("postgresql+asyncpg://hc:pa55@db/hc")
    message = str(refused.value)
    assert "pip install 'hostcore[postgres]'" in message and "pa55" not in message
