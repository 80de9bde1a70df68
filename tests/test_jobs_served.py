"""Jobs through the real server with two gunicorn workers: a job started on one worker is
read and cancelled through the other, and one whose worker was killed ends interrupted.

The example plugin's countdown is the job; the access log names the worker (pid) that
served each request, and a keep-alive connection stays with the worker that took it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from hostcore.jobs import service as jobs_service
from tests.helpers import (
    RealServer,
    Sent,
    start_real_server,
    stop_group,
    wait_for,
)

ATTEMPTS = 60  # fresh connections tried to reach the other worker


@pytest.fixture(scope="module")
def served(hello_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealServer]:
    server = start_real_server(tmp_path_factory.mktemp("jobs-served"), PYTHONPATH=str(hello_site))
    try:
        yield server
    finally:
        stop_group(server.process)


def token_headers(server: RealServer) -> dict[str, str]:
    issued = server.cli("token", "issue", "--client", "tester")
    assert issued.returncode == 0, issued.stderr
    return {"Authorization": f"Bearer {json.loads(issued.stdout)['access_token']}"}


def start_countdown(server: RealServer, auth: dict[str, str], request_id: str) -> Sent:
    sent = server.send(
        "POST",
        "/api/v1/hello/countdown",
        headers={**auth, "Content-Type": "application/json"},
        content=json.dumps({"steps": 60, "step_s": 0.5}).encode(),
        request_id=request_id,
    )
    assert sent.response.status_code == 202, sent.response.text
    return sent


def other_worker(
    server: RealServer, owner: str, location: str, auth: dict[str, str]
) -> httpx2.Client:
    """A keep-alive connection served by a worker other than ``owner``."""
    for attempt in range(ATTEMPTS):
        http = server.connection()
        try:
            request_id = f"probe-{owner}-{attempt}"
            response = http.get(location, headers={**auth, "X-Request-ID": request_id})
            assert response.status_code == 200, response.text
            pid = server.workers_of([Sent(request_id, time.time(), response)])[request_id]
        except BaseException:
            http.close()
            raise
        if pid != owner:
            return http
        http.close()
    raise AssertionError(f"no connection reached another worker in {ATTEMPTS} tries")


def test_a_job_started_on_one_worker_is_followed_and_cancelled_on_the_other(
    served: RealServer,
) -> None:
    auth = token_headers(served)
    started = start_countdown(served, auth, "start-a")
    owner = served.workers_of([started])["start-a"]
    location = started.response.headers["location"]
    http = other_worker(served, owner, location, auth)
    try:
        deadline = time.monotonic() + 10
        while (job := http.get(location, headers=auth).json())["progress"] in (None, 0.0):
            assert time.monotonic() < deadline, "progress never reached the other worker"
            time.sleep(0.1)
        assert job["state"] == "running" and job["message"].endswith("to go")
        cancelled = http.delete(location, headers={**auth, "X-Request-ID": "cancel-a"})
    finally:
        http.close()
    assert served.workers_of([Sent("cancel-a", time.time(), cancelled)])["cancel-a"] != owner
    assert cancelled.status_code == 200, "the owner saw the request and ended the job"
    job = cancelled.json()
    assert (job["state"], job["cancel_requested"]) == ("cancelled", True)
    again = served.send("POST", "/api/v1/hello/countdown", headers={**auth,
                        "Content-Type": "application/json"}, content=b'{"steps": 1}')  # fmt: skip
    assert again.response.status_code == 202, "the resource is free again"


def test_a_job_whose_worker_was_killed_ends_interrupted(served: RealServer) -> None:
    auth = token_headers(served)
    wait_for(
        lambda: (
            served.send("GET", "/api/v1/jobs?state=running", headers=auth).response.json() == []
        ),
        30,
        "no job running",
    )
    started = start_countdown(served, auth, "start-b")
    owner = served.workers_of([started])["start-b"]
    location = started.response.headers["location"]
    os.kill(int(owner), signal.SIGKILL)  # a worker of the server this test started
    deadline = time.monotonic() + jobs_service.STALE_S + 20
    while (job := served.send("GET", location, headers=auth).response.json())["state"] in (
        "queued",
        "running",
    ):
        assert time.monotonic() < deadline, "the job never ended"
        time.sleep(0.5)
    assert job["state"] == "failed"
    assert job["error"] == {
        "error": "Interrupted",
        "detail": "the job's worker stopped before it ended",
    }
