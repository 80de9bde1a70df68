"""The rendered deployment, running: a real nginx in front of ``hostcore serve --workers 2``
on a unix socket, hostcore as a throwaway non-root user (tests/deploy/live_stack.py).

Through nginx over HTTPS, verified against the certificate ``hostcore deploy nginx``
made: a GET, a token issued as the service user, a websocket and an SSE stream, the
redirect from HTTP, the body limit; and the address hostcore records: nginx's
``X-Forwarded-For`` is believed, the same header sent straight to the socket by any
other local user is not, even one the socket admits.
"""

from __future__ import annotations

import grp
import json
import signal
import ssl
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from websockets.sync.client import connect

from hostcore.deploy.model import WEB_GROUP, WEB_USER
from tests.deploy.live_stack import Stack, live_stack
from tests.helpers import wait_for

TIMEOUT_S = 15.0
WHOAMI = "/api/v1/auth/whoami"
CLIENT_ADDRESS = "127.0.0.2"  # a loopback address nginx sees, not its own 127.0.0.1
SPOOFED = "203.0.113.9"  # what a caller claims in X-Forwarded-For
UNIX_PEER = "unix"  # the address hostcore records for an untrusted socket peer

# A request straight to the socket, by whichever user runs this (setpriv): the status, and
# nothing of hostcore's code, so the user needs no more than the socket's permissions.
DIRECT_REQUEST = """
import socket, sys
path, token, request_id, forwarded = sys.argv[1:]
head = (
    f"GET /api/v1/auth/whoami HTTP/1.1\\r\\nHost: hostcore\\r\\n"
    f"Authorization: Bearer {token}\\r\\nX-Request-ID: {request_id}\\r\\n"
    f"X-Forwarded-For: {forwarded}\\r\\nConnection: close\\r\\n\\r\\n"
)
with socket.socket(socket.AF_UNIX) as sock:
    sock.settimeout(10)
    sock.connect(path)
    sock.sendall(head.encode())
    reply = b""
    while chunk := sock.recv(65536):
        reply += chunk
print(reply.split(b" ", 2)[1].decode())
"""


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with live_stack() as running:
        yield running


@pytest.fixture(scope="module")
def token(stack: Stack) -> str:
    issued = stack.as_service("token", "issue", "--client", "tester")
    assert issued.returncode == 0, issued.stderr
    access: str = json.loads(issued.stdout)["access_token"]
    return access


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def trusting(stack: Stack) -> ssl.SSLContext:
    """TLS that trusts the rendered certificate alone, names checked."""
    return ssl.create_default_context(cafile=stack.cert)


def through_nginx(stack: Stack, *, local_address: str | None = None) -> httpx2.Client:
    transport = httpx2.HTTPTransport(verify=trusting(stack), local_address=local_address)
    return httpx2.Client(transport=transport, base_url=stack.https, timeout=TIMEOUT_S)


def on_socket(stack: Stack) -> httpx2.Client:
    transport = httpx2.HTTPTransport(uds=str(stack.uds))
    return httpx2.Client(transport=transport, base_url="http://hostcore", timeout=TIMEOUT_S)


def recorded_client(stack: Stack, token: str, request_id: str) -> str:
    """The client address of ``request_id``'s activity row, once a worker has written it."""
    found: list[str] = []

    def written() -> bool:
        with on_socket(stack) as http:
            rows = http.get(
                "/api/v1/auth/activity", params={"limit": 1000}, headers=bearer(token)
            ).json()
        found[:] = [row["client"] for row in rows if row["request_id"] == request_id]
        return bool(found)

    wait_for(written, TIMEOUT_S, f"the activity row of {request_id}")
    return found[0]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


# --- the service's files ------------------------------------------------------------------


def test_hostcores_files_are_the_service_users_and_nothing_is_world_readable_or_writable(
    stack: Stack, token: str
) -> None:
    owner = stack.data_dir.stat().st_uid
    assert owner != 0
    paths = [
        path
        for top in (stack.data_dir, stack.log_dir, stack.run_dir)
        for path in [top, *top.rglob("*")]
    ]
    assert stack.data_dir / "hostcore.db" in paths and stack.uds in paths
    for path in paths:
        assert mode(path) & 0o006 == 0, f"{path} is 0o{mode(path):03o}"
        assert path.lstat().st_uid == owner, path
    # nginx's workers reach the socket through the run directory's group, and nothing more.
    web_gid = grp.getgrnam(WEB_GROUP).gr_gid
    assert stack.uds.stat().st_gid == web_gid
    assert stack.run_dir.stat().st_gid == web_gid
    assert mode(stack.run_dir) == 0o710
    assert mode(stack.uds) == 0o660
    assert stat.S_IMODE(stack.data_dir.stat().st_mode) == 0o700


# --- through nginx ----------------------------------------------------------------------


def test_an_https_get_is_answered_under_the_rendered_certificate(stack: Stack) -> None:
    with through_nginx(stack) as http:
        response = http.get("/api/v1/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}
    assert response.headers["x-request-id"]
    assert response.headers["server"] == "nginx"  # server_tokens off: no version


def test_plain_http_is_redirected_to_https(stack: Stack) -> None:
    with httpx2.Client(base_url=stack.http, timeout=TIMEOUT_S) as http:
        response = http.get("/api/v1/health?x=1")
    assert response.status_code == 301
    assert response.headers["location"] == "https://127.0.0.1/api/v1/health?x=1"


def test_a_token_issued_as_the_service_user_is_accepted_through_nginx(
    stack: Stack, token: str
) -> None:
    with through_nginx(stack) as http:
        me = http.get(WHOAMI, headers=bearer(token))
        anonymous = http.get(WHOAMI)
    assert me.status_code == 200, me.text
    assert (me.json()["subject"], me.json()["kind"]) == ("client:tester", "client")
    assert anonymous.status_code == 401
    # The site buffers its access log (fewer writes to an SD card); reopening it, what
    # logrotate asks of nginx, writes the buffer out.
    stack.nginx.send_signal(signal.SIGUSR1)
    logged = [f'"GET {WHOAMI} HTTP/1.1" {status} ' for status in (200, 401)]

    def written() -> bool:
        text = stack.access_log.read_text() if stack.access_log.exists() else ""
        return all(line in text for line in logged)

    wait_for(written, TIMEOUT_S, "nginx to write its buffered access log")
    assert token not in stack.access_log.read_text(), "nginx's log holds no credential"


def test_a_websocket_through_nginx_authenticates_and_receives_an_event(
    stack: Stack, token: str
) -> None:
    url = f"wss://127.0.0.1:{stack.https_port}/api/v1/ws"
    with connect(url, ssl=trusting(stack), open_timeout=TIMEOUT_S) as ws:
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(ws.recv(TIMEOUT_S))["type"] == "authenticated"
        ws.send(json.dumps({"type": "subscribe", "topics": ["system.stats"]}))
        assert json.loads(ws.recv(TIMEOUT_S)) == {"type": "subscribed", "topics": ["system.stats"]}
        event = json.loads(ws.recv(TIMEOUT_S))
    assert (event["type"], event["topic"]) == ("event", "system.stats")
    assert event["data"]["memory"]["total_bytes"] > 0


def test_an_sse_stream_through_nginx_delivers_events_as_they_come(stack: Stack, token: str) -> None:
    events: list[tuple[str, Any]] = []
    deadline = time.monotonic() + TIMEOUT_S
    with (
        through_nginx(stack) as http,
        http.stream(
            "GET", "/api/v1/events", params={"topics": "system.stats"}, headers=bearer(token)
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        topic = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                topic = line.removeprefix("event: ")
            elif line.startswith("data: ") and topic is not None:
                events.append((topic, json.loads(line.removeprefix("data: "))))
            # Two events, a second apart: the first did not wait in a buffer for more.
            if len(events) >= 2 or time.monotonic() > deadline:
                break
    assert [topic for topic, _ in events] == ["system.stats", "system.stats"]
    assert events[1][1]["sampled_at"] > events[0][1]["sampled_at"]


def test_a_body_over_max_body_bytes_is_refused_by_nginx_before_hostcore(
    stack: Stack, token: str
) -> None:
    limit = 1048576  # server.max_body_bytes, left at its default by the deployment
    assert f"client_max_body_size {limit};" in stack.site
    with through_nginx(stack) as http:
        refused = http.post("/api/v1/auth/token", content=b"x" * (limit + 1), headers=bearer(token))
    assert refused.status_code == 413
    assert refused.headers["content-type"].startswith("text/html"), "nginx's page, not hostcore's"
    assert "x-request-id" not in refused.headers, "hostcore never saw it"


# --- whose X-Forwarded-For hostcore believes ------------------------------------------------


def test_nginxs_x_forwarded_for_is_the_address_hostcore_records(stack: Stack, token: str) -> None:
    with through_nginx(stack, local_address=CLIENT_ADDRESS) as http:
        # A caller's own header is dropped by nginx, the edge, not extended.
        response = http.get(WHOAMI, headers={**bearer(token), "X-Forwarded-For": SPOOFED})
    assert response.status_code == 200, response.text
    assert recorded_client(stack, token, response.headers["x-request-id"]) == CLIENT_ADDRESS


@pytest.mark.parametrize(
    ("who", "recorded"),
    [
        ("other", UNIX_PEER),  # in nginx's group: the socket admits it, hostcore does not trust it
        ("service", UNIX_PEER),  # hostcore's own user
        ("web", SPOOFED),  # nginx's user: the one peer whose header hostcore reads
    ],
)
def test_the_same_header_straight_to_the_socket_counts_only_from_nginxs_user(
    stack: Stack, token: str, who: str, recorded: str
) -> None:
    user = {"other": stack.other_user, "service": stack.service_user, "web": WEB_USER}[who]
    request_id = f"direct-{who}-{uuid.uuid4().hex[:8]}"
    sent = stack.python_as(user, DIRECT_REQUEST, str(stack.uds), token, request_id, SPOOFED)
    assert sent.returncode == 0, sent.stderr
    assert sent.stdout.strip() == "200"
    assert recorded_client(stack, token, request_id) == recorded
