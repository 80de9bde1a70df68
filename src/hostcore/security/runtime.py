"""The security state of one worker, built by ``create_app`` and started in its lifespan.

``SecurityRuntime`` holds the parts and their order of start and stop:
the :class:`~hostcore.security.issuing.Issuer` (signing keys, tokens),
the :class:`~hostcore.security.authentication.Authenticator` (credentials to a
principal), the :class:`~hostcore.security.logins.Logins` (user passwords),
the rate limiter, the activity recorder and the background
:class:`~hostcore.security.upkeep.Upkeep`. What runs per request is in
:mod:`hostcore.security.admission`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from hostcore.config import Settings
from hostcore.context import UNMATCHED, PrincipalKind, RateLimitResult, RequestContext
from hostcore.db.engine import Database, sqlite_path
from hostcore.errors import TooManyRequests, Unavailable
from hostcore.redaction import redact_url
from hostcore.security.activity import ActivityRecorder
from hostcore.security.authentication import Authenticator
from hostcore.security.issuing import Issuer
from hostcore.security.keys import KeyInfo, KeyStore, LoadedKey
from hostcore.security.logins import Logins
from hostcore.security.proxies import ProxyResolver, address_identity
from hostcore.security.ratelimit import RateLimiter
from hostcore.security.stamp import STAMP_FILE, ChangeStamp
from hostcore.security.tokens import IssuedTokenInfo, TokenVerifier
from hostcore.security.upkeep import Upkeep

if TYPE_CHECKING:
    from starlette.types import Scope


class SecurityRuntime:
    """``single_process``: this process is the whole server (no other worker shares
    its rate limits). ``serving`` False: a command line tool, which neither counts nor
    records requests (and so never creates the server's rate-limit file)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        single_process: bool = False,
        serving: bool = True,
    ) -> None:
        self.settings = settings
        self.auth = settings.auth
        self.db = db
        self.proxies = ProxyResolver(settings.server.trusted_proxies)
        self.verifier = TokenVerifier(settings.auth)
        # Other processes' changes are announced by a file only where they all share it:
        # a SQLite store lives on this host (hostcore.security.stamp).
        stamp = (
            ChangeStamp(settings.data_dir / STAMP_FILE) if sqlite_path(db.url) is not None else None
        )
        self.issuer = Issuer(settings.auth, db, self.verifier, stamp)
        self.authenticator = Authenticator(
            settings.auth, db, self.verifier, self.issuer.refresh_keys
        )
        self.logins = Logins(settings.auth, db)
        self.upkeep = Upkeep(settings, db, self.verifier, self.issuer)
        self.ratelimiter = (
            RateLimiter.from_settings(
                settings.ratelimit, settings.run_dir, single_process=single_process
            )
            if settings.ratelimit.enabled and serving
            else None
        )
        self.activity = (
            ActivityRecorder(db, settings.activity)
            if settings.activity.enabled and serving
            else None
        )

    # --- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Prepare (call under the migration lock), then start this worker's upkeep."""
        await self.prepare()
        if self.activity is not None:
            self.activity.start()
        self.upkeep.start()

    async def prepare(self) -> None:
        """Secrets, the signing key and known revocations; what the CLI needs too."""
        if self.ratelimiter is not None and not self.ratelimiter.storage.check():
            shown = redact_url(self.settings.ratelimit.storage)
            raise Unavailable(f"rate-limit storage {shown!r} is unusable")
        await self.issuer.load(self.settings.data_dir / "master.key")
        await self.authenticator.load_secrets(self.settings)
        await self.upkeep.load_revocations()

    async def stop(self) -> None:
        await self.upkeep.stop()
        if self.activity is not None:
            await self.activity.close()

    # --- keys and tokens -------------------------------------------------------------

    @property
    def keystore(self) -> KeyStore | None:
        return self.issuer.keystore

    @property
    def signing_key(self) -> LoadedKey | None:
        return self.issuer.signing_key

    async def refresh_keys(self) -> None:
        await self.issuer.refresh_keys()

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
        return await self.issuer.issue(kind, name, scopes, ttl_s, role=role, parent_jti=parent_jti)

    async def rotate_key(self) -> KeyInfo:
        return await self.issuer.rotate_key()

    async def revoke(
        self, *, jti: str | None = None, subject: str | None = None, everything: bool = False
    ) -> int:
        return await self.issuer.revoke(jti=jti, subject=subject, everything=everything)

    # --- per request -----------------------------------------------------------------

    def observe(
        self, scope: Scope, context: RequestContext, status: int, duration_ms: float
    ) -> None:
        """Called by the middleware once per request: the activity record."""
        if self.activity is None:
            return
        principal = context.principal
        route = context.route or _route_of(scope)
        # Bounded to the column sizes: one odd request must not break a batch.
        self.activity.record(
            (
                time.time(),
                context.request_id,
                principal.subject if principal is not None else None,
                scope.get("method", "WS")[:10],
                route[:256],
                status,
                round(duration_ms, 3),
                context.client,
            )
        )

    def count_address(self, route_key: str, context: RequestContext) -> None:
        """Count one request by the client's address (per /64 for IPv6)."""
        self.count(address_identity(context.client), route_key, context)

    def check_address(self, route_key: str, context: RequestContext) -> None:
        """429 when the client's address has used up its limit; counts nothing."""
        if self.ratelimiter is None:
            return
        result = self.ratelimiter.peek(address_identity(context.client), route_key)
        if not result.allowed:
            context.rate_limit = result
            _refuse(result)

    def count(self, identity: str, route_key: str, context: RequestContext) -> None:
        """Count one request by ``identity`` to ``route_key`` ("GET /api/v1/…"); 429 past it."""
        if self.ratelimiter is None:
            return
        result = self.ratelimiter.hit(identity, route_key)
        context.rate_limit = result
        if not result.allowed:
            _refuse(result)


def _refuse(result: RateLimitResult) -> NoReturn:
    raise TooManyRequests(
        f"rate limit of {result.limit} exceeded; retry in {result.retry_after_s}s",
        headers={k.decode(): v.decode() for k, v in result.headers()},
    )


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", UNMATCHED)) if route is not None else UNMATCHED
