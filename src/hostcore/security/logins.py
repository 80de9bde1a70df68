"""User login: one password check per attempt, off the event loop, bounded, with a lockout.

- The argon2 check runs in a thread: it takes tens of milliseconds on a PC
  and more on a Pi, and the event loop serves every other request meanwhile.
- At most ``auth.login_concurrency`` checks run at once in a worker (each
  holds argon2's memory, :mod:`hostcore.security.passwords`) and at most
  ``auth.login_queue`` more logins wait for one. A login beyond that is
  refused at once with 503 and ``Retry-After: 1`` rather than queued without
  bound: the server is busy, which is not the caller's own limit (that is the
  rate limit's 429, ``POST /api/v1/auth/token`` = 10/minute by default).
- A username locked by :mod:`hostcore.security.lockout` gets 429 with
  ``Retry-After`` and no password check, whether or not the user exists.
- A failed login costs the same and says the same whether or not the user
  exists: one store read, one argon2 check (against a dummy hash for an
  unknown name), one small write (the failure count).
- A successful check of a hash made with older argon2 parameters stores a
  new one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select, update

from hostcore.config import AuthSettings
from hostcore.db.engine import Database
from hostcore.errors import TooManyRequests, Unauthorized, Unavailable
from hostcore.security import lockout, passwords
from hostcore.security.models import User
from hostcore.security.users import USERNAME, UserInfo, info_of

LOGIN_FAILED = "invalid username or password"
BUSY = "too many logins at once: retry in a second"

T = TypeVar("T")


class CheckLimiter:
    """Runs blocking checks in threads: ``concurrency`` at once, ``queue`` more waiting.

    A slot is freed when its thread finishes, not when its caller stops waiting
    (a client that disconnects does not let a third argon2 run start beside two).
    """

    def __init__(self, concurrency: int, queue: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)
        self._capacity = concurrency + queue
        self.admitted = 0

    def admit(self) -> None:
        """Take a place for one check, or Unavailable (503) when every place is taken.
        Then :meth:`run_admitted` the check, or :meth:`withdraw` it."""
        if self.admitted >= self._capacity:
            raise Unavailable(BUSY, headers={"Retry-After": "1"})
        self.admitted += 1

    def withdraw(self) -> None:
        """Give back a place taken by :meth:`admit` for a check that will not run."""
        self.admitted -= 1

    async def run(self, work: Callable[[], T]) -> T:
        self.admit()
        return await self.run_admitted(work)

    async def run_admitted(self, work: Callable[[], T]) -> T:
        """Run ``work`` in the place :meth:`admit` took."""
        try:
            await self._slots.acquire()
        except BaseException:
            self.admitted -= 1
            raise
        job = asyncio.ensure_future(asyncio.to_thread(work))
        job.add_done_callback(self._finished)
        return await asyncio.shield(job)

    def _finished(self, job: asyncio.Future[Any]) -> None:
        self._slots.release()
        self.admitted -= 1
        if not job.cancelled():
            job.exception()  # retrieved: the caller may have stopped waiting


class Logins:
    """Checks users' passwords for one worker."""

    def __init__(self, settings: AuthSettings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self.checks = CheckLimiter(settings.login_concurrency, settings.login_queue)

    async def authenticate(self, username: str, password: str) -> UserInfo:
        """The user, or Unauthorized with one message (TooManyRequests while locked)."""
        # A place for the check first: a login refused because the server is busy (503)
        # must not count as a failure, or a flood of logins would lock others out.
        self.checks.admit()
        try:
            user = await self._counted_attempt(username)
        except BaseException:
            self.checks.withdraw()
            raise
        stored = user.password_hash if user is not None else None
        checked = await self.checks.run_admitted(lambda: passwords.verify(stored, password))
        if user is None or not checked.matched:
            raise Unauthorized(LOGIN_FAILED)  # counted already, by lockout.attempt
        async with self.db.session() as session, session.begin():
            await lockout.clear(session, username)
            if checked.rehashed is not None:
                # Unless the password was changed meanwhile: that hash is newer.
                await session.execute(
                    update(User)
                    .where(User.id == user.id, User.password_hash == stored)
                    .values(password_hash=checked.rehashed)
                )
        return info_of(user)

    async def _counted_attempt(self, username: str) -> User | None:
        """Count the attempt as failed (the lockout), or TooManyRequests while locked; the
        user of that name, if any."""
        if USERNAME.fullmatch(username) is None:
            return None  # no such user can exist: nothing to count
        async with self.db.session() as session, session.begin():
            now = time.time()
            ends = await lockout.attempt(session, username, now, self.settings)
            if ends is None:
                found: User | None = await session.scalar(
                    select(User).where(User.username == username)
                )
                return found
        retry = max(1, math.ceil(ends - now))
        raise TooManyRequests(
            f"too many failed logins for this username: retry in {retry}s",
            headers={"Retry-After": str(retry)},
        )
