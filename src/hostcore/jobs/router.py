"""``/api/v1/jobs``: follow, list and cancel jobs (any worker answers for any job)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from hostcore.errors import error_responses
from hostcore.jobs import JOBS_PATH, RETRY_AFTER_S, Jobs
from hostcore.jobs.kinds import JobRead, JobState, JobSummary
from hostcore.jobs.models import ACTIVE_STATES
from hostcore.jobs.service import LIST_LIMIT
from hostcore.security.deps import Authenticated

JobId = Annotated[
    str, Path(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
]
KindFilter = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_]{0,30}\.[a-z][a-z0-9_-]{0,30}$")]


def jobs_router() -> APIRouter:
    router = APIRouter(prefix=JOBS_PATH, tags=["jobs"])

    @router.get(
        "",
        summary="The caller's jobs, newest first (everyone's with jobs:admin)",
        responses=error_responses(401, 422, 429),
    )
    async def list_jobs(
        principal: Authenticated,
        jobs: Jobs,
        kind: KindFilter = None,
        state: JobState | None = None,
        limit: Annotated[int, Query(ge=1, le=LIST_LIMIT)] = 50,
    ) -> list[JobSummary]:
        """Without each job's log and result: ``GET /api/v1/jobs/{id}`` has them."""
        return await jobs.list_jobs(principal, kind=kind, state=state, limit=limit)

    @router.get(
        "/{job_id}",
        summary="One job: state, progress, result or error",
        responses=error_responses(401, 404, 422, 429),
    )
    async def get_job(
        job_id: JobId, principal: Authenticated, jobs: Jobs, response: Response
    ) -> JobRead:
        job = await jobs.get(job_id, principal)
        if job.state in ACTIVE_STATES:
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return job

    @router.delete(
        "/{job_id}",
        summary="Cancel a job: 200 once it ended, 202 while it is still stopping",
        responses={**error_responses(401, 404, 422, 429), 202: {"model": JobRead}},
    )
    async def cancel_job(
        job_id: JobId, principal: Authenticated, jobs: Jobs, response: Response
    ) -> JobRead:
        job = await jobs.cancel(job_id, principal)
        if job.state in ACTIVE_STATES:
            response.status_code = 202
            response.headers["Retry-After"] = str(RETRY_AFTER_S)
        return job

    return router
