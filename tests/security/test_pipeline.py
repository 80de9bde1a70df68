"""Integration: requests through the whole HTTP pipeline of one process, across modules.

Each test here follows a request through the middleware, admission, authentication,
the runtime's rate limit and activity record, and the auth plugin's routes; what one
module does on its own is tested in that module's test file (test_authentication.py,
test_tokens.py, test_runtime.py, ...). Two worker processes: test_revocation_workers.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from hostcore.config import Settings
from tests.helpers import (
    PROBE_READ,
    PROBE_WRITE,
    WHOAMI,
    Serve,
    assert_error,
    authorization,
    bearer,
    runtime_of,
    signed,
)

# --- the rate limit for failed attempts ----------------------------------------------


def test_the_pipeline_counts_failed_attempts_against_the_address(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    """Authentication refuses, the runtime counts the address, admission lets a caller it
    already verified through as itself; the 429 carries the limit's headers."""
    limited = settings_factory('ratelimit.routes={"GET /api/v1/auth/whoami": "3/minute"}')
    client = serve(limited)
    in_use = bearer(client)
    assert client.get(WHOAMI, headers=in_use).status_code == 200
    remaining = []
    for _ in range(3):
        response = client.get(WHOAMI, headers=authorization("garbage"))
        assert response.status_code == 401
        remaining.append(response.headers["x-ratelimit-remaining"])
    assert remaining == ["2", "1", "0"]
    refused = client.get(WHOAMI, headers=authorization("garbage"))
    assert_error(refused, 429, "TooManyRequests", "rate limit of 3 exceeded")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.headers["x-ratelimit-reset"]) >= time.time()
    # A caller whose token this worker already verified is counted as itself, not as the
    # address; a token it has not seen would need a signature check, which an address
    # over its limit does not get.
    assert client.get(WHOAMI, headers=in_use).status_code == 200
    assert_error(client.get(WHOAMI, headers=bearer(client)), 429, "TooManyRequests", "rate limit")


# --- the activity record ----------------------------------------------------------------


def test_the_pipeline_records_principal_route_and_status_of_every_request(serve: Serve) -> None:
    """Admitted, refused, anonymous, unmatched and signed requests reach the activity record
    (middleware, admission, runtime), and the auth plugin's routes filter and count them."""
    client = serve()
    runtime = runtime_of(client)
    admin = bearer(client)
    reader = bearer(client, ["probe:read"])
    client.get(WHOAMI, headers={**admin, "X-Request-ID": "act-ok"})
    client.post(PROBE_WRITE, headers={**reader, "X-Request-ID": "act-denied"})
    client.get(PROBE_READ, headers={"X-Request-ID": "act-anonymous"})
    client.get("/api/v1/probe/items/thing", headers={**reader, "X-Request-ID": "act-item"})
    client.get("/api/v1/nowhere/at/all", headers={"X-Request-ID": "act-404"})
    client.get(WHOAMI, headers={**signed(client, "GET", WHOAMI), "X-Request-ID": "act-hmac"})
    assert runtime.activity is not None
    assert client.portal is not None
    client.portal.call(runtime.activity.flush)

    rows = client.get("/api/v1/auth/activity", headers=admin).json()
    by_id = {row["request_id"]: row for row in rows}
    expected = {
        "act-ok": ("client:tester", "GET", WHOAMI, 200),
        "act-denied": ("client:tester", "POST", PROBE_WRITE, 403),
        "act-anonymous": (None, "GET", PROBE_READ, 401),
        "act-item": ("client:tester", "GET", "/api/v1/probe/items/{name}", 200),
        "act-404": (None, "GET", "<unmatched>", 404),
        "act-hmac": ("client:tester", "GET", WHOAMI, 200),
    }
    for request_id, (principal, method, route, status) in expected.items():
        row = by_id[request_id]
        assert (row["principal"], row["method"], row["route"], row["status"]) == (
            principal,
            method,
            route,
            status,
        ), row
        assert row["client"] == "127.0.0.1"
        assert row["duration_ms"] >= 0

    denied = client.get("/api/v1/auth/activity", params={"status": 403}, headers=admin).json()
    assert [row["request_id"] for row in denied] == ["act-denied"]
    anonymous = client.get("/api/v1/auth/activity", params={"status": 401}, headers=admin).json()
    assert {row["principal"] for row in anonymous} == {None}
    mine = client.get(
        "/api/v1/auth/activity", params={"principal": "client:tester", "limit": 2}, headers=admin
    ).json()
    assert len(mine) == 2 and {row["principal"] for row in mine} == {"client:tester"}
    assert mine[0]["request_id"] == "act-hmac", "newest first"
    future = client.get(
        "/api/v1/auth/activity", params={"since": time.time() + 3600}, headers=admin
    ).json()
    assert future == []

    stats = client.get("/api/v1/auth/activity/stats", headers=admin).json()
    by_principal = {row["principal"]: row for row in stats}
    assert by_principal["client:tester"]["requests"] == 4
    assert by_principal["client:tester"]["denied"] == 1
    assert by_principal[None]["denied"] == 1
    assert by_principal[None]["requests"] == 2
