"""Password hashes: argon2id with parameters sized for a small device.

Every function here blocks for one argon2 computation (tens of milliseconds
on a PC, several times that on a Pi): call them from a thread, never from
the event loop. :mod:`hostcore.security.logins` does, behind a limiter.

Parameters: OWASP's first argon2id choice (Password Storage Cheat Sheet),
19 MiB of memory, 2 passes, 1 lane. The memory is taken for each check that
runs at the same time, so a worker needs at most
``auth.login_concurrency`` times 19 MiB for logins: 38 MiB by default, which a
512 MiB device with two workers can spare. One lane, because a Pi's few
cores also serve every other request. A hash made with other parameters
still verifies, and :func:`verify` returns a new one to store in its place.
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from argon2 import PasswordHasher

TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1


@cache
def hasher() -> PasswordHasher:
    """The one hasher, argon2 imported on first use: a device whose callers all use
    tokens or HMAC keys never loads it."""
    from argon2 import PasswordHasher, Type

    return PasswordHasher(
        time_cost=TIME_COST,
        memory_cost=MEMORY_COST_KIB,
        parallelism=PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


_dummy_lock = threading.Lock()


@dataclass(frozen=True)
class Checked:
    """The outcome of one password check; ``rehashed`` replaces an outdated stored hash."""

    matched: bool
    rehashed: str | None = None


def encodable(password: str) -> bool:
    """False for text argon2 cannot take: a lone surrogate has no UTF-8 form."""
    try:
        password.encode()
    except UnicodeEncodeError:
        return False
    return True


def hash_password(password: str) -> str:
    return hasher().hash(password)


def dummy_hash() -> str:
    """A hash with the current parameters that no password matches, made on first use.

    An unknown username is checked against it, so that the check costs what a
    real one does. Made lazily (importing hostcore costs no argon2 run and no
    19 MiB) and once per process.
    """
    with _dummy_lock:  # two first logins at once still make one
        return _make_dummy_hash()


@cache
def _make_dummy_hash() -> str:
    return hasher().hash(secrets.token_urlsafe(32))


def verify(password_hash: str | None, password: str) -> Checked:
    """Check ``password`` against ``password_hash`` (the dummy hash when None).

    One argon2 computation either way; a second one only after a match with an
    outdated hash, to make its replacement.
    """
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    if not encodable(password):
        # No stored hash was made from it; still one argon2 run, like any miss.
        password_hash, password = None, ""
    try:
        hasher().verify(dummy_hash() if password_hash is None else password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return Checked(matched=False)
    if password_hash is None:
        return Checked(matched=False)
    if hasher().check_needs_rehash(password_hash):
        return Checked(matched=True, rehashed=hasher().hash(password))
    return Checked(matched=True)
