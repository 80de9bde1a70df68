"""The Issuer: the signing key in use, tokens issued and recorded, key rotation, revocation.

A revocation is refused at once by the worker that made it (other workers learn it
at their next poll: test_upkeep.py, and the two-worker server in
test_revocation_workers.py), even when the store was busy when it was made.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import jwt
import pytest

from hostcore.config import Settings
from tests.helpers import (
    PROBE_READ,
    WHOAMI,
    Serve,
    assert_error,
    authorization,
    bearer,
    kid_of,
    post_signed,
    runtime_of,
)

PUBLIC_JWK_FIELDS = {"kty", "crv", "x", "kid", "alg", "use"}
KEY_FIELDS = {"kid", "algorithm", "created_at", "retired_at", "verify_until", "active"}


# --- rotation -------------------------------------------------------------------------


def test_rotation_keeps_old_tokens_valid_and_signs_new_ones_with_the_new_key(
    serve: Serve,
) -> None:
    client = serve()
    runtime = runtime_of(client)
    before = bearer(client)
    old_kid = kid_of(before["Authorization"].removeprefix("Bearer "))

    rotated = client.post("/api/v1/auth/keys/rotate", headers=before)
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert set(new) == KEY_FIELDS
    assert new["active"] is True and new["kid"] != old_kid

    assert client.get(WHOAMI, headers=before).status_code == 200, "old token still verifies"
    fresh = post_signed(client, {}).json()["access_token"]
    assert kid_of(fresh) == new["kid"]
    assert client.get(WHOAMI, headers=authorization(fresh)).status_code == 200

    jwks = client.get("/.well-known/jwks.json").json()
    assert {key["kid"] for key in jwks["keys"]} == {old_kid, new["kid"]}
    assert all(set(key) == PUBLIC_JWK_FIELDS for key in jwks["keys"]), jwks

    keys = {key["kid"]: key for key in client.get("/api/v1/auth/keys", headers=before).json()}
    old = keys[old_kid]
    assert old["active"] is False and old["retired_at"] is not None
    grace = runtime.auth.max_token_ttl_s + runtime.auth.leeway_s
    assert old["verify_until"] == pytest.approx(old["retired_at"] + grace)
    assert keys[new["kid"]]["active"] is True


# --- revocation -----------------------------------------------------------------------


def test_revoked_token_is_refused_at_once_by_the_revoking_worker(serve: Serve) -> None:
    client = serve()
    admin = bearer(client)
    token = bearer(client)["Authorization"].removeprefix("Bearer ")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    assert client.get(WHOAMI, headers=authorization(token)).status_code == 200  # now cached
    revoked = client.delete(f"/api/v1/auth/tokens/{jti}", headers=admin)
    assert revoked.json() == {"revoked": 1}
    assert_error(client.get(WHOAMI, headers=authorization(token)), 401, "Unauthorized", "revoked")
    again = client.delete(f"/api/v1/auth/tokens/{jti}", headers=admin)
    assert_error(again, 404, "NotFound", f"no live token {jti}")


def test_revoking_by_subject_refuses_every_token_of_it(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(settings_factory('auth.clients.panel.scopes=["probe:read"]'))
    panel = [bearer(client, ["probe:read"], name="panel") for _ in range(2)]
    tester = bearer(client)
    for headers in panel:
        assert client.get(PROBE_READ, headers=headers).status_code == 200
    gone = client.delete("/api/v1/auth/tokens/by-subject/client:panel", headers=tester)
    assert gone.json() == {"revoked": 2}
    for headers in panel:
        assert_error(client.get(PROBE_READ, headers=headers), 401, "Unauthorized", "revoked")
    assert client.get(WHOAMI, headers=tester).status_code == 200


def test_a_revocation_committed_late_is_still_enforced(serve: Serve, settings: Settings) -> None:
    """revoked_at is stamped before the UPDATE waits for the write lock (up to busy_timeout)."""
    client = serve()
    admin = bearer(client)
    victim = bearer(client)
    jti = jwt.decode(
        victim["Authorization"].removeprefix("Bearer "), options={"verify_signature": False}
    )["jti"]
    assert client.get(WHOAMI, headers=victim).status_code == 200
    assert client.get(WHOAMI, headers=admin).status_code == 200

    # Another writer (a worker flushing activity, a backup, a migration) holds the lock.
    writer = sqlite3.connect(settings.data_dir / "hostcore.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    answers: list[int] = []
    revoker = threading.Thread(
        target=lambda: answers.append(
            client.delete(f"/api/v1/auth/tokens/{jti}", headers=admin).status_code
        )
    )
    revoker.start()
    time.sleep(3.0)
    writer.execute("COMMIT")
    writer.close()
    revoker.join(timeout=10)
    assert answers == [200]

    time.sleep(1.0)
    response = client.get(WHOAMI, headers=victim)
    assert_error(response, 401, "Unauthorized", "token has been revoked")


# --- issuing --------------------------------------------------------------------------------


def test_a_token_lives_token_ttl_s_by_default_and_never_beyond_max_token_ttl_s(
    serve: Serve,
) -> None:
    client = serve()
    runtime = runtime_of(client)
    assert client.portal is not None
    default = client.portal.call(runtime.issue, "client", "tester", ["*"])
    assert default.expires_at - default.issued_at == runtime.auth.token_ttl_s
    longest = client.portal.call(runtime.issue, "client", "tester", ["*"], 10**8)
    assert longest.expires_at - longest.issued_at == runtime.auth.max_token_ttl_s


def test_every_issued_token_is_recorded_with_its_key_never_the_token(
    serve: Serve, settings: Settings
) -> None:
    client = serve()
    runtime = runtime_of(client)
    assert client.portal is not None
    info = client.portal.call(runtime.issue, "client", "tester", ["probe:read"], 600)
    with sqlite3.connect(settings.data_dir / "hostcore.db") as db:
        rows = db.execute(
            "SELECT jti, subject, kind, scopes, kid, expires_at FROM tokens WHERE jti = ?",
            (info.jti,),
        ).fetchall()
        everything = repr(db.execute("SELECT * FROM tokens").fetchall())
    assert rows == [(info.jti, "client:tester", "client", "probe:read", info.kid, info.expires_at)]
    assert info.kid == kid_of(info.access_token)
    assert info.access_token not in everything


def test_the_newest_key_signs_and_every_key_that_still_verifies_is_known(serve: Serve) -> None:
    client = serve()
    runtime = runtime_of(client)
    assert client.portal is not None and runtime.signing_key is not None
    first = runtime.signing_key.kid
    second = client.portal.call(runtime.rotate_key).kid
    assert runtime.signing_key.kid == second
    assert set(runtime.verifier.keys) == {first, second}


def test_a_key_that_verifies_nothing_any_more_is_dropped_by_the_worker(
    serve: Serve, settings: Settings
) -> None:
    client = serve()
    runtime = runtime_of(client)
    assert client.portal is not None and runtime.signing_key is not None
    old = runtime.signing_key.kid
    client.portal.call(runtime.rotate_key)
    with sqlite3.connect(settings.data_dir / "hostcore.db") as db:
        db.execute("UPDATE signing_keys SET verify_until = 1 WHERE kid = ?", (old,))
    assert old in runtime.verifier.keys, "until the worker looks again"
    client.portal.call(runtime.issuer.wipe_retired)
    assert old not in runtime.verifier.keys
    with sqlite3.connect(settings.data_dir / "hostcore.db") as db:
        wiped = db.execute("SELECT private_key FROM signing_keys WHERE kid = ?", (old,)).fetchone()
    assert wiped == (b"",)
