"""Secrets kept out of what hostcore prints: ``config show`` and the start-up log.

A setting is secret because its model says so, never because of its name
(``auth.token_ttl_s`` is a number): a field typed ``SecretStr`` or
``SecretBytes``, in hostcore's models or in a plugin's. Credentials inside a
URL are hidden in every form a URL carries them: ``user:pass@``, ``:pass@``
(Redis) and query parameters such as ``?password=``, ``&sslpassword=`` or
``&token=``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, SecretBytes, SecretStr

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

REDACTED = "********"

# Query parameters that carry a credential: libpq's password and sslpassword, and the
# usual names for passwords, secrets, tokens and keys in other services' URLs.
CREDENTIAL_PARAMETERS = frozenset(
    {
        "password",
        "passwd",
        "pwd",
        "sslpassword",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "auth_token",
        "api_key",
        "apikey",
    }
)

_CREDENTIAL_WORDS = ("password", "passwd", "passphrase", "secret", "token", "key", "signature")

# "scheme://user:" then the password, up to the last "@" before any white space: a
# password with an unencoded "@", "/", "?" or "#" is hidden whole (an "@" in a query after
# the host hides the host too: more hidden, never less).
_USERINFO_PASSWORD = re.compile(r"(?P<head>\b[a-z][a-z0-9+.-]*://[^:/@?#\s]*:)\S*@", re.I)
_QUERY_PARAMETER = re.compile(r"(?P<head>[?&;](?P<name>[^=&;#\s]+)=)(?P<value>[^&;#\s]*)")


def redact_url(text: str) -> str:
    """``text`` with the credentials of any URL in it hidden; other text is left alone."""
    if "://" not in text:
        return text
    text = _USERINFO_PASSWORD.sub(rf"\g<head>{REDACTED}@", text)
    return _QUERY_PARAMETER.sub(_redact_parameter, text)


def _redact_parameter(match: re.Match[str]) -> str:
    if is_credential_parameter(match["name"]):
        return f"{match['head']}{REDACTED}"
    return match[0]


def is_credential_parameter(name: str) -> bool:
    """Whether a query parameter (or similar name) carries a credential: one of the
    known names, or any name that says it holds a password, secret, token or key."""
    lowered = unquote_plus(name).lower()  # as the server that reads it decodes it
    return lowered in CREDENTIAL_PARAMETERS or any(word in lowered for word in _CREDENTIAL_WORDS)


def redact_database_url(url: URL | str) -> str:
    """A SQLAlchemy database URL with its password and credential parameters hidden.

    The URL is rendered the way SQLAlchemy reads it (``make_url``), so the
    password and query are found by SQLAlchemy's own rules; a string is also
    redacted before parsing, in case it is malformed in a way that moves the
    boundary of its password.
    """
    # SQLAlchemy only when a database URL is shown: config and logging import this module.
    from sqlalchemy.engine import URL, make_url
    from sqlalchemy.exc import ArgumentError

    text = url.render_as_string(hide_password=False) if isinstance(url, URL) else redact_url(url)
    try:
        parsed = make_url(text)
    except (ArgumentError, ValueError):  # not a URL SQLAlchemy can read (ValueError: its port)
        return redact_url(text)
    return redact_url(parsed.render_as_string(hide_password=False))


def secret_paths(model: BaseModel, prefix: str = "") -> Iterator[str]:
    """The dotted path of every value ``model`` declares secret, in nested models too."""
    for name, value in model:
        yield from _secrets_in(value, f"{prefix}{name}")


def _secrets_in(value: Any, path: str) -> Iterator[str]:
    if isinstance(value, SecretStr | SecretBytes):
        yield path
    elif isinstance(value, BaseModel):
        yield from secret_paths(value, f"{path}.")
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _secrets_in(item, f"{path}.{key}")
    elif isinstance(value, list | tuple) and any(
        next(_secrets_in(item, path), None) is not None for item in value
    ):
        yield path  # a list is shown whole: hidden whole when an item holds a secret
