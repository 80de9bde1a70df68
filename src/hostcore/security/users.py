"""Users for a web UI: argon2 password hashes, roles mapped to scopes in config.

A new password must pass the :class:`~hostcore.security.password_policy.PasswordPolicy`;
it is hashed in a thread (:mod:`hostcore.security.passwords`). Logging in is
:mod:`hostcore.security.logins`.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from hostcore.db.engine import affected_rows
from hostcore.errors import BadRequest, Conflict, NotFound
from hostcore.security import passwords
from hostcore.security.models import User
from hostcore.security.password_policy import PasswordPolicy

USERNAME = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class UserInfo:
    username: str
    role: str
    created_at: float
    updated_at: float


def validate_username(username: str) -> str:
    if not USERNAME.fullmatch(username):
        raise BadRequest(
            "username must be 1-64 characters: lower-case letters, digits, '_', '.', '-'"
        )
    return username


def info_of(user: User) -> UserInfo:
    return UserInfo(user.username, user.role, user.created_at, user.updated_at)


async def add(
    session: AsyncSession, username: str, password: str, role: str, *, policy: PasswordPolicy
) -> UserInfo:
    validate_username(username)
    policy.check(password, username)
    if await session.scalar(select(User).where(User.username == username)) is not None:
        raise Conflict(f"user {username} exists")
    password_hash = await asyncio.to_thread(passwords.hash_password, password)
    now = time.time()
    user = User(
        username=username,
        password_hash=password_hash,
        role=role,
        created_at=now,
        updated_at=now,
    )
    session.add(user)
    await session.flush()
    return info_of(user)


async def list_users(session: AsyncSession) -> list[UserInfo]:
    result = await session.execute(select(User).order_by(User.username))
    return [info_of(user) for user in result.scalars()]


async def remove(session: AsyncSession, username: str) -> None:
    result = await session.execute(delete(User).where(User.username == username))
    if not affected_rows(result):
        raise NotFound(f"no user {username}")


async def set_password(
    session: AsyncSession, username: str, password: str, *, policy: PasswordPolicy
) -> None:
    policy.check(password, username)
    user = await session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"no user {username}")
    user.password_hash = await asyncio.to_thread(passwords.hash_password, password)
    user.updated_at = time.time()
