from __future__ import annotations

import multiprocessing
import queue
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest
from limits import parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from hostcore.config import RateLimitSettings
from hostcore.errors import ConfigError
from hostcore.redaction import REDACTED
from hostcore.security.ratelimit import (
    ProcessStorage,
    RateLimiter,
    RateLimitResult,
    SharedMemoryStorage,
)

FORK = multiprocessing.get_context("fork")
TOKEN = "POST /api/v1/auth/token"
SYSTEM = "GET /api/v1/system"
T0 = 1_700_000_000.0
T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(time, "time", fake)
    return fake


@pytest.fixture
def shm_path(tmp_path: Path) -> Path:
    return tmp_path / "run" / "ratelimit.shm"


@pytest.fixture
def shared(shm_path: Path) -> Iterator[SharedMemoryStorage]:
    storage = SharedMemoryStorage(path=shm_path, slots=64)
    yield storage
    storage.close()


@pytest.fixture(params=["shared", "process", "memory"])
def storage(request: pytest.FixtureRequest, shm_path: Path) -> Iterator[Storage]:
    """The facade must behave the same on the embedded store (its file, or one process's
    own table) and on limits' own."""
    if request.param == "memory":
        yield MemoryStorage()
        return
    store: ProcessStorage | SharedMemoryStorage = (
        ProcessStorage()
        if request.param == "process"
        else SharedMemoryStorage(path=shm_path, slots=64)
    )
    yield store
    store.close()


def in_children(count: int, work: Callable[[], T]) -> list[T]:
    """Run ``work`` in ``count`` forked processes released at the same moment."""
    results: multiprocessing.Queue[tuple[bool, T | str]] = FORK.Queue()
    start = FORK.Barrier(count)

    def child() -> None:
        try:
            start.wait(timeout=5)
            results.put((True, work()))
        except BaseException as exc:
            results.put((False, repr(exc)))

    processes = [FORK.Process(target=child) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        outcomes = [results.get(timeout=10) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
                process.join(timeout=5)
    assert [value for ok, value in outcomes if not ok] == []
    return [cast(T, value) for _, value in outcomes]


# The facade


def test_admits_the_limit_then_refuses(storage: Storage, clock: FakeClock) -> None:
    limiter = RateLimiter(storage, "3/minute", {})

    results = [limiter.hit("user:alice", SYSTEM) for _ in range(4)]

    assert [r.allowed for r in results] == [True, True, True, False]
    assert [r.remaining for r in results] == [2, 1, 0, 0]
    assert {r.limit for r in results} == {3}
    assert {r.reset_at for r in results} == {T0 + 60}
    assert [r.retry_after_s for r in results] == [0, 0, 0, 60]


def test_a_peek_after_the_clock_stepped_back_sees_a_fresh_window(
    storage: Storage, clock: FakeClock
) -> None:
    """As a hit would: the old window ends more than its length from now, so it is void
    (else a caller is refused for an hour's Retry-After that no hit ever resets)."""
    limiter = RateLimiter(storage, "2/minute", {})
    for _ in range(3):
        limiter.hit("addr:127.0.0.1", SYSTEM)
    assert not limiter.peek("addr:127.0.0.1", SYSTEM).allowed
    clock.advance(-3600)
    peeked = limiter.peek("addr:127.0.0.1", SYSTEM)
    assert peeked.allowed and peeked.remaining == 2
    if not isinstance(storage, MemoryStorage):  # limits' own keeps its window: not hostcore's
        assert limiter.hit("addr:127.0.0.1", SYSTEM).remaining == 1


def test_window_starts_at_first_hit_and_resets_after_expiry(
    storage: Storage, clock: FakeClock
) -> None:
    limiter = RateLimiter(storage, "2/second", {})
    assert limiter.hit("user:alice", SYSTEM).allowed
    clock.advance(0.5)
    assert limiter.hit("user:alice", SYSTEM).allowed
    refused = limiter.hit("user:alice", SYSTEM)
    assert not refused.allowed
    assert refused.retry_after_s == 1

    clock.advance(0.5)

    fresh = limiter.hit("user:alice", SYSTEM)
    assert fresh.allowed
    assert fresh.remaining == 1
    assert fresh.reset_at == T0 + 2


def test_route_override_applies_only_to_its_route(storage: Storage) -> None:
    limiter = RateLimiter(storage, "5/minute", {TOKEN: "2 per minute"})

    token = [limiter.hit("10.0.0.7", TOKEN).allowed for _ in range(3)]
    system = [limiter.hit("10.0.0.7", SYSTEM).allowed for _ in range(5)]

    assert token == [True, True, False]
    assert system == [True] * 5
    assert limiter.hit("10.0.0.7", TOKEN).limit == 2
    assert limiter.hit("10.0.0.7", SYSTEM).limit == 5


def test_identities_and_routes_count_separately(storage: Storage) -> None:
    limiter = RateLimiter(storage, "1/minute", {})

    assert limiter.hit("user:alice", SYSTEM).allowed
    assert not limiter.hit("user:alice", SYSTEM).allowed
    assert limiter.hit("user:bob", SYSTEM).allowed
    assert limiter.hit("user:alice", "GET /api/v1/disks").allowed


def test_slash_in_identity_cannot_reach_another_routes_counter(storage: Storage) -> None:
    limiter = RateLimiter(storage, "1/minute", {})
    assert limiter.hit("alice", "GET /items/{id}").allowed

    # Without escaping, "GET /items" + "{id}/alice" would build the same key as above.
    assert limiter.hit("{id}/alice", "GET /items").allowed
    assert limiter.hit("{id}%2Falice", "GET /items").allowed


def test_keys_match_limits_fixed_window_strategy(storage: Storage) -> None:
    limiter = RateLimiter(storage, "3/minute", {})
    limiter.hit("user:alice", SYSTEM)
    limiter.hit("user:alice", SYSTEM)

    strategy = FixedWindowRateLimiter(storage)
    stats = strategy.get_window_stats(parse("3/minute"), SYSTEM, "user:alice")

    assert stats.remaining == 1


def test_headers_when_allowed() -> None:
    result = RateLimitResult(
        allowed=True, limit=10, remaining=7, reset_at=T0 + 0.25, retry_after_s=0
    )

    assert result.headers() == [
        (b"x-ratelimit-limit", b"10"),
        (b"x-ratelimit-remaining", b"7"),
        (b"x-ratelimit-reset", b"1700000001"),
    ]


def test_headers_when_refused_add_retry_after(storage: Storage, clock: FakeClock) -> None:
    limiter = RateLimiter(storage, "1/minute", {})
    limiter.hit("user:alice", SYSTEM)
    clock.advance(20.5)

    headers = dict(limiter.hit("user:alice", SYSTEM).headers())

    assert headers == {
        b"x-ratelimit-limit": b"1",
        b"x-ratelimit-remaining": b"0",
        b"x-ratelimit-reset": b"1700000060",
        b"retry-after": b"40",
    }


@pytest.mark.parametrize("bad", ["lots", "10/fortnight", "", "1/second;10/minute"])
def test_invalid_limit_string_is_named(storage: Storage, bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        RateLimiter(storage, bad, {})
    with pytest.raises(ValueError, match=repr(bad)):
        RateLimiter(storage, "10/minute", {TOKEN: bad})


def test_threads_of_one_process_share_the_count(shared: SharedMemoryStorage) -> None:
    limiter = RateLimiter(shared, "60/minute", {})
    admitted: list[int] = []

    def worker() -> None:
        admitted.append(sum(limiter.hit("user:alice", SYSTEM).allowed for _ in range(50)))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert sum(admitted) == 60


# from_settings


def test_from_settings_shared_uses_a_private_file_in_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    limiter = RateLimiter.from_settings(
        RateLimitSettings(default="2/minute", routes={TOKEN: "1/minute"}), run_dir
    )
    storage = limiter.storage
    assert isinstance(storage, SharedMemoryStorage)

    assert limiter.hit("user:alice", TOKEN).allowed
    assert not limiter.hit("user:alice", TOKEN).allowed
    assert limiter.hit("user:alice", SYSTEM).limit == 2
    assert storage.path == run_dir / "ratelimit.shm"
    assert stat.S_IMODE(storage.path.stat().st_mode) == 0o600
    storage.close()


def test_a_single_process_server_keeps_its_counters_to_itself(tmp_path: Path) -> None:
    """One process shares with nobody: no file, no lock."""
    run_dir = tmp_path / "run"
    limiter = RateLimiter.from_settings(
        RateLimitSettings(default="3/minute"), run_dir, single_process=True
    )
    assert isinstance(limiter.storage, ProcessStorage)
    assert limiter.hit("user:alice", SYSTEM).remaining == 2
    assert not (run_dir / "ratelimit.shm").exists()
    in_children(1, lambda: limiter.hit("user:alice", SYSTEM).remaining)
    assert limiter.hit("user:alice", SYSTEM).remaining == 1, "another process's hit was its own"


def test_process_storage_stays_within_its_keys_and_forgets_the_earliest_windows(
    clock: FakeClock,
) -> None:
    storage = ProcessStorage(max_keys=4)
    for n in range(4):
        storage.incr(f"k{n}", 60 + n)
    storage.incr("k4", 100)
    assert storage.get("k0") == 0 and storage.get("k1") == 0, "half, ending first, went"
    assert [storage.get(f"k{n}") for n in (2, 3, 4)] == [1, 1, 1]


def test_from_settings_memory_is_limits_memory_storage(tmp_path: Path) -> None:
    limiter = RateLimiter.from_settings(RateLimitSettings(storage="memory"), tmp_path)
    assert isinstance(limiter.storage, MemoryStorage)


def test_from_settings_accepts_a_storage_uri(tmp_path: Path) -> None:
    uri = f"hostcore-shm://{tmp_path}/other.shm"
    limiter = RateLimiter.from_settings(RateLimitSettings(storage=uri), tmp_path)
    assert isinstance(limiter.storage, SharedMemoryStorage)
    assert limiter.storage.path == tmp_path / "other.shm"
    assert isinstance(
        RateLimiter.from_settings(RateLimitSettings(storage="memory://"), tmp_path).storage,
        MemoryStorage,
    )


@pytest.mark.parametrize(
    ("uri", "message"), [("nowhere://x", "unknown storage scheme"), ("async+memory://", "async")]
)
def test_from_settings_rejects_unusable_storage(tmp_path: Path, uri: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RateLimiter.from_settings(RateLimitSettings(storage=uri), tmp_path)


def test_a_storage_whose_library_is_missing_is_a_configuration_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """hostcore serve turns a ConfigError into one line; a ValueError would be a traceback."""
    from limits.errors import ConfigurationError

    from hostcore.errors import ConfigError
    from hostcore.security import ratelimit

    def missing(uri: str) -> object:
        raise ConfigurationError("prerequisite not available")

    monkeypatch.setattr(ratelimit, "storage_from_string", missing)
    settings = RateLimitSettings(storage="redis://localhost:6379")
    with pytest.raises(ConfigError, match=r"ratelimit.storage 'redis://localhost:6379'"):
        RateLimiter.from_settings(settings, tmp_path)


@pytest.mark.parametrize(
    "uri",
    [
        "memory://:hunter2@[::1",
        "hostcore-shm://hc:hunter2@cache.local/rl.shm",
        "hostcore-shm:///run/rl.shm?slots=many&password=hunter2",
        "memcached://:hunter2@cache.local:notaport",
    ],
)
def test_a_malformed_storage_url_is_a_configuration_error_without_its_password(
    tmp_path: Path, uri: str
) -> None:
    """The scheme is one limits knows, so the settings accept it; the storage refuses it."""
    settings = RateLimitSettings(storage=uri)
    with pytest.raises(ConfigError) as refused:
        RateLimiter.from_settings(settings, tmp_path)
    message = str(refused.value)
    assert message.startswith("ratelimit.storage '"), message
    assert REDACTED in message
    assert "hunter2" not in message


# SharedMemoryStorage


def test_uri_builds_the_storage_with_its_slot_count(tmp_path: Path) -> None:
    storage = storage_from_string(f"hostcore-shm://{tmp_path}/rl.shm?slots=16")
    assert isinstance(storage, SharedMemoryStorage)
    assert storage.incr("k", 60) == 1
    assert (tmp_path / "rl.shm").stat().st_size == 64 + 16 * 24
    storage.close()


@pytest.mark.parametrize(
    "uri", ["hostcore-shm://relative/rl.shm", "hostcore-shm:///x.shm?slots=many"]
)
def test_bad_uri_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="rate limit storage"):
        SharedMemoryStorage(uri)


def test_incr_get_and_expiry(shared: SharedMemoryStorage, clock: FakeClock) -> None:
    assert shared.get("k") == 0
    assert shared.get_expiry("k") == T0

    assert shared.incr("k", 10) == 1
    clock.advance(4)
    assert shared.incr("k", 10, amount=3) == 4

    assert shared.get("k") == 4
    assert shared.get_expiry("k") == T0 + 10
    clock.advance(6)
    assert shared.get("k") == 0
    assert shared.incr("k", 10) == 1
    assert shared.get_expiry("k") == T0 + 20


def test_window_restarts_when_the_clock_steps_back(
    shared: SharedMemoryStorage, clock: FakeClock
) -> None:
    shared.incr("k", 60, amount=5)
    clock.advance(-3600)

    assert shared.incr("k", 60) == 1
    assert shared.get_expiry("k") == T0 - 3600 + 60


def test_clear_forgets_one_key(shared: SharedMemoryStorage) -> None:
    shared.incr("a", 60)
    shared.incr("b", 60)

    shared.clear("a")
    shared.clear("never-seen")

    assert shared.get("a") == 0
    assert shared.get("b") == 1
    assert shared.incr("a", 60) == 1


def test_reset_forgets_everything_and_counts_live_keys(
    shared: SharedMemoryStorage, clock: FakeClock
) -> None:
    shared.incr("short", 1)
    shared.incr("a", 60)
    shared.incr("b", 60)
    clock.advance(2)

    assert shared.reset() == 2
    assert shared.get("a") == 0
    assert shared.get("b") == 0
    assert shared.incr("a", 60) == 1


def test_check(shared: SharedMemoryStorage, tmp_path: Path) -> None:
    assert shared.check()
    (tmp_path / "dir.shm").mkdir()
    assert not SharedMemoryStorage(path=tmp_path / "dir.shm").check()


def test_full_table_reuses_expired_slots_first(tmp_path: Path, clock: FakeClock) -> None:
    storage = SharedMemoryStorage(path=tmp_path / "rl.shm", slots=4)
    for name in "abc":
        storage.incr(name, 60)
    storage.incr("brief", 1)
    clock.advance(2)

    assert storage.incr("new", 60) == 1

    assert [storage.get(name) for name in ("a", "b", "c", "new")] == [1, 1, 1, 1]
    storage.close()


def test_full_table_evicts_the_window_ending_first(tmp_path: Path, clock: FakeClock) -> None:
    storage = SharedMemoryStorage(path=tmp_path / "rl.shm", slots=4)
    storage.incr("ends-first", 30, amount=5)
    for name in "abc":
        storage.incr(name, 60, amount=5)

    assert storage.incr("new", 60) == 1

    # The evicted key starts over: an under-count, never a false refusal.
    assert storage.get("ends-first") == 0
    assert [storage.get(name) for name in "abc"] == [5, 5, 5]
    storage.close()


def test_overfull_table_keeps_counting_recent_keys(tmp_path: Path) -> None:
    storage = SharedMemoryStorage(path=tmp_path / "rl.shm", slots=8)
    for index in range(200):
        assert storage.incr(f"key-{index}", 60) == 1
        assert storage.incr(f"key-{index}", 60) == 2
    assert storage.get("key-199") == 2
    storage.close()


def test_file_is_created_private(shared: SharedMemoryStorage, shm_path: Path) -> None:
    shared.incr("k", 60)
    assert stat.S_IMODE(shm_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(shm_path.parent.stat().st_mode) == 0o700


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rl.shm"
    path.write_bytes(b"not a rate limit table" * 10)
    path.chmod(0o600)
    with pytest.raises(ValueError, match="not a hostcore rate limit file"):
        SharedMemoryStorage(path=path).incr("k", 60)


def test_file_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rl.shm"
    path.touch()
    path.chmod(0o666)
    with pytest.raises(ValueError, match="not shared"):
        SharedMemoryStorage(path=path).incr("k", 60)


def test_two_handles_on_one_file_share_counts(shm_path: Path) -> None:
    first = SharedMemoryStorage(path=shm_path, slots=16)
    second = SharedMemoryStorage(path=shm_path, slots=4096)

    first.incr("k", 60)

    assert second.incr("k", 60) == 2
    assert first.get("k") == 2
    first.close()
    second.close()


def test_a_held_file_lock_blocks_another_handle(shm_path: Path) -> None:
    holder = SharedMemoryStorage(path=shm_path)
    other = SharedMemoryStorage(path=shm_path)
    holder.incr("k", 60)
    results: queue.Queue[int] = queue.Queue()
    thread = threading.Thread(target=lambda: results.put(other.incr("k", 60)), daemon=True)

    with holder._current():
        thread.start()
        with pytest.raises(queue.Empty):
            results.get(timeout=0.2)
    thread.join(timeout=5)

    assert results.get(timeout=5) == 2
    holder.close()
    other.close()


# Across processes


@pytest.mark.parametrize("parent_attached", [True, False], ids=["inherited", "fresh-file"])
def test_processes_together_admit_the_limit_once(shm_path: Path, parent_attached: bool) -> None:
    storage = SharedMemoryStorage(path=shm_path, slots=64)
    limiter = RateLimiter(storage, "60/minute", {})
    if parent_attached:
        # The children inherit an open handle, whose lock would not exclude them.
        assert storage.check()
    # Several identities hit in turn: more chances for a lost update to show.
    identities = [f"user:{index}" for index in range(8)]

    def hit_fifty_times_each() -> list[int]:
        admitted = dict.fromkeys(identities, 0)
        for _ in range(50):
            for identity in identities:
                admitted[identity] += limiter.hit(identity, TOKEN).allowed
        return list(admitted.values())

    per_child = in_children(4, hit_fifty_times_each)

    assert [sum(column) for column in zip(*per_child, strict=True)] == [60] * len(identities)
    assert storage.get(f"LIMITER/{TOKEN}/user:0/60/1/minute") == 200
    storage.close()


def test_file_initialised_by_another_process_keeps_its_layout(shm_path: Path) -> None:
    def create_and_count() -> int:
        child = SharedMemoryStorage(path=shm_path, slots=16)
        child.incr("k", 60)
        return child.incr("k", 60)

    assert in_children(1, create_and_count) == [2]

    parent = SharedMemoryStorage(path=shm_path, slots=4096)
    assert parent.get("k") == 2
    assert shm_path.stat().st_size == 64 + 16 * 24
    parent.close()


def test_forked_child_takes_its_own_lock(shared: SharedMemoryStorage) -> None:
    shared.incr("k", 60)
    results: multiprocessing.Queue[int] = FORK.Queue()
    child = FORK.Process(target=lambda: results.put(shared.incr("k", 60)))

    with shared._current():
        child.start()
        # On the parent's handle the child would get the lock at once (or never).
        with pytest.raises(queue.Empty):
            results.get(timeout=0.2)
    try:
        assert results.get(timeout=5) == 2
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join(timeout=5)

    assert child.exitcode == 0
    assert shared.incr("k", 60) == 3
    parent_table = shared._current()
    assert shared._current() is parent_table, "the parent keeps its own table"
