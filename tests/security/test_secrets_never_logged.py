"""No token, password, secret or key material reaches a log, after real secret-handling flows.

Runs on the shared two-worker server after the other real-server tests (file order), so
the tokens they used are checked too; its own flows make it meaningful alone.
"""

from __future__ import annotations

import base64
import json
import secrets
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hostcore.security import hmac as signing
from hostcore.security.keys import MasterKey
from tests.helpers import WHOAMI, RealServer, Sent, b64url, wait_for

pytestmark = pytest.mark.integration

TOKEN = "/api/v1/auth/token"


def spellings(secret: bytes) -> list[bytes]:
    """The ways a secret could be written to a text log."""
    text = [secret.hex(), b64url(secret), base64.b64encode(secret).decode(), repr(secret)[2:-1]]
    return [secret, *(item.encode() for item in text)]


def key_material(server: RealServer) -> list[bytes]:
    """The master key, and every signing key's private bytes decrypted with it."""
    master_bytes = (server.data_dir / "master.key").read_bytes()
    master = MasterKey(master_bytes)
    found = [master_bytes]
    with sqlite3.connect(server.data_dir / "hostcore.db") as db:
        rows = db.execute("SELECT kid, private_key FROM signing_keys").fetchall()
    assert rows, "the server made a signing key"
    for kid, blob in rows:
        if not blob:
            continue
        raw = master.decrypt(blob, kid.encode())
        pem = Ed25519PrivateKey.from_private_bytes(raw).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        found += [raw, pem]
    return found


def password_hash(server: RealServer, username: str) -> str:
    with sqlite3.connect(server.data_dir / "hostcore.db") as db:
        row = db.execute(
            "SELECT password_hash FROM users WHERE username = ?", (username,)
        ).fetchone()
    return str(row[0])


def signed_json(server: RealServer, path: str, body: dict[str, object]) -> dict[str, str]:
    content = json.dumps(body).encode()
    secret = server.hmac_secret()
    return {
        **signing.signed_headers(
            secret, method="POST", path=path, query="", client="tester", body=content
        ),
        "content-type": "application/json",
    }


def log_files(server: RealServer) -> list[Path]:
    files = [path for path in server.log_dir.rglob("*") if path.is_file()]
    return files + [path for path in server.console if path.exists()]


def test_no_secret_reaches_a_log_file(real_server: RealServer) -> None:
    password = f"pw-{secrets.token_urlsafe(18)}"
    wrong_password = f"pw-{secrets.token_urlsafe(18)}"
    outputs: list[str] = []

    # A CLI start costs seconds: the token is issued while the HTTP flows run.
    background = ThreadPoolExecutor(max_workers=1)
    issuing = background.submit(real_server.cli, "token", "issue", "--client", "tester")

    # A user, added with the password on stdin.
    added = real_server.cli(
        "user", "add", "alice", "--role", "admin", "--password-stdin", stdin=password + "\n"
    )
    assert added.returncode == 0, added.stderr
    outputs += [added.stdout, added.stderr]

    # Login, a failed login, and a login that fails validation (422 must not echo it).
    login = real_server.send(
        "POST",
        TOKEN,
        content=json.dumps({"username": "alice", "password": password}).encode(),
        headers={"content-type": "application/json"},
    ).response
    assert login.status_code == 200, login.text
    user_token = login.json()["access_token"]
    failed = real_server.send(
        "POST",
        TOKEN,
        content=json.dumps({"username": "alice", "password": wrong_password}).encode(),
        headers={"content-type": "application/json"},
    ).response
    assert failed.json() == {"error": "Unauthorized", "detail": "invalid username or password"}
    invalid = real_server.send(
        "POST",
        TOKEN,
        content=json.dumps({"username": "alice", "password": password, "extra": 1}).encode(),
        headers={"content-type": "application/json"},
    ).response
    assert invalid.status_code == 422
    assert password not in invalid.text, "a 422 never echoes the rejected input"

    # The user's token, in the header and (wrongly, by a careless caller) in the query.
    assert (
        real_server.send(
            "GET", WHOAMI, headers={"Authorization": f"Bearer {user_token}"}
        ).response.json()["subject"]
        == "user:alice"
    )
    in_query = real_server.send("GET", f"{WHOAMI}?access_token={user_token}").response
    assert in_query.status_code == 401

    # A client token by a signed request, and one from the CLI.
    hmac_token = real_server.send(
        "POST",
        TOKEN,
        content=json.dumps({"ttl_s": 600}).encode(),
        headers=signed_json(real_server, TOKEN, {"ttl_s": 600}),
    ).response.json()["access_token"]
    issued = issuing.result(timeout=60)
    background.shutdown()
    assert issued.returncode == 0, issued.stderr
    cli_token = json.loads(issued.stdout)["access_token"]
    outputs.append(issued.stderr)
    for token in (hmac_token, cli_token):
        response = real_server.send("GET", WHOAMI, headers={"Authorization": f"Bearer {token}"})
        assert response.response.status_code == 200
    rejected = real_server.send("GET", WHOAMI, headers={"Authorization": f"Bearer {cli_token}x"})
    assert rejected.response.status_code == 401
    listed = real_server.send(
        "GET", "/api/v1/auth/tokens", headers={"Authorization": f"Bearer {user_token}"}
    ).response
    assert listed.status_code == 200 and user_token not in listed.text

    # A new password revokes the user's tokens, in every worker.
    new_password = f"pw-{secrets.token_urlsafe(18)}"
    changed = real_server.cli("user", "passwd", "alice", "--password-stdin", stdin=new_password)
    assert changed.returncode == 0, changed.stderr
    assert "revoked 1 token(s)" in changed.stdout
    outputs += [changed.stdout, changed.stderr]
    bursts: list[list[Sent]] = []

    def refused_by_both() -> bool:
        """A burst of six is refused whole, and both workers have refused the token by now."""
        burst = real_server.burst(
            6,
            lambda _: real_server.send(
                "GET", WHOAMI, headers={"Authorization": f"Bearer {user_token}"}
            ),
        )
        bursts.append(burst)
        sent = [item for sent in bursts for item in sent]
        workers = real_server.workers_of(sent)
        refusing = {workers[i.request_id] for i in sent if i.response.status_code == 401}
        return len(refusing) == 2 and {i.response.status_code for i in burst} == {401}

    # The other worker learns of it at its next poll (auth.revocation_poll_s).
    wait_for(refused_by_both, 30, "both workers to refuse the user's token")
    for item in bursts[-1]:
        assert item.response.json() == {"error": "Unauthorized", "detail": "token has been revoked"}
    relogin = real_server.send(
        "POST",
        TOKEN,
        content=json.dumps({"username": "alice", "password": new_password}).encode(),
        headers={"content-type": "application/json"},
    ).response
    assert relogin.status_code == 200, relogin.text

    secret_texts = [
        password,
        new_password,
        relogin.json()["access_token"],
        wrong_password,
        user_token,
        hmac_token,
        cli_token,
        password_hash(real_server, "alice"),
        *real_server.secrets,
    ]
    secret_bytes = [text.encode() for text in secret_texts]
    for secret_file in (real_server.data_dir / "secrets").glob("*.secret"):
        secret_bytes += spellings(signing.read_secret(secret_file))
    for material in key_material(real_server):
        secret_bytes += spellings(material)
    # A token's signature alone is as good as the token to anyone holding its claims.
    secret_bytes += [token.rsplit(".", 1)[1].encode() for token in (user_token, cli_token)]

    files = log_files(real_server)
    assert real_server.log_dir / "app.log" in files
    assert real_server.log_dir / "debug" / "debug.log" in files
    assert "POST /api/v1/auth/token 200" in real_server.app_log(), "the flows were logged"
    leaks = [
        (str(path), index)
        for path in files
        for index, secret in enumerate(secret_bytes)
        if secret in path.read_bytes()
    ]
    assert leaks == [], f"secrets (by index into the list) found in {leaks}"
    for output in outputs:
        assert password not in output
        assert new_password not in output
        assert password_hash(real_server, "alice") not in output
