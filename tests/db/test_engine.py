from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.db.engine import Database
from hostcore.errors import Unavailable
from hostcore.redaction import REDACTED
from tests.conftest import free_port


async def test_check_connects_to_a_usable_store(tmp_path: Path) -> None:
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'hostcore.db'}")
    try:
        await db.check()
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
