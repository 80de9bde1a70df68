"""hostcore's own tables. Times are UNIX seconds (float): portable, compact, unambiguous."""

from __future__ import annotations

from sqlalchemy import Float, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostcore.db.engine import Base


class SigningKey(Base):
    """A JWT signing key. Private material is stored encrypted with the master key."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(16))
    private_key: Mapped[bytes] = mapped_column(LargeBinary)
    public_key: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    # While retired_at is NULL the key signs; afterwards it only verifies until verify_until.
    retired_at: Mapped[float | None] = mapped_column(Float)
    verify_until: Mapped[float | None] = mapped_column(Float)


class IssuedToken(Base):
    """A token by its jti: never the token itself."""

    __tablename__ = "tokens"

    jti: Mapped[str] = mapped_column(String(36), primary_key=True)
    subject: Mapped[str] = mapped_column(String(160), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # client | user
    scopes: Mapped[str] = mapped_column(Text)  # space-separated
    kid: Mapped[str] = mapped_column(String(32))
    issued_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    revoked_at: Mapped[float | None] = mapped_column(Float, index=True)
    last_used_at: Mapped[float | None] = mapped_column(Float)
    # The token this one was got with (None: a login, a signed request, the CLI).
    parent_jti: Mapped[str | None] = mapped_column(String(36), index=True)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class LoginFailure(Base):
    """Recent failed logins of one username, existing or not: the lockout's count."""

    __tablename__ = "login_failures"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    first_failed_at: Mapped[float] = mapped_column(Float)
    last_failed_at: Mapped[float] = mapped_column(Float, index=True)
    locked_until: Mapped[float | None] = mapped_column(Float)


class HmacNonce(Base):
    """Nonces seen inside the accepted window; a second use is a replay."""

    __tablename__ = "hmac_nonces"

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[float] = mapped_column(Float, index=True)


class Activity(Base):
    """One request. Written for every request, so it carries no index but its id
    (see :mod:`hostcore.security.activity`)."""

    __tablename__ = "activity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float)
    request_id: Mapped[str] = mapped_column(String(128))
    principal: Mapped[str | None] = mapped_column(String(160))
    method: Mapped[str] = mapped_column(String(10))
    route: Mapped[str] = mapped_column(String(256))
    status: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[float] = mapped_column(Float)
    client: Mapped[str | None] = mapped_column(String(64))
