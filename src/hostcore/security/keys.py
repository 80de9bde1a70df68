"""Signing keys: generated, encrypted at rest, rotated, published as JWKS.

Private key material is encrypted with AES-256-GCM under a master key kept in
``<data_dir>/master.key`` (mode 0600), so a copy of the database alone does
not give away a signing key. It leaves this module only as a key object
handed to the token signer; no endpoint, log line or CLI output carries it.

Rotation makes a new key the signer and keeps the old one verifying until the
longest token it could have signed has expired (``verify_until``); after that
its private material is wiped and it disappears from the JWKS.
"""

from __future__ import annotations

import base64
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.db.engine import affected_rows
from hostcore.errors import Conflict, NotFound, Unavailable
from hostcore.security.models import SigningKey

Algorithm = Literal["EdDSA", "HS256"]
MASTER_KEY_BYTES = 32
_NONCE_BYTES = 12

log = logging.getLogger(__name__)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class MasterKey:
    """Encrypts key material at rest. Created once, readable only by its owner."""

    def __init__(self, key: bytes) -> None:
        if len(key) != MASTER_KEY_BYTES:
            raise Unavailable("master key has the wrong length")
        self._aead = AESGCM(key)

    @classmethod
    def load_or_create(cls, path: Path) -> MasterKey:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as handle:
                handle.write(secrets.token_bytes(MASTER_KEY_BYTES))
                handle.flush()
                os.fsync(handle.fileno())  # on the disk before anything is encrypted with it
            directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)  # and its name too
            finally:
                os.close(directory)
            log.info("created master key %s", path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise Unavailable(f"master key {path} is unreadable: {exc.strerror}") from None
        return cls(data)

    def encrypt(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes) -> bytes:
        return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], associated)


@dataclass(frozen=True)
class LoadedKey:
    """A key ready for PyJWT: ``signing`` signs, ``verifying`` verifies."""

    kid: str
    algorithm: Algorithm
    signing: Any
    verifying: Any
    public_jwk: dict[str, str] | None
    created_at: float
    retired_at: float | None
    verify_until: float | None

    def verifies_at(self, now: float) -> bool:
        return self.verify_until is None or now <= self.verify_until


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never private material."""

    kid: str
    algorithm: str
    created_at: float
    retired_at: float | None
    verify_until: float | None
    active: bool


def _new_key(algorithm: Algorithm, master: MasterKey) -> SigningKey:
    kid = secrets.token_hex(8)
    public: str | None = None
    if algorithm == "EdDSA":
        private = Ed25519PrivateKey.generate()
        material = private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        public = _b64url(
            private.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )
    else:
        material = secrets.token_bytes(32)
    return SigningKey(
        kid=kid,
        algorithm=algorithm,
        private_key=master.encrypt(material, kid.encode()),
        public_key=public,
        created_at=time.time(),
        retired_at=None,
        verify_until=None,
    )


def load_key(row: SigningKey, master: MasterKey) -> LoadedKey:
    algorithm: Algorithm = "EdDSA" if row.algorithm == "EdDSA" else "HS256"
    material = master.decrypt(row.private_key, row.kid.encode())
    signing: Any
    verifying: Any
    jwk: dict[str, str] | None = None
    if algorithm == "EdDSA":
        signing = Ed25519PrivateKey.from_private_bytes(material)
        verifying = signing.public_key()
        assert isinstance(verifying, Ed25519PublicKey)
        jwk = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": row.public_key or "",
            "kid": row.kid,
            "alg": "EdDSA",
            "use": "sig",
        }
    else:
        signing = verifying = material
    return LoadedKey(
        kid=row.kid,
        algorithm=algorithm,
        signing=signing,
        verifying=verifying,
        public_jwk=jwk,
        created_at=row.created_at,
        retired_at=row.retired_at,
        verify_until=row.verify_until,
    )


class KeyStore:
    """Key rows in the store. ``verify_grace_s`` is how long a retired key still verifies."""

    def __init__(self, master: MasterKey, algorithm: Algorithm, verify_grace_s: float) -> None:
        self.master = master
        self.algorithm = algorithm
        self.verify_grace_s = verify_grace_s

    async def active(self, session: AsyncSession) -> SigningKey | None:
        result = await session.execute(
            select(SigningKey)
            .where(SigningKey.retired_at.is_(None))
            .order_by(SigningKey.created_at.desc())
        )
        return result.scalars().first()

    async def ensure_active(self, session: AsyncSession, *, rotate_after_s: float) -> SigningKey:
        """The signing key, rotating it when it is older than ``rotate_after_s`` (0: never).

        Runs in one transaction: two workers starting together cannot both rotate,
        because the second sees the first one's key as fresh.
        """
        async with session.begin():
            await self.wipe_expired(session)
            current = await self.active(session)
            now = time.time()
            stale = (
                rotate_after_s > 0
                and current is not None
                and now - current.created_at > rotate_after_s
            )
            if current is not None and not self._readable(current):
                await self._set_aside(session, current, now)
                current = None
            if current is None or stale or current.algorithm != self.algorithm:
                current = await self._rotate(session, current, now)
        return current

    def _readable(self, row: SigningKey) -> bool:
        if not row.private_key:
            return False
        try:
            self.master.decrypt(row.private_key, row.kid.encode())
        except InvalidTag:
            return False
        return True

    async def _set_aside(self, session: AsyncSession, row: SigningKey, now: float) -> None:
        """A key this master key cannot decrypt (the store was restored without its master
        key, or the key file was replaced): it signs and verifies nothing any more."""
        log.warning(
            "signing key %s cannot be decrypted with this master key: it is retired, a new "
            "one is made, and the tokens it signed no longer verify",
            row.kid,
        )
        await session.execute(
            update(SigningKey)
            .where(SigningKey.kid == row.kid)
            .values(retired_at=now, verify_until=now, private_key=b"")
        )

    async def rotate(self, session: AsyncSession) -> SigningKey:
        async with session.begin():
            return await self._rotate(session, await self.active(session), time.time())

    async def _rotate(
        self, session: AsyncSession, current: SigningKey | None, now: float
    ) -> SigningKey:
        if current is not None:
            # Conditional, so that of two workers rotating at once only one wins.
            retired = await session.execute(
                update(SigningKey)
                .where(SigningKey.kid == current.kid, SigningKey.retired_at.is_(None))
                .values(retired_at=now, verify_until=now + self.verify_grace_s)
            )
            if affected_rows(retired) != 1:
                raise Conflict("the signing key was rotated concurrently")
        key = _new_key(self.algorithm, self.master)
        session.add(key)
        await session.flush()
        log.info(
            "signing key %s (%s) is now active%s",
            key.kid,
            key.algorithm,
            f"; {current.kid} verifies until its tokens expire" if current else "",
        )
        return key

    async def wipe_expired(self, session: AsyncSession) -> int:
        """Wipe private material of keys that verify nothing any more; how many were wiped."""
        result = await session.execute(
            update(SigningKey)
            .where(SigningKey.verify_until.is_not(None), SigningKey.verify_until < time.time())
            .where(SigningKey.private_key != b"")
            .values(private_key=b"")
        )
        return affected_rows(result)

    async def verifying(self, session: AsyncSession) -> list[LoadedKey]:
        now = time.time()
        result = await session.execute(
            select(SigningKey).where(
                (SigningKey.verify_until.is_(None)) | (SigningKey.verify_until >= now)
            )
        )
        loaded = [self._loaded(row) for row in result.scalars()]
        return [key for key in loaded if key is not None]

    def _loaded(self, row: SigningKey) -> LoadedKey | None:
        """The key, decrypted once; None when it has no private part or this master key
        cannot decrypt it (see :meth:`_set_aside`)."""
        if not row.private_key:
            return None
        try:
            return load_key(row, self.master)
        except InvalidTag:
            return None

    async def infos(self, session: AsyncSession) -> list[KeyInfo]:
        result = await session.execute(select(SigningKey).order_by(SigningKey.created_at))
        return [
            KeyInfo(
                kid=row.kid,
                algorithm=row.algorithm,
                created_at=row.created_at,
                retired_at=row.retired_at,
                verify_until=row.verify_until,
                active=row.retired_at is None,
            )
            for row in result.scalars()
        ]

    async def get_info(self, session: AsyncSession, kid: str) -> KeyInfo:
        for info in await self.infos(session):
            if info.kid == kid:
                return info
        raise NotFound(f"no signing key {kid}")


def jwks(keys: list[LoadedKey], now: float) -> dict[str, list[dict[str, str]]]:
    """The public keys that still verify, in JWKS form (HS256 keys are never published)."""
    return {"keys": [key.public_jwk for key in keys if key.public_jwk and key.verifies_at(now)]}
