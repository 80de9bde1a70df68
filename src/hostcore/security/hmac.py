"""The HMAC request-signing scheme local tools use instead of holding a token.

A client that shares a secret with the server signs every request; the server
recomputes the signature from what it received. Everything here is pure except
``read_secret`` and ``create_secret``, which manage the secret file.

The string to sign is a public contract (clients in other languages implement
it); ``string_to_sign`` documents it byte for byte.
"""

from __future__ import annotations

import grp
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from pathlib import Path
from typing import TypedDict, Unpack
from urllib.parse import parse_qsl, quote

from hostcore.errors import ConfigError

CLIENT_HEADER = "X-Hostcore-Client"
TIMESTAMP_HEADER = "X-Hostcore-Timestamp"
NONCE_HEADER = "X-Hostcore-Nonce"
SIGNATURE_HEADER = "X-Hostcore-Signature"

SCHEME = "HOSTCORE-HMAC-SHA256"

# \A and \Z rather than ^ and $: "$" also matches before a trailing newline.
NONCE_PATTERN = re.compile(r"\A[A-Za-z0-9_-]{16,64}\Z")
CLIENT_PATTERN = re.compile(r"\A[a-z][a-z0-9_-]{0,63}\Z")
# Canonical decimal only (no sign, blanks, "_" or leading zeros), at most 11 digits.
_TIMESTAMP_PATTERN = re.compile(r"\A(0|[1-9][0-9]{0,10})\Z")
_METHOD_PATTERN = re.compile(r"\A[A-Z]{1,20}\Z")
_PATH_PATTERN = re.compile(r"\A/[\x21-\x3e\x40-\x7e]*\Z")  # printable ASCII, no "?"
_SHA256_HEX_PATTERN = re.compile(r"\A[0-9a-f]{64}\Z")

# RFC 3986 unreserved characters stay as they are; everything else is %XX (UTF-8).
_UNRESERVED = "-_.~"

SECRET_BYTES = 32
MIN_SECRET_BYTES = 32
MAX_SECRET_BYTES = 4096
SECRET_MODE = 0o600
GROUP_SECRET_MODE = 0o640


def canonical_query(query_string: str) -> str:
    """The query in one canonical spelling, so equivalent queries sign the same.

    ``query_string`` is the raw query as sent (ASGI ``scope["query_string"]``
    decoded as latin-1), read as application/x-www-form-urlencoded: split on
    ``&``, a pair without ``=`` has an empty value, empty pairs are dropped,
    ``+`` is a space, ``%XX`` escapes are decoded (UTF-8; invalid sequences keep
    their bytes). Each key and value is then re-encoded with every byte outside
    ``A-Z a-z 0-9 - _ . ~`` as uppercase ``%XX``, and the pairs are sorted by
    encoded key in byte order. The sort is stable: values of a repeated key
    keep the order they were sent in, because that order changes what an app
    reads (``a=1&a=2`` yields ``a == "2"``). Pairs are joined ``k=v&k=v``.
    """
    pairs = parse_qsl(
        query_string, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"
    )
    encoded = [(_encode(key), _encode(value)) for key, value in pairs]
    encoded.sort(key=lambda pair: pair[0])
    return "&".join(f"{key}={value}" for key, value in encoded)


def _encode(text: str) -> str:
    return quote(text, safe=_UNRESERVED, encoding="utf-8", errors="surrogateescape")


def body_digest(body: bytes) -> str:
    """Lowercase hex SHA-256 of the exact body bytes (of ``b""`` when there is none)."""
    return hashlib.sha256(body).hexdigest()


class SignedFields(TypedDict):
    """What a signature covers, as keyword arguments of the functions below."""

    method: str
    path: str
    query: str
    client: str
    timestamp: int
    nonce: str
    body_sha256: str


def string_to_sign(**fields: Unpack[SignedFields]) -> bytes:
    """The bytes the HMAC covers: eight ASCII lines joined by ``\\n``, no trailing newline.

    ::

        HOSTCORE-HMAC-SHA256
        <METHOD>            upper-cased, letters only: GET
        <path>              exactly as sent on the wire, still percent-encoded,
                            without the query: /system/disk%20usage
        <canonical query>   canonical_query(raw query); empty line when none
        <client>            the X-Hostcore-Client value, ^[a-z][a-z0-9_-]{0,63}$
        <timestamp>         X-Hostcore-Timestamp: UNIX seconds, decimal
        <nonce>             X-Hostcore-Nonce: ^[A-Za-z0-9_-]{16,64}$
        <body sha256>       lowercase hex SHA-256 of the raw body bytes

    The signature (X-Hostcore-Signature) is the lowercase hex HMAC-SHA256 of
    these bytes, keyed with the secret file's content minus trailing whitespace.
    A field that cannot be represented (a newline, non-ASCII path, a malformed
    name) raises ``ValueError`` rather than producing an ambiguous string.
    """
    upper_method = fields["method"].upper()
    timestamp = str(fields["timestamp"])
    _require(_METHOD_PATTERN, upper_method, "method")
    _require(_PATH_PATTERN, fields["path"], "path")
    _require(CLIENT_PATTERN, fields["client"], "client")
    _require(_TIMESTAMP_PATTERN, timestamp, "timestamp")
    _require(NONCE_PATTERN, fields["nonce"], "nonce")
    _require(_SHA256_HEX_PATTERN, fields["body_sha256"], "body_sha256")
    lines = (
        SCHEME,
        upper_method,
        fields["path"],
        canonical_query(fields["query"]),
        fields["client"],
        timestamp,
        fields["nonce"],
        fields["body_sha256"],
    )
    return "\n".join(lines).encode("ascii")


def _require(pattern: re.Pattern[str], value: str, name: str) -> None:
    if not pattern.match(value):
        raise ValueError(f"invalid {name} for signing: {value!r}")


def sign(secret: bytes, **fields: Unpack[SignedFields]) -> str:
    """Lowercase hex HMAC-SHA256 of ``string_to_sign`` under ``secret``."""
    return hmac.new(secret, string_to_sign(**fields), hashlib.sha256).hexdigest()


def signature_matches(secret: bytes, signature: str, **fields: Unpack[SignedFields]) -> bool:
    """Whether ``signature`` signs these fields; False for anything malformed, never raises.

    Checks only the signature: the timestamp window, nonce reuse and which
    secret belongs to ``client`` are the verifier's job.
    """
    if not _SHA256_HEX_PATTERN.match(signature):
        return False
    try:
        expected = sign(secret, **fields)
    except ValueError:
        return False
    return hmac.compare_digest(expected, signature)


def new_nonce() -> str:
    """128 random bits, hex: unique per request within the accepted window."""
    return secrets.token_hex(16)


def parse_timestamp(value: str) -> int:
    """The X-Hostcore-Timestamp header as UNIX seconds; ``ValueError`` unless canonical decimal."""
    if not _TIMESTAMP_PATTERN.match(value):
        raise ValueError(f"invalid timestamp: {value[:32]!r}")
    return int(value)


def signed_headers(
    secret: bytes,
    *,
    method: str,
    path: str,
    query: str,
    client: str,
    body: bytes,
    now: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four headers that sign a request; ``now`` and ``nonce`` are for tests."""
    timestamp = int(time.time() if now is None else now)
    used_nonce = new_nonce() if nonce is None else nonce
    signature = sign(
        secret,
        method=method,
        path=path,
        query=query,
        client=client,
        timestamp=timestamp,
        nonce=used_nonce,
        body_sha256=body_digest(body),
    )
    return {
        CLIENT_HEADER: client,
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: used_nonce,
        SIGNATURE_HEADER: signature,
    }


def read_secret(path: Path) -> bytes:
    """The HMAC key: the file's bytes without trailing whitespace, at least 32 of them."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read HMAC secret {path}: {exc.strerror}") from exc
    secret = raw.rstrip()
    if not secret:
        raise ConfigError(f"HMAC secret {path} is empty")
    if len(secret) < MIN_SECRET_BYTES:
        raise ConfigError(f"HMAC secret {path} is shorter than {MIN_SECRET_BYTES} bytes")
    if len(raw) > MAX_SECRET_BYTES:
        raise ConfigError(f"HMAC secret {path} is longer than {MAX_SECRET_BYTES} bytes")
    return secret


def create_secret(path: Path, *, group: str | None = None) -> bytes:
    """Create a random secret file (64 hex characters) unless one exists; return the key.

    The file is written under a temporary name and published with a hard link,
    so it never overwrites and nobody reads it half-written. Mode 0600, or 0640
    with ``group`` as its group so that group's local tools can sign. A missing
    parent directory is created 0700 (0710 with ``group``: enough to reach the
    file, not to list the directory).
    """
    gid = _group_id(group) if group is not None else None
    if path.exists():
        return read_secret(path)
    secret = secrets.token_hex(SECRET_BYTES).encode("ascii")
    try:
        _make_parent(path.parent, gid)
        created = _write_new(path, secret + b"\n", gid)
    except PermissionError as exc:
        owner = f" for group {group!r}" if group else ""
        raise ConfigError(f"cannot create HMAC secret {path}{owner}: {exc.strerror}") from exc
    except OSError as exc:
        raise ConfigError(f"cannot create HMAC secret {path}: {exc.strerror}") from exc
    # Another process may have published its secret first: theirs is the one in use.
    return secret if created else read_secret(path)


def _group_id(group: str) -> int:
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ConfigError(f"HMAC secret group {group!r}: no such group") from None


def _make_parent(directory: Path, gid: int | None) -> None:
    if directory.is_dir():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if gid is not None:
        os.chown(directory, -1, gid)
        directory.chmod(0o710)


def _write_new(path: Path, content: bytes, gid: int | None) -> bool:
    """Write ``content`` to a new file at ``path``; False when ``path`` already exists."""
    fd, temporary_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if gid is not None:
                os.fchown(handle.fileno(), -1, gid)
            os.fchmod(handle.fileno(), SECRET_MODE if gid is None else GROUP_SECRET_MODE)
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            path.hardlink_to(temporary)
        except FileExistsError:
            return False
        return True
    finally:
        temporary.unlink(missing_ok=True)
