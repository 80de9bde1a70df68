from __future__ import annotations

import grp
import hashlib
import hmac
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from hostcore.errors import ConfigError
from hostcore.security import hmac as signing

SECRET = b"0123456789abcdef0123456789abcdef"
BODY = '{"name":"café"}'.encode()
FIELDS: dict[str, Any] = {
    "method": "post",
    "path": "/files/disk%20usage",
    "query": "b=x+y&a=1",
    "client": "cli",
    "timestamp": 1_700_000_000,
    "nonce": "0123456789abcdef",
    "body_sha256": hashlib.sha256(BODY).hexdigest(),
}
# The documented format, spelled out by hand: what other-language clients implement.
DOCUMENTED = (
    b"HOSTCORE-HMAC-SHA256\n"
    b"POST\n"
    b"/files/disk%20usage\n"
    b"a=1&b=x%20y\n"
    b"cli\n"
    b"1700000000\n"
    b"0123456789abcdef\n"
    b"645fa443126a8954fc6d871912b8fc67bc2ee8feae417efe55546251962ca74d"
)
KNOWN_SIGNATURE = "9d711a9d05d765d7dde8e475f7adf7f77c01eea5bb7200fa9ef356d23948cab1"


def test_string_to_sign_is_the_documented_format() -> None:
    assert signing.string_to_sign(**FIELDS) == DOCUMENTED


def test_known_answer() -> None:
    independent = hmac.new(SECRET, DOCUMENTED, hashlib.sha256).hexdigest()
    assert independent == KNOWN_SIGNATURE
    assert signing.sign(SECRET, **FIELDS) == KNOWN_SIGNATURE
    assert signing.signature_matches(SECRET, KNOWN_SIGNATURE, **FIELDS)


def test_body_digest_is_hex_sha256() -> None:
    assert signing.body_digest(b"") == (
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(
    ("query", "canonical"),
    [
        ("", ""),
        ("b=2&a=1", "a=1&b=2"),
        ("a=%41", "a=A"),
        ("a=b+c", "a=b%20c"),  # form encoding: "+" is a space
        ("a=b%20c", "a=b%20c"),
        ("a=%2B", "a=%2B"),  # an encoded "+" stays a plus
        ("a", "a="),
        ("a=", "a="),
        ("a=1&&b=2&", "a=1&b=2"),
        ("a==", "a=%3D"),
        ("a=~-._", "a=~-._"),
        ("a=%7e%2d%2e%5f", "a=~-._"),
        ("%c3%bc=%E2%9C%93", "%C3%BC=%E2%9C%93"),
        ("q=a/b?c:d@e", "q=a%2Fb%3Fc%3Ad%40e"),
        ("a=2&b=0&a=1", "a=2&a=1&b=0"),  # a repeated key keeps its values' order
        ("a=%FF", "a=%FF"),  # not UTF-8: the byte itself is kept
    ],
)
def test_canonical_query(query: str, canonical: str) -> None:
    assert signing.canonical_query(query) == canonical


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("a=1", "a=2"),
        ("a=1&a=2", "a=2&a=1"),  # an app reading a["a"] gets the last one
        ("a=+", "a=%2B"),
        ("a=%26b", "a&b"),
        ("a=", ""),
        ("a=%FF", "a=%EF%BF%BD"),  # both decode to U+FFFD when decoded leniently
        ("a%3Db=c", "a=b%3Dc"),
    ],
)
def test_canonical_query_keeps_differences(first: str, second: str) -> None:
    assert signing.canonical_query(first) != signing.canonical_query(second)


def test_method_case_does_not_matter() -> None:
    assert signing.sign(SECRET, **{**FIELDS, "method": "POST"}) == KNOWN_SIGNATURE


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "PUT"),
        ("path", "/files/disk%20usagE"),
        ("path", "/files/disk/usage"),
        ("query", "b=x+y&a=2"),
        ("query", ""),
        ("client", "clj"),
        ("timestamp", 1_700_000_001),
        ("nonce", "0123456789abcdeF"),
        ("body_sha256", hashlib.sha256(BODY + b" ").hexdigest()),
    ],
)
def test_changing_any_field_changes_the_signature(field: str, value: object) -> None:
    tampered = {**FIELDS, field: value}
    assert signing.sign(SECRET, **tampered) != KNOWN_SIGNATURE
    assert not signing.signature_matches(SECRET, KNOWN_SIGNATURE, **tampered)


def test_another_secret_does_not_match() -> None:
    assert not signing.signature_matches(b"x" * 32, KNOWN_SIGNATURE, **FIELDS)


@pytest.mark.parametrize(
    "signature",
    [
        "",
        "zz" * 32,
        KNOWN_SIGNATURE[:-2],
        KNOWN_SIGNATURE + "00",
        KNOWN_SIGNATURE.upper(),
        f" {KNOWN_SIGNATURE}",
        f"{KNOWN_SIGNATURE}\n",
        "é" * 64,
    ],
)
def test_signature_matches_rejects_garbage(signature: str) -> None:
    assert not signing.signature_matches(SECRET, signature, **FIELDS)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("method", "GE T"),
        ("method", ""),
        ("path", ""),
        ("path", "files"),
        ("path", "/a\nb"),
        ("path", "/a b"),
        ("path", "/ü"),
        ("path", "/a?b=1"),
        ("client", "Cli"),
        ("client", "cli\n"),
        ("client", ""),
        ("timestamp", -1),
        ("nonce", "short"),
        ("nonce", "0123456789abcdef\n"),
        ("body_sha256", "X" * 64),
    ],
)
def test_unrepresentable_fields_are_refused(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        signing.string_to_sign(**{**FIELDS, field: value})
    assert not signing.signature_matches(SECRET, KNOWN_SIGNATURE, **{**FIELDS, field: value})


@pytest.mark.parametrize("value", ["0", "7", "1700000000", "99999999999"])
def test_parse_timestamp(value: str) -> None:
    assert signing.parse_timestamp(value) == int(value)


@pytest.mark.parametrize(
    "value",
    ["", "-1", "+1", " 1", "1 ", "1\n", "1.5", "1e9", "0123", "1_000", "١٢٣", "9" * 12, "0x10"],
)
def test_parse_timestamp_rejects(value: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        signing.parse_timestamp(value)


def test_new_nonce_is_valid_and_fresh() -> None:
    nonces = {signing.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(signing.NONCE_PATTERN.match(nonce) for nonce in nonces)


def test_patterns_refuse_a_trailing_newline() -> None:
    assert signing.NONCE_PATTERN.match("0123456789abcdef")
    assert not signing.NONCE_PATTERN.match("0123456789abcdef\n")
    assert signing.CLIENT_PATTERN.match("backup-agent_2")
    assert not signing.CLIENT_PATTERN.match("cli\n")


def test_signed_headers() -> None:
    headers = signing.signed_headers(
        SECRET,
        method="POST",
        path="/files/disk%20usage",
        query="a=1&b=x%20y",
        client="cli",
        body=BODY,
        now=1_700_000_000.9,
        nonce="0123456789abcdef",
    )
    assert headers == {
        "X-Hostcore-Client": "cli",
        "X-Hostcore-Timestamp": "1700000000",
        "X-Hostcore-Nonce": "0123456789abcdef",
        "X-Hostcore-Signature": KNOWN_SIGNATURE,
    }


def test_signed_headers_defaults_to_now_and_a_new_nonce() -> None:
    fields: dict[str, Any] = {
        "method": "GET",
        "path": "/",
        "query": "",
        "client": "cli",
        "body": b"",
    }
    first = signing.signed_headers(SECRET, **fields)
    second = signing.signed_headers(SECRET, **fields)
    assert first[signing.NONCE_HEADER] != second[signing.NONCE_HEADER]
    timestamp = signing.parse_timestamp(first[signing.TIMESTAMP_HEADER])
    assert signing.signature_matches(
        SECRET,
        first[signing.SIGNATURE_HEADER],
        method="GET",
        path="/",
        query="",
        client="cli",
        timestamp=timestamp,
        nonce=first[signing.NONCE_HEADER],
        body_sha256=signing.body_digest(b""),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_create_secret(tmp_path: Path) -> None:
    path = tmp_path / "hmac.secret"
    secret = signing.create_secret(path)
    assert len(secret) == 64
    int(secret, 16)
    assert path.read_bytes() == secret + b"\n"
    assert mode(path) == 0o600
    assert signing.read_secret(path) == secret
    assert [entry.name for entry in tmp_path.iterdir()] == ["hmac.secret"]


def test_create_secret_for_a_group(tmp_path: Path) -> None:
    group = grp.getgrgid(os.getgid()).gr_name
    path = tmp_path / "run" / "hmac.secret"
    secret = signing.create_secret(path, group=group)
    assert signing.read_secret(path) == secret
    assert mode(path) == 0o640
    assert path.stat().st_gid == os.getgid()
    assert mode(path.parent) == 0o710
    assert path.parent.stat().st_gid == os.getgid()


def test_create_secret_makes_a_private_parent(tmp_path: Path) -> None:
    path = tmp_path / "data" / "hmac.secret"
    signing.create_secret(path)
    assert mode(path.parent) == 0o700


def test_create_secret_unknown_group(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such group"):
        signing.create_secret(tmp_path / "hmac.secret", group="no-such-group-hostcore")
    assert not (tmp_path / "hmac.secret").exists()


def test_create_secret_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "hmac.secret"
    path.write_bytes(b"k" * 40 + b"\n")
    path.chmod(0o644)
    assert signing.create_secret(path) == b"k" * 40
    assert path.read_bytes() == b"k" * 40 + b"\n"
    assert mode(path) == 0o644


def test_concurrent_creators_agree(tmp_path: Path) -> None:
    path = tmp_path / "hmac.secret"
    with ThreadPoolExecutor(8) as pool:
        secrets = list(pool.map(lambda _: signing.create_secret(path), range(16)))
    assert set(secrets) == {signing.read_secret(path)}
    assert [entry.name for entry in tmp_path.iterdir()] == ["hmac.secret"]


def test_read_secret_strips_trailing_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "hmac.secret"
    path.write_bytes(b"  " + b"s" * 32 + b" \r\n\t\n")
    assert signing.read_secret(path) == b"  " + b"s" * 32


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b" \n\n", "empty"),
        (b"s" * 31 + b"\n", "shorter than 32 bytes"),
        (b"s" * 5000, "longer than 4096 bytes"),
    ],
)
def test_read_secret_rejects(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "hmac.secret"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        signing.read_secret(path)


def test_read_secret_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read HMAC secret"):
        signing.read_secret(tmp_path / "missing")
