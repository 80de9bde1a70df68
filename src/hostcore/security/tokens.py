"""JWT issue and verification, built for the hot path.

A token is checked in full once per worker (signature, algorithm pinned to
the key named by ``kid``, iss, aud, exp, nbf, iat, required claims, a
lifetime of at most ``auth.max_token_ttl_s``). Its scopes are then narrowed
to what configuration grants its subject now: the client's
``auth.clients.<name>.scopes``, or the scopes of the role a user token names
(``role`` claim) in ``auth.roles``; what configuration grants is computed
once per worker, and configuration changes reach a worker only by a restart
or reload, which starts with an empty cache. The verified principal is then
cached by token, and every later use re-checks only what can change: expiry,
revocation (a per-worker set refreshed from the store at least every second)
and whether its key still verifies.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.config import AuthSettings
from hostcore.context import Principal, PrincipalKind
from hostcore.db.engine import affected_rows
from hostcore.errors import Unauthorized
from hostcore.security.acl import narrowed
from hostcore.security.keys import LoadedKey
from hostcore.security.models import IssuedToken

REQUIRED_CLAIMS = ["iss", "aud", "sub", "jti", "scopes", "iat", "nbf", "exp"]
CACHE_SIZE = 4096
MAX_TOKEN_BYTES = 4096
PRUNE_BATCH = 500


def parse_subject(subject: str) -> tuple[PrincipalKind, str]:
    kind, _, name = subject.partition(":")
    if kind not in ("client", "user") or not name:
        raise Unauthorized("token subject is malformed")
    return ("client" if kind == "client" else "user"), name


@dataclass(frozen=True)
class IssuedTokenInfo:
    access_token: str
    jti: str
    subject: str
    scopes: list[str]
    issued_at: float
    expires_at: float
    kid: str


def encode(
    key: LoadedKey,
    settings: AuthSettings,
    principal_kind: PrincipalKind,
    name: str,
    scopes: Iterable[str],
    ttl_s: int,
    now: float | None = None,
    *,
    role: str | None = None,
) -> IssuedTokenInfo:
    """A signed token; a user's names their ``role`` (their scopes narrow to its grant)."""
    now = time.time() if now is None else now
    issued = int(now)
    claims: dict[str, Any] = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": f"{principal_kind}:{name}",
        "jti": str(uuid.uuid4()),
        "scopes": sorted(set(scopes)),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
    }
    if role is not None:
        claims["role"] = role
    token = jwt.encode(claims, key.signing, algorithm=key.algorithm, headers={"kid": key.kid})
    return IssuedTokenInfo(
        access_token=token,
        jti=claims["jti"],
        subject=claims["sub"],
        scopes=claims["scopes"],
        issued_at=issued,
        expires_at=issued + ttl_s,
        kid=key.kid,
    )


async def record(
    session: AsyncSession,
    info: IssuedTokenInfo,
    kind: PrincipalKind,
    *,
    parent_jti: str | None = None,
) -> None:
    """Remember the token by jti (never the token itself), and the token it was got with."""
    session.add(
        IssuedToken(
            jti=info.jti,
            subject=info.subject,
            kind=kind,
            scopes=" ".join(info.scopes),
            kid=info.kid,
            issued_at=info.issued_at,
            expires_at=info.expires_at,
            revoked_at=None,
            last_used_at=None,
            parent_jti=parent_jti,
        )
    )


async def revoke(
    session: AsyncSession,
    *,
    leeway_s: float,
    jti: str | None = None,
    subject: str | None = None,
    everything: bool = False,
) -> int:
    """Revoke by jti (with every token got with it, at any depth), by subject, or all live
    tokens; returns how many were revoked.

    Live: any token a verifier would still accept, so also one up to ``leeway_s``
    past its expiry.
    """
    now = time.time()
    statement = update(IssuedToken).where(
        IssuedToken.revoked_at.is_(None), IssuedToken.expires_at > now - leeway_s
    )
    if jti is not None:
        lineage = select(IssuedToken.jti).where(IssuedToken.jti == jti).cte(recursive=True)
        got_with = select(IssuedToken.jti).where(IssuedToken.parent_jti == lineage.c.jti)
        lineage = lineage.union(got_with)
        statement = statement.where(IssuedToken.jti.in_(select(lineage.c.jti)))
    elif subject is not None:
        statement = statement.where(IssuedToken.subject == subject)
    elif not everything:
        raise ValueError("revoke needs a jti, a subject or everything=True")
    result = await session.execute(statement.values(revoked_at=now))
    return affected_rows(result)


async def revoked_since(
    session: AsyncSession, since: float, *, expiring_after: float = 0.0
) -> list[tuple[str, float]]:
    """(jti, expiry) of tokens revoked at ``since`` or later, expiring after ``expiring_after``."""
    result = await session.execute(
        select(IssuedToken.jti, IssuedToken.expires_at).where(
            IssuedToken.revoked_at >= since, IssuedToken.expires_at >= expiring_after
        )
    )
    return [(jti, expires) for jti, expires in result.all()]


async def prune(session: AsyncSession, *, expired_before: float, batch: int = PRUNE_BATCH) -> int:
    """Forget the records of tokens that expired before ``expired_before``, revoked or not;
    at most ``batch``, oldest first, so that one run's work is bounded."""
    oldest = (
        select(IssuedToken.jti)
        .where(IssuedToken.expires_at < expired_before)
        .order_by(IssuedToken.expires_at)
        .limit(batch)
    )
    result = await session.execute(delete(IssuedToken).where(IssuedToken.jti.in_(oldest)))
    return affected_rows(result)


class UnknownSigningKey(Unauthorized):
    """The token names a kid this worker does not hold: maybe a key made since."""


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    kid: str
    expires_at: float


class TokenVerifier:
    """Per-worker verification state: known keys, revoked jtis, verified-token cache."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.keys: dict[str, LoadedKey] = {}
        self.revoked: dict[str, float] = {}  # jti -> expiry, pruned once expired
        # Told of each newly revoked jti (open event streams end at once).
        self.revocation_listeners: list[Callable[[list[str]], None]] = []
        self.last_used: dict[str, float] = {}
        self._cache: OrderedDict[str, _Verified] = OrderedDict()
        # What configuration grants each subject, once: every token is narrowed to it.
        self._client_grants = {
            name: frozenset(client.scopes) for name, client in settings.clients.items()
        }
        self._role_grants = {role: frozenset(scopes) for role, scopes in settings.roles.items()}

    def set_keys(self, keys: Iterable[LoadedKey]) -> None:
        self.keys = {key.kid: key for key in keys}

    def add_revoked(self, entries: Iterable[tuple[str, float]]) -> None:
        added = []
        for jti, expires in entries:
            if jti not in self.revoked:
                added.append(jti)
            self.revoked[jti] = expires
        if added:
            for listener in self.revocation_listeners:
                listener(added)

    def prune(self, now: float) -> None:
        horizon = now - self.settings.leeway_s
        self.revoked = {jti: exp for jti, exp in self.revoked.items() if exp >= horizon}

    def verify(
        self,
        token: str,
        now: float | None = None,
        *,
        before_full: Callable[[], None] | None = None,
    ) -> Principal:
        """The token's principal; ``before_full`` runs first when the token is not cached."""
        now = time.time() if now is None else now
        cached = self._cache.get(token)
        if cached is None:
            if before_full is not None:
                before_full()
            cached = self._verify_fully(token, now)
            self._cache[token] = cached
            if len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return self._still_valid(token, cached, now)

    def verify_cached(self, token: str) -> Principal | None:
        """The principal of a token this worker has verified in full before, with what
        can change checked again; None when the token would need a full check."""
        cached = self._cache.get(token)
        return None if cached is None else self._still_valid(token, cached, time.time())

    def _still_valid(self, token: str, cached: _Verified, now: float) -> Principal:
        """What can change since a token was verified: expiry, its key, revocation."""
        if now > cached.expires_at + self.settings.leeway_s:
            del self._cache[token]
            raise Unauthorized("token has expired")
        key = self.keys.get(cached.kid)
        if key is None or not key.verifies_at(now):
            self._cache.pop(token, None)
            raise Unauthorized("token was signed by a key that has been retired")
        jti = cached.principal.jti
        if jti in self.revoked:
            raise Unauthorized("token has been revoked")
        self.last_used[jti or ""] = now
        return cached.principal

    def _verify_fully(self, token: str, now: float) -> _Verified:
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("token is malformed") from None
        kid = header.get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise UnknownSigningKey("token names an unknown signing key")
        # The algorithm comes from our key, never from the token: that is what
        # defeats "alg: none" and HS256-signed-with-the-public-key confusion.
        if header.get("alg") != key.algorithm:
            raise Unauthorized("token algorithm does not match its signing key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.verifying,
                algorithms=[key.algorithm],
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized("token is from another issuer") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks the {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise Unauthorized("token is malformed") from None
        if float(claims["exp"]) - float(claims["iat"]) > self.settings.max_token_ttl_s:
            raise Unauthorized("token lifetime is longer than auth.max_token_ttl_s")
        kind, name = parse_subject(str(claims["sub"]))
        scopes = claims["scopes"]
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise Unauthorized("token scopes are malformed")
        principal = Principal(
            kind=kind,
            name=name,
            scopes=narrowed(scopes, self._granted(kind, name, claims)),
            jti=str(claims["jti"]),
            expires_at=float(claims["exp"]),
        )
        return _Verified(principal, key.kid, float(claims["exp"]))

    def _granted(self, kind: PrincipalKind, name: str, claims: dict[str, Any]) -> frozenset[str]:
        """What configuration grants the token's subject now."""
        if kind == "client":
            granted = self._client_grants.get(name)
            if granted is None:
                raise Unauthorized(f"client {name} is no longer allowed")
            return granted
        role = claims.get("role")
        if not isinstance(role, str):
            raise Unauthorized("token lacks the role claim")
        granted = self._role_grants.get(role)
        if granted is None:
            raise Unauthorized(f"role {role} is no longer configured")
        return granted

    def take_last_used(self) -> dict[str, float]:
        used, self.last_used = self.last_used, {}
        used.pop("", None)
        return used


async def store_last_used(session: AsyncSession, used: dict[str, float]) -> None:
    for jti, at in used.items():
        await session.execute(
            update(IssuedToken).where(IssuedToken.jti == jti).values(last_used_at=at)
        )
