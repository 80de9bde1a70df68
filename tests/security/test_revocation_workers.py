"""Two gunicorn workers on one store: a revoked token is refused by both within a second,
both share one rate limit, a nonce is spent for both, and a key rotation reaches both.
Also ``hostcore call`` against the running server.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

import jwt
import pytest

from hostcore.security import hmac as signing
from tests.helpers import RATE_LIMIT, WHOAMI, RealServer, Sent

pytestmark = pytest.mark.integration

TOKEN = "/api/v1/auth/token"
REVOCATION_DEADLINE_S = 1.0
MAX_BURSTS = 15
BURST = 8


def issue(server: RealServer, *args: str) -> dict[str, object]:
    result = server.cli("token", "issue", "--client", "tester", *args)
    assert result.returncode == 0, result.stderr
    issued: dict[str, object] = json.loads(result.stdout)
    server.secrets.append(str(issued["access_token"]))
    return issued


def until_both_workers(
    server: RealServer, make: Callable[[int], Sent], counted: Callable[[Sent], bool]
) -> tuple[list[Sent], dict[str, str]]:
    """Bursts until both workers have served a request that ``counted`` picks; bounded."""
    sent: list[Sent] = []
    workers: dict[str, str] = {}
    for _ in range(MAX_BURSTS):
        sent += server.burst(BURST, make)
        workers = server.workers_of(sent)
        if len({workers[item.request_id] for item in sent if counted(item)}) >= 2:
            break
    return sent, workers


def revoked_at(server: RealServer, jti: str) -> float:
    with sqlite3.connect(server.data_dir / "hostcore.db") as db:
        row = db.execute("SELECT revoked_at FROM tokens WHERE jti = ?", (jti,)).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def test_revoked_token_is_refused_by_every_worker_within_a_second(
    real_server: RealServer,
) -> None:
    issued = issue(real_server)
    headers = {"Authorization": f"Bearer {issued['access_token']}"}

    def whoami(_: int) -> Sent:
        return real_server.send("GET", WHOAMI, headers=headers)

    warm, workers = until_both_workers(real_server, whoami, lambda item: True)
    assert {item.response.status_code for item in warm} == {200}
    assert len(set(workers.values())) == 2, "both workers verified (and cached) the token"

    revoke = real_server.cli("token", "revoke", "--jti", str(issued["jti"]))
    assert revoke.returncode == 0, revoke.stderr
    assert "revoked 1 token(s)" in revoke.stdout
    deadline = revoked_at(real_server, str(issued["jti"])) + REVOCATION_DEADLINE_S

    while time.time() < deadline:
        time.sleep(0.05)
    sent, workers = until_both_workers(real_server, whoami, lambda item: item.sent_at >= deadline)
    late = [item for item in sent if item.sent_at >= deadline]
    assert late
    for item in late:
        assert item.response.status_code == 401, (item.request_id, item.response.text)
        assert item.response.json() == {
            "error": "Unauthorized",
            "detail": "token has been revoked",
        }
    assert len({workers[item.request_id] for item in late}) == 2, "both workers refused it"


def signed_get(real_server: RealServer, path: str, client: str) -> Callable[[int], Sent]:
    secret = real_server.hmac_secret(client)

    def send(_: int) -> Sent:
        headers = signing.signed_headers(
            secret, method="GET", path=path, query="", client=client, body=b""
        )
        return real_server.send("GET", path, headers=headers)

    return send


def test_two_workers_share_one_rate_limit(real_server: RealServer) -> None:
    """ratelimit.routes from --config: GET /api/v1/auth/tokens admits RATE_LIMIT per minute."""
    extra = 4
    limited = signed_get(real_server, "/api/v1/auth/tokens", "limited")
    first = real_server.burst(RATE_LIMIT + extra, limited)
    more, _ = until_both_workers(
        real_server, limited, lambda item: item.response.status_code == 429
    )
    sent = first + more
    workers = real_server.workers_of(sent)
    assert len(set(workers.values())) == 2, "both workers answered"

    admitted = [item.response for item in sent if item.response.status_code == 200]
    refused = [item.response for item in sent if item.response.status_code != 200]
    assert len(admitted) == RATE_LIMIT, [item.response.status_code for item in sent]
    assert sorted(int(r.headers["x-ratelimit-remaining"]) for r in admitted) == list(
        range(RATE_LIMIT)
    )
    for response in admitted:
        assert response.headers["x-ratelimit-limit"] == str(RATE_LIMIT)
    refusing_workers = {
        workers[item.request_id] for item in sent if item.response.status_code == 429
    }
    assert len(refusing_workers) == 2, "the worker that admitted none still counts the others"
    for response in refused:
        assert response.status_code == 429
        assert response.json() == {
            "error": "TooManyRequests",
            "detail": response.json()["detail"],
        }
        assert response.json()["detail"].startswith(f"rate limit of {RATE_LIMIT} exceeded")
        assert 1 <= int(response.headers["retry-after"]) <= 60
        assert response.headers["x-ratelimit-limit"] == str(RATE_LIMIT)
        assert response.headers["x-ratelimit-remaining"] == "0"
        assert int(response.headers["x-ratelimit-reset"]) >= int(time.time())

    # Another principal on the same route, and the same principal elsewhere, are not limited.
    assert signed_get(real_server, "/api/v1/auth/tokens", "tester")(0).response.status_code == 200
    assert signed_get(real_server, WHOAMI, "limited")(0).response.status_code == 200


def test_hostcore_call_signs_a_request_to_the_running_server(real_server: RealServer) -> None:
    result = real_server.cli("call", "GET", WHOAMI, "--client", "tester")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "subject": "client:tester",
        "kind": "client",
        "scopes": ["*"],
        "expires_at": None,
    }


def test_a_nonce_is_spent_for_both_workers(real_server: RealServer) -> None:
    """Copies of one signed request sent at once: one is served, every other is a replay."""
    secret = real_server.hmac_secret()
    sent: list[Sent] = []
    for _ in range(MAX_BURSTS):
        headers = signing.signed_headers(
            secret, method="GET", path=WHOAMI, query="", client="tester", body=b""
        )
        burst = real_server.burst(
            BURST, lambda _, h=headers: real_server.send("GET", WHOAMI, headers=h)
        )
        statuses = sorted(item.response.status_code for item in burst)
        assert statuses == [200] + [401] * (BURST - 1), statuses
        for item in burst:
            if item.response.status_code == 401:
                assert item.response.json()["detail"].endswith("this request is a replay")
        sent += burst
        workers = real_server.workers_of(sent)
        refusing = {workers[i.request_id] for i in sent if i.response.status_code == 401}
        if len(refusing) == 2:
            break
    assert len(refusing) == 2, "both workers refused a replay"


def signed_token_request(real_server: RealServer) -> Sent:
    secret = real_server.hmac_secret()
    headers = signing.signed_headers(
        secret, method="POST", path=TOKEN, query="", client="tester", body=b"{}"
    )
    sent = real_server.send(
        "POST", TOKEN, content=b"{}", headers={**headers, "content-type": "application/json"}
    )
    assert sent.response.status_code == 200, sent.response.text
    real_server.secrets.append(sent.response.json()["access_token"])
    return sent


def test_key_rotation_reaches_every_worker(real_server: RealServer) -> None:
    old_token = signed_token_request(real_server).response.json()["access_token"]
    old = {"Authorization": f"Bearer {old_token}"}
    rotated = real_server.send("POST", "/api/v1/auth/keys/rotate", headers=old).response
    assert rotated.status_code == 200, rotated.text
    new_kid = rotated.json()["kid"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    assert new_kid != old_kid

    # The other worker signs with the key it knows until its next poll (revocation_poll_s).
    time.sleep(1.0)
    minted, _ = until_both_workers(
        real_server, lambda _: signed_token_request(real_server), lambda item: True
    )
    tokens = [item.response.json()["access_token"] for item in minted]
    assert {jwt.get_unverified_header(token)["kid"] for token in tokens} == {new_kid}

    for headers in ({"Authorization": f"Bearer {tokens[0]}"}, old):
        sent, workers = until_both_workers(
            real_server,
            lambda _, h=headers: real_server.send("GET", WHOAMI, headers=h),
            lambda item: True,
        )
        assert {item.response.status_code for item in sent} == {200}
        assert len(set(workers.values())) == 2

    jwks, workers = until_both_workers(
        real_server,
        lambda _: real_server.send("GET", "/.well-known/jwks.json"),
        lambda item: True,
    )
    assert len(set(workers.values())) == 2
    for item in jwks:
        assert {key["kid"] for key in item.response.json()["keys"]} >= {old_kid, new_kid}
