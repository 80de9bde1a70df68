"""Jobs through the app: a plugin's kinds, started from its route, followed and cancelled
through /api/v1/jobs; the store holds them, so what one worker wrote another reads."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Annotated, Any

import pytest
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from sqlalchemy import update

from hostcore.config import Settings
from hostcore.context import Principal
from hostcore.errors import Unavailable
from hostcore.hookspecs import hookimpl
from hostcore.jobs import JobContext, JobKind, Jobs, accepted
from hostcore.jobs import service as jobs_service
from hostcore.jobs.models import JobRow
from hostcore.plugins import PluginState
from hostcore.runner import Runner
from hostcore.security.deps import RequireScope
from tests.helpers import AppFactory, ClientFor, bearer

WITHIN_S = 10.0


class WorkStart(BaseModel):
    model_config = {"extra": "forbid"}

    steps: int = Field(3, ge=1, le=100)
    step_s: float = Field(0.05, ge=0.0, le=5.0)
    outcome: str = Field("ok", pattern=r"^(ok|refused|crash|sleep)$")
    resource: str = Field("", pattern=r"^[a-z0-9]{0,8}$")


class WorkRead(BaseModel):
    steps: int


async def work(context: JobContext, params: WorkStart) -> WorkRead | None:
    for done in range(params.steps):
        context.check()
        context.progress(done / params.steps, f"step {done + 1} of {params.steps}")
        context.log(f"step {done + 1}")
        await asyncio.sleep(params.step_s)
    if params.outcome == "refused":
        raise Unavailable("the widget is not there")
    if params.outcome == "crash":
        raise RuntimeError("secret internals /etc/shadow")
    if params.outcome == "sleep":
        runner: Runner = context.runner
        await runner.run(["sleep", "30"], timeout_s=60)
    return WorkRead(steps=params.steps)


class Worker:
    """A plugin with one job kind and a route that starts it."""

    def __init__(self, **kind: Any) -> None:
        self.kind = JobKind("worker.work", work, **kind)

    @hookimpl
    def hostcore_scopes(self) -> dict[str, str]:
        return {"worker:run": "Run work."}

    @hookimpl
    def hostcore_job_kinds(self) -> list[JobKind]:
        return [self.kind]

    @hookimpl
    def hostcore_routes(self) -> APIRouter:
        router = APIRouter()

        @router.post("/work", status_code=202)
        async def start(
            body: WorkStart,
            principal: Annotated[Principal, RequireScope("worker:run")],
            jobs: Jobs,
        ) -> JSONResponse:
            job, reused = await jobs.start_job(
                "worker.work", principal, body, resource=body.resource
            )
            return accepted(job, reused)

        return router


@pytest.fixture
def client(app_factory: AppFactory, client_for: ClientFor) -> TestClient:
    return client_for(app_factory({"worker": Worker(timeout_s=5)}))


def until_ended(client: TestClient, location: str, **kwargs: Any) -> dict[str, Any]:
    deadline = time.monotonic() + WITHIN_S
    while True:
        job: dict[str, Any] = client.get(location, **kwargs).json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, f"job still {job['state']}"
        time.sleep(0.02)


def test_a_started_job_answers_202_with_where_to_follow_it_and_ends_with_its_result(
    client: TestClient,
) -> None:
    started = client.post("/api/v1/worker/work", json={"steps": 3})
    assert started.status_code == 202
    job = started.json()
    assert started.headers["location"] == f"/api/v1/jobs/{job['id']}"
    assert started.headers["retry-after"] == "1"
    assert (job["kind"], job["state"], job["resource"]) == ("worker.work", "running", "")
    ended = until_ended(client, started.headers["location"])
    assert ended["state"] == "succeeded"
    assert ended["result"] == {"steps": 3}
    assert ended["progress"] == 1.0
    assert ended["log"] == ["step 1", "step 2", "step 3"]
    assert ended["error"] is None
    assert ended["started_at"] <= ended["finished_at"]


def test_progress_is_seen_while_it_runs(client: TestClient) -> None:
    location = client.post("/api/v1/worker/work", json={"steps": 40, "step_s": 0.05}).headers[
        "location"
    ]
    deadline = time.monotonic() + WITHIN_S
    while (job := client.get(location).json())["progress"] in (None, 0.0):
        assert time.monotonic() < deadline, "no progress recorded"
        time.sleep(0.05)
    assert job["state"] == "running"
    assert 0 < job["progress"] < 1
    assert job["message"].startswith("step ")
    assert client.get(location).headers["retry-after"] == "1"
    assert client.delete(location).json()["state"] == "cancelled"


def test_a_second_start_for_the_same_resource_is_409_naming_the_running_job(
    client: TestClient,
) -> None:
    first = client.post("/api/v1/worker/work", json={"steps": 100, "resource": "wlan0"}).json()
    second = client.post("/api/v1/worker/work", json={"steps": 1, "resource": "wlan0"})
    assert second.status_code == 409
    assert second.json() == {
        "error": "Conflict",
        "detail": f"job {first['id']} (worker.work) is already running for wlan0",
    }
    other = client.post("/api/v1/worker/work", json={"steps": 1, "resource": "wlan1"})
    assert other.status_code == 202, "another resource runs at the same time"
    client.delete(f"/api/v1/jobs/{first['id']}")
    after = client.post("/api/v1/worker/work", json={"steps": 1, "resource": "wlan0"})
    assert after.status_code == 202, "the resource is free once the job ended"


def test_cancelling_ends_the_task_and_kills_its_processes(client: TestClient) -> None:
    location = client.post(
        "/api/v1/worker/work", json={"steps": 1, "step_s": 0, "outcome": "sleep"}
    ).headers["location"]
    deadline = time.monotonic() + WITHIN_S
    while not _sleep_running():
        assert time.monotonic() < deadline, "the job's process never started"
        time.sleep(0.02)
    cancelled = client.delete(location)
    assert cancelled.status_code == 200
    job = cancelled.json()
    assert (job["state"], job["cancel_requested"]) == ("cancelled", True)
    assert job["finished_at"] is not None
    assert not _sleep_running(), "the runner killed the job's process"
    assert client.delete(location).json()["state"] == "cancelled", "cancelling again: as is"


def _sleep_running() -> bool:
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().endswith(b"sleep\x0030\x00"):
                    return True
            except OSError:
                continue
    return False


@pytest.mark.parametrize(
    ("outcome", "error"),
    [
        ("refused", {"error": "Unavailable", "detail": "the widget is not there"}),
        (
            "crash",
            {"error": "InternalError", "detail": "the job failed; the server's log says why"},
        ),
    ],
)
def test_a_failing_job_ends_failed_with_an_error_body_and_no_internals(
    client: TestClient, outcome: str, error: dict[str, str]
) -> None:
    location = client.post("/api/v1/worker/work", json={"steps": 1, "outcome": outcome}).headers[
        "location"
    ]
    job = until_ended(client, location)
    assert (job["state"], job["error"], job["result"]) == ("failed", error, None)


def test_a_job_over_its_time_limit_fails(app_factory: AppFactory, client_for: ClientFor) -> None:
    client = client_for(app_factory({"worker": Worker(timeout_s=0.2)}))
    location = client.post("/api/v1/worker/work", json={"steps": 50, "step_s": 0.05}).headers[
        "location"
    ]
    job = until_ended(client, location)
    assert job["state"] == "failed"
    assert job["error"] == {"error": "Timeout", "detail": "the job did not end within 0.2 s"}


def test_a_recent_result_is_reused_when_the_kind_allows(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    client = client_for(app_factory({"worker": Worker(reuse_s=60)}))
    first = client.post("/api/v1/worker/work", json={"steps": 1, "step_s": 0})
    until_ended(client, first.headers["location"])
    again = client.post("/api/v1/worker/work", json={"steps": 1, "step_s": 0})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    other = client.post("/api/v1/worker/work", json={"steps": 2, "step_s": 0})
    assert other.status_code == 202, "other parameters: a new job"


def test_only_the_owner_or_jobs_admin_sees_or_cancels_a_job(
    app_factory: AppFactory, client_for: ClientFor, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(
        HOSTCORE_AUTH__CLIENTS__STRANGER__SCOPES='["worker:run"]',
        HOSTCORE_AUTH__CLIENTS__OPERATOR__SCOPES='["jobs:admin"]',
    )
    client = client_for(app_factory({"worker": Worker()}, app_settings=settings))
    location = client.post("/api/v1/worker/work", json={"steps": 100}).headers["location"]
    stranger = bearer(client, ["worker:run"], name="stranger")
    assert client.get(location, headers=stranger).status_code == 404
    assert client.delete(location, headers=stranger).status_code == 404
    assert client.get("/api/v1/jobs", headers=stranger).json() == []
    admin = bearer(client, ["jobs:admin"], name="operator")
    assert client.get(location, headers=admin).json()["state"] == "running"
    assert [job["kind"] for job in client.get("/api/v1/jobs", headers=admin).json()] == [
        "worker.work"
    ]
    assert client.delete(location, headers=admin).json()["state"] == "cancelled"
    assert client.get(location, headers={"Authorization": ""}).status_code == 401


def test_the_list_is_filtered_by_kind_and_state(client: TestClient) -> None:
    done = client.post("/api/v1/worker/work", json={"steps": 1, "step_s": 0})
    until_ended(client, done.headers["location"])
    running = client.post("/api/v1/worker/work", json={"steps": 100, "resource": "a"}).json()
    listed = client.get("/api/v1/jobs", params={"state": "running"}).json()
    assert [job["id"] for job in listed] == [running["id"]]
    assert len(client.get("/api/v1/jobs", params={"kind": "worker.work"}).json()) == 2
    assert client.get("/api/v1/jobs", params={"kind": "other.kind"}).json() == []
    for hostile in ({"kind": "../x"}, {"state": "exploded"}, {"limit": 0}, {"limit": 10**9}):
        assert client.get("/api/v1/jobs", params=hostile).status_code == 422
    assert client.get("/api/v1/jobs/not-a-job-id").status_code == 422
    missing = client.get("/api/v1/jobs/00000000-0000-4000-8000-000000000000")
    assert missing.status_code == 404
    client.delete(f"/api/v1/jobs/{running['id']}")


def test_a_job_whose_worker_is_gone_ends_interrupted(client: TestClient) -> None:
    location = client.post("/api/v1/worker/work", json={"steps": 100, "step_s": 0.5}).headers[
        "location"
    ]
    job_id = location.rsplit("/", 1)[1]
    kill_silently(client, job_id)
    job = client.get(location).json()
    assert job["state"] == "failed"
    assert job["error"] == {
        "error": "Interrupted",
        "detail": "the job's worker stopped before it ended",
    }


def test_stopping_the_server_ends_its_running_jobs_as_interrupted(
    app_factory: AppFactory, client_for: ClientFor
) -> None:
    app = app_factory({"worker": Worker()})
    client = client_for(app)
    location = client.post("/api/v1/worker/work", json={"steps": 100, "step_s": 0.5}).headers[
        "location"
    ]
    client.__exit__(None, None, None)
    with TestClient(app) as again:
        again.headers.update(bearer(again))
        job = again.get(location).json()
    assert job["state"] == "failed"
    assert job["error"]["error"] == "Interrupted"


def test_finished_jobs_are_kept_by_count(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jobs_service, "KEEP_PER_KIND", 2)
    for _ in range(4):
        until_ended(
            client,
            client.post("/api/v1/worker/work", json={"steps": 1, "step_s": 0}).headers["location"],
        )
    assert len(client.get("/api/v1/jobs").json()) == 2


@pytest.mark.parametrize(
    "declare",
    [
        lambda: ["not a kind"],
        lambda: [JobKind("other.work", work)],
        lambda: [JobKind("worker.work", work), JobKind("worker.work", work)],
    ],
)
def test_a_plugin_declaring_kinds_wrongly_is_failed(
    app_factory: AppFactory, client_for: ClientFor, declare: Callable[[], list[Any]]
) -> None:
    class Wrong(Worker):
        @hookimpl
        def hostcore_job_kinds(self) -> list[Any]:
            return declare()

    app = app_factory({"worker": Wrong()})
    assert app.state.registry["worker"].state is PluginState.FAILED
    client = client_for(app)
    assert client.post("/api/v1/worker/work", json={}).status_code == 503


def test_a_kind_name_must_be_plugin_dot_kind() -> None:
    for bad in ("work", "Worker.work", "worker.", "worker.work/../x", "a" * 40 + ".b"):
        with pytest.raises(ValueError, match="job kind name"):
            JobKind(bad, work)
    with pytest.raises(ValueError, match="timeout_s"):
        JobKind("worker.work", work, timeout_s=0)


def test_a_conflict_names_the_running_job_only_to_who_may_read_it(
    app_factory: AppFactory, client_for: ClientFor, settings_factory: Callable[..., Settings]
) -> None:
    settings = settings_factory(HOSTCORE_AUTH__CLIENTS__STRANGER__SCOPES='["worker:run"]')
    client = client_for(app_factory({"worker": Worker()}, app_settings=settings))
    client.post("/api/v1/worker/work", json={"steps": 100, "resource": "wlan0"})
    stranger = bearer(client, ["worker:run"], name="stranger")
    refused = client.post(
        "/api/v1/worker/work", json={"steps": 1, "resource": "wlan0"}, headers=stranger
    )
    assert refused.status_code == 409
    assert refused.json()["detail"] == "a worker.work job is already running for wlan0"


def test_lists_and_events_carry_no_log_or_result(client: TestClient) -> None:
    location = client.post("/api/v1/worker/work", json={"steps": 2, "step_s": 0}).headers[
        "location"
    ]
    until_ended(client, location)
    (listed,) = client.get("/api/v1/jobs").json()
    assert "log" not in listed and "result" not in listed
    assert client.get(location).json()["result"] == {"steps": 2}, "the job itself has them"


def test_a_job_ended_by_another_worker_stops_running_here(client: TestClient) -> None:
    """Its worker was stuck past the heartbeat limit; another one ended the job."""
    location = client.post("/api/v1/worker/work", json={"steps": 100, "step_s": 0.05}).headers[
        "location"
    ]
    job_id = location.rsplit("/", 1)[1]
    service = client.app.state.jobs  # type: ignore[attr-defined]
    task = service._running[job_id].task

    set_row(client, job_id, state="failed")
    deadline = time.monotonic() + WITHIN_S
    while not task.done():
        assert time.monotonic() < deadline, "the orphaned work went on"
        time.sleep(0.05)
    assert client.get(location).json()["state"] == "failed", "its end is not overwritten"


def test_an_interrupted_job_is_announced_to_its_followers(client: TestClient) -> None:
    from hostcore.events import Subscriber

    location = client.post("/api/v1/worker/work", json={"steps": 100, "step_s": 0.5}).headers[
        "location"
    ]
    job_id = location.rsplit("/", 1)[1]
    app: Any = client.app
    hub = app.state.events
    follower = Subscriber(Principal("client", "tester", frozenset({"*"})))
    assert client.portal is not None
    client.portal.call(hub.subscribe, follower, [f"jobs.{job_id}"])
    kill_silently(client, job_id)
    assert client.get(location).json()["state"] == "failed"
    states = [json.loads(event.data)["state"] for event in follower.queue]
    assert states[-1] == "failed"
    client.portal.call(hub.unsubscribe, follower)


def test_no_job_starts_while_the_server_stops(client: TestClient) -> None:
    client.app.state.jobs._stopping = True  # type: ignore[attr-defined]
    refused = client.post("/api/v1/worker/work", json={"steps": 1})
    assert refused.status_code == 503
    assert refused.json()["error"] == "Unavailable"


def kill_silently(client: TestClient, job_id: str) -> None:
    """As if the job's worker had died: its task gone without a word, its heartbeat long
    past."""
    service = client.app.state.jobs  # type: ignore[attr-defined]

    async def died(*_args: Any) -> None:  # the worker records nothing more
        return None

    service._finish = died
    service._running[job_id].task.cancel()
    set_row(client, job_id, heartbeat_at=time.time() - 60)


def set_row(client: TestClient, job_id: str, **values: Any) -> None:
    """Change a job's row in the store, as another worker would."""
    service = client.app.state.jobs  # type: ignore[attr-defined]

    async def change() -> None:
        async with service.db.session() as session:
            await session.execute(update(JobRow).where(JobRow.id == job_id).values(**values))
            await session.commit()

    assert client.portal is not None
    client.portal.call(change)
