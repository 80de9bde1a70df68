"""Token issue rules, token and activity queries: plain async functions, no HTTP."""

from __future__ import annotations

import time

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.builtin.auth.schemas import (
    MAX_ROWS,
    ActivityRead,
    ActivityStatsRead,
    TokenCreate,
    TokenRecordRead,
)
from hostcore.context import Principal, PrincipalKind
from hostcore.errors import BadRequest, Forbidden, NotFound, Unauthorized
from hostcore.security.acl import ADMIN_SCOPE, allows, uncovered
from hostcore.security.activity import range_start
from hostcore.security.models import Activity, IssuedToken
from hostcore.security.runtime import SecurityRuntime
from hostcore.security.tokens import IssuedTokenInfo


def role_scopes(runtime: SecurityRuntime, role: str) -> list[str]:
    scopes = runtime.auth.roles.get(role)
    if scopes is None:
        raise BadRequest(f"unknown role {role!r}; configured roles: {sorted(runtime.auth.roles)}")
    return list(scopes)


async def issue_token(
    runtime: SecurityRuntime, caller: Principal | None, body: TokenCreate
) -> IssuedTokenInfo:
    """Who may get which token: users by password, clients by a signed request (or admin).

    ``caller`` is who admission authenticated (None: no credentials were sent).
    """
    if body.username is not None or body.password is not None:
        if body.username is None or body.password is None or body.client is not None:
            raise BadRequest("a user login needs username and password, and no client")
        user = await runtime.logins.authenticate(body.username, body.password.get_secret_value())
        granted = role_scopes(runtime, user.role)
        return await _issue(
            runtime, "user", user.username, granted, body.scopes, body.ttl_s, role=user.role
        )
    if caller is None:
        raise Unauthorized("no credentials: log in, or sign the request as a client")
    target = body.client or caller.name
    if (caller.kind, caller.name) == ("client", target):
        # For itself a caller gets at most what its credential grants now: a narrow
        # token never mints a wider one.
        wanted = list(body.scopes) if body.scopes is not None else sorted(caller.scopes)
        missing = uncovered(wanted, caller.scopes)
        if missing:
            raise Forbidden(f"this credential may not have the scopes: {', '.join(missing)}")
        ttl = body.ttl_s
        if caller.expires_at is not None:
            # ... nor outlives it: a leaked token must not renew itself forever.
            remaining = int(caller.expires_at - time.time())
            if remaining < 1:
                raise Forbidden("this credential has expired")
            ttl = min(ttl or runtime.auth.token_ttl_s, remaining)
        return await issue_for_client(runtime, target, wanted, ttl, parent_jti=caller.jti)
    if not allows(caller.scopes, ADMIN_SCOPE):
        raise Forbidden(f"a token for another principal needs the scope {ADMIN_SCOPE}")
    return await issue_for_client(runtime, target, body.scopes, body.ttl_s, parent_jti=caller.jti)


async def issue_for_client(
    runtime: SecurityRuntime,
    name: str,
    scopes: list[str] | None,
    ttl_s: int | None,
    *,
    parent_jti: str | None = None,
) -> IssuedTokenInfo:
    """A token for client ``name``; ``parent_jti``: the token the caller got it with
    (revoking that one revokes this one too)."""
    client = runtime.auth.clients.get(name)
    if client is None:
        raise NotFound(f"no client {name} on the allowed-services list")
    return await _issue(
        runtime, "client", name, list(client.scopes), scopes, ttl_s, parent_jti=parent_jti
    )


async def _issue(
    runtime: SecurityRuntime,
    kind: PrincipalKind,
    name: str,
    granted: list[str],
    requested: list[str] | None,
    ttl_s: int | None,
    *,
    role: str | None = None,
    parent_jti: str | None = None,
) -> IssuedTokenInfo:
    wanted = list(requested) if requested is not None else granted
    missing = uncovered(wanted, granted)
    if missing:
        raise Forbidden(f"{kind} {name} may not have the scopes: {', '.join(missing)}")
    if ttl_s is not None and ttl_s > runtime.auth.max_token_ttl_s:
        raise BadRequest(f"ttl_s may be at most {runtime.auth.max_token_ttl_s}")
    return await runtime.issue(kind, name, wanted, ttl_s, role=role, parent_jti=parent_jti)


async def list_tokens(
    session: AsyncSession, *, subject: str | None, live_only: bool, limit: int
) -> list[TokenRecordRead]:
    statement = (
        select(IssuedToken).order_by(IssuedToken.issued_at.desc()).limit(min(limit, MAX_ROWS))
    )
    if subject is not None:
        statement = statement.where(IssuedToken.subject == subject)
    if live_only:
        statement = statement.where(
            IssuedToken.revoked_at.is_(None), IssuedToken.expires_at > time.time()
        )
    result = await session.execute(statement)
    return [
        TokenRecordRead(
            jti=row.jti,
            subject=row.subject,
            kind=row.kind,
            scopes=row.scopes.split(),
            kid=row.kid,
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
        )
        for row in result.scalars()
    ]


async def query_activity(
    session: AsyncSession,
    *,
    principal: str | None,
    since: float | None,
    status: int | None,
    limit: int,
) -> list[ActivityRead]:
    statement = select(Activity).order_by(Activity.id.desc()).limit(min(limit, MAX_ROWS))
    if principal is not None:
        statement = statement.where(Activity.principal == principal)
    if since is not None:
        first = await range_start(session, since)
        if first is None:
            return []
        statement = statement.where(Activity.id >= first, Activity.at >= since)
    if status is not None:
        statement = statement.where(Activity.status == status)
    result = await session.execute(statement)
    return [ActivityRead.model_validate(row, from_attributes=True) for row in result.scalars()]


async def activity_stats(session: AsyncSession, *, since: float | None) -> list[ActivityStatsRead]:
    errors = func.sum(case((Activity.status >= 500, 1), else_=0))
    denied = func.sum(case((Activity.status.in_((401, 403, 429)), 1), else_=0))
    statement = (
        select(
            Activity.principal,
            func.count(),
            errors,
            denied,
            func.max(Activity.at),
            func.avg(Activity.duration_ms),
        )
        .group_by(Activity.principal)
        .order_by(func.count().desc())
    )
    if since is not None:
        first = await range_start(session, since)
        if first is None:
            return []
        statement = statement.where(Activity.id >= first, Activity.at >= since)
    rows = (await session.execute(statement)).all()
    return [
        ActivityStatsRead(
            principal=principal,
            requests=int(count),
            errors=int(err or 0),
            denied=int(den or 0),
            last_at=float(last),
            mean_ms=round(float(mean or 0.0), 3),
        )
        for principal, count, err, den, last, mean in rows
    ]
