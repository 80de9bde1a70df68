"""Live events: topics declared with the scope that reads them, fanned out to bounded
per-subscriber queues, and between workers over unix datagram sockets.

Three kinds of topic:

- a plugin's, declared with ``hostcore_event_topics`` (``system.stats``), whose
  ``source`` runs in a worker only while that worker has a subscriber to it; a
  family (``wifi.*``) declares one topic per member (``wifi.wlan0``), each with a
  source of its own;
- ``jobs.<id>``: one job's state and progress, to its owner (or ``jobs:admin``),
  published by the worker running the job and forwarded to the others;
- ``plugins``: the plugin list, when a plugin's state changes.

A topic with a ``snapshot`` (``jobs.<id>``, ``plugins``) sends its current state
first to a new subscriber, so a client that reconnects has missed nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from hostcore.context import Principal
from hostcore.errors import Forbidden, NotFound, TooManyRequests
from hostcore.files import PRIVATE_DIRECTORY, private_directory
from hostcore.security.acl import allows
from hostcore.security.deps import AUTHENTICATED

log = logging.getLogger(__name__)

QUEUE_LIMIT = 64  # events held per subscriber; the oldest go first
QUEUE_BYTES = 256 * 1024  # and at most this much of them
MAX_TOPICS = 16  # per subscriber
MAX_STREAMS = 8  # open at once per caller (subject), per worker
MAX_FORWARDED_BYTES = 60 * 1024  # one datagram
JOBS_PREFIX = "jobs."
PLUGINS_TOPIC = "plugins"

Publish = Callable[[Any], None]


@dataclass(frozen=True)
class Topic:
    """A topic a plugin declares: who may read it, and what produces its events.

    ``source(app, publish)`` runs while this worker has a subscriber to the topic
    (cancelled when the last one goes) and calls ``publish(model)`` for each event.

    A name ending in ``.*`` declares a family: ``member(text)`` says which names after
    the dot are topics of it, and each such topic runs its own
    ``source(app, publish, member)``.
    """

    name: str
    scope: str
    source: Callable[..., Awaitable[None]] | None = None
    description: str = ""
    member: Callable[[str], bool] | None = None

    @property
    def family(self) -> str | None:
        """The prefix of a family's topics (``wifi.``), or None for a single topic."""
        return self.name[:-1] if self.name.endswith(".*") else None


@dataclass(frozen=True)
class Event:
    topic: str
    id: str
    data: bytes  # JSON, encoded once for every subscriber
    at: float  # when it was published (wall clock)


@dataclass(eq=False)
class Subscriber:
    """One stream's queue: bounded, the oldest event dropped and counted when full."""

    principal: Principal
    limit: int = QUEUE_LIMIT
    topics: set[str] = field(default_factory=set)
    queue: deque[Event] = field(default_factory=deque)
    dropped: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: str | None = None  # why the stream must end now (a revocation, a stop)
    held: int = 0  # bytes of the events queued

    def push(self, event: Event) -> None:
        self.queue.append(event)
        self.held += len(event.data)
        while len(self.queue) > self.limit or (self.held > QUEUE_BYTES and len(self.queue) > 1):
            self.held -= len(self.queue.popleft().data)
            self.dropped += 1
        self.wake.set()

    def pop(self) -> Event:
        event = self.queue.popleft()
        self.held -= len(event.data)
        return event

    def end(self, reason: str) -> None:
        self.ended = reason
        self.wake.set()


def content_id(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=12).hexdigest()


def encode(data: Any) -> bytes:
    """An event's JSON: a model's, a plain value's, or ``bytes`` already JSON."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, BaseModel):
        return data.model_dump_json().encode()
    return json.dumps(data, separators=(",", ":")).encode()


class EventHub:
    """This worker's topics and subscribers."""

    def __init__(self, app: Any, topics: Iterable[Topic]) -> None:
        self.app = app
        self.topics = {topic.name: topic for topic in topics if topic.family is None}
        self.families = {topic.family: topic for topic in topics if topic.family is not None}
        self._subscribers: dict[str, set[Subscriber]] = {}
        self._sources: dict[str, asyncio.Task[None]] = {}
        self._peers: Peers | None = None
        self._sequence = 0
        self.snapshots: dict[str, Callable[[str, Principal], Awaitable[Any]]] = {}
        self._by_jti: dict[str, set[Subscriber]] = {}
        self._open: set[Subscriber] = set()
        self.announce_plugins: Callable[[], None] = lambda: None

    def revoked(self, jtis: Iterable[str]) -> None:
        """Tokens were revoked: their streams end now (no stream polls for it)."""
        for jti in jtis:
            for subscriber in self._by_jti.pop(jti, ()):
                subscriber.end("the token was revoked")

    def end_all(self, reason: str = "the server is stopping") -> None:
        """End every open stream (the server stops: it must not wait for them)."""
        for subscriber in list(self._open):
            subscriber.end(reason)

    def may_open(self, principal: Principal) -> None:
        """``TooManyRequests`` when the caller holds ``MAX_STREAMS`` open streams."""
        subject = principal.subject
        if sum(1 for each in self._open if each.principal.subject == subject) >= MAX_STREAMS:
            raise TooManyRequests(f"at most {MAX_STREAMS} open event streams per caller")

    def opened(self, subscriber: Subscriber, *, checked: bool = False) -> None:
        """Count an open stream (``may_open`` first, unless the caller did); ``unsubscribe``
        ends it."""
        if not checked:
            self.may_open(subscriber.principal)
        self._open.add(subscriber)
        jti = subscriber.principal.jti
        if jti is not None:
            self._by_jti.setdefault(jti, set()).add(subscriber)

    # -- lifecycle --

    def open_peers(self, directory: Path, name: str | None = None) -> None:
        """Exchange forwarded events with the other workers through ``directory``
        (this worker's socket is ``<name>.sock``, by default its pid)."""
        self._peers = Peers(directory, self._delivered, name or str(os.getpid()))
        self._peers.open()

    async def close(self) -> None:
        for task in self._sources.values():
            task.cancel()
        for task in list(self._sources.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sources.clear()
        if self._peers is not None:
            self._peers.close()
            self._peers = None

    # -- publishing --

    def publish(self, topic: str, data: Any, *, forward: bool = False) -> None:
        """Deliver ``data`` to this worker's subscribers of ``topic`` (and, ``forward``,
        to the other workers')."""
        subscribers = self._subscribers.get(topic)
        if not subscribers and (not forward or self._peers is None):
            return
        event = self._event(topic, encode(data))
        for subscriber in subscribers or ():
            subscriber.push(event)
        if forward and self._peers is not None:
            self._peers.send(event)

    def _event(self, topic: str, data: bytes) -> Event:
        """An event; a snapshot topic's id names its content (``Last-Event-ID``: a client
        that saw it is not sent it again), any other's its time and order."""
        now = time.time()
        if self._has_snapshot(topic):
            return Event(topic, content_id(data), data, now)
        self._sequence += 1
        return Event(topic, f"{int(now * 1_000_000)}-{self._sequence}", data, now)

    def _has_snapshot(self, topic: str) -> bool:
        prefix = JOBS_PREFIX if topic.startswith(JOBS_PREFIX) else topic
        return prefix in self.snapshots

    def _delivered(self, event: Event) -> None:
        for subscriber in self._subscribers.get(event.topic, ()):
            subscriber.push(event)

    # -- subscribing --

    async def subscribe(
        self, subscriber: Subscriber, topics: Iterable[str], *, last_event_id: str | None = None
    ) -> None:
        """Subscribe to every one of ``topics``, or to none: ``NotFound`` for a topic
        that does not exist (or another caller's job), ``Forbidden`` for one the caller
        may not read. A snapshot topic's current state goes first, unless it is the
        event ``last_event_id`` names."""
        wanted = [topic for topic in dict.fromkeys(topics) if topic not in subscriber.topics]
        if len(subscriber.topics) + len(wanted) > MAX_TOPICS:
            raise Forbidden(f"at most {MAX_TOPICS} topics per stream")
        checked = await self.check(subscriber.principal, wanted)
        self.attach(subscriber, checked, last_event_id=last_event_id)

    async def check(
        self, principal: Principal, topics: Iterable[str]
    ) -> list[tuple[str, Event | None]]:
        """Each topic with its current state (snapshot topics), or the refusal."""
        return [(topic, await self._check(principal, topic)) for topic in topics]

    def attach(
        self,
        subscriber: Subscriber,
        checked: Iterable[tuple[str, Event | None]],
        *,
        last_event_id: str | None = None,
    ) -> None:
        """Subscribe to topics :meth:`check` let through (no await: nothing can come
        between this and the stream that ends it)."""
        for topic, snapshot in checked:
            subscriber.topics.add(topic)
            self._subscribers.setdefault(topic, set()).add(subscriber)
            if snapshot is not None and snapshot.id != last_event_id:
                subscriber.push(snapshot)
            self._start_source(topic)

    def unsubscribe(self, subscriber: Subscriber, topics: Iterable[str] | None = None) -> None:
        """Leave ``topics`` (all of them, and the hub, when None)."""
        if topics is None:
            self._open.discard(subscriber)
        if topics is None and subscriber.principal.jti is not None:
            streams = self._by_jti.get(subscriber.principal.jti)
            if streams is not None:
                streams.discard(subscriber)
                if not streams:
                    del self._by_jti[subscriber.principal.jti]
        for topic in list(subscriber.topics if topics is None else topics):
            subscriber.topics.discard(topic)
            listeners = self._subscribers.get(topic)
            if listeners is not None:
                listeners.discard(subscriber)
                if not listeners:
                    del self._subscribers[topic]
                    task = self._sources.pop(topic, None)
                    if task is not None:
                        task.cancel()

    def declared(self, topic: str) -> tuple[Topic, str | None] | None:
        """The declaration ``topic`` belongs to, and its member name in a family."""
        single = self.topics.get(topic)
        if single is not None:
            return single, None
        for prefix, family in self.families.items():
            member = topic[len(prefix) :]
            if topic.startswith(prefix) and family.member is not None and family.member(member):
                return family, member
        return None

    async def _check(self, principal: Principal, topic: str) -> Event | None:
        found = self.declared(topic)
        if found is not None:
            declared = found[0]
            if declared.scope != AUTHENTICATED and not allows(principal.scopes, declared.scope):
                raise Forbidden(f"topic {topic} needs scope {declared.scope}")
            return None
        prefix = JOBS_PREFIX if topic.startswith(JOBS_PREFIX) else topic
        snapshot = self.snapshots.get(prefix)
        if snapshot is None:
            raise NotFound(f"no topic {topic}")
        data = await snapshot(topic, principal)  # raises NotFound for another's job
        return self._event(topic, encode(data))

    def _start_source(self, topic: str) -> None:
        found = self.declared(topic)
        if found is None or found[0].source is None or topic in self._sources:
            return
        source, member = found[0].source, found[1]
        extra = () if member is None else (member,)

        async def run() -> None:
            try:
                await source(self.app, lambda data: self.publish(topic, data), *extra)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the source of topic %s failed", topic)

        self._sources[topic] = asyncio.create_task(run(), name=f"events {topic}")

    def subscribers(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))


class Peers:
    """Events forwarded between workers: each binds a unix datagram socket in one
    directory and sends each forwarded event to every other socket there."""

    def __init__(self, directory: Path, deliver: Callable[[Event], None], name: str) -> None:
        self.directory = directory
        self.deliver = deliver
        self.path = directory / f"{name}.sock"
        self._sock: socket.socket | None = None
        self._listing: tuple[int, list[str]] | None = None  # (dir mtime, peer paths)
        self.lost = 0  # events a peer's full queue refused

    def open(self) -> None:
        # This user's alone: others may neither read the events nor add a socket.
        private_directory(self.directory, what="events directory", limit=PRIVATE_DIRECTORY)
        self.path.unlink(missing_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        sock.bind(str(self.path))
        sock.setblocking(False)
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._read)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
            self.path.unlink(missing_ok=True)

    def _peers(self) -> list[str]:
        mtime = self.directory.stat().st_mtime_ns
        if self._listing is None or self._listing[0] != mtime:
            own = self.path.name
            found = [
                entry.path
                for entry in os.scandir(self.directory)
                if entry.name.endswith(".sock") and entry.name != own
            ]
            self._listing = (mtime, found)
        return self._listing[1]

    def send(self, event: Event) -> None:
        sock = self._sock
        if sock is None:
            return
        payload = json.dumps(
            {"topic": event.topic, "id": event.id, "at": event.at, "data": event.data.decode()}
        ).encode()
        if len(payload) > MAX_FORWARDED_BYTES:  # hostcore's own events are far smaller
            log.warning("event on %s too large to forward (%d bytes)", event.topic, len(payload))
            return
        for path in self._peers():
            try:
                sock.sendto(payload, path)
            except (ConnectionRefusedError, FileNotFoundError):
                Path(path).unlink(missing_ok=True)  # a worker that is gone
                self._listing = None
            except BlockingIOError:
                self.lost += 1  # the peer is behind: its subscribers count it as dropped
            except OSError as exc:
                log.debug("forwarding an event to %s failed: %s", path, exc)

    def _read(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(64):
            try:
                payload, ancillary, _flags, _address = sock.recvmsg(
                    MAX_FORWARDED_BYTES + 1024, socket.CMSG_SPACE(_UCRED.size)
                )
            except (BlockingIOError, InterruptedError):
                return
            if _sender_uid(ancillary) != os.getuid():
                continue  # only this user's processes (the other workers) forward
            event = _forwarded(payload)
            if event is not None:
                self.deliver(event)


_UCRED = struct.Struct("3i")  # pid, uid, gid
_ID = re.compile(r"^[0-9a-f-]{1,40}$")
_TOPIC = re.compile(r"^[a-z][a-z0-9_.-]{0,79}$")


def _sender_uid(ancillary: list[tuple[int, int, bytes]]) -> int | None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
            return int(_UCRED.unpack(data[: _UCRED.size])[1])
    return None


def _forwarded(payload: bytes) -> Event | None:
    """A forwarded event, checked: its id and topic as hostcore writes them, its data
    one line of JSON (it is written into SSE lines as it is)."""
    try:
        raw = json.loads(payload)
        topic, event_id, data = str(raw["topic"]), str(raw["id"]), str(raw["data"])
        at = float(raw["at"])
        json.loads(data)
    except (ValueError, KeyError, TypeError):
        return None
    if not _TOPIC.match(topic) or not _ID.match(event_id) or "\n" in data or "\r" in data:
        return None
    return Event(topic, event_id, data.encode(), at)
