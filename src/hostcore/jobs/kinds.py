"""What a plugin declares: a kind of job, and what its function gets to report with."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field

from hostcore.context import Principal
from hostcore.errors import HostcoreError

JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
KIND_NAME = re.compile(r"^[a-z][a-z0-9_]{0,30}\.[a-z][a-z0-9_-]{0,30}$")
RESOURCE = re.compile(r"^[A-Za-z0-9._:@-]{0,64}$")
LOG_LINES = 200  # kept per job, the newest
LOG_LINE_CHARS = 500
MESSAGE_CHARS = 500


class Cancelled(HostcoreError):
    """Raised by :meth:`JobContext.check` once the job was asked to stop."""

    status_code = 409


@dataclass(frozen=True)
class JobKind:
    """A kind of long work a plugin runs as jobs.

    ``name`` is ``<plugin>.<kind>`` (lower case). ``run(context, params)`` does the work
    and returns a pydantic model (the job's result) or None. ``timeout_s`` ends it as
    failed. One job of a kind runs per ``resource`` at a time (a second start answers
    409 naming the running one). ``reuse_s`` > 0: a start with the same resource and
    parameters within that many seconds of a success answers that job instead.
    """

    name: str
    run: Callable[[JobContext, Any], Awaitable[BaseModel | None]]
    timeout_s: float = 300.0
    reuse_s: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if not KIND_NAME.match(self.name):
            raise ValueError(f"job kind name {self.name!r} is not <plugin>.<kind> in lower case")
        if not 0 < self.timeout_s <= 86400:
            raise ValueError("timeout_s must be in (0, 86400]")
        if not 0 <= self.reuse_s <= 86400:
            raise ValueError("reuse_s must be in [0, 86400]")


class JobContext:
    """What a job's function reports through; given by hostcore, one per job.

    ``progress`` and ``log`` only record (the store is written at most every
    ``PROGRESS_EVERY_S``, and when the job ends); ``check()`` raises :class:`Cancelled`
    once the job was asked to stop (the task is also cancelled, so an ``await`` ends
    with ``CancelledError``, and processes started through ``runner`` are killed).
    """

    def __init__(self, job_id: str, kind: JobKind, principal: Principal, runner: Any) -> None:
        self.job_id = job_id
        self.kind = kind
        self.principal = principal
        self.runner = runner
        self.fraction: float | None = None
        self.message: str | None = None
        self.lines: list[str] = []
        self.cancel_requested = False
        self.changed = False

    def progress(self, fraction: float | None, message: str | None = None) -> None:
        """``fraction`` in [0, 1] (None: unknown), and what is happening now."""
        if fraction is not None:
            if fraction != fraction:  # NaN
                raise ValueError("fraction must be a number in [0, 1]")
            fraction = min(max(float(fraction), 0.0), 1.0)
        self.fraction = fraction
        if message is not None:
            self.message = _line(message, MESSAGE_CHARS)
        self.changed = True

    def log(self, line: str) -> None:
        """A line of the job's log (the newest ``LOG_LINES`` are kept)."""
        self.lines.append(_line(line, LOG_LINE_CHARS))
        del self.lines[:-LOG_LINES]
        self.changed = True

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested

    def check(self) -> None:
        if self.cancel_requested:
            raise Cancelled(f"job {self.job_id} was cancelled")


def _line(text: str, limit: int) -> str:
    """One printable line, bounded."""
    cleaned = "".join(c if c.isprintable() else " " for c in str(text))
    return cleaned[:limit]


class JobError(BaseModel):
    error: str
    detail: str


class JobSummary(BaseModel):
    """A job without its log and result: what lists and events carry (small, however
    large a job's result; ``GET /api/v1/jobs/{id}`` has the rest)."""

    id: str
    kind: str
    resource: str
    state: JobState
    progress: float | None = Field(description="0..1, or None when unknown.")
    message: str | None
    cancel_requested: bool
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: JobError | None = None


class JobRead(JobSummary):
    """A job as any worker reports it, whole."""

    log: list[str]
    result: Any = Field(None, description="The kind's result model, once succeeded.")
