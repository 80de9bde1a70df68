from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, StringConstraints

from hostcore.config import ScopeName

# The most rows one listing answers (tokens, activity).
MAX_ROWS = 1000

ClientName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
Subject = Annotated[str, StringConstraints(pattern=r"^(client|user):[a-z_][a-z0-9_.-]{0,63}$")]


class TokenCreate(BaseModel):
    """Ask for a token: as a user (username, password), or as a client by a signed request.

    An ``auth:admin`` caller may name another ``client`` to mint a token for it. Strict:
    ``"600"`` or ``true`` is not a lifetime.
    """

    model_config = ConfigDict(strict=True, extra="forbid")

    username: Annotated[str, StringConstraints(max_length=64)] | None = None
    password: Annotated[SecretStr, Field(max_length=1024)] | None = None
    client: ClientName | None = None
    scopes: Annotated[list[ScopeName], Field(max_length=64)] | None = None
    ttl_s: int | None = Field(None, ge=60, le=366 * 86400)


class TokenRead(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 type name
    jti: str
    subject: str
    scopes: list[str]
    issued_at: float
    expires_at: float
    expires_in: int


class TokenRecordRead(BaseModel):
    jti: str
    subject: str
    kind: str
    scopes: list[str]
    kid: str
    issued_at: float
    expires_at: float
    revoked_at: float | None
    last_used_at: float | None


class RevokedRead(BaseModel):
    revoked: int


class KeyRead(BaseModel):
    kid: str
    algorithm: str
    created_at: float
    retired_at: float | None
    verify_until: float | None
    active: bool


class ActivityRead(BaseModel):
    at: float
    request_id: str
    principal: str | None
    method: str
    route: str
    status: int
    duration_ms: float
    client: str | None


class ActivityStatsRead(BaseModel):
    principal: str | None
    requests: int
    errors: int
    denied: int
    last_at: float
    mean_ms: float


class WhoAmIRead(BaseModel):
    subject: str
    kind: str
    scopes: list[str]
    expires_at: float | None
