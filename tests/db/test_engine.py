from __future__ import annotations

from pathlib import Path

import pytest

from hostcore.db.engine import Database
from hostcore.errors import Unavailable
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
