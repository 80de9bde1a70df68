"""Users in the store: adding, listing, removing, changing a password, and which names and
passwords are allowed."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from hostcore.db.engine import Database
from hostcore.errors import BadRequest, Conflict, NotFound
from hostcore.security import passwords, users
from hostcore.security.models import User
from hostcore.security.password_policy import PasswordPolicy

POLICY = PasswordPolicy(min_length=12)
PASSWORD = "correct-horse-battery-staple"
NEW_PASSWORD = "another-long-passphrase-entirely"


async def stored_hash(store: Database, username: str) -> str | None:
    async with store.session() as session:
        hashed: str | None = await session.scalar(
            select(User.password_hash).where(User.username == username)
        )
    return hashed


async def test_an_added_user_is_listed_with_its_role_and_a_hash_of_its_password(
    store: Database,
) -> None:
    async with store.session() as session, session.begin():
        added = await users.add(session, "bob", PASSWORD, "viewer", policy=POLICY)
        await users.add(session, "alice", PASSWORD, "admin", policy=POLICY)
    assert (added.username, added.role) == ("bob", "viewer")
    assert added.created_at == added.updated_at
    async with store.session() as session:
        listed = await users.list_users(session)
    assert [(user.username, user.role) for user in listed] == [
        ("alice", "admin"),
        ("bob", "viewer"),
    ]
    hashed = await stored_hash(store, "bob")
    assert hashed is not None and PASSWORD not in hashed
    assert passwords.verify(hashed, PASSWORD).matched


async def test_a_username_is_added_once(store: Database) -> None:
    async with store.session() as session, session.begin():
        await users.add(session, "bob", PASSWORD, "viewer", policy=POLICY)
    async with store.session() as session, session.begin():
        with pytest.raises(Conflict, match="user bob exists"):
            await users.add(session, "bob", NEW_PASSWORD, "admin", policy=POLICY)


@pytest.mark.parametrize(
    "username",
    [
        "Bob",
        "1bob",
        "-bob",
        "",
        "bob smith",
        "bob/../root",
        "b" * 65,
        "bob\n",
    ],
)
async def test_a_username_outside_the_rules_is_refused_before_anything_is_stored(
    store: Database, username: str
) -> None:
    async with store.session() as session, session.begin():
        with pytest.raises(BadRequest, match="username must be 1-64 characters"):
            await users.add(session, username, PASSWORD, "viewer", policy=POLICY)
    async with store.session() as session:
        assert await users.list_users(session) == []


@pytest.mark.parametrize("username", ["bob", "_svc", "a", "web.ui-2", "b" * 64])
def test_usernames_within_the_rules_are_kept_as_given(username: str) -> None:
    assert users.validate_username(username) == username


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("short", "password must be 12 to 1024 characters"),
        ("bobbybobbybobby", "must not contain the username"),
    ],
)
async def test_a_password_the_policy_refuses_is_not_stored(
    store: Database, password: str, reason: str
) -> None:
    async with store.session() as session, session.begin():
        with pytest.raises(BadRequest, match=reason):
            await users.add(session, "bobby", password, "viewer", policy=POLICY)
    async with store.session() as session, session.begin():
        await users.add(session, "bobby", PASSWORD, "viewer", policy=POLICY)
        with pytest.raises(BadRequest, match=reason):
            await users.set_password(session, "bobby", password, policy=POLICY)
    assert passwords.verify(await stored_hash(store, "bobby"), PASSWORD).matched


async def test_a_new_password_replaces_the_old_one(store: Database) -> None:
    async with store.session() as session, session.begin():
        added = await users.add(session, "bob", PASSWORD, "viewer", policy=POLICY)
    async with store.session() as session, session.begin():
        await users.set_password(session, "bob", NEW_PASSWORD, policy=POLICY)
    hashed = await stored_hash(store, "bob")
    assert passwords.verify(hashed, NEW_PASSWORD).matched
    assert not passwords.verify(hashed, PASSWORD).matched
    async with store.session() as session:
        (changed,) = await users.list_users(session)
    assert changed.created_at == added.created_at
    assert changed.updated_at >= added.updated_at


async def test_a_removed_user_is_gone_and_an_unknown_one_is_not_found(store: Database) -> None:
    async with store.session() as session, session.begin():
        await users.add(session, "bob", PASSWORD, "viewer", policy=POLICY)
    async with store.session() as session, session.begin():
        await users.remove(session, "bob")
    assert await stored_hash(store, "bob") is None
    async with store.session() as session, session.begin():
        with pytest.raises(NotFound, match="no user bob"):
            await users.remove(session, "bob")
        with pytest.raises(NotFound, match="no user carol"):
            await users.set_password(session, "carol", NEW_PASSWORD, policy=POLICY)
