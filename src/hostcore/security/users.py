"""Users for a web UI: argon2 password hashes, roles mapped to scopes in config.

A failed login costs the same and says the same whether or not the user
exists: an unknown name is checked against a dummy hash.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.db.engine import affected_rows
from hostcore.errors import BadRequest, Conflict, NotFound, Unauthorized
from hostcore.security.models import User

USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
LOGIN_FAILED = "invalid username or password"

_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("hostcore-dummy-password-for-unknown-users")


@dataclass(frozen=True)
class UserInfo:
    username: str
    role: str
    created_at: float
    updated_at: float


def validate_username(username: str) -> str:
    if not USERNAME.match(username):
        raise BadRequest(
            "username must be 1-64 characters: lower-case letters, digits, '_', '.', '-'"
        )
    return username


def validate_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"password must be {MIN_PASSWORD} to {MAX_PASSWORD} characters")
    return password


def _info(user: User) -> UserInfo:
    return UserInfo(user.username, user.role, user.created_at, user.updated_at)


async def add(session: AsyncSession, username: str, password: str, role: str) -> UserInfo:
    validate_username(username)
    validate_password(password)
    if await session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username} exists")
    now = time.time()
    user = User(
        username=username,
        password_hash=_hasher.hash(password),
        role=role,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    await session.flush()
    return _info(user)


async def list_users(session: AsyncSession) -> list[UserInfo]:
    result = await session.execute(select(User).order_by(User.username))
    return [_info(user) for user in result.scalars()]


async def remove(session: AsyncSession, username: str) -> None:
    result = await session.execute(delete(User).where(User.username == username))
    if not affected_rows(result):
        raise NotFound(f"no user {username}")


async def set_password(session: AsyncSession, username: str, password: str) -> None:
    validate_password(password)
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username}")
    user.password_hash = _hasher.hash(password)
    user.updated_at = time.time()


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def authenticate(session: AsyncSession, username: str, password: str) -> UserInfo:
    """The user, or Unauthorized with one message; the cost is one argon2 check either way."""
    user = None
    if USERNAME.match(username) and len(password) <= MAX_PASSWORD:
        user = await session.scalar(select(User).where(User.username == username))
    matched = _verify(user.password_hash if user else _DUMMY_HASH, password[:MAX_PASSWORD])
    if user is None or not matched:
        raise Unauthorized(LOGIN_FAILED)
    return _info(user)
