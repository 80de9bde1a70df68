from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from hostcore.builtin.auth import service
from hostcore.builtin.auth.schemas import (
    MAX_ROWS,
    ActivityRead,
    ActivityStatsRead,
    KeyRead,
    RevokedRead,
    Subject,
    TokenCreate,
    TokenRead,
    TokenRecordRead,
    WhoAmIRead,
)
from hostcore.db.deps import DbSession
from hostcore.errors import NotFound, error_responses
from hostcore.inputs import EpochSeconds
from hostcore.security.acl import ADMIN_SCOPE
from hostcore.security.deps import Authenticated, OptionalPrincipal, RequireScope, SecurityDep

ADMIN = [RequireScope(ADMIN_SCOPE)]
JTI = Annotated[str, Path(pattern=r"^[0-9a-f-]{36}$")]
Limit = Annotated[int, Query(ge=1, le=MAX_ROWS)]


def build_router() -> APIRouter:
    router = APIRouter()

    @router.post(
        "/token",
        responses=error_responses(400, 401, 403, 404, 422, 429, 503),
        summary="Get a token: user login, or a client's HMAC-signed request",
    )
    async def create_token(
        body: TokenCreate, caller: OptionalPrincipal, runtime: SecurityDep
    ) -> TokenRead:
        info = await service.issue_token(runtime, caller, body)
        return TokenRead(
            access_token=info.access_token,
            jti=info.jti,
            subject=info.subject,
            scopes=info.scopes,
            issued_at=info.issued_at,
            expires_at=info.expires_at,
            expires_in=int(info.expires_at - info.issued_at),
        )

    @router.get("/whoami", responses=error_responses(401, 429), summary="The calling principal")
    async def whoami(principal: Authenticated) -> WhoAmIRead:
        return WhoAmIRead(
            subject=principal.subject,
            kind=principal.kind,
            scopes=sorted(principal.scopes),
            expires_at=principal.expires_at,
        )

    @router.get("/tokens", dependencies=ADMIN, responses=error_responses(401, 403, 422, 429))
    async def list_tokens(
        session: DbSession,
        subject: Subject | None = None,
        live: bool = True,
        limit: Limit = 100,
    ) -> list[TokenRecordRead]:
        return await service.list_tokens(session, subject=subject, live_only=live, limit=limit)

    @router.delete(
        "/tokens/{jti}", dependencies=ADMIN, responses=error_responses(401, 403, 404, 422, 429)
    )
    async def revoke_token(jti: JTI, runtime: SecurityDep) -> RevokedRead:
        revoked = await runtime.revoke(jti=jti)
        if not revoked:
            raise NotFound(f"no live token {jti}")
        return RevokedRead(revoked=revoked)

    @router.delete(
        "/tokens/by-subject/{subject}",
        dependencies=ADMIN,
        responses=error_responses(401, 403, 422, 429),
    )
    async def revoke_subject(
        subject: Annotated[Subject, Path()], runtime: SecurityDep
    ) -> RevokedRead:
        return RevokedRead(revoked=await runtime.revoke(subject=subject))

    @router.delete("/tokens", dependencies=ADMIN, responses=error_responses(401, 403, 422, 429))
    async def revoke_all(
        runtime: SecurityDep,
        confirm: Annotated[bool, Query(description="Must be true: revokes every live token.")],
    ) -> RevokedRead:
        if not confirm:
            return RevokedRead(revoked=0)
        return RevokedRead(revoked=await runtime.revoke(everything=True))

    @router.get("/keys", dependencies=ADMIN, responses=error_responses(401, 403, 429))
    async def list_keys(session: DbSession, runtime: SecurityDep) -> list[KeyRead]:
        assert runtime.keystore is not None
        return [KeyRead(**vars(info)) for info in await runtime.keystore.infos(session)]

    @router.post("/keys/rotate", dependencies=ADMIN, responses=error_responses(401, 403, 429))
    async def rotate_key(runtime: SecurityDep) -> KeyRead:
        info = await runtime.rotate_key()
        return KeyRead(**vars(info))

    @router.get("/activity", dependencies=ADMIN, responses=error_responses(401, 403, 422, 429))
    async def activity(
        session: DbSession,
        principal: Annotated[str | None, Query(max_length=160)] = None,
        since: Annotated[EpochSeconds | None, Query(description="UNIX seconds")] = None,
        status: Annotated[int | None, Query(ge=100, le=599)] = None,
        limit: Limit = 100,
    ) -> list[ActivityRead]:
        return await service.query_activity(
            session, principal=principal, since=since, status=status, limit=limit
        )

    @router.get(
        "/activity/stats", dependencies=ADMIN, responses=error_responses(401, 403, 422, 429)
    )
    async def activity_stats(
        session: DbSession,
        since: Annotated[EpochSeconds | None, Query(description="UNIX seconds")] = None,
    ) -> list[ActivityStatsRead]:
        return await service.activity_stats(session, since=since)

    return router
