"""The store as a request dependency: each request gets its own session on the app's store."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from hostcore.db.deps import DbSession
from hostcore.db.engine import Database


def test_a_route_gets_a_session_of_its_own_on_the_apps_store(tmp_path: Path) -> None:
    app = FastAPI()
    app.state.db = Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}")
    sessions = []

    @app.get("/count")
    async def count(session: DbSession) -> int:
        sessions.append(session)
        async with session.begin():
            await session.execute(text("CREATE TABLE IF NOT EXISTS seen (n INTEGER)"))
            await session.execute(text("INSERT INTO seen VALUES (1)"))
        return int(await session.scalar(text("SELECT count(*) FROM seen")) or 0)

    with TestClient(app) as client:
        assert [client.get("/count").json() for _ in range(2)] == [1, 2]
        client.portal.call(app.state.db.dispose)  # type: ignore[union-attr]
    assert len(sessions) == 2 and sessions[0] is not sessions[1]
    assert (tmp_path / "store.db").exists()
