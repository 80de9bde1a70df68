"""Signing keys in use and the tokens they sign: issue, rotate, revoke."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from hostcore.config import AuthSettings
from hostcore.context import PrincipalKind
from hostcore.db.engine import Database
from hostcore.security import tokens
from hostcore.security.keys import KeyInfo, KeyStore, LoadedKey, MasterKey
from hostcore.security.stamp import ChangeStamp
from hostcore.security.tokens import IssuedTokenInfo, TokenVerifier


class Issuer:
    """The signing key of this worker and the store's record of every token it signs."""

    def __init__(
        self,
        settings: AuthSettings,
        db: Database,
        verifier: TokenVerifier,
        stamp: ChangeStamp | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.verifier = verifier
        # Replaced after every change other workers must see (hostcore.security.stamp).
        self.stamp = stamp
        self.keystore: KeyStore | None = None
        self.signing_key: LoadedKey | None = None

    @property
    def rotate_after_s(self) -> float:
        return self.settings.key_rotation_days * 86400

    async def load(self, master_key_path: Path) -> None:
        """Open the key store and make sure a signing key is active (under the migration lock)."""
        master = await asyncio.to_thread(MasterKey.load_or_create, master_key_path)
        grace = self.settings.max_token_ttl_s + self.settings.leeway_s
        self.keystore = KeyStore(master, self.settings.algorithm, verify_grace_s=grace)
        await self.ensure_active()

    async def ensure_active(self) -> None:
        """An active signing key, rotated when due (by whichever process finds it due
        first); the other workers are told when the active key changed."""
        assert self.keystore is not None
        async with self.db.session() as session:
            active = await self.keystore.ensure_active(session, rotate_after_s=self.rotate_after_s)
        if self.signing_key is not None and active.kid != self.signing_key.kid:
            self.changed()
        await self.refresh_keys()

    def changed(self) -> None:
        if self.stamp is not None:
            self.stamp.touch()

    async def refresh_keys(self) -> None:
        """Every key that still verifies, from the store; the newest active one signs."""
        assert self.keystore is not None
        async with self.db.session() as session:
            keys = await self.keystore.verifying(session)
        self.verifier.set_keys(keys)
        active = [key for key in keys if key.retired_at is None]
        self.signing_key = max(active, key=lambda key: key.created_at) if active else None

    async def issue(
        self,
        kind: PrincipalKind,
        name: str,
        scopes: Sequence[str],
        ttl_s: int | None = None,
        *,
        role: str | None = None,
        parent_jti: str | None = None,
    ) -> IssuedTokenInfo:
        """A new token, recorded with ``parent_jti``: the token it was got with, if any."""
        if self.signing_key is None:
            await self.refresh_keys()
        assert self.signing_key is not None
        ttl = min(ttl_s or self.settings.token_ttl_s, self.settings.max_token_ttl_s)
        info = tokens.encode(self.signing_key, self.settings, kind, name, scopes, ttl, role=role)
        async with self.db.session() as session, session.begin():
            await tokens.record(session, info, kind, parent_jti=parent_jti)
        return info

    async def wipe_retired(self) -> None:
        """Wipe the keys that verify nothing any more, in the store and in this worker."""
        assert self.keystore is not None
        async with self.db.session() as session, session.begin():
            wiped = await self.keystore.wipe_expired(session)
        now = time.time()
        if wiped or any(not key.verifies_at(now) for key in self.verifier.keys.values()):
            await self.refresh_keys()

    async def rotate_key(self) -> KeyInfo:
        assert self.keystore is not None
        async with self.db.session() as session:
            key = await self.keystore.rotate(session)
        self.changed()
        await self.refresh_keys()
        async with self.db.session() as session:
            return await self.keystore.get_info(session, key.kid)

    async def revoke(
        self, *, jti: str | None = None, subject: str | None = None, everything: bool = False
    ) -> int:
        """Revoke in the store; this worker refuses the tokens at once (others at their poll)."""
        started = time.time()
        async with self.db.session() as session, session.begin():
            count = await tokens.revoke(
                session,
                leeway_s=self.settings.leeway_s,
                jti=jti,
                subject=subject,
                everything=everything,
            )
        self.changed()
        async with self.db.session() as session:
            self.verifier.add_revoked(await tokens.revoked_since(session, started))
        return count
