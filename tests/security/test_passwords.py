"""Password hashes: argon2id with the documented parameters, and the one dummy hash that
makes a login for an unknown user cost what a real one costs."""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from argon2 import PasswordHasher

from hostcore.security import passwords

PASSWORD = "correct-horse-battery-staple"
WRONG = "not-the-password-at-all"


def test_importing_hostcore_computes_no_password_hash() -> None:
    """The dummy hash for unknown users is made on the first login, not at import."""
    code = (
        "import argon2\n"
        "calls = []\n"
        "real = argon2.PasswordHasher.hash\n"
        "def counting(self, *args, **options):\n"
        "    calls.append(1)\n"
        "    return real(self, *args, **options)\n"
        "argon2.PasswordHasher.hash = counting\n"
        "import hostcore.app, hostcore.builtin.auth, hostcore.security.users\n"
        "print(len(calls))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "0"


def test_the_dummy_hash_is_made_once_with_the_current_parameters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[str] = []
    real_hash = PasswordHasher.hash

    def counting(self: PasswordHasher, password: str | bytes, **options: Any) -> str:
        made.append(threading.current_thread().name)
        return real_hash(self, password, **options)

    monkeypatch.setattr(PasswordHasher, "hash", counting)
    passwords._make_dummy_hash.cache_clear()
    with ThreadPoolExecutor(4) as pool:
        found = set(pool.map(lambda _: passwords.dummy_hash(), range(8)))
    assert len(found) == 1 and len(made) == 1
    assert not passwords.hasher().check_needs_rehash(found.pop())


def test_passwords_are_hashed_with_the_documented_parameters() -> None:
    hashed = passwords.hash_password(PASSWORD)
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify(hashed, PASSWORD) == passwords.Checked(matched=True)
    assert passwords.verify(hashed, WRONG) == passwords.Checked(matched=False)
    assert passwords.verify(None, PASSWORD) == passwords.Checked(matched=False)


def test_a_password_with_a_lone_surrogate_matches_nothing() -> None:
    stored = passwords.hash_password(PASSWORD)
    assert passwords.verify(stored, PASSWORD + "\ud800") == passwords.Checked(matched=False)
    assert passwords.verify(None, "\udfff") == passwords.Checked(matched=False)
