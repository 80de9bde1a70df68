"""Rate limits that hold across every worker process on the host.

hostcore runs N worker processes on one small device, and a limit of L per
minute must admit L requests in total, not N x L. Without a server (no Redis)
the workers need a counter store they all see, so :class:`SharedMemoryStorage`
keeps fixed-window counters in one memory-mapped file, usually on the tmpfs
under ``run_dir``:

* a 64-byte header: magic, layout version, slot count and a random salt;
* an open-addressing hash table of 24-byte slots, each three native words:
  the key's salted 8-byte blake2b hash (0 means the slot was never used), the
  window's expiry (absolute ``time.time()``, float) and the count.

Every operation holds an exclusive ``flock`` on the file for a few
microseconds. ``flock`` is released by the kernel when a process dies, so a
crashed worker can never wedge the others. Locks belong to the open file, which
a forked child shares with its parent, so each process opens the file itself
(a fork counter, bumped by ``os.register_at_fork``, is checked on every call)
and a thread lock serialises the threads of one process.

A key lives within ``_PROBE_LIMIT`` slots of its home slot, so every operation
touches a bounded number of slots. Slots are never emptied except by
:meth:`SharedMemoryStorage.reset`, which keeps probe chains intact: a cleared
or expired slot keeps its hash and is reused by the next new key that passes.
When all slots near a key's home are live, the one whose window ends first is
evicted. Eviction forgets a count, so it can only under-count (admit more than
the limit), never refuse a request that should pass. The hash is salted per
file, so clients cannot choose identities that crowd one neighbourhood.

A server of one process (``hostcore serve`` without ``--workers``) has no one to
share with: :class:`ProcessStorage` applies the same fixed-window rule to a
dictionary in that process's memory, without the file and without ``flock``.

:class:`RateLimiter` is the typed facade the request pipeline calls: it parses
the configured limits once and applies limits' fixed-window rule, with the
same keys as limits' strategy, per route and identity.
"""

from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import stat
import struct
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError
from limits.storage import MemoryStorage, Storage, storage_from_string

from hostcore.config import RateLimitSettings
from hostcore.context import RateLimitResult
from hostcore.errors import ConfigError
from hostcore.redaction import redact_url

__all__ = ["ProcessStorage", "RateLimitResult", "RateLimiter", "SharedMemoryStorage", "parse_limit"]

_MAGIC = b"hcrlimit"
_VERSION = 1
_HEADER = struct.Struct("<8sIQ16s")  # magic, version, slots, salt
_HEADER_SIZE = 64
_SLOT_WORDS = 3  # key hash, expiry, count
_SLOT_SIZE = 8 * _SLOT_WORDS
_PROBE_LIMIT = 32
_SALT_SIZE = 16
DEFAULT_SLOTS = 4096
MAX_SLOTS = 1 << 20  # 24 MiB of slots: far beyond what one device's clients need
SHARED_FILE_NAME = "ratelimit.shm"


def _after_fork_in_child() -> None:
    global _attach_lock, _generation
    _attach_lock = threading.Lock()
    _generation += 1


# Guards opening a process's table. Replaced in a forked child, where a copy taken
# while another parent thread held it would stay locked forever.
_attach_lock = threading.Lock()
# Counts forks, so a table opened by the parent is noticed without asking the
# kernel for the pid on every hit.
_generation = 0
os.register_at_fork(after_in_child=_after_fork_in_child)
_HASH_CACHE_SIZE = 4096
_KEY_CACHE_SIZE = 4096


class _Table:
    """One process's view of the shared file; entering it takes the exclusive lock."""

    def __init__(self, fd: int, slots: int, salt: bytes) -> None:
        self.fd = fd
        self.slots = slots
        self.salt = salt
        self.window = min(slots, _PROBE_LIMIT)
        self.generation = _generation
        self._hashes: dict[str, int] = {}
        self.mm = mmap.mmap(fd, _HEADER_SIZE + slots * _SLOT_SIZE)
        self._view = memoryview(self.mm)
        self._region = self._view[_HEADER_SIZE:]
        # Two views of the same bytes: the hash and count words as integers, the
        # expiry word as a float, so a slot is read without struct unpacking.
        self.words = self._region.cast("Q")
        self.floats = self._region.cast("d")
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, slots: int) -> _Table:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(path, flags, 0o600)
        try:
            _check_private(fd, path)
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                slots, salt = _read_or_init_header(fd, path, slots)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            return cls(fd, slots, salt)
        except BaseException:
            os.close(fd)
            raise

    def __enter__(self) -> _Table:
        self._lock.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self._lock.release()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            self._lock.release()

    def hash(self, key: str) -> int:
        known = self._hashes.get(key)
        if known is not None:
            return known
        # A salt prefix rather than blake2b's key parameter: half the cost, and
        # blake2b has no length extension to make a prefix weaker.
        digest = hashlib.blake2b(self.salt + key.encode(), digest_size=8).digest()
        key_hash = int.from_bytes(digest, "little") or 1
        if len(self._hashes) >= _HASH_CACHE_SIZE:
            self._hashes.clear()  # many distinct callers: start the cache afresh
        self._hashes[key] = key_hash
        return key_hash

    def find(self, key_hash: int) -> int:
        """The slot holding ``key_hash``, or -1."""
        words = self.words
        slots = self.slots
        home = key_hash % slots
        for step in range(self.window):
            slot = (home + step) % slots
            found = words[slot * _SLOT_WORDS]
            if found == key_hash:
                return slot
            if found == 0:
                return -1
        return -1

    def claim(self, key_hash: int, now: float) -> int:
        """The slot holding ``key_hash``, else the best one to give it."""
        words = self.words
        floats = self.floats
        slots = self.slots
        home = key_hash % slots
        reusable = -1
        victim = home
        victim_expiry = math.inf
        for step in range(self.window):
            slot = (home + step) % slots
            base = slot * _SLOT_WORDS
            found = words[base]
            if found == key_hash:
                return slot
            if found == 0:
                return slot if reusable < 0 else reusable
            if reusable < 0:
                expiry = floats[base + 1]
                if expiry <= now:
                    reusable = slot
                elif expiry < victim_expiry:
                    victim, victim_expiry = slot, expiry
        return victim if reusable < 0 else reusable

    def close(self) -> None:
        for view in (self.words, self.floats, self._region, self._view):
            view.release()
        self.mm.close()
        os.close(self.fd)


def _check_private(fd: int, path: Path) -> None:
    """Refuse a file another user could write: its counters decide who is refused."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f"rate limit file {path} is not a regular file")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ValueError(f"rate limit file {path} must be owned by this user and not shared")


def _read_or_init_header(fd: int, path: Path, slots: int) -> tuple[int, bytes]:
    """The table's slot count and salt; the caller holds the lock.

    Another process may have created the file a moment ago, so the header it
    wrote wins over ``slots``. An all-zero header is a file nobody finished
    initialising (or just created), and is initialised here.
    """
    raw = os.pread(fd, _HEADER_SIZE, 0)
    if not raw.strip(b"\0"):
        salt = os.urandom(_SALT_SIZE)
        os.ftruncate(fd, _HEADER_SIZE + slots * _SLOT_SIZE)
        os.pwrite(fd, _HEADER.pack(_MAGIC, _VERSION, slots, salt), 0)
        return slots, salt
    if len(raw) < _HEADER.size:
        raise ValueError(f"rate limit file {path} is truncated")
    magic, version, found_slots, salt = _HEADER.unpack_from(raw)
    if magic != _MAGIC:
        raise ValueError(f"{path} is not a hostcore rate limit file")
    if version != _VERSION:
        raise ValueError(
            f"rate limit file {path} has layout version {version}, expected {_VERSION}; "
            "stop every hostcore process and remove it"
        )
    if found_slots < 1 or os.fstat(fd).st_size < _HEADER_SIZE + found_slots * _SLOT_SIZE:
        raise ValueError(f"rate limit file {path} is truncated")
    return int(found_slots), bytes(salt)


def _parse_uri(uri: str, slots: int) -> tuple[Path, int]:
    parsed = urllib.parse.urlparse(uri)
    if parsed.netloc or not parsed.path.startswith("/"):
        raise ValueError(
            f"rate limit storage {uri!r}: expected hostcore-shm:///absolute/path[?slots=N]"
        )
    query = urllib.parse.parse_qs(parsed.query)
    if "slots" in query:
        try:
            slots = int(query["slots"][-1])
        except ValueError:
            raise ValueError(f"rate limit storage {uri!r}: slots must be a number") from None
    return Path(urllib.parse.unquote(parsed.path)), slots


class SharedMemoryStorage(Storage):
    """Fixed-window counters in a memory-mapped file shared by every process on the host.

    Built directly (``SharedMemoryStorage(path=..., slots=4096)``) or from a URI
    such as ``hostcore-shm:///run/hostcore/ratelimit.shm?slots=8192``. The slot
    count applies when the file is created; an existing file keeps its own.
    Supports only the fixed-window strategy.
    """

    # limits declares it as an instance attribute; its metaclass reads it from the class body.
    STORAGE_SCHEME = ["hostcore-shm"]  # noqa: RUF012

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        path: Path | None = None,
        slots: int = DEFAULT_SLOTS,
        **options: float | str | bool,
    ) -> None:
        if uri is not None:
            path, slots = _parse_uri(uri, slots)
        if path is None:
            raise ValueError("SharedMemoryStorage needs a path or a hostcore-shm:// URI")
        if not 1 <= slots <= MAX_SLOTS:
            raise ValueError(f"slots must be between 1 and {MAX_SLOTS}, got {slots}")
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.path = path
        self._slots = slots
        self._table: _Table | None = None

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (OSError, ValueError)

    def _current(self) -> _Table:
        table = self._table
        if table is not None and table.generation == _generation:
            return table
        return self._attach()

    def _attach(self) -> _Table:
        with _attach_lock:
            table = self._table
            if table is not None and table.generation == _generation:
                return table
            if table is not None:
                # The parent's table, inherited by fork: closing this process's
                # copies leaves the parent's own untouched.
                table.close()
            self._table = None
            self._table = _Table.open(self.path, self._slots)
            return self._table

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self.incr_window(key, expiry, amount)[0]

    def incr_window(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        """Like :meth:`incr`, also giving the window's expiry: one lock instead of two."""
        table = self._current()
        key_hash = table.hash(key)
        with table:
            now = time.time()
            base = table.claim(key_hash, now) * _SLOT_WORDS
            words = table.words
            floats = table.floats
            # A window ending more than its own length from now means the clock
            # stepped back; starting afresh keeps a step from locking clients out.
            if words[base] == key_hash and now < floats[base + 1] <= now + expiry:
                count: int = words[base + 2] + amount
            else:
                words[base] = key_hash
                floats[base + 1] = now + expiry
                count = amount
            words[base + 2] = count
            window_expiry: float = floats[base + 1]
        return count, window_expiry

    def get(self, key: str) -> int:
        table = self._current()
        key_hash = table.hash(key)
        with table:
            slot = table.find(key_hash)
            if slot < 0:
                return 0
            base = slot * _SLOT_WORDS
            if table.floats[base + 1] <= time.time():
                return 0
            count: int = table.words[base + 2]
        return count

    def get_expiry(self, key: str) -> float:
        table = self._current()
        key_hash = table.hash(key)
        with table:
            now = time.time()
            slot = table.find(key_hash)
            if slot < 0:
                return now
            expiry: float = table.floats[slot * _SLOT_WORDS + 1]
        return expiry if expiry > now else now

    def check(self) -> bool:
        try:
            with self._current():
                return True
        except self.base_exceptions:
            return False

    def reset(self) -> int:
        table = self._current()
        with table:
            now = time.time()
            floats = table.floats
            live = sum(
                1
                for base in range(0, table.slots * _SLOT_WORDS, _SLOT_WORDS)
                if table.words[base] != 0 and floats[base + 1] > now
            )
            table.mm[_HEADER_SIZE:] = bytes(table.slots * _SLOT_SIZE)
        return live

    def clear(self, key: str) -> None:
        table = self._current()
        key_hash = table.hash(key)
        with table:
            slot = table.find(key_hash)
            if slot >= 0:
                # The hash stays so later keys in this probe chain are still found.
                base = slot * _SLOT_WORDS
                table.floats[base + 1] = 0.0
                table.words[base + 2] = 0

    def close(self) -> None:
        """Unmap and close this process's handle (no call may be running); the next reopens it."""
        with _attach_lock:
            if self._table is not None:
                self._table.close()
                self._table = None


def parse_limit(text: str) -> RateLimitItem:
    """One limit such as ``"600/minute"`` or ``"5 per minute"``; ValueError names a bad one."""
    try:
        items = parse_many(text)
    except ValueError:
        raise ValueError(
            f"invalid rate limit {text!r}: expected e.g. '600/minute' or '10 per second'"
        ) from None
    if len(items) != 1:
        raise ValueError(f"invalid rate limit {text!r}: give exactly one limit")
    return items[0]


class ProcessStorage(Storage):
    """Fixed-window counters in this process's memory: the storage of a server that is one
    process. The same rule as :class:`SharedMemoryStorage` (a window starts at its first
    hit; one ending more than its length from now means the clock stepped back), in a
    dictionary. Past ``max_keys`` the expired windows go, then the half that ends first:
    like the table's eviction, that can only under-count.
    """

    STORAGE_SCHEME = ["hostcore-process"]  # noqa: RUF012 - read by limits' metaclass

    def __init__(
        self,
        uri: str | None = None,
        wrap_exceptions: bool = False,
        *,
        max_keys: int = 65536,
        **options: float | str | bool,
    ) -> None:
        super().__init__(uri, wrap_exceptions=wrap_exceptions, **options)
        self.max_keys = max_keys
        self._windows: dict[str, list[float]] = {}  # key -> [count, window end]
        self._lock = threading.Lock()

    @property
    def base_exceptions(self) -> tuple[type[Exception], ...]:
        return (ValueError,)

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        return self.incr_window(key, expiry, amount)[0]

    def incr_window(self, key: str, expiry: float, amount: int = 1) -> tuple[int, float]:
        with self._lock:
            now = time.time()
            window = self._windows.get(key)
            if window is None or not now < window[1] <= now + expiry:
                if window is None and len(self._windows) >= self.max_keys:
                    self._evict(now)
                window = self._windows[key] = [0, now + expiry]
            window[0] += amount
            return int(window[0]), window[1]

    def _evict(self, now: float) -> None:
        live = {key: w for key, w in self._windows.items() if w[1] > now}
        if len(live) >= self.max_keys:
            by_end = sorted(live, key=lambda key: live[key][1])
            for key in by_end[: len(by_end) // 2]:
                del live[key]
        self._windows = live

    def get(self, key: str) -> int:
        window = self._windows.get(key)
        return int(window[0]) if window is not None and window[1] > time.time() else 0

    def get_expiry(self, key: str) -> float:
        window = self._windows.get(key)
        now = time.time()
        return window[1] if window is not None and window[1] > now else now

    def check(self) -> bool:
        return True

    def reset(self) -> int:
        with self._lock:
            live = sum(1 for window in self._windows.values() if window[1] > time.time())
            self._windows = {}
        return live

    def clear(self, key: str) -> None:
        with self._lock:
            self._windows.pop(key, None)

    def close(self) -> None:
        """Nothing to release (the interface of SharedMemoryStorage)."""


@dataclass(frozen=True, slots=True)
class _Limit:
    item: RateLimitItem
    amount: int
    expiry: int
    # The end of limits' key_for() layout, so keys match FixedWindowRateLimiter's.
    key_tail: str


def _prepare(text: str) -> _Limit:
    item = parse_limit(text)
    tail = f"/{item.amount}/{item.multiples}/{item.GRANULARITY.name}"
    return _Limit(item, item.amount, item.get_expiry(), tail)


class RateLimiter:
    """Fixed-window limits per identity (principal, else client address) per route.

    The rule is limits' :class:`~limits.strategies.FixedWindowRateLimiter` (count,
    then admit while the count is within the limit) with the same keys, applied
    to the storage directly: the strategy's ``hit`` drops the count, and reading
    it back for the headers would cost two more storage round trips per request.
    """

    def __init__(self, storage: Storage, default: str, routes: Mapping[str, str]) -> None:
        self.storage = storage
        self._default = _prepare(default)
        self._routes = {route: _prepare(limit) for route, limit in routes.items()}
        # (identity, route key) -> its limit and storage key: the same few callers ask
        # again and again, and composing the key costs more than counting.
        self._keys: dict[tuple[str, str], tuple[_Limit, str]] = {}
        self._count_in_window = (
            storage.incr_window
            if isinstance(storage, SharedMemoryStorage | ProcessStorage)
            else self._incr_then_expiry
        )

    @classmethod
    def from_settings(
        cls, settings: RateLimitSettings, run_dir: Path, *, single_process: bool = False
    ) -> RateLimiter:
        """The limiter ``settings`` describe, its storage chosen by ``settings.storage``.

        ``"shared"`` is the file ``run_dir/ratelimit.shm``, seen by every worker, or
        this process's own table when the server is ``single_process``.
        ``"memory"`` is per process and NOT shared: N workers admit up to N x the
        limit. Anything else is a limits storage URI such as ``redis://host:6379``.
        """
        storage: Storage
        if settings.storage == "shared" and single_process:
            storage = ProcessStorage()
        elif settings.storage == "shared":
            storage = SharedMemoryStorage(path=run_dir / SHARED_FILE_NAME)
        elif settings.storage == "memory":
            storage = MemoryStorage()
        else:
            try:
                found = storage_from_string(settings.storage)
            except (ConfigurationError, ValueError) as exc:
                # A known scheme whose library is not installed (redis://, memcached://),
                # or a URL the storage refuses. Its message may repeat the URL: redacted.
                shown = redact_url(settings.storage)
                detail = redact_url(str(exc).replace(settings.storage, shown))
                raise ConfigError(f"ratelimit.storage {shown!r}: {detail}") from None
            if not isinstance(found, Storage):
                raise ConfigError(
                    f"ratelimit.storage {redact_url(settings.storage)!r} is asynchronous; "
                    "use a sync one"
                )
            storage = found
        return cls(storage, settings.default, settings.routes)

    def _incr_then_expiry(self, key: str, expiry: int) -> tuple[int, float]:
        count = self.storage.incr(key, expiry)
        return count, self.storage.get_expiry(key)

    def _key(self, identity: str, route_key: str) -> tuple[_Limit, str]:
        known = self._keys.get((identity, route_key))
        if known is not None:
            return known
        limit = self._routes.get(route_key, self._default)
        # Keys join their parts with "/": escaping it in the identity keeps two
        # (route, identity) pairs from ever sharing a counter.
        who = identity.replace("%", "%25").replace("/", "%2F")
        if len(self._keys) >= _KEY_CACHE_SIZE:
            self._keys.clear()  # many distinct callers: start the cache afresh
        known = self._keys[identity, route_key] = (
            limit,
            f"{limit.item.namespace}/{route_key}/{who}{limit.key_tail}",
        )
        return known

    def hit(self, identity: str, route_key: str) -> RateLimitResult:
        """Count one request by ``identity`` to ``route_key`` (``"POST /api/v1/auth/token"``)."""
        limit, key = self._keys.get((identity, route_key)) or self._key(identity, route_key)
        count, reset_at = self._count_in_window(key, limit.expiry)
        amount = limit.amount
        if count <= amount:
            return RateLimitResult(True, amount, amount - count, reset_at, 0)
        return _refused(amount, reset_at)

    def peek(self, identity: str, route_key: str) -> RateLimitResult:
        """What ``identity`` has left for ``route_key``, without counting a request."""
        limit, key = self._key(identity, route_key)
        count = self.storage.get(key)
        now = time.time()
        reset_at = self.storage.get_expiry(key) if count else now
        if reset_at > now + limit.expiry:
            # A window ending more than its length from now: the clock stepped back. The
            # next hit starts a new one (the storages' rule), so it counts nothing now.
            count, reset_at = 0, now
        amount = limit.amount
        if count < amount:
            return RateLimitResult(True, amount, amount - count, reset_at, 0)
        return _refused(amount, reset_at)


def _refused(amount: int, reset_at: float) -> RateLimitResult:
    retry_after_s = max(1, math.ceil(reset_at - time.time()))
    return RateLimitResult(False, amount, 0, reset_at, retry_after_s)
