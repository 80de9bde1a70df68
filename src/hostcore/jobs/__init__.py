"""Jobs: long work a plugin starts from a route, with progress, a result and a way to cancel.

A plugin declares its kinds (``hostcore_job_kinds``), starts a job from its own route
through the :data:`Jobs` dependency and answers with :func:`accepted`; hostcore's
``/api/v1/jobs`` routes let the caller follow and cancel it. See ``docs/jobs.md``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from hostcore.errors import Unavailable
from hostcore.jobs.kinds import Cancelled, JobContext, JobError, JobKind, JobRead, JobState
from hostcore.jobs.service import JOBS_ADMIN_SCOPE, JobService

__all__ = [
    "JOBS_ADMIN_SCOPE",
    "Cancelled",
    "JobContext",
    "JobError",
    "JobKind",
    "JobRead",
    "JobService",
    "JobState",
    "Jobs",
    "accepted",
    "job_url",
]

JOBS_PATH = "/api/v1/jobs"
RETRY_AFTER_S = 1


def _job_service(request: Request) -> JobService:
    service = getattr(request.app.state, "jobs", None)
    if not isinstance(service, JobService):
        raise Unavailable("jobs are not available")
    return service


Jobs = Annotated[JobService, Depends(_job_service)]
"""The app's job service, for a plugin route that starts a job."""


def job_url(job_id: str) -> str:
    return f"{JOBS_PATH}/{job_id}"


def accepted(job: JobRead, reused: bool = False) -> JSONResponse:
    """The answer to a request that started a job: 202 with ``Location`` and
    ``Retry-After``; 200 when an earlier job's result was reused."""
    return JSONResponse(
        job.model_dump(mode="json"),
        status_code=200 if reused else 202,
        headers={"Location": job_url(job.id), "Retry-After": str(RETRY_AFTER_S)},
    )
