"""A worker's background upkeep: keep its view of the store fresh and the store tidy.

Revocations and key changes made by any process reach this worker within
``auth.revocation_poll_s``: announced by the change stamp on a SQLite store
(:mod:`hostcore.security.stamp`), read from the store at each poll otherwise.
Every ``HOUSEKEEPING_EVERY_S``: token last-use times are stored; spent HMAC
nonces, token records expired longer than ``auth.token_retention_days`` and
stale login-failure counts removed (a
bounded batch of each per run); the private material of keys that verify
nothing any more wiped, whether or not rotation is on; and the signing key
rotated when due. (Activity retention is the activity writer's, as rows
arrive.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time

from sqlalchemy import delete, select
from sqlalchemy.exc import OperationalError

from hostcore.config import Settings
from hostcore.db.engine import Database
from hostcore.errors import Conflict
from hostcore.security import lockout, tokens
from hostcore.security.issuing import Issuer
from hostcore.security.models import HmacNonce, SigningKey
from hostcore.security.stamp import FULL_POLL_EVERY_S, Seen
from hostcore.security.tokens import TokenVerifier

HOUSEKEEPING_EVERY_S = 30.0

log = logging.getLogger(__name__)


class Upkeep:
    def __init__(
        self, settings: Settings, db: Database, verifier: TokenVerifier, issuer: Issuer
    ) -> None:
        self.settings = settings
        self.auth = settings.auth
        self.db = db
        self.verifier = verifier
        self.issuer = issuer
        self._task: asyncio.Task[None] | None = None
        self._revocations_seen = 0.0
        # A revocation is stamped before its UPDATE may wait for the write lock, so it
        # can commit up to the busy timeout after its stamp: polls overlap by that much.
        self._revocation_overlap_s = settings.database.busy_timeout_ms / 1000 + 5.0
        # The change stamp as the last read of the store found it, and when that was.
        self._stamp_seen: Seen | None = None
        self._read_at = -math.inf

    async def load_revocations(self) -> None:
        """Every revocation that still matters, once at start."""
        now = time.time()
        async with self.db.session() as session:
            # A token is accepted up to the leeway past its expiry: so long its revocation counts.
            self.verifier.add_revoked(
                await tokens.revoked_since(session, 0.0, expiring_after=now - self.auth.leeway_s)
            )
        self._revocations_seen = now

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="hostcore-security")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.store_last_used()

    async def _run(self) -> None:
        last_slow = time.monotonic()
        while True:
            await asyncio.sleep(self.auth.revocation_poll_s)
            try:
                await self.poll()
                if time.monotonic() - last_slow >= HOUSEKEEPING_EVERY_S:
                    last_slow = time.monotonic()
                    await self.housekeeping()
            except Exception:
                log.exception("security housekeeping failed; retrying")

    async def poll(self) -> None:
        """Revocations and key changes made by any process reach this worker here: read
        from the store when the change stamp moved, or a full poll is due."""
        stamp = self.issuer.stamp
        seen = stamp.read() if stamp is not None else None
        if (
            stamp is not None
            and seen == self._stamp_seen
            and time.monotonic() - self._read_at < FULL_POLL_EVERY_S
        ):
            return
        since = self._revocations_seen - self._revocation_overlap_s
        started = time.time()
        async with self.db.session() as session:
            self.verifier.add_revoked(await tokens.revoked_since(session, since))
            # Only once they are read: after failed polls the next one reaches back to the
            # last that succeeded, however long the store was unavailable.
            self._revocations_seen = started
            self._stamp_seen = seen
            self._read_at = time.monotonic()
            active_kid = await session.scalar(
                select(SigningKey.kid).where(SigningKey.retired_at.is_(None))
            )
        signing_key = self.issuer.signing_key
        if signing_key is None or active_kid != signing_key.kid:
            await self.issuer.refresh_keys()

    async def housekeeping(self) -> None:
        await self.store_last_used()
        now = time.time()
        self.verifier.prune(now)
        retained_s = self.auth.token_retention_days * 86400
        async with self.db.session() as session, session.begin():
            await session.execute(
                delete(HmacNonce).where(HmacNonce.seen_at < now - 2 * self.auth.hmac_window_s)
            )
            await tokens.prune(session, expired_before=now - self.auth.leeway_s - retained_s)
            await lockout.prune(session, now, self.auth)
        await self.issuer.wipe_retired()
        if self.issuer.rotate_after_s > 0:
            # Conflict: another worker rotated first; its change stamp brings its key here.
            with contextlib.suppress(Conflict, OperationalError):
                await self.issuer.ensure_active()

    async def store_last_used(self) -> None:
        used = self.verifier.take_last_used()
        if used:
            async with self.db.session() as session, session.begin():
                await tokens.store_last_used(session, used)
