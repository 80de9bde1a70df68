"""The security pipeline of one worker: who is calling, may they, and how often.

``SecurityRuntime`` is built by ``create_app`` and started in the lifespan.
Per request it authenticates (bearer token, or an HMAC-signed local request),
applies the rate limit and leaves the principal on the ASGI scope for the
activity record. A background task keeps this worker's view of the store
fresh: revocations (at least every ``auth.revocation_poll_s``), the active
signing key, token last-use times, nonce and activity retention, and the
automatic key rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError, OperationalError
from starlette.requests import HTTPConnection, Request
from starlette.types import Scope

from hostcore.config import Settings
from hostcore.db.engine import Database
from hostcore.errors import Conflict, TooManyRequests, Unauthorized, Unavailable
from hostcore.logging import request_id_var
from hostcore.middleware import CLIENT_KEY, RATE_LIMIT_KEY, route_template
from hostcore.security import hmac as signing
from hostcore.security import tokens
from hostcore.security.activity import ActivityRecord, ActivityRecorder, apply_retention
from hostcore.security.hmac import CLIENT_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from hostcore.security.keys import KeyInfo, KeyStore, LoadedKey, MasterKey
from hostcore.security.models import HmacNonce, SigningKey
from hostcore.security.ratelimit import RateLimiter
from hostcore.security.tokens import (
    IssuedTokenInfo,
    Principal,
    PrincipalKind,
    TokenVerifier,
    UnknownSigningKey,
)

# Left on the ASGI scope by admit(): who is calling (for RequireScope and the activity
# record); and by the security gate (gate.py) when it handled the request.
PRINCIPAL_KEY = "hostcore.principal"
GATED_KEY = "hostcore.gated"
UNIX_PEER = "unix"
HOUSEKEEPING_EVERY_S = 30.0
RETENTION_EVERY_S = 3600.0

log = logging.getLogger(__name__)


class ProxyResolver:
    """The client's address: the peer's, or X-Forwarded-For when the peer is a trusted proxy."""

    def __init__(self, trusted: Sequence[str]) -> None:
        self.trust_unix = UNIX_PEER in trusted
        self.networks = [ipaddress.ip_network(t, strict=False) for t in trusted if t != UNIX_PEER]

    def _trusted(self, address: str) -> bool:
        if address == UNIX_PEER:
            return self.trust_unix
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def resolve(self, scope: Scope) -> str:
        peer = scope.get("client")
        address = str(peer[0]) if peer and peer[0] else UNIX_PEER
        if address != UNIX_PEER and not self.networks:
            return address  # the common case: no TCP proxy configured, nothing to parse
        if not self._trusted(address):
            return address
        forwarded: list[str] = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        hops = [hop.strip() for line in forwarded for hop in line.split(",") if hop.strip()]
        # Walk from the nearest hop outwards; the first untrusted one is the client.
        for hop in reversed(hops):
            if not self._trusted(hop):
                return hop[:64]
            address = hop
        return address


def address_identity(address: str) -> str:
    """The rate-limit identity of an address: one IPv6 client controls a whole /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"address:{address}"
    if ip.version == 6 and not ip.is_loopback:
        return f"address:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"address:{ip}"


def is_local(address: str) -> bool:
    if address == UNIX_PEER:
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def route_key(scope: Scope) -> str:
    """What the rate limit counts per: ``"GET /api/v1/auth/tokens/{jti}"``."""
    return f"{scope.get('method', 'WS')} {route_template(scope)}"


def body_of(request: HTTPConnection) -> Callable[[], Awaitable[bytes]]:
    async def body() -> bytes:
        # A websocket handshake has no body; it signs the empty one.
        return await request.body() if isinstance(request, Request) else b""

    return body


class SecurityRuntime:
    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.auth = settings.auth
        self.db = db
        self.proxies = ProxyResolver(settings.server.trusted_proxies)
        self.verifier = TokenVerifier(settings.auth)
        self.ratelimiter = (
            RateLimiter.from_settings(settings.ratelimit, settings.run_dir)
            if settings.ratelimit.enabled
            else None
        )
        self.activity = (
            ActivityRecorder(db, settings.activity) if settings.activity.enabled else None
        )
        self.keystore: KeyStore | None = None
        self.signing_key: LoadedKey | None = None
        self._secrets: dict[str, bytes] = {}
        self._shared_secret = b""
        self._task: asyncio.Task[None] | None = None
        self._revocations_seen = 0.0
        self._revocation_overlap_s = settings.database.busy_timeout_ms / 1000 + 5.0

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Prepare (call under the migration lock), then start this worker's housekeeping."""
        await self.prepare()
        if self.activity is not None:
            self.activity.start()
        self._task = asyncio.create_task(self._housekeeping(), name="hostcore-security")

    async def prepare(self) -> None:
        """Secrets, the signing key and known revocations; what the CLI needs too."""
        if self.ratelimiter is not None and not self.ratelimiter.storage.check():
            raise Unavailable(f"rate-limit storage {self.settings.ratelimit.storage!r} is unusable")
        master = await asyncio.to_thread(
            MasterKey.load_or_create, self.settings.data_dir / "master.key"
        )
        grace = self.auth.max_token_ttl_s + self.auth.leeway_s
        self.keystore = KeyStore(master, self.auth.algorithm, verify_grace_s=grace)
        self._shared_secret = await asyncio.to_thread(
            signing.create_secret, self.settings.hmac_secret_path(), group=self.auth.secret_group
        )
        for name, client in self.auth.clients.items():
            if client.secret_file is not None:
                self._secrets[name] = await asyncio.to_thread(
                    signing.read_secret, client.secret_file
                )
        async with self.db.session() as session:
            await self.keystore.ensure_active(session, rotate_after_s=self._rotate_after_s())
        await self.refresh_keys()
        now = time.time()
        async with self.db.session() as session:
            self.verifier.add_revoked(
                (jti, exp) for jti, exp in await tokens.revoked_since(session, 0.0) if exp >= now
            )
        self._revocations_seen = now

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.activity is not None:
            await self.activity.close()
        await self._store_last_used()

    def _rotate_after_s(self) -> float:
        return self.auth.key_rotation_days * 86400

    async def refresh_keys(self) -> None:
        assert self.keystore is not None
        async with self.db.session() as session:
            keys = await self.keystore.verifying(session)
        self.verifier.set_keys(keys)
        active = [key for key in keys if key.retired_at is None]
        self.signing_key = max(active, key=lambda key: key.created_at) if active else None

    async def _housekeeping(self) -> None:
        last_slow = last_retention = time.monotonic()
        while True:
            await asyncio.sleep(self.auth.revocation_poll_s)
            try:
                await self._poll()
                if time.monotonic() - last_slow >= HOUSEKEEPING_EVERY_S:
                    last_slow = time.monotonic()
                    await self._slow_housekeeping()
                if time.monotonic() - last_retention >= RETENTION_EVERY_S:
                    last_retention = time.monotonic()
                    async with self.db.session() as session, session.begin():
                        await apply_retention(session, self.settings.activity)
            except Exception:
                log.exception("security housekeeping failed; retrying")

    async def _poll(self) -> None:
        """Revocations and key changes made by any process reach this worker here."""
        # Overlap the window: a revocation is stamped before its UPDATE may wait for
        # the write lock, so it can commit up to the busy timeout after its stamp.
        since = self._revocations_seen - self._revocation_overlap_s
        self._revocations_seen = time.time()
        async with self.db.session() as session:
            self.verifier.add_revoked(await tokens.revoked_since(session, since))
            active_kid = await session.scalar(
                select(SigningKey.kid).where(SigningKey.retired_at.is_(None))
            )
        if self.signing_key is None or active_kid != self.signing_key.kid:
            await self.refresh_keys()

    async def _slow_housekeeping(self) -> None:
        await self._store_last_used()
        now = time.time()
        self.verifier.prune(now)
        async with self.db.session() as session, session.begin():
            await session.execute(
                delete(HmacNonce).where(HmacNonce.seen_at < now - 2 * self.auth.hmac_window_s)
            )
        if self._rotate_after_s() > 0:
            assert self.keystore is not None
            try:
                async with self.db.session() as session:
                    await self.keystore.ensure_active(
                        session, rotate_after_s=self._rotate_after_s()
                    )
            except (Conflict, OperationalError):
                pass  # another worker rotated first; the next poll picks its key up
            await self.refresh_keys()

    async def _store_last_used(self) -> None:
        used = self.verifier.take_last_used()
        if used:
            async with self.db.session() as session, session.begin():
                await tokens.store_last_used(session, used)

    # --- tokens ------------------------------------------------------------------

    async def issue(
        self, kind: PrincipalKind, name: str, scopes: Sequence[str], ttl_s: int | None = None
    ) -> IssuedTokenInfo:
        if self.signing_key is None:
            await self.refresh_keys()
        assert self.signing_key is not None
        ttl = min(ttl_s or self.auth.token_ttl_s, self.auth.max_token_ttl_s)
        info = tokens.encode(self.signing_key, self.auth, kind, name, scopes, ttl)
        async with self.db.session() as session, session.begin():
            await tokens.record(session, info, kind)
        return info

    async def rotate_key(self) -> KeyInfo:
        assert self.keystore is not None
        async with self.db.session() as session:
            key = await self.keystore.rotate(session)
        await self.refresh_keys()
        async with self.db.session() as session:
            return await self.keystore.get_info(session, key.kid)

    async def revoke(
        self, *, jti: str | None = None, subject: str | None = None, everything: bool = False
    ) -> int:
        async with self.db.session() as session, session.begin():
            count = await tokens.revoke(session, jti=jti, subject=subject, everything=everything)
        await self._poll()
        return count

    # --- per request ---------------------------------------------------------------

    def observe(self, scope: Scope, status: int, duration_ms: float) -> None:
        """Called by the middleware once per request: the activity record."""
        if self.activity is None:
            return
        principal: Principal | None = scope.get(PRINCIPAL_KEY)
        self.activity.record(
            ActivityRecord(
                at=time.time(),
                request_id=request_id_var.get(),
                principal=principal.subject if principal is not None else None,
                # Bounded to the column sizes: one odd request must not break a batch.
                method=scope.get("method", "WS")[:10],
                route=route_template(scope)[:256],
                status=status,
                duration_ms=round(duration_ms, 3),
                client=scope.get(CLIENT_KEY),
            )
        )

    async def authenticate(self, request: HTTPConnection) -> Principal:
        """The caller of a request, without counting it (the token endpoint's own check)."""
        return await self.verify_credentials(request.scope, request.headers.get, body_of(request))

    async def verify_credentials(
        self,
        scope: Scope,
        header: Callable[[str], str | None],
        body: Callable[[], Awaitable[bytes]],
    ) -> Principal:
        """A bearer token, else an HMAC signature; ``header`` looks up lower-case names."""
        authorization = header("authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("the Authorization header must be 'Bearer <token>'")
            return await self._verify_token(token.strip())
        if header(SIGNATURE_HEADER) is not None:
            return await self._verify_signed(scope, header, await body())
        raise Unauthorized("no credentials: send a bearer token or an HMAC-signed request")

    async def _verify_token(self, token: str) -> Principal:
        try:
            principal = self.verifier.verify(token)
        except UnknownSigningKey:
            await self.refresh_keys()  # a key another worker may just have created
            try:
                principal = self.verifier.verify(token)
            except UnknownSigningKey as exc:
                raise Unauthorized(exc.detail) from None
        if principal.kind == "client" and principal.name not in self.auth.clients:
            raise Unauthorized(f"client {principal.name} is no longer allowed")
        return principal

    async def _verify_signed(
        self, scope: Scope, header: Callable[[str], str | None], body: bytes
    ) -> Principal:
        address = scope.get(CLIENT_KEY) or self.proxies.resolve(scope)
        if not is_local(address):
            raise Unauthorized("signed requests are accepted only from this host")
        name = header(CLIENT_HEADER) or ""
        client = self.auth.clients.get(name) if signing.CLIENT_PATTERN.match(name) else None
        if client is None:
            raise Unauthorized("unknown client")
        try:
            timestamp = signing.parse_timestamp(header(TIMESTAMP_HEADER) or "")
        except ValueError:
            raise Unauthorized("signed request has a malformed timestamp") from None
        if abs(time.time() - timestamp) > self.auth.hmac_window_s:
            raise Unauthorized("signed request is stale: check the clock")
        nonce = header(NONCE_HEADER) or ""
        if not signing.NONCE_PATTERN.match(nonce):
            raise Unauthorized("signed request has a malformed nonce")
        matches = signing.signature_matches(
            self._secrets.get(name, self._shared_secret),
            header(SIGNATURE_HEADER) or "",
            method=scope.get("method", "GET"),
            # The raw path as sent: the signature covers what went over the wire.
            path=scope.get("raw_path", scope["path"].encode()).decode("latin-1"),
            query=scope["query_string"].decode("latin-1"),
            client=name,
            timestamp=timestamp,
            nonce=nonce,
            body_sha256=signing.body_digest(body),
        )
        if not matches:
            raise Unauthorized("request signature is invalid")
        try:
            async with self.db.session() as session, session.begin():
                session.add(HmacNonce(nonce=nonce, seen_at=time.time()))
        except IntegrityError:
            raise Unauthorized("nonce was already used: this request is a replay") from None
        return Principal(kind="client", name=name, scopes=frozenset(client.scopes))

    async def admit(
        self,
        scope: Scope,
        route_key: str,
        header: Callable[[str], str | None],
        body: Callable[[], Awaitable[bytes]],
    ) -> Principal:
        """Authenticate the caller and count the request against the rate limit.

        The one admission sequence, used by the security gate and, for what the gate
        did not admit, by ``RequireScope``. A failed attempt counts against the client's
        address, so guessing is slow; the principal is left on ``scope``.
        """
        try:
            principal = await self.verify_credentials(scope, header, body)
        except Unauthorized:
            self.hit_address(route_key, scope)
            raise
        scope[PRINCIPAL_KEY] = principal
        self.hit(principal.subject, route_key, scope)
        return principal

    def hit_address(self, route_key: str, scope: Scope) -> None:
        """Count one request by the client's address (per /64 for IPv6)."""
        client: str | None = scope.get(CLIENT_KEY)
        address = client if client is not None else self.proxies.resolve(scope)
        self.hit(address_identity(address), route_key, scope)

    def hit(self, identity: str, route_key: str, scope: Scope) -> None:
        """Count one request by ``identity`` to ``route_key`` ("GET /api/v1/…"); 429 past it."""
        if self.ratelimiter is None:
            return
        result = self.ratelimiter.hit(identity, route_key)
        scope[RATE_LIMIT_KEY] = result
        if not result.allowed:
            raise TooManyRequests(
                f"rate limit of {result.limit} exceeded; retry in {result.retry_after_s}s",
                headers={k.decode(): v.decode() for k, v in result.headers()},
            )
