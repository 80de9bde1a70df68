"""Live events through the real server with two gunicorn workers: SSE and the websocket,
topics and their scopes, a job's events from whichever worker runs it, and a stream that
ends when its token is revoked."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.sync.client import unix_connect

from tests.helpers import (
    RealServer,
    Sent,
    start_real_server,
    stop_group,
    wait_for,
)

STREAM_TIMEOUT_S = 15.0


@pytest.fixture(scope="module")
def served(hello_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    server = start_server(tmp_path_factory.mktemp("events-served"), hello_site)
    try:
        yield server
    finally:
        stop_group(server.process)


def start_server(root: Path, hello_site: Path) -> RealServer:
    return start_real_server(
        root,
        PYTHONPATH=str(hello_site),
        HOSTCORE_AUTH__CLIENTS__PANEL__SCOPES='["hello:read"]',
    )


def issue(server: RealServer, client: str = "tester") -> dict[str, Any]:
    issued = server.cli("token", "issue", "--client", client)
    assert issued.returncode == 0, issued.stderr
    token: dict[str, Any] = json.loads(issued.stdout)
    return token


def auth(token: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {token['access_token']}"}


class Stream:
    """An SSE stream read in a thread: its events, and whether it ended."""

    def __init__(
        self,
        server: RealServer,
        topics: str,
        headers: dict[str, str],
        rid: str,
        http: httpx2.Client | None = None,
    ):
        self.events: list[tuple[str, Any]] = []
        self.ended = threading.Event()
        self.status: int | None = None
        self._socket: socket.socket | None = None
        self._closing = threading.Event()
        self.http = http or server.connection()
        self.http.timeout = httpx2.Timeout(STREAM_TIMEOUT_S)
        self._thread = threading.Thread(
            target=self._read, args=(topics, {**headers, "X-Request-ID": rid}), daemon=True
        )
        self._thread.start()

    def _read(self, topics: str, headers: dict[str, str]) -> None:
        try:
            with self.http.stream("GET", "/api/v1/events", params={"topics": topics},
                                  headers=headers) as response:  # fmt: skip
                self.status = response.status_code
                stream = response.extensions["network_stream"]
                self._socket = stream.get_extra_info("socket")
                if self._closing.is_set():  # close() came before the socket was known
                    self._shut()
                topic = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        topic = line.removeprefix("event: ")
                    elif line.startswith("data: ") and topic is not None:
                        self.events.append((topic, json.loads(line.removeprefix("data: "))))
        except (httpx2.HTTPError, OSError):
            pass
        finally:
            self.ended.set()

    def close(self) -> None:
        # Closing the client does not wake a read blocked in another thread; shutting the
        # socket down does (the stream would otherwise wait for its next event). The flag
        # first, the socket then: whichever of close() and the reader comes second shuts it.
        self._closing.set()
        self._shut()
        self._thread.join(STREAM_TIMEOUT_S)
        self.http.close()

    def _shut(self) -> None:
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)

    def wait(self, predicate: Any, what: str) -> None:
        wait_for(lambda: predicate(self.events), STREAM_TIMEOUT_S, what)


def test_stats_arrive_once_a_second_over_sse(served: RealServer) -> None:
    stream = Stream(served, "system.stats", auth(issue(served)), "sse-stats")
    try:
        stream.wait(lambda events: len(events) >= 2, "two stats events")
        (topic, first), (_, second) = stream.events[:2]
        assert topic == "system.stats"
        assert second["sampled_at"] > first["sampled_at"]
        assert first["memory"]["total_bytes"] > 0
        assert stream.status == 200
    finally:
        stream.close()


@pytest.mark.parametrize(
    ("topics", "status", "error"),
    [
        ("system.stats", 403, "Forbidden"),  # the panel client has hello:read only
        ("nothing.here", 404, "NotFound"),
        ("jobs.00000000-0000-4000-8000-000000000000", 404, "NotFound"),
        ("../etc", 422, "ValidationError"),
        (",".join(f"t{n}.x" for n in range(17)), 422, "ValidationError"),
    ],
)
def test_a_topic_the_caller_may_not_read_is_refused_not_silently_empty(
    served: RealServer, topics: str, status: int, error: str
) -> None:
    with served.connection() as http:
        refused = http.get(
            "/api/v1/events", params={"topics": topics}, headers=auth(issue(served, "panel"))
        )
    assert refused.status_code == status
    assert refused.json()["error"] == error


def connection_on(
    server: RealServer, headers: dict[str, str], *, worker: str, same: bool
) -> httpx2.Client:
    """A keep-alive connection that ``worker`` serves (``same``) or another one does."""
    for attempt in range(60):
        http = server.connection()
        rid = f"probe-{worker}-{same}-{attempt}"
        response = http.get("/api/v1/jobs", headers={**headers, "X-Request-ID": rid})
        pid = server.workers_of([Sent(rid, time.time(), response)])[rid]
        if (pid == worker) == same:
            return http
        http.close()
    raise AssertionError("no connection reached the worker wanted")


def test_a_jobs_events_reach_its_owner_on_every_worker(served: RealServer) -> None:
    token = issue(served)
    headers = auth(token)
    sent = served.send(
        "POST", "/api/v1/hello/countdown", headers={**headers,
        "Content-Type": "application/json"}, content=b'{"steps": 8, "step_s": 0.5}',
        request_id="ev-start",
    )  # fmt: skip
    assert sent.response.status_code == 202
    job = sent.response.json()
    owner = served.workers_of([sent])["ev-start"]
    streams = [
        Stream(served, f"jobs.{job['id']}", headers, f"ev-job-{same}",
               connection_on(served, headers, worker=owner, same=same))
        for same in (True, False)
    ]  # fmt: skip
    try:
        for stream in streams:
            stream.wait(
                lambda events: any(data["state"] == "succeeded" for _, data in events),
                "the job's end",
            )
            assert stream.events[0][1]["state"] == "running", "its state first, then changes"
            progress = [data["progress"] for _, data in stream.events if data["progress"]]
            assert progress == sorted(progress) and len(progress) >= 2
    finally:
        for stream in streams:
            stream.close()


def test_a_revoked_tokens_stream_ends_within_a_second_or_so(served: RealServer) -> None:
    token = issue(served)
    stream = Stream(served, "system.stats", auth(token), "sse-revoked")
    try:
        stream.wait(lambda events: len(events) >= 1, "a first event")
        revoked = served.cli("token", "revoke", "--jti", token["jti"])
        assert revoked.returncode == 0, revoked.stderr
        started = time.monotonic()
        assert stream.ended.wait(STREAM_TIMEOUT_S), "the stream went on"
        assert time.monotonic() - started < 2.5
        assert stream.events[-1] == ("end", {"reason": "the token was revoked"})
    finally:
        stream.close()


def test_the_websocket_authenticates_by_a_first_message_and_subscribes(
    served: RealServer,
) -> None:
    token = issue(served)
    with unix_connect(str(served.sock), "ws://hostcore/api/v1/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token["access_token"]}))
        assert json.loads(ws.recv(10))["type"] == "authenticated"
        ws.send(json.dumps({"type": "subscribe", "topics": ["nothing.here"]}))
        assert json.loads(ws.recv(10)) == {
            "type": "error",
            "error": "NotFound",
            "detail": "no topic nothing.here",
        }
        ws.send(json.dumps({"type": "subscribe", "topics": ["system.stats"]}))
        assert json.loads(ws.recv(10)) == {"type": "subscribed", "topics": ["system.stats"]}
        event = json.loads(ws.recv(10))
        assert (event["type"], event["topic"]) == ("event", "system.stats")
        assert event["data"]["cpu"]["count"] >= 1


def test_a_websocket_without_credentials_is_closed(served: RealServer) -> None:
    with unix_connect(str(served.sock), "ws://hostcore/api/v1/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "subscribe", "topics": ["system.stats"]}))
        with pytest.raises(Exception, match="1008"):
            ws.recv(10)


def test_a_websocket_message_too_large_is_refused_before_it_is_held(served: RealServer) -> None:
    with unix_connect(str(served.sock), "ws://hostcore/api/v1/ws", open_timeout=10) as ws:
        ws.send("x" * (128 * 1024))
        with pytest.raises(Exception, match="1009"):
            ws.recv(10)


def test_a_websocket_flood_or_a_binary_frame_closes_it_without_a_traceback(
    served: RealServer,
) -> None:
    token = issue(served)
    with unix_connect(str(served.sock), "ws://hostcore/api/v1/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token["access_token"]}))
        ws.recv(10)
        with pytest.raises(Exception, match="1008"):  # sending or reading: it is closed
            for _ in range(40):
                ws.send(json.dumps({"type": "unsubscribe", "topics": ["system.stats"]}))
            while True:
                ws.recv(10)
    with unix_connect(str(served.sock), "ws://hostcore/api/v1/ws", open_timeout=10) as ws:
        ws.send(b"\x00binary")
        with pytest.raises(Exception, match="1008"):
            ws.recv(10)
    time.sleep(0.5)
    assert "Exception in ASGI application" not in served.app_log()


def test_stopping_ends_open_streams_at_once_and_the_running_jobs_as_interrupted(
    hello_site: Path, tmp_path: Path
) -> None:
    server = start_server(tmp_path, hello_site)
    try:
        token = issue(server)
        streams = [Stream(server, "system.stats", auth(token), f"stop-{n}") for n in range(4)]
        for stream in streams:
            stream.wait(lambda events: len(events) >= 1, "a first event")
        job = server.send(
            "POST", "/api/v1/hello/countdown", headers={**auth(token),
            "Content-Type": "application/json"}, content=b'{"steps": 60, "step_s": 0.5}',
        ).response.json()  # fmt: skip
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(30) == 0
        assert time.monotonic() - started < 5, "open streams held the stop"
        for stream in streams:
            assert stream.ended.wait(5)
            assert stream.events[-1] == ("end", {"reason": "the server is stopping"})
            stream.close()
    finally:
        stop_group(server.process)
    with sqlite3.connect(tmp_path / "data" / "hostcore.db") as store:
        state, error = store.execute(
            "SELECT state, error FROM jobs WHERE id = ?", (job["id"],)
        ).fetchone()
    assert (state, json.loads(error)["error"]) == ("failed", "Interrupted")
    assert list((tmp_path / "run" / "events").iterdir()) == [], "the workers' sockets went"


def test_deeply_nested_json_is_refused_before_and_after_authentication(
    served: RealServer,
) -> None:
    nested = "[" * 4000
    with unix_connect(str(served.sock), "ws://hostcore/api/v1/ws", open_timeout=10) as ws:
        ws.send(nested)
        with pytest.raises(Exception, match="1008"):
            ws.recv(10)
    token = issue(served)
    with unix_connect(str(served.sock), "ws://hostcore/api/v1/ws", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": token["access_token"]}))
        ws.recv(10)
        ws.send(nested)
        assert json.loads(ws.recv(10)) == {
            "type": "error",
            "error": "BadRequest",
            "detail": "messages are JSON objects",
        }
    time.sleep(0.5)
    assert "RecursionError" not in served.app_log()
