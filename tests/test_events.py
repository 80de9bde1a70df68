"""The event hub in one process: scopes, sources, snapshots, bounded queues, and events
forwarded between two hubs over unix datagram sockets."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from hostcore.context import Principal
from hostcore.errors import Forbidden, NotFound
from hostcore.events.hub import QUEUE_LIMIT, EventHub, Publish, Subscriber, Topic, content_id
from tests.helpers import wait_until

READER = Principal("client", "panel", frozenset({"system:read"}))
STRANGER = Principal("client", "other", frozenset({"hello:read"}))
WITHIN_S = 5.0


def stats_topic(calls: list[str]) -> Topic:
    async def source(_app: Any, publish: Publish) -> None:
        calls.append("started")
        try:
            n = 0
            while True:
                n += 1
                publish({"n": n})
                await asyncio.sleep(0.01)
        finally:
            calls.append("stopped")

    return Topic("system.stats", "system:read", source=source)


async def test_a_source_runs_only_while_someone_listens() -> None:
    calls: list[str] = []
    hub = EventHub(None, [stats_topic(calls)])
    assert calls == []
    first, second = Subscriber(READER), Subscriber(READER)
    await hub.subscribe(first, ["system.stats"])
    await hub.subscribe(second, ["system.stats"])
    await wait_until(lambda: len(second.queue) >= 3, WITHIN_S, "events")
    assert calls == ["started"], "one source for both"
    assert json.loads(second.queue[0].data) == {"n": 1}
    hub.unsubscribe(first)
    await asyncio.sleep(0.05)
    assert calls == ["started"]
    hub.unsubscribe(second)
    await wait_until(lambda: calls == ["started", "stopped"], WITHIN_S, "the source to stop")
    await hub.close()


async def test_a_topic_is_refused_by_scope_or_absence_and_nothing_is_subscribed() -> None:
    hub = EventHub(None, [stats_topic([])])
    subscriber = Subscriber(STRANGER)
    with pytest.raises(Forbidden, match="needs scope system:read"):
        await hub.subscribe(subscriber, ["system.stats"])
    with pytest.raises(NotFound, match=r"no topic nothing\.here"):
        await hub.subscribe(subscriber, ["nothing.here"])
    assert subscriber.topics == set() and hub.subscribers("system.stats") == 0
    with pytest.raises(Forbidden, match="at most 16 topics"):
        await hub.subscribe(Subscriber(READER), [f"t{n}.x" for n in range(17)])
    await hub.close()


def test_a_stalled_reader_holds_at_most_its_queue_and_counts_what_it_lost() -> None:
    subscriber = Subscriber(READER)
    hub = EventHub(None, [Topic("system.stats", "system:read")])
    hub._subscribers["system.stats"] = {subscriber}
    for n in range(1000):
        hub.publish("system.stats", {"n": n})
    assert len(subscriber.queue) == QUEUE_LIMIT
    assert subscriber.dropped == 1000 - QUEUE_LIMIT
    assert json.loads(subscriber.queue[0].data) == {"n": 1000 - QUEUE_LIMIT}, "the newest kept"


async def test_a_snapshot_goes_first_unless_the_client_saw_it() -> None:
    hub = EventHub(None, [])
    state = {"id": "j1", "state": "running", "progress": 0.5}

    async def snapshot(topic: str, principal: Principal) -> Any:
        if principal is STRANGER:
            raise NotFound(f"job {topic} not found")
        return state

    hub.snapshots["jobs."] = snapshot
    first = Subscriber(READER)
    await hub.subscribe(first, ["jobs.j1"])
    (sent,) = first.queue
    assert json.loads(sent.data) == state
    assert sent.id == content_id(sent.data)
    again = Subscriber(READER)
    await hub.subscribe(again, ["jobs.j1"], last_event_id=sent.id)
    assert not again.queue, "a reconnecting client that saw this state is not sent it again"
    hub.publish("jobs.j1", state)
    assert again.queue[0].id == sent.id, "the same state, the same id, on every worker"
    with pytest.raises(NotFound):
        await hub.subscribe(Subscriber(STRANGER), ["jobs.j1"])


async def test_forwarded_events_reach_the_other_workers_subscribers(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    owner, other = EventHub(None, []), EventHub(None, [])
    for hub in (owner, other):
        hub.snapshots["jobs."] = _no_snapshot
    owner.open_peers(directory, "owner")
    other.open_peers(directory, "other")
    listener = Subscriber(READER)
    other._subscribers["jobs.j1"] = {listener}
    owner.publish("jobs.j1", {"state": "running"}, forward=True)
    await wait_until(lambda: bool(listener.queue), WITHIN_S, "the forwarded event")
    assert json.loads(listener.queue[0].data) == {"state": "running"}
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    await other.close()
    assert not (directory / "other.sock").exists()
    owner.publish("jobs.j1", {"state": "succeeded"}, forward=True)  # a peer gone: no error
    await owner.close()


async def _no_snapshot(_topic: str, _principal: Principal) -> Any:
    return None


def test_a_forwarded_event_is_taken_only_as_hostcore_writes_them() -> None:
    from hostcore.events.hub import _forwarded

    def payload(**changes: Any) -> bytes:
        raw = {"topic": "jobs.j1", "id": "abc123", "at": 1.0, "data": '{"state":"running"}'}
        return json.dumps({**raw, **changes}).encode()

    assert _forwarded(payload()) is not None
    for hostile in (
        payload(data='{"a":1}\n\nevent: plugins\ndata: {}'),  # a second SSE frame
        payload(data="not json"),
        payload(id="1\nevent: x"),
        payload(topic="Jobs/../x"),
        payload(at="soon"),
        b"\xff\xfe",
    ):
        assert _forwarded(hostile) is None


async def test_the_events_directory_is_made_private(tmp_path: Path) -> None:
    directory = tmp_path / "events"
    directory.mkdir(mode=0o777)
    directory.chmod(0o777)
    hub = EventHub(None, [])
    hub.open_peers(directory, "one")
    assert oct(directory.stat().st_mode & 0o777) == "0o700"
    await hub.close()


async def test_end_all_ends_every_open_stream_and_streams_per_caller_are_bounded() -> None:
    from hostcore.errors import TooManyRequests
    from hostcore.events.hub import MAX_STREAMS

    hub = EventHub(None, [])
    streams = [Subscriber(READER) for _ in range(MAX_STREAMS)]
    for stream in streams:
        hub.opened(stream)
    with pytest.raises(TooManyRequests):
        hub.opened(Subscriber(READER))
    hub.opened(Subscriber(STRANGER))  # another caller's count is its own
    hub.end_all()
    assert all(stream.ended == "the server is stopping" for stream in streams)
    hub.unsubscribe(streams[0])
    hub.opened(Subscriber(READER))  # a closed stream frees its place


def test_a_queue_is_bounded_in_bytes_too() -> None:
    from hostcore.events.hub import QUEUE_BYTES, Event

    subscriber = Subscriber(READER)
    big = b"x" * (QUEUE_BYTES // 4)
    for n in range(20):
        subscriber.push(Event("system.stats", str(n), big, 0.0))
    assert subscriber.held <= QUEUE_BYTES and len(subscriber.queue) == 4
    assert subscriber.dropped == 16
    subscriber.pop()
    assert subscriber.held == 3 * len(big)


async def test_a_stream_holds_its_subscription_only_while_it_runs() -> None:
    """A response that is never sent (its client gone first) leaves nothing behind."""
    from hostcore.events.router import _stream

    hub = EventHub(None, [Topic("system.stats", "system:read")])
    checked = await hub.check(READER, ["system.stats"])
    stream = _stream(None, hub, Subscriber(READER), checked, None)
    assert hub.subscribers("system.stats") == 0 and not hub._open, "not before it runs"
    assert await stream.__anext__() == b"retry: 2000\n\n"
    assert hub.subscribers("system.stats") == 1
    await stream.aclose()
    assert hub.subscribers("system.stats") == 0 and not hub._open


async def test_a_family_runs_one_source_per_member_and_refuses_names_it_has_not() -> None:
    started: list[str] = []

    async def source(_app: Any, publish: Publish, member: str) -> None:
        started.append(member)
        publish({"member": member})
        await asyncio.Event().wait()

    family = Topic("system.disk.*", "system:read", source=source, member=str.isalnum)
    hub = EventHub(None, [family, stats_topic([])])
    first, second = Subscriber(READER), Subscriber(READER)
    await hub.subscribe(first, ["system.disk.sda"])
    await hub.subscribe(second, ["system.disk.sda", "system.disk.sdb"])
    await wait_until(lambda: len(second.queue) == 2, WITHIN_S, "both members' events")
    assert sorted(started) == ["sda", "sdb"], "one source per member, shared by subscribers"
    assert {json.loads(e.data)["member"] for e in second.queue} == {"sda", "sdb"}
    assert [e.topic for e in first.queue] == ["system.disk.sda"]
    for name in ("system.disk.", "system.disk.s-a", "system.diskx"):
        with pytest.raises(NotFound):
            await hub.subscribe(Subscriber(READER), [name])
    with pytest.raises(Forbidden, match="needs scope system:read"):
        await hub.subscribe(Subscriber(STRANGER), ["system.disk.sda"])
    await hub.close()
