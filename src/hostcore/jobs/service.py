"""Jobs: long work with progress, recorded in the store so any worker answers for any job.

A job runs as an asyncio task in the worker that started it. While that worker has
jobs running, one loop (every ``WATCH_S``) writes their progress and log when they
changed, refreshes their ``heartbeat_at``, and picks up cancellations asked for
through another worker (``cancel_requested`` in the store). A worker with no job
running does no job work at all.

A job whose heartbeat is older than ``STALE_S`` has lost its worker (killed, or the
host rebooted): it is ended as failed ("interrupted") by the next worker that starts,
reads it, or starts another job of its kind and resource. A graceful stop ends a
worker's own jobs that way at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from hostcore.context import Principal
from hostcore.db.engine import Database, affected_rows
from hostcore.errors import BadRequest, Conflict, HostcoreError, NotFound, Unavailable
from hostcore.jobs.kinds import (
    RESOURCE,
    Cancelled,
    JobContext,
    JobError,
    JobKind,
    JobRead,
    JobState,
    JobSummary,
)
from hostcore.jobs.models import ACTIVE_STATES, JobRow
from hostcore.security.acl import allows

log = logging.getLogger(__name__)

JOBS_ADMIN_SCOPE = "jobs:admin"
WATCH_S = 0.5  # progress, heartbeat and cancellations of running jobs
STALE_S = 10.0  # a heartbeat older than this: the job's worker is gone
CANCEL_WAIT_S = 3.0  # how long DELETE waits for the job to end
RETENTION_S = 7 * 86400.0
KEEP_PER_KIND = 100  # finished jobs kept per kind, the newest
MAX_RESULT_BYTES = 1024 * 1024
LIST_LIMIT = 200
INTERRUPTED = JobError(error="Interrupted", detail="the job's worker stopped before it ended")


@dataclass
class _Running:
    task: asyncio.Task[None]
    context: JobContext


class JobService:
    """Starts, reads, lists and cancels jobs; one per app."""

    def __init__(self, db: Database, runner: Any, kinds: Mapping[str, JobKind]) -> None:
        self.db = db
        self.runner = runner
        self.kinds = dict(kinds)
        self.worker = ""
        self._running: dict[str, _Running] = {}
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False
        # Told of each job's new state (the ``jobs.<id>`` event topic).
        self.publish: Callable[[JobSummary], None] | None = None

    # -- lifecycle --

    async def start(self) -> None:
        """In each worker's lifespan, after migrations: end jobs whose worker is gone."""
        self.worker = f"{socket.gethostname()[:40]}:{os.getpid()}"
        self._stopping = False
        async with self.db.session() as session:
            ended = await self._end_stale(session)
            await session.commit()
            await self._announce_rows(session, ended)

    async def stop(self) -> None:
        """End this worker's running jobs as interrupted (the server stops)."""
        self._stopping = True
        running = list(self._running.values())
        for each in running:
            each.task.cancel()
        if running:
            await asyncio.wait([each.task for each in running])
        watch, self._watch = self._watch, None
        if watch is not None:
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch

    # -- starting --

    async def start_job(
        self,
        kind_name: str,
        principal: Principal,
        params: BaseModel | None = None,
        *,
        resource: str = "",
    ) -> tuple[JobRead, bool]:
        """Start a job of ``kind_name`` for ``principal``; the job and whether it is an
        earlier one reused (``reuse_s``). ``Conflict`` when one runs for the resource."""
        kind = self.kinds.get(kind_name)
        if kind is None:
            raise ValueError(f"no job kind {kind_name!r} is declared")
        if self._stopping:  # a job started now would outlive its worker's stop
            raise Unavailable("the server is stopping: start the job again in a moment")
        if not RESOURCE.match(resource):
            raise BadRequest("invalid job resource")
        params_json = params.model_dump_json() if params is not None else "null"
        digest = hashlib.sha256(f"{kind_name}\0{resource}\0{params_json}".encode()).hexdigest()
        now = time.time()
        async with self.db.session() as session:
            if kind.reuse_s > 0:
                found = await session.scalar(
                    select(JobRow)
                    .where(
                        JobRow.kind == kind_name,
                        JobRow.resource == resource,
                        JobRow.params_digest == digest,
                        JobRow.owner == principal.subject,
                        JobRow.state == "succeeded",
                        JobRow.finished_at >= now - kind.reuse_s,
                    )
                    .order_by(JobRow.finished_at.desc())
                    .limit(1)
                )
                if found is not None:
                    return _read(found), True
            ended = await self._end_stale(session, kind=kind_name, resource=resource)
            job_id = str(uuid.uuid4())
            session.add(
                JobRow(
                    id=job_id,
                    kind=kind_name,
                    resource=resource,
                    owner=principal.subject,
                    params_digest=digest,
                    state="running",
                    progress=None,
                    message=None,
                    log=None,
                    result=None,
                    error=None,
                    cancel_requested=False,
                    created_at=now,
                    started_at=now,
                    finished_at=None,
                    heartbeat_at=now,
                    worker=self.worker,
                )
            )
            try:
                await session.commit()
            except IntegrityError:
                await session.rollback()
                raise await self._busy(kind_name, resource, principal) from None
            await self._announce_rows(session, ended)
            row = await session.get(JobRow, job_id)
            assert row is not None
            job = _read(row)
        context = JobContext(job_id, kind, principal, self.runner)
        task = asyncio.create_task(self._run(kind, context, params), name=f"job {job_id}")
        self._running[job_id] = _Running(task, context)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_running(), name="hostcore-jobs")
        log.info("job %s (%s) started for %s", job_id, kind_name, principal.subject)
        self._announce([summary(job)])
        return job, False

    def _announce(self, jobs: Sequence[JobSummary]) -> None:
        if self.publish is not None:
            for job in jobs:
                self.publish(job)

    async def _announce_rows(self, session: Any, job_ids: Sequence[str]) -> None:
        if self.publish is None or not job_ids:
            return
        rows = (await session.scalars(select(JobRow).where(JobRow.id.in_(job_ids)))).all()
        self._announce([summary(_read(row)) for row in rows])

    async def _busy(self, kind_name: str, resource: str, principal: Principal) -> Conflict:
        """The 409: naming the running job to whoever may read it (its owner, jobs:admin)."""
        async with self.db.session() as session:
            active = (
                await session.execute(
                    select(JobRow.id, JobRow.owner).where(
                        JobRow.kind == kind_name,
                        JobRow.resource == resource,
                        JobRow.state.in_(ACTIVE_STATES),
                    )
                )
            ).first()
        where = f"for {resource}" if resource else "of this kind"
        if active is not None and (
            active.owner == principal.subject or allows(principal.scopes, JOBS_ADMIN_SCOPE)
        ):
            return Conflict(f"job {active.id} ({kind_name}) is already running {where}")
        return Conflict(f"a {kind_name} job is already running {where}")

    # -- running --

    async def _run(self, kind: JobKind, context: JobContext, params: Any) -> None:
        state: JobState = "succeeded"
        result: str | None = None
        error: JobError | None = None
        try:
            async with asyncio.timeout(kind.timeout_s) as limit:
                produced = await kind.run(context, params)
            if produced is not None:
                result = produced.model_dump_json()
                if len(result) > MAX_RESULT_BYTES:
                    state, result = "failed", None
                    error = JobError(error="ResultTooLarge", detail="the job's result is too large")
        except asyncio.CancelledError:
            # This task is the job's own: the cancellation ends the job, not the task,
            # which still records how it ended.
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if self._stopping:
                state, error = "failed", INTERRUPTED
            else:
                state = "cancelled"
        except Cancelled:
            state = "cancelled"
        except TimeoutError:
            if limit.expired():
                state = "failed"
                error = JobError(
                    error="Timeout", detail=f"the job did not end within {kind.timeout_s:g} s"
                )
            else:
                state, error = "failed", _internal(context)
        except HostcoreError as exc:
            state, error = "failed", JobError(error=exc.name, detail=exc.detail)
        except Exception:
            state, error = "failed", _internal(context)
        finally:
            self._running.pop(context.job_id, None)
        await self._finish(context, state, result, error)

    async def _finish(
        self, context: JobContext, state: JobState, result: str | None, error: JobError | None
    ) -> None:
        now = time.time()
        values: dict[str, Any] = {
            "state": state,
            "finished_at": now,
            "heartbeat_at": now,
            "message": context.message,
            "log": json.dumps(context.lines) if context.lines else None,
            "result": result,
            "error": error.model_dump_json() if error is not None else None,
            "progress": 1.0 if state == "succeeded" else context.fraction,
        }
        try:
            async with self.db.session() as session:
                await session.execute(
                    update(JobRow)
                    .where(JobRow.id == context.job_id, JobRow.state.in_(ACTIVE_STATES))
                    .values(**values)
                )
                await self._retain(session, context.kind.name, now)
                await session.commit()
                await self._announce_rows(session, [context.job_id])
        except Exception:
            log.exception("job %s: recording its end failed", context.job_id)
            return
        log.info("job %s (%s) %s", context.job_id, context.kind.name, state)

    async def _watch_running(self) -> None:
        """While jobs run here: their progress, heartbeats and cancellations."""
        while self._running:
            await asyncio.sleep(WATCH_S)
            try:
                await self._watch_once()
            except Exception:
                log.exception("jobs: recording progress failed; retrying")

    async def _watch_once(self) -> None:
        running = dict(self._running)
        if not running:
            return
        now = time.time()
        changed: list[str] = []
        orphaned: list[str] = []
        async with self.db.session() as session:
            for job_id, each in running.items():
                values: dict[str, Any] = {"heartbeat_at": now}
                context = each.context
                if context.changed:
                    context.changed = False
                    changed.append(job_id)
                    values |= {
                        "progress": context.fraction,
                        "message": context.message,
                        "log": json.dumps(context.lines) if context.lines else None,
                    }
                kept = await session.execute(
                    update(JobRow)
                    .where(JobRow.id == job_id, JobRow.state == "running")
                    .values(**values)
                )
                if not affected_rows(kept):
                    # Ended by another worker (it found the heartbeat stale while this
                    # worker was stuck): the work is no one's now; stop it.
                    orphaned.append(job_id)
            asked = (
                await session.scalars(
                    select(JobRow.id).where(
                        JobRow.id.in_(list(running)), JobRow.cancel_requested.is_(True)
                    )
                )
            ).all()
            await session.commit()
            await self._announce_rows(session, changed)
        for job_id in [*asked, *orphaned]:
            self._cancel_local(job_id)
        for job_id in orphaned:
            log.warning("job %s was ended by another worker while it ran here", job_id)

    def _cancel_local(self, job_id: str) -> bool:
        running = self._running.get(job_id)
        if running is None:
            return False
        running.context.cancel_requested = True
        running.task.cancel()
        return True

    # -- reading and cancelling --

    async def get(self, job_id: str, principal: Principal) -> JobRead:
        async with self.db.session() as session:
            row = await self._visible(session, job_id, principal)
            if row.state in ACTIVE_STATES and _stale(row, time.time()):
                ended = await self._end_stale(session, job_id=job_id)
                await session.commit()
                await self._announce_rows(session, ended)
                await session.refresh(row)
            return _read(row)

    async def list_jobs(
        self,
        principal: Principal,
        *,
        kind: str | None = None,
        state: JobState | None = None,
        limit: int = 50,
    ) -> list[JobSummary]:
        query = select(JobRow).order_by(JobRow.created_at.desc()).limit(min(limit, LIST_LIMIT))
        if not allows(principal.scopes, JOBS_ADMIN_SCOPE):
            query = query.where(JobRow.owner == principal.subject)
        if kind is not None:
            query = query.where(JobRow.kind == kind)
        if state is not None:
            query = query.where(JobRow.state == state)
        async with self.db.session() as session:
            return [summary(_read(row)) for row in (await session.scalars(query)).all()]

    async def cancel(self, job_id: str, principal: Principal) -> JobRead:
        """Ask the job to stop; the job as it is once it ended, or after ``CANCEL_WAIT_S``."""
        async with self.db.session() as session:
            row = await self._visible(session, job_id, principal)
            if row.state not in ACTIVE_STATES:
                return _read(row)
            await session.execute(
                update(JobRow).where(JobRow.id == job_id).values(cancel_requested=True)
            )
            await session.commit()
        running = self._running.get(job_id)
        if self._cancel_local(job_id) and running is not None:
            await asyncio.wait([running.task], timeout=CANCEL_WAIT_S)
        else:  # another worker runs it: it sees the request within WATCH_S
            deadline = time.monotonic() + CANCEL_WAIT_S
            while time.monotonic() < deadline:
                await asyncio.sleep(WATCH_S / 5)
                if (await self.get(job_id, principal)).state not in ACTIVE_STATES:
                    break
        return await self.get(job_id, principal)

    async def _visible(self, session: Any, job_id: str, principal: Principal) -> JobRow:
        row = await session.get(JobRow, job_id)
        if row is None or (
            row.owner != principal.subject and not allows(principal.scopes, JOBS_ADMIN_SCOPE)
        ):
            # Another principal's job is not theirs to know of.
            raise NotFound(f"job {job_id} not found")
        assert isinstance(row, JobRow)
        return row

    # -- ending what nobody runs, and retention --

    async def _end_stale(
        self,
        session: Any,
        *,
        kind: str | None = None,
        resource: str | None = None,
        job_id: str | None = None,
    ) -> list[str]:
        """End the active jobs whose worker is gone (the caller commits, then announces
        the ids returned)."""
        now = time.time()
        query = select(JobRow).where(
            JobRow.state.in_(ACTIVE_STATES),
            (JobRow.heartbeat_at.is_(None)) | (JobRow.heartbeat_at < now - STALE_S),
        )
        if kind is not None:
            query = query.where(JobRow.kind == kind, JobRow.resource == resource)
        if job_id is not None:
            query = query.where(JobRow.id == job_id)
        stale = list((await session.scalars(query.with_only_columns(JobRow.id))).all())
        if stale:
            await session.execute(
                update(JobRow)
                .where(JobRow.id.in_(stale), JobRow.state.in_(ACTIVE_STATES))
                .values(state="failed", finished_at=now, error=INTERRUPTED.model_dump_json())
            )
            log.warning("jobs: %d job(s) ended as interrupted (their worker is gone)", len(stale))
        return stale

    async def _retain(self, session: Any, kind: str, now: float) -> None:
        finished = JobRow.state.not_in(ACTIVE_STATES)
        await session.execute(
            delete(JobRow).where(finished, JobRow.finished_at < now - RETENTION_S)
        )
        keep = (
            select(JobRow.id)
            .where(JobRow.kind == kind, finished)
            .order_by(JobRow.finished_at.desc())
            .limit(KEEP_PER_KIND)
        )
        await session.execute(
            delete(JobRow).where(JobRow.kind == kind, finished, JobRow.id.not_in(keep))
        )


def summary(job: JobRead) -> JobSummary:
    return JobSummary.model_validate(job.model_dump(exclude={"log", "result"}))


def _stale(row: JobRow, now: float) -> bool:
    return row.heartbeat_at is None or row.heartbeat_at < now - STALE_S


def _internal(context: JobContext) -> JobError:
    log.exception("job %s (%s) failed", context.job_id, context.kind.name)
    return JobError(error="InternalError", detail="the job failed; the server's log says why")


def _read(row: JobRow) -> JobRead:
    return JobRead(
        id=row.id,
        kind=row.kind,
        resource=row.resource,
        state=row.state,
        progress=row.progress,
        message=row.message,
        log=json.loads(row.log) if row.log else [],
        cancel_requested=bool(row.cancel_requested),
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        result=json.loads(row.result) if row.result else None,
        error=JobError.model_validate_json(row.error) if row.error else None,
    )


def collect_kinds(declared: Mapping[str, Sequence[JobKind]]) -> dict[str, JobKind]:
    """Every plugin's kinds by name; a kind must carry its plugin's name."""
    kinds: dict[str, JobKind] = {}
    for plugin, each in declared.items():
        for kind in each:
            if not isinstance(kind, JobKind):
                raise TypeError(f"plugin {plugin}: hostcore_job_kinds must return JobKind objects")
            if kind.name.split(".", 1)[0] != plugin:
                raise ValueError(f"plugin {plugin}: job kind {kind.name!r} must begin {plugin}.")
            if kind.name in kinds:
                raise ValueError(f"plugin {plugin}: job kind {kind.name!r} is declared twice")
            kinds[kind.name] = kind
    return kinds
