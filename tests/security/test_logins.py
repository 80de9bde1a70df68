"""User login: the password check off the event loop and bounded, one cost and one answer
for every failure, the lockout, the rehash.

Argon2 is held inside a check by replacing ``PasswordHasher.verify`` with one
that waits for the test, so the tests observe order (what finished while a
check was running), never durations.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx2
import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient

from hostcore.config import Settings
from hostcore.security import passwords
from hostcore.security.logins import CheckLimiter
from tests.helpers import Serve, add_user, assert_error, runtime_of, wait_for

TOKEN = "/api/v1/auth/token"
HEALTH = "/api/v1/health"
PASSWORD = "correct-horse-battery-staple"
WRONG = "not-the-password-at-all"
HELD_AT_MOST_S = 10.0


@dataclass
class HeldChecks:
    """``PasswordHasher.verify`` made to wait inside the check until released."""

    release: threading.Event = field(default_factory=threading.Event)
    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    calls: list[str] = field(default_factory=list)
    on_event_loop: list[bool] = field(default_factory=list)
    running: int = 0
    most_at_once: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_entered(self, count: int = 1) -> None:
        for _ in range(count):
            assert self.entered.acquire(timeout=HELD_AT_MOST_S), "a password check started"


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldChecks]:
    state = HeldChecks()
    real_verify = PasswordHasher.verify

    def verify(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        with state.lock:
            state.calls.append(str(hash))
            state.on_event_loop.append(_in_event_loop())
            state.running += 1
            state.most_at_once = max(state.most_at_once, state.running)
        state.entered.release()
        try:
            # Bounded: on a loop that this blocks, the test fails instead of hanging.
            state.release.wait(timeout=HELD_AT_MOST_S)
            return real_verify(self, hash, password)
        finally:
            with state.lock:
                state.running -= 1

    monkeypatch.setattr(PasswordHasher, "verify", verify)
    state.release.set()  # checks pass straight through unless a test clears it
    yield state
    state.release.set()


@contextmanager
def in_background(count: int) -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        yield pool


def login(client: TestClient, username: str, password: str) -> httpx2.Response:
    return client.post(TOKEN, json={"username": username, "password": password})


def stored_hash(settings: Settings, username: str) -> str:
    with sqlite3.connect(settings.data_dir / "hostcore.db") as db:
        row = db.execute(
            "SELECT password_hash FROM users WHERE username = ?", (username,)
        ).fetchone()
    return str(row[0])


def unlimited(settings_factory: Callable[..., Settings], *overrides: str) -> Settings:
    """Settings whose rate limit leaves many logins from one address alone."""
    return settings_factory(
        'ratelimit.routes={"POST /api/v1/auth/token": "1000/minute"}', *overrides
    )


# --- off the event loop, bounded ----------------------------------------------------------


@pytest.mark.parametrize("username", ["alice", "nobody"])
def test_other_requests_are_answered_while_a_password_is_checked(
    serve: Serve, held: HeldChecks, username: str
) -> None:
    client = serve()
    add_user(client, "alice", PASSWORD, "viewer")
    held.release.clear()
    finished: list[str] = []
    with in_background(1) as pool:
        attempt = pool.submit(login, client, username, WRONG)
        attempt.add_done_callback(lambda _: finished.append("login"))
        held.wait_entered()
        assert client.get(HEALTH).status_code == 200
        finished.append("health")
        held.release.set()
        assert_error(attempt.result(), 401, "Unauthorized", "invalid username or password")
    assert finished == ["health", "login"]
    assert held.on_event_loop == [False]


def test_checks_run_at_most_login_concurrency_at_once(
    serve: Serve, held: HeldChecks, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(unlimited(settings_factory, "auth.login_concurrency=2", "auth.login_queue=4"))
    add_user(client, "alice", PASSWORD, "viewer")
    held.release.clear()
    with in_background(5) as pool:
        attempts = [pool.submit(login, client, "alice", PASSWORD) for _ in range(5)]
        held.wait_entered(2)
        logins = runtime_of(client).logins
        wait_for(lambda: logins.checks.admitted == 5, HELD_AT_MOST_S, "five logins admitted")
        assert held.running == 2, "two checks run, three wait"
        held.release.set()
        assert [attempt.result().status_code for attempt in attempts] == [200] * 5
    assert held.most_at_once == 2


def test_a_login_beyond_the_queue_is_refused_at_once_with_503(
    serve: Serve, held: HeldChecks, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(unlimited(settings_factory, "auth.login_concurrency=1", "auth.login_queue=1"))
    add_user(client, "alice", PASSWORD, "viewer")
    held.release.clear()
    with in_background(2) as pool:
        running = pool.submit(login, client, "alice", PASSWORD)
        held.wait_entered()
        waiting = pool.submit(login, client, "alice", PASSWORD)
        logins = runtime_of(client).logins
        wait_for(lambda: logins.checks.admitted == 2, HELD_AT_MOST_S, "the second login queued")
        refused = login(client, "alice", PASSWORD)
        assert not running.done() and not waiting.done(), "refused while both were pending"
        assert_error(refused, 503, "Unavailable", "too many logins at once")
        assert refused.headers["retry-after"] == "1"
        held.release.set()
        assert running.result().status_code == 200
        assert waiting.result().status_code == 200
    assert len(held.calls) == 2, "the refused login cost no password check"


def test_logins_refused_as_busy_are_not_counted_against_the_username(
    serve: Serve, held: HeldChecks, settings_factory: Callable[..., Settings]
) -> None:
    """Otherwise whoever floods the server with logins locks everyone else out."""
    settings = unlimited(settings_factory, "auth.login_concurrency=1", "auth.login_queue=0")
    client = serve(settings)
    add_user(client, "alice", PASSWORD, "viewer")
    add_user(client, "bob", PASSWORD, "viewer")
    held.release.clear()
    with in_background(1) as pool:
        running = pool.submit(login, client, "bob", PASSWORD)
        held.wait_entered()
        for _ in range(settings.auth.login_max_failures + 1):
            assert login(client, "alice", PASSWORD).status_code == 503
        held.release.set()
        assert running.result().status_code == 200
    assert login(client, "alice", PASSWORD).status_code == 200


def test_a_login_whose_caller_left_keeps_its_slot_until_its_check_ends() -> None:
    """A cancelled wait must not let another argon2 run start beside the one still running."""

    async def scenario() -> list[str]:
        limiter = CheckLimiter(concurrency=1, queue=1)
        started, release = threading.Event(), threading.Event()
        order: list[str] = []

        def slow() -> str:
            started.set()
            release.wait(timeout=HELD_AT_MOST_S)
            order.append("first check ended")
            return "first"

        def fast() -> str:
            order.append("second check ran")
            return "second"

        first = asyncio.ensure_future(limiter.run(slow))
        assert await asyncio.to_thread(started.wait, HELD_AT_MOST_S)
        first.cancel()
        second = asyncio.ensure_future(limiter.run(fast))
        await asyncio.sleep(0.05)  # room for a wrong limiter to start the second check now
        order.append("released")
        release.set()
        assert await second == "second"
        return order

    assert asyncio.run(scenario()) == ["released", "first check ended", "second check ran"]


def test_logins_from_one_address_are_rate_limited_by_default(serve: Serve) -> None:
    client = serve()
    for attempt in range(10):
        assert login(client, f"user{attempt}", WRONG).status_code == 401
    refused = login(client, "alice", PASSWORD)
    assert_error(refused, 429, "TooManyRequests", "rate limit of 10 exceeded")


# --- one cost, one answer ----------------------------------------------------------------


def test_failed_logins_all_say_the_same(serve: Serve) -> None:
    client = serve()
    add_user(client, "alice", PASSWORD, "admin")
    attempts = {
        "wrong password": {"username": "alice", "password": "not-her-password"},
        "unknown user": {"username": "mallory", "password": PASSWORD},
        "impossible name": {"username": "Robert'); DROP", "password": PASSWORD},
        "empty password": {"username": "alice", "password": ""},
    }
    bodies = {}
    for case, body in attempts.items():
        response = client.post(TOKEN, json=body)
        assert response.status_code == 401, (case, response.text)
        bodies[case] = response.json()
    assert all(
        body == {"error": "Unauthorized", "detail": "invalid username or password"}
        for body in bodies.values()
    ), bodies


def test_a_failed_login_costs_one_check_against_a_hash_of_the_same_parameters(
    serve: Serve, held: HeldChecks, settings_factory: Callable[..., Settings]
) -> None:
    settings = unlimited(settings_factory)
    client = serve(settings)
    add_user(client, "alice", PASSWORD, "viewer")
    for username in ("alice", "nobody"):
        held.calls.clear()
        assert_error(login(client, username, WRONG), 401, "Unauthorized", "invalid username")
        assert len(held.calls) == 1, username
        parameters = held.calls[0].split("$")[3]
        assert parameters == stored_hash(settings, "alice").split("$")[3], username


# --- lockout --------------------------------------------------------------------------------


def test_repeated_failures_lock_a_username_whether_or_not_it_exists(
    serve: Serve, held: HeldChecks, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(unlimited(settings_factory, "auth.login_max_failures=3"))
    add_user(client, "alice", PASSWORD, "viewer")
    add_user(client, "bob", PASSWORD, "viewer")
    answers = {}
    for username in ("alice", "nobody"):
        for _ in range(3):
            assert_error(login(client, username, WRONG), 401, "Unauthorized", "invalid username")
        held.calls.clear()
        locked = login(client, username, PASSWORD)
        assert_error(locked, 429, "TooManyRequests", "too many failed logins for this username")
        assert 1 <= int(locked.headers["retry-after"]) <= 300
        assert held.calls == [], "a locked username costs no password check"
        answers[username] = locked.json()
    assert answers["alice"]["detail"].split(":")[0] == answers["nobody"]["detail"].split(":")[0]
    assert login(client, "bob", PASSWORD).status_code == 200, "other users are not locked"


def test_a_burst_of_guesses_gets_no_more_checks_than_the_limit(
    serve: Serve, held: HeldChecks, settings_factory: Callable[..., Settings]
) -> None:
    """Guesses sent at once, all held inside their checks: each was counted before its
    check began, so only the limit's worth are checked and the rest are refused."""
    settings = unlimited(
        settings_factory,
        "auth.login_max_failures=3",
        "auth.login_concurrency=8",
        "auth.login_queue=8",
    )
    client = serve(settings)
    add_user(client, "alice", PASSWORD, "viewer")
    held.calls.clear()
    held.release.clear()
    with in_background(8) as pool:
        guesses = [pool.submit(login, client, "alice", f"{WRONG}-{n}") for n in range(8)]
        held.wait_entered(3)
        answered = lambda: sum(guess.done() for guess in guesses) == 5  # noqa: E731
        wait_for(answered, HELD_AT_MOST_S, "the five guesses past the limit answered")
        held.release.set()
        statuses = sorted(guess.result().status_code for guess in guesses)
    assert statuses == [401] * 3 + [429] * 5
    assert len(held.calls) == 3


def test_the_lockout_is_shared_by_every_worker_through_the_store(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    settings = unlimited(settings_factory, "auth.login_max_failures=4")
    first, second = serve(settings), serve(settings)
    add_user(first, "alice", PASSWORD, "viewer")
    for client in (first, second, first, second):
        assert login(client, "alice", WRONG).status_code == 401
    assert_error(login(first, "alice", PASSWORD), 429, "TooManyRequests", "too many failed")
    assert_error(login(second, "alice", PASSWORD), 429, "TooManyRequests", "too many failed")


def test_a_successful_login_clears_the_count(
    serve: Serve, settings_factory: Callable[..., Settings]
) -> None:
    client = serve(unlimited(settings_factory, "auth.login_max_failures=3"))
    add_user(client, "alice", PASSWORD, "viewer")
    for _ in range(2):
        assert login(client, "alice", WRONG).status_code == 401
    assert login(client, "alice", PASSWORD).status_code == 200
    for _ in range(2):
        assert login(client, "alice", WRONG).status_code == 401
    assert login(client, "alice", PASSWORD).status_code == 200


# --- rehash -------------------------------------------------------------------------------


def test_a_login_replaces_a_hash_made_with_other_parameters(
    serve: Serve, settings: Settings
) -> None:
    client = serve()
    add_user(client, "alice", PASSWORD, "viewer")
    outdated = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=2).hash(PASSWORD)
    with sqlite3.connect(settings.data_dir / "hostcore.db") as db:
        db.execute("UPDATE users SET password_hash = ? WHERE username = 'alice'", (outdated,))
    assert login(client, "alice", PASSWORD).status_code == 200
    renewed = stored_hash(settings, "alice")
    assert renewed != outdated
    assert renewed.startswith(
        f"$argon2id$v=19$m={passwords.MEMORY_COST_KIB},t={passwords.TIME_COST},"
        f"p={passwords.PARALLELISM}$"
    )
    assert login(client, "alice", PASSWORD).status_code == 200
    assert stored_hash(settings, "alice") == renewed, "a current hash is kept"
