"""Who is calling: a bearer token or an HMAC-signed local request, turned into a Principal.

Pure of HTTP routing: :class:`Authenticator` gets a header lookup, the request's
line and a way to read its body (read only for a signed request, whose
signature covers it). Nothing here counts requests; admission does that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from hostcore.config import AuthSettings, Settings
from hostcore.context import Principal
from hostcore.db.engine import Database
from hostcore.errors import Unauthorized
from hostcore.security import hmac as signing
from hostcore.security.hmac import CLIENT_HEADER, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER
from hostcore.security.models import HmacNonce
from hostcore.security.secret_files import load_client_secrets
from hostcore.security.tokens import TokenVerifier, UnknownSigningKey

if TYPE_CHECKING:
    from starlette.types import Scope

HeaderLookup = Callable[[str], str | None]
BodyReader = Callable[[], Awaitable[bytes]]
# An unknown kid makes this worker re-read the keys from the store, at most this often.
KEY_REFRESH_EVERY_S = 1.0

# Lower-case names of every header that carries a credential, as ASGI gives them.
CREDENTIAL_HEADERS = frozenset(
    name.lower().encode("latin-1")
    for name in ("authorization", CLIENT_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER)
)


_PRESENTED = ("authorization", SIGNATURE_HEADER.lower())


def credential_headers(scope: Scope) -> dict[str, str]:
    """The credential headers of a request by lower-case name (the first of each); an
    empty one is no credential. None at all unless the request presents a credential (a
    bearer token or a signature): a stray nonce or client name alone is none, and a
    ``Public`` route answers such a request as it answers anyone."""
    found: dict[str, str] = {}
    for name, value in scope["headers"]:
        if name in CREDENTIAL_HEADERS and value:
            found.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    if found and not any(name in found for name in _PRESENTED):
        return {}
    return found


def _bearer_token(authorization: str) -> str:
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("the Authorization header must be 'Bearer <token>'")
    return token


class Authenticator:
    """Verifies credentials for one worker, with the keys and secrets it holds."""

    def __init__(
        self,
        settings: AuthSettings,
        db: Database,
        verifier: TokenVerifier,
        refresh_keys: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.db = db
        self.verifier = verifier
        self._refresh_keys = refresh_keys
        self._secrets: dict[str, bytes] = {}
        self._keys_refreshed_at: float | None = None  # None: never

    async def load_secrets(self, settings: Settings) -> None:
        """The HMAC secret of every listed client (:mod:`hostcore.security.secret_files`)."""
        self._secrets = await asyncio.to_thread(load_client_secrets, settings)

    def verify_at_once(self, authorization: str) -> Principal | None:
        """The caller of a bearer token this worker has verified before, at the cost of a
        lookup; None when the credential needs :meth:`verify` (which may wait)."""
        token = _bearer_token(authorization)
        return self.verifier.verify_cached(token)

    async def verify(
        self,
        scope: Scope,
        header: HeaderLookup,
        body: BodyReader,
        *,
        local: bool,
        before_expensive: Callable[[], None] = lambda: None,
    ) -> Principal:
        """A bearer token, else an HMAC signature (accepted from this host only).

        ``before_expensive`` runs before any work that costs more than a lookup (a
        token's signature, a key refresh, an HMAC check and its nonce write), and may
        raise to stop it: admission counts the caller's address there.
        """
        authorization = header("authorization")
        if authorization is not None:
            return await self.verify_token(_bearer_token(authorization), before_expensive)
        if header(SIGNATURE_HEADER.lower()) is not None:
            if not local:
                raise Unauthorized("signed requests are accepted only from this host")
            before_expensive()
            return await self._verify_signed(scope, header, await body())
        raise Unauthorized("no credentials: send a bearer token or an HMAC-signed request")

    async def verify_token(
        self, token: str, before_expensive: Callable[[], None] = lambda: None
    ) -> Principal:
        try:
            principal = self.verifier.verify(token, before_full=before_expensive)
        except UnknownSigningKey as exc:
            # Maybe a key another worker has just created; a flood of made-up kids
            # must not turn into a flood of store reads.
            now = time.monotonic()
            recently = self._keys_refreshed_at is not None and (
                now - self._keys_refreshed_at < KEY_REFRESH_EVERY_S
            )
            if recently:
                raise Unauthorized(exc.detail) from None
            self._keys_refreshed_at = now
            await self._refresh_keys()
            try:
                principal = self.verifier.verify(token)
            except UnknownSigningKey as again:
                raise Unauthorized(again.detail) from None
        return principal

    async def _verify_signed(self, scope: Scope, header: HeaderLookup, body: bytes) -> Principal:
        name = header(CLIENT_HEADER.lower()) or ""
        client = self.settings.clients.get(name) if signing.CLIENT_PATTERN.match(name) else None
        secret = self._secrets.get(name)
        if client is None or secret is None:
            raise Unauthorized("unknown client")
        try:
            timestamp = signing.parse_timestamp(header(TIMESTAMP_HEADER.lower()) or "")
        except ValueError:
            raise Unauthorized("signed request has a malformed timestamp") from None
        if abs(time.time() - timestamp) > self.settings.hmac_window_s:
            raise Unauthorized("signed request is stale: check the clock")
        nonce = header(NONCE_HEADER.lower()) or ""
        if not signing.NONCE_PATTERN.match(nonce):
            raise Unauthorized("signed request has a malformed nonce")
        matches = signing.signature_matches(
            secret,
            header(SIGNATURE_HEADER.lower()) or "",
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
