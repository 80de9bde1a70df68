"""jobs: long work with progress, shared by every worker

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30

One row per job. Any worker answers for any job; the worker running it keeps
``heartbeat_at`` fresh, so a job whose worker died is found and ended. One job of a
kind runs per resource at a time: a partial unique index makes the store refuse a
second, across workers.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None

ACTIVE = "state IN ('queued', 'running')"


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("resource", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(160), nullable=False),
        sa.Column("params_digest", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Float(), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("log", sa.Text(), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=True),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("heartbeat_at", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_owner", "jobs", ["owner"])
    op.create_index("ix_jobs_kind_state", "jobs", ["kind", "state"])
    op.create_index(
        "uq_jobs_active",
        "jobs",
        ["kind", "resource"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )


def downgrade() -> None:
    op.drop_index("uq_jobs_active", "jobs")
    op.drop_index("ix_jobs_kind_state", "jobs")
    op.drop_index("ix_jobs_owner", "jobs")
    op.drop_table("jobs")
