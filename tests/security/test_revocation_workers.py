"""Integration: two gunicorn workers on one store. A revoked token is refused by both from
their next poll on, both share one rate limit, a nonce is spent for both, and a key
rotation reaches both. Also ``hostcore call`` against the running server.

What reaches a worker at its poll is waited for (bounded) and checked in order: once a
worker has refused a token or signed with the new key, it never goes back.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable

import jwt
import pytest

from hostcore.security import hmac as signing
from tests.helpers import RATE_LIMIT, WHOAMI, RealServer, Sent, wait_for

pytestmark = pytest.mark.integration

TOKEN = "/api/v1/auth/token"
MAX_BURSTS = 15
BURST = 8
# Bounds the wait for both workers' polls (each polls every auth.revocation_poll_s, <= 1 s).
POLLED_WITHIN_S = 30.0


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


def bursts_until(
    server: RealServer, make: Callable[[int], Sent], enough: Callable[[list[Sent]], bool], what: str
) -> list[list[Sent]]:
    """Bursts, one after another, until ``enough`` holds for everything sent; bounded."""
    bursts: list[list[Sent]] = []

    def sent_enough() -> bool:
        bursts.append(server.burst(BURST, make))
        return enough([item for burst in bursts for item in burst])

    wait_for(sent_enough, POLLED_WITHIN_S, what)
    return bursts


def first_burst_where(
    bursts: list[list[Sent]], workers: dict[str, str], picked: Callable[[Sent], bool]
) -> dict[str, int]:
    """Worker pid -> the index of the first burst in which it served a request ``picked``."""
    first: dict[str, int] = {}
    for index, burst in enumerate(bursts):
        for item in burst:
            if picked(item):
                first.setdefault(workers[item.request_id], index)
    return first


def revoked_at(server: RealServer, jti: str) -> float:
    with sqlite3.connect(server.data_dir / "hostcore.db") as db:
        row = db.execute("SELECT revoked_at FROM tokens WHERE jti = ?", (jti,)).fetchone()
    assert row is not None and row[0] is not None
    return float(row[0])


def test_a_revoked_token_is_refused_by_every_worker_from_its_next_poll_on(
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
    assert revoked_at(real_server, str(issued["jti"])) > 0

    def refused_by_both(sent: list[Sent]) -> bool:
        workers.update(real_server.workers_of(sent))
        return len({workers[i.request_id] for i in sent if i.response.status_code == 401}) == 2

    bursts = bursts_until(real_server, whoami, refused_by_both, "both workers to refuse it")
    late = [item for burst in bursts for item in burst if item.response.status_code == 401]
    assert late
    for item in late:
        assert item.response.json() == {
            "error": "Unauthorized",
            "detail": "token has been revoked",
        }
    assert len({workers[item.request_id] for item in late}) == 2, "both workers refused it"
    refusing_since = first_burst_where(bursts, workers, lambda i: i.response.status_code == 401)
    for index, burst in enumerate(bursts):
        for item in burst:
            worker = workers[item.request_id]
            if index > refusing_since[worker]:
                assert item.response.status_code == 401, (worker, index, item.response.text)
            else:
                assert item.response.status_code in (200, 401), item.response.text


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
    def kid_of_sent(item: Sent) -> str:
        kid: str = jwt.get_unverified_header(item.response.json()["access_token"])["kid"]
        return kid

    minters: dict[str, str] = {}

    def both_sign_with_the_new_key(sent: list[Sent]) -> bool:
        minters.update(real_server.workers_of(sent))
        return len({minters[i.request_id] for i in sent if kid_of_sent(i) == new_kid}) == 2

    bursts = bursts_until(
        real_server,
        lambda _: signed_token_request(real_server),
        both_sign_with_the_new_key,
        "both workers to sign with the new key",
    )
    minted = [item for burst in bursts for item in burst]
    assert {kid_of_sent(item) for item in minted} <= {old_kid, new_kid}
    new_since = first_burst_where(bursts, minters, lambda item: kid_of_sent(item) == new_kid)
    assert len(new_since) == 2
    for index, burst in enumerate(bursts):
        for item in burst:
            if index > new_since[minters[item.request_id]]:
                assert kid_of_sent(item) == new_kid, "a worker never goes back to the old key"
    tokens = [
        item.response.json()["access_token"] for item in minted if kid_of_sent(item) == new_kid
    ]

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
