"""The security runtime of one worker: the order its parts start and stop in, the rate
limit by principal and by address, and the activity record of every request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from hostcore.config import Settings
from hostcore.context import Principal, RequestContext
from hostcore.db.engine import Database
from hostcore.errors import TooManyRequests, Unavailable
from hostcore.security.activity import ActivityRecord, ActivityRow
from hostcore.security.runtime import SecurityRuntime
from tests.helpers import WHOAMI, Serve, bearer, empty_postgres, postgres_url, runtime_of


def request_context(client: str = "192.0.2.7") -> RequestContext:
    return RequestContext(request_id="req-1", client=client, local=False)


# --- the order of start and stop -------------------------------------------------------


def recording(calls: list[str], what: str) -> Callable[..., Any]:
    """A stand-in for one part's method that notes, in order, that it was called."""

    async def called(*args: object) -> None:
        calls.append(what)

    return called


@pytest.fixture
def runtime(settings_factory: Callable[..., Settings], tmp_path: Path) -> SecurityRuntime:
    settings = settings_factory("ratelimit.storage=memory")
    return SecurityRuntime(settings, Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"))


def record_lifecycle(runtime: SecurityRuntime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    assert runtime.ratelimiter is not None and runtime.activity is not None
    monkeypatch.setattr(
        runtime.ratelimiter.storage, "check", lambda: calls.append("storage checked") or True
    )

    async def load_keys(master_key: Path) -> None:
        calls.append(f"keys loaded with {master_key.name}")

    monkeypatch.setattr(runtime.issuer, "load", load_keys)
    monkeypatch.setattr(runtime.authenticator, "load_secrets", recording(calls, "secrets loaded"))
    monkeypatch.setattr(runtime.upkeep, "load_revocations", recording(calls, "revocations loaded"))
    monkeypatch.setattr(runtime.activity, "start", lambda: calls.append("activity started"))
    monkeypatch.setattr(runtime.upkeep, "start", lambda: calls.append("upkeep started"))
    monkeypatch.setattr(runtime.upkeep, "stop", recording(calls, "upkeep stopped"))
    monkeypatch.setattr(runtime.activity, "close", recording(calls, "activity closed"))
    return calls


async def test_start_prepares_before_the_background_work_and_stop_undoes_it_in_reverse(
    runtime: SecurityRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_lifecycle(runtime, monkeypatch)
    await runtime.start()
    assert calls == [
        "storage checked",
        "keys loaded with master.key",
        "secrets loaded",
        "revocations loaded",
        "activity started",
        "upkeep started",
    ]
    calls.clear()
    await runtime.stop()
    assert calls == ["upkeep stopped", "activity closed"]


async def test_an_unusable_rate_limit_storage_stops_the_start_before_any_key_is_read(
    runtime: SecurityRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = record_lifecycle(runtime, monkeypatch)
    assert runtime.ratelimiter is not None
    monkeypatch.setattr(runtime.ratelimiter.storage, "check", lambda: False)
    with pytest.raises(Unavailable, match="rate-limit storage 'memory' is unusable"):
        await runtime.start()
    assert calls == []


async def test_without_rate_limit_and_activity_the_runtime_starts_stops_and_counts_nothing(
    settings_factory: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_factory("ratelimit.enabled=false", "activity.enabled=false")
    runtime = SecurityRuntime(settings, Database(f"sqlite+aiosqlite:///{tmp_path / 's.db'}"))
    assert runtime.ratelimiter is None and runtime.activity is None
    calls: list[str] = []
    monkeypatch.setattr(runtime.issuer, "load", recording(calls, "keys loaded"))
    monkeypatch.setattr(runtime.authenticator, "load_secrets", recording(calls, "secrets"))
    monkeypatch.setattr(runtime.upkeep, "load_revocations", recording(calls, "revocations"))
    monkeypatch.setattr(runtime.upkeep, "start", lambda: calls.append("upkeep started"))
    monkeypatch.setattr(runtime.upkeep, "stop", recording(calls, "upkeep stopped"))
    await runtime.start()
    await runtime.stop()
    assert calls == [
        "keys loaded",
        "secrets",
        "revocations",
        "upkeep started",
        "upkeep stopped",
    ]
    context = request_context()
    for _ in range(3):
        runtime.count("client:tester", "GET /x", context)
        runtime.count_address("GET /x", context)
        runtime.check_address("GET /x", context)
    assert context.rate_limit is None
    runtime.observe({"type": "http", "method": "GET"}, context, 200, 1.0)


async def test_a_command_line_runtime_counts_nothing_and_records_nothing(
    settings_factory: Callable[..., Settings], store: Database
) -> None:
    """``serving=False`` (the CLI): no rate-limit file in the run directory, which the
    server's user could not open had root made it, and no activity rows."""
    settings = settings_factory()  # storage "shared": a file that every worker maps
    shared_file = settings.run_dir / "ratelimit.shm"
    runtime = SecurityRuntime(settings, store, serving=False)
    await runtime.start()
    try:
        context = request_context()
        for _ in range(3):
            runtime.count_address("GET /x", context)
            runtime.observe({"type": "http", "method": "GET"}, context, 200, 1.0)
        assert context.rate_limit is None
    finally:
        await runtime.stop()
    assert not shared_file.exists()
    async with store.session() as session:
        rows = await session.execute(text("SELECT count(*) FROM activity"))
        assert rows.scalar_one() == 0

    server = SecurityRuntime(settings, store)
    await server.start()
    try:
        server.count_address("GET /x", request_context())
        assert shared_file.exists(), "a server's runtime does make the file"
    finally:
        await server.stop()
        assert server.ratelimiter is not None
        server.ratelimiter.storage.close()  # type: ignore[attr-defined]


# --- the rate limit ---------------------------------------------------------------------------


@pytest.fixture
def limited(settings_factory: Callable[..., Settings], tmp_path: Path) -> SecurityRuntime:
    settings = settings_factory(
        "ratelimit.storage=memory", 'ratelimit.routes={"GET /x": "2/minute"}'
    )
    return SecurityRuntime(settings, Database(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"))


def test_count_admits_the_limit_then_refuses_with_the_budget_in_the_headers(
    limited: SecurityRuntime,
) -> None:
    context = request_context()
    limited.count("client:tester", "GET /x", context)
    assert context.rate_limit is not None and context.rate_limit.remaining == 1
    limited.count("client:tester", "GET /x", context)
    assert context.rate_limit.remaining == 0 and context.rate_limit.allowed
    with pytest.raises(TooManyRequests, match="rate limit of 2 exceeded") as refused:
        limited.count("client:tester", "GET /x", context)
    assert not context.rate_limit.allowed
    assert refused.value.headers is not None
    assert refused.value.headers["x-ratelimit-limit"] == "2"
    assert refused.value.headers["x-ratelimit-remaining"] == "0"
    assert int(refused.value.headers["retry-after"]) >= 1
    other = request_context()
    limited.count("client:other", "GET /x", other)
    assert other.rate_limit is not None and other.rate_limit.remaining == 1, "its own count"


def test_check_address_counts_nothing_and_refuses_once_the_address_is_used_up(
    limited: SecurityRuntime,
) -> None:
    context = request_context()
    for _ in range(5):
        limited.check_address("GET /x", context)
    assert context.rate_limit is None, "a check alone neither counts nor reports"
    limited.count_address("GET /x", context)
    limited.count_address("GET /x", context)
    assert context.rate_limit is not None and context.rate_limit.remaining == 0
    with pytest.raises(TooManyRequests, match="rate limit of 2 exceeded"):
        limited.check_address("GET /x", context)
    assert context.rate_limit is not None and not context.rate_limit.allowed
    other = request_context("198.51.100.9")
    limited.check_address("GET /x", other)
    assert other.rate_limit is None, "another address has its own count"


def test_an_ipv6_client_is_counted_by_its_slash_64(limited: SecurityRuntime) -> None:
    limited.count_address("GET /x", request_context("2001:db8:1:2::1"))
    limited.count_address("GET /x", request_context("2001:db8:1:2::ffff"))
    with pytest.raises(TooManyRequests):
        limited.check_address("GET /x", request_context("2001:db8:1:2:aaaa::7"))
    limited.check_address("GET /x", request_context("2001:db8:1:3::1"))


# --- one record per request -------------------------------------------------------------------


class Records:
    """Stands in for the activity recorder: keeps what the runtime hands it (a plain
    tuple), with the names of its fields."""

    def __init__(self) -> None:
        self.rows: list[ActivityRecord] = []

    def record(self, row: ActivityRow) -> None:
        self.rows.append(ActivityRecord(*row))


def test_each_request_is_recorded_once_with_bounded_fields(runtime: SecurityRuntime) -> None:
    records = Records()
    runtime.activity = records  # type: ignore[assignment]
    context = request_context()
    context.principal = Principal(kind="client", name="tester", scopes=frozenset({"*"}))
    context.route = "/api/v1/probe/items/{name}"
    runtime.observe({"type": "http", "method": "GET"}, context, 200, 1.23456)
    anonymous = request_context()
    runtime.observe({"type": "http", "method": "PROPPATCHEXTRA"}, anonymous, 404, 0.5)
    runtime.observe({"type": "websocket"}, anonymous, 403, 0.5)
    anonymous.route = "/" + "r" * 300
    runtime.observe({"type": "http", "method": "GET"}, anonymous, 200, 0.5)
    first, odd, socket, long_route = records.rows
    assert (first.principal, first.method, first.route, first.status) == (
        "client:tester",
        "GET",
        "/api/v1/probe/items/{name}",
        200,
    )
    assert first.duration_ms == 1.235 and first.client == "192.0.2.7"
    assert (odd.principal, odd.method, odd.route) == (None, "PROPPATCHE", "<unmatched>")
    assert socket.method == "WS"
    assert len(long_route.route) == 256


# --- the activity record --------------------------------------------------------------


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        "postgresql",
    ],
)
def test_one_odd_request_does_not_stop_the_activity_record(
    serve: Serve, settings_factory: Callable[..., Settings], backend: str
) -> None:
    overrides = []
    if backend == "postgresql":
        url = postgres_url()
        asyncio.run(empty_postgres(url))
        overrides.append(f"database.url={url}")
    client = serve(settings_factory(*overrides))
    runtime = runtime_of(client)
    assert runtime.activity is not None and client.portal is not None
    admin = bearer(client)
    try:
        odd = client.request("UNSUBSCRIBE", WHOAMI, headers={"X-Request-ID": "odd-method"})
        assert odd.status_code == 405
        client.get(WHOAMI, headers={**admin, "X-Request-ID": "after-odd-method"})
        client.portal.call(runtime.activity.flush)
        rows = client.get("/api/v1/auth/activity", headers=admin).json()
        assert "after-odd-method" in {row["request_id"] for row in rows}
    finally:
        # Close the recorder here, so rows it cannot write fail this test, not the shutdown.
        with contextlib.suppress(Exception):
            client.portal.call(runtime.activity.close)
        runtime.activity = None
