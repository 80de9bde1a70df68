"""The per-username login lockout, counted in the store.

``auth.login_max_failures`` failed logins of one username within
``auth.login_failure_window_s`` of its first counted failure lock that
username for ``auth.login_lockout_s``; the count then starts again. A
successful login clears it.

The count lives in the store, not in a worker: with several workers a
per-process count would allow the limit once per worker, a restart would reset it,
and the kernel, not the attacker's patience, would decide which count a guess
lands on. A failed login already costs a store read and an argon2 check, so
one small write more is no burden. Every well-formed username is counted,
whether or not such a user exists, so a lockout says nothing about who
exists. Each step is one statement on the row (an INSERT that ignores a
conflict, then conditional UPDATEs), so concurrent failures from several
workers are all counted.

An attempt is counted as failed *before* its password is checked
(:func:`attempt`), and a success clears the count: attempts sent at once
cannot all pass the lock check before any of them is counted, so at most
``login_max_failures`` passwords are checked per username and window, however
many arrive together. A locked username is refused without counting.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.config import AuthSettings
from hostcore.db.engine import affected_rows
from hostcore.security.models import LoginFailure

PRUNE_BATCH = 500


async def find(session: AsyncSession, username: str) -> LoginFailure | None:
    """The failures counted for ``username`` (None: none)."""
    return await session.get(LoginFailure, username)


def lock_ends(counted: LoginFailure | None, now: float) -> float | None:
    """When the lockout these counts impose ends, or None when there is none at ``now``."""
    if counted is None or counted.locked_until is None or counted.locked_until <= now:
        return None
    return counted.locked_until


async def attempt(
    session: AsyncSession, username: str, now: float, settings: AuthSettings
) -> float | None:
    """Count a login attempt of ``username`` as failed before its password is checked
    (a success then clears the count): None, go ahead; or the end of the lock that
    refuses it, uncounted. Call in a transaction."""
    if await record_failure(session, username, now, settings):
        return None
    ends = lock_ends(await find(session, username), now)
    # The count was refused because the username is locked at ``now``: ``ends`` is set.
    return now + settings.login_lockout_s if ends is None else ends


async def record_failure(
    session: AsyncSession, username: str, now: float, settings: AuthSettings
) -> bool:
    """Count one failed login of ``username``; lock it at the limit. False: the username
    is locked at ``now``, and nothing was counted. Call in a transaction."""
    await session.execute(
        _insert(session)
        .values(username=username, failures=0, first_failed_at=now, last_failed_at=now)
        .on_conflict_do_nothing(index_elements=["username"])
    )
    named = LoginFailure.username == username
    open_ = or_(LoginFailure.locked_until.is_(None), LoginFailure.locked_until <= now)
    # A count older than the window starts again with this failure.
    await session.execute(
        update(LoginFailure)
        .where(named, open_, LoginFailure.first_failed_at < now - settings.login_failure_window_s)
        .values(failures=0, first_failed_at=now)
    )
    counted = await session.execute(
        update(LoginFailure)
        .where(named, open_)
        .values(failures=LoginFailure.failures + 1, last_failed_at=now)
    )
    if not affected_rows(counted):
        return False
    await session.execute(
        update(LoginFailure)
        .where(named, LoginFailure.failures >= settings.login_max_failures)
        .values(locked_until=now + settings.login_lockout_s, failures=0, first_failed_at=now)
    )
    return True


def _insert(session: AsyncSession) -> Any:
    """INSERT with ON CONFLICT for the store's dialect (both have it, spelled alike).

    Imported here: a dialect's module is only loaded for the database in use (the
    PostgreSQL one alone costs about 2 MiB, on every device that runs SQLite).
    """
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(LoginFailure)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(LoginFailure)


async def clear(session: AsyncSession, username: str) -> None:
    await session.execute(delete(LoginFailure).where(LoginFailure.username == username))


async def prune(session: AsyncSession, now: float, settings: AuthSettings) -> int:
    """Forget counts that no longer matter (past the window, not locked); at most a batch."""
    stale = (
        select(LoginFailure.username)
        .where(
            LoginFailure.last_failed_at < now - settings.login_failure_window_s,
            (LoginFailure.locked_until.is_(None)) | (LoginFailure.locked_until < now),
        )
        .limit(PRUNE_BATCH)
    )
    result = await session.execute(delete(LoginFailure).where(LoginFailure.username.in_(stale)))
    return affected_rows(result)
