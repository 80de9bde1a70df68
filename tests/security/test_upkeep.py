"""The worker's background upkeep: retired keys wiped on time, old tokens and counts pruned.

The upkeep's housekeeping runs every ``HOUSEKEEPING_EVERY_S`` (30 s); the tests
make that every poll and wait, bounded, for the store to show the outcome.
"""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from hostcore.config import Settings
from hostcore.security import tokens, upkeep
from tests.helpers import Serve, bearer, runtime_of, wait_for

DAY = 86400.0
WAIT_S = 15.0


@pytest.fixture(autouse=True)
def housekeeping_at_every_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upkeep, "HOUSEKEEPING_EVERY_S", 0.0)


def store(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.data_dir / "hostcore.db", isolation_level=None)


def query(settings: Settings, sql: str, *args: object) -> list[tuple[object, ...]]:
    with store(settings) as db:
        return list(db.execute(sql, args).fetchall())


def add_token_row(settings: Settings, expires_at: float, revoked_at: float | None = None) -> str:
    jti = str(uuid.uuid4())
    with store(settings) as db:
        db.execute(
            "INSERT INTO tokens (jti, subject, kind, scopes, kid, issued_at, expires_at,"
            " revoked_at, last_used_at) VALUES (?, 'client:tester', 'client', '*', 'k', ?, ?, ?,"
            " NULL)",
            (jti, expires_at - 3600, expires_at, revoked_at),
        )
    return jti


def jtis(settings: Settings) -> set[str]:
    return {str(row[0]) for row in query(settings, "SELECT jti FROM tokens")}


def test_a_retired_keys_private_material_is_wiped_on_time_with_rotation_off(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory("auth.key_rotation_days=0")
    client = serve(settings)
    runtime = runtime_of(client)
    old_kid = runtime.signing_key.kid  # type: ignore[union-attr]
    assert client.post("/api/v1/auth/keys/rotate", headers=bearer(client)).status_code == 200
    # The old key's tokens have all expired: it stops verifying now.
    with store(settings) as db:
        db.execute(
            "UPDATE signing_keys SET verify_until = ? WHERE kid = ?", (time.time() - 1, old_kid)
        )

    def wiped() -> bool:
        rows = query(settings, "SELECT private_key FROM signing_keys WHERE kid = ?", old_kid)
        return rows == [(b"",)]

    wait_for(wiped, WAIT_S, "the retired key's private material to be wiped")
    wait_for(lambda: old_kid not in runtime.verifier.keys, WAIT_S, "the worker to drop the key")
    published = client.get("/.well-known/jwks.json").json()["keys"]
    assert old_kid not in {key["kid"] for key in published}


def test_tokens_expired_longer_than_the_retention_are_deleted(
    serve: Serve, settings: Settings
) -> None:
    serve()
    now = time.time()  # the default retention: 30 days
    old = add_token_row(settings, now - 31 * DAY)
    old_revoked = add_token_row(settings, now - 31 * DAY, revoked_at=now - 32 * DAY)
    recent = add_token_row(settings, now - 29 * DAY)
    revoked_live = add_token_row(settings, now + DAY, revoked_at=now - DAY)
    wait_for(lambda: not {old, old_revoked} & jtis(settings), WAIT_S, "the old rows to go")
    assert {recent, revoked_live} <= jtis(settings)


def test_one_prune_deletes_at_most_a_batch_oldest_first(serve: Serve, settings: Settings) -> None:
    client = serve()
    runtime = runtime_of(client)
    now = time.time()
    # Expired hours ago: inside the retention, so the upkeep leaves them to this test.
    rows = [add_token_row(settings, now - (5 - index) * 3600) for index in range(5)]

    async def prune() -> int:
        async with runtime.db.session() as session, session.begin():
            return await tokens.prune(session, expired_before=now, batch=2)

    assert client.portal is not None
    assert client.portal.call(prune) == 2
    assert jtis(settings) & set(rows) == set(rows[2:])


def test_stale_login_failure_counts_are_forgotten(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory("auth.login_failure_window_s=900")
    serve(settings)
    now = time.time()
    with store(settings) as db:
        db.executemany(
            "INSERT INTO login_failures (username, failures, first_failed_at, last_failed_at,"
            " locked_until) VALUES (?, ?, ?, ?, ?)",
            [
                ("stale", 2, now - 2000, now - 1000, None),
                ("was-locked", 0, now - 2000, now - 1000, now - 10),
                ("recent", 2, now - 100, now - 50, None),
                ("locked", 0, now - 2000, now - 1000, now + 300),
            ],
        )

    def names() -> set[str]:
        return {str(row[0]) for row in query(settings, "SELECT username FROM login_failures")}

    wait_for(lambda: names() == {"recent", "locked"}, WAIT_S, "the stale counts to go")


def test_a_revocation_made_while_polls_fail_is_read_by_the_first_poll_that_works(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll that fails does not move the point the next one reads from: however long the
    store was unavailable, no revocation made meanwhile is skipped."""
    client = serve()
    runtime = runtime_of(client)
    headers = bearer(client)
    assert client.get("/api/v1/auth/whoami", headers=headers).status_code == 200
    assert client.portal is not None
    client.portal.call(runtime.upkeep.stop)  # the polls below are the only ones
    runtime.upkeep._revocation_overlap_s = 0.0  # no overlap hides the skipped span
    client.portal.call(runtime.upkeep.poll)

    async def revoke_everything_in_the_store() -> None:  # as another worker would
        async with runtime.db.session() as session, session.begin():
            await tokens.revoke(session, leeway_s=runtime.auth.leeway_s, everything=True)
        runtime.issuer.changed()

    client.portal.call(revoke_everything_in_the_store)
    reading = tokens.revoked_since

    async def unavailable(*args: object, **kwargs: object) -> object:
        raise OperationalError("SELECT", {}, Exception("database is locked"))

    monkeypatch.setattr(tokens, "revoked_since", unavailable)
    with pytest.raises(OperationalError):
        client.portal.call(runtime.upkeep.poll)
    monkeypatch.setattr(tokens, "revoked_since", reading)
    client.portal.call(runtime.upkeep.poll)
    assert client.get("/api/v1/auth/whoami", headers=headers).status_code == 401


def test_an_idle_poll_reads_the_change_stamp_not_the_store(
    serve: Serve, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twice a second in every worker: a stat of the stamp, no query, until a process
    that revoked or rotated replaced the stamp, or a full poll is due."""
    client = serve()
    runtime = runtime_of(client)
    assert client.portal is not None
    client.portal.call(runtime.upkeep.stop)
    reads: list[float] = []
    reading = tokens.revoked_since

    async def counted(*args: Any, **kwargs: Any) -> Any:
        reads.append(time.monotonic())
        return await reading(*args, **kwargs)

    monkeypatch.setattr(tokens, "revoked_since", counted)
    client.portal.call(runtime.upkeep.poll)
    assert len(reads) == 1, "the first poll reads the store"
    for _ in range(5):
        client.portal.call(runtime.upkeep.poll)
    assert len(reads) == 1, "a quiet stamp: no query"
    runtime.issuer.changed()  # what a revocation or a key rotation in any process does
    client.portal.call(runtime.upkeep.poll)
    assert len(reads) == 2
    monkeypatch.setattr(upkeep, "FULL_POLL_EVERY_S", 0.0)
    client.portal.call(runtime.upkeep.poll)
    assert len(reads) == 3, "a full poll is due: the store is read whatever the stamp says"


def test_a_revocation_replaces_the_change_stamp(serve: Serve, settings: Settings) -> None:
    client = serve()
    runtime = runtime_of(client)
    stamp = settings.data_dir / "security.stamp"
    before = stamp.stat().st_ino if stamp.exists() else None
    headers = bearer(client)
    assert client.delete("/api/v1/auth/tokens?confirm=true", headers=headers).status_code == 200
    assert stamp.stat().st_ino != before
    assert runtime.issuer.stamp is not None and oct(stamp.stat().st_mode & 0o777) == "0o600"
