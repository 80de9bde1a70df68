from __future__ import annotations

import pytest
from pydantic import BaseModel, SecretBytes, SecretStr
from sqlalchemy.engine import make_url

from hostcore.redaction import REDACTED, redact_database_url, redact_url, secret_paths


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("redis://:pa55@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
        ("rediss://user:pa55@cache:6380", f"rediss://user:{REDACTED}@cache:6380"),
        (
            "redis+sentinel://:pa55@h1:26379,h2:26379/main",
            f"redis+sentinel://:{REDACTED}@h1:26379,h2:26379/main",
        ),
        ("mongodb://u:p%40ss@db/?authSource=admin", f"mongodb://u:{REDACTED}@db/?authSource=admin"),
        ("https://h/x?token=abc&a=1", f"https://h/x?token={REDACTED}&a=1"),
        ("https://h/x?a=1&API_KEY=abc", f"https://h/x?a=1&API_KEY={REDACTED}"),
        ("https://h/x?a=1;password=abc", f"https://h/x?a=1;password={REDACTED}"),
        ("redis://u:pa#ss@cache", f"redis://u:{REDACTED}@cache"),
        ("postgresql+asyncpg://u:p?w@h/db", f"postgresql+asyncpg://u:{REDACTED}@h/db"),
        ("redis://:p@ss/x@cache:6379/0", f"redis://:{REDACTED}@cache:6379/0"),
        ("https://user@h/x?page=2", "https://user@h/x?page=2"),
        ("http://h:8080/path", "http://h:8080/path"),
        ("sqlite+aiosqlite:////var/lib/hostcore/hostcore.db", None),
        ("memory://", None),
        ("not a url: password=abc", None),
    ],
)
def test_redact_url_hides_every_credential_form(text: str, shown: str | None) -> None:
    assert redact_url(text) == (text if shown is None else shown)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+asyncpg://hc:pa55@db/hc", f"postgresql+asyncpg://hc:{REDACTED}@db/hc"),
        ("postgresql://hc:p%2Fa55@db/hc", f"postgresql://hc:{REDACTED}@db/hc"),
        (
            "postgresql+asyncpg://hc@db/hc?password=pa55",
            f"postgresql+asyncpg://hc@db/hc?password={REDACTED}",
        ),
        (
            "postgresql://hc@db/hc?application_name=x&sslpassword=pa55",
            f"postgresql://hc@db/hc?application_name=x&sslpassword={REDACTED}",
        ),
        ("postgresql+asyncpg://hc:pa@55@db/hc", f"postgresql+asyncpg://hc:{REDACTED}@db/hc"),
        ("nosuch", "nosuch"),
    ],
)
def test_redact_database_url_reads_the_url_as_sqlalchemy_does(url: str, shown: str) -> None:
    assert redact_database_url(url) == shown


def test_redact_database_url_takes_a_sqlalchemy_url() -> None:
    url = make_url("postgresql+asyncpg://hc:pa55@db/hc?password=pa55")
    assert "pa55" not in redact_database_url(url)


class Inner(BaseModel):
    key: SecretBytes
    name: str = "x"


class Outer(BaseModel):
    password: SecretStr | None = None
    ttl_token_s: int = 5
    inner: Inner
    by_name: dict[str, Inner] = {}
    listed: list[Inner] = []


def test_secret_paths_are_the_values_declared_secret_however_deep() -> None:
    model = Outer(
        password=SecretStr("p"),
        inner=Inner(key=SecretBytes(b"k")),
        by_name={"a": Inner(key=SecretBytes(b"k"))},
        listed=[Inner(key=SecretBytes(b"k"))],
    )
    assert sorted(secret_paths(model, "plugins.x.")) == [
        "plugins.x.by_name.a.key",
        "plugins.x.inner.key",
        "plugins.x.listed",
        "plugins.x.password",
    ]
