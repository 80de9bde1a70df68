"""What a new password must be: long enough, not a common one, not the username.

The list of common passwords (``common_passwords.txt``, shipped with hostcore;
its header names the source) is read on first use, never at import.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

from hostcore.config import AuthSettings
from hostcore.errors import BadRequest
from hostcore.security.passwords import encodable

MAX_PASSWORD = 1024
# A username this short is part of too many good passwords to refuse them all.
MIN_CONTAINED_USERNAME = 4


@cache
def common_passwords() -> frozenset[str]:
    text = resources.files("hostcore.security").joinpath("common_passwords.txt").read_text()
    return frozenset(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


@dataclass(frozen=True)
class PasswordPolicy:
    min_length: int

    @classmethod
    def from_settings(cls, settings: AuthSettings) -> PasswordPolicy:
        return cls(min_length=settings.password_min_length)

    def check(self, password: str, username: str) -> None:
        """BadRequest naming the first rule ``password`` breaks for ``username``."""
        if not self.min_length <= len(password) <= MAX_PASSWORD:
            raise BadRequest(f"password must be {self.min_length} to {MAX_PASSWORD} characters")
        if not encodable(password):
            raise BadRequest("password must be valid Unicode text")
        folded = password.casefold()
        name = username.casefold()
        if folded == name or (len(name) >= MIN_CONTAINED_USERNAME and name in folded):
            raise BadRequest("password must not contain the username")
        if folded in common_passwords():
            raise BadRequest("password is one of the most common passwords: choose another")
