"""The jobs table (migration 0007). Times are UNIX seconds; texts are JSON."""

from __future__ import annotations

from sqlalchemy import Boolean, Float, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from hostcore.db.engine import Base

ACTIVE_STATES = ("queued", "running")


class JobRow(Base):
    # Migration 0007 also makes ``uq_jobs_active``: one active job per kind and resource,
    # a partial unique index. It is not declared here: its per-dialect clauses would load
    # both dialects' modules (2 MiB) into every process, for queries that never name it.
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_kind_state", "kind", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    resource: Mapped[str] = mapped_column(String(64))
    owner: Mapped[str] = mapped_column(String(160), index=True)
    params_digest: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str | None] = mapped_column(Text)
    log: Mapped[str | None] = mapped_column(Text)  # a JSON list of lines
    result: Mapped[str | None] = mapped_column(Text)  # JSON
    error: Mapped[str | None] = mapped_column(Text)  # JSON: {"error": ..., "detail": ...}
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(64))
