"""pairing requests: BlueZ's questions to hostcore's agent, answered through any worker

Revision ID: bluetooth_0001
Revises:
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "bluetooth_0001"
down_revision: str | None = None
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bluetooth_pairing_requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("adapter", sa.String(16), nullable=False),
        sa.Column("address", sa.String(17), nullable=False),
        sa.Column("name", sa.String(248), nullable=True),
        sa.Column("passkey", sa.Integer(), nullable=True),
        sa.Column("pin_code", sa.String(16), nullable=True),
        sa.Column("service", sa.String(64), nullable=True),
        sa.Column("job_id", sa.String(36), nullable=True),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("answer_passkey", sa.Integer(), nullable=True),
        sa.Column("answer_pin_code", sa.String(16), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bluetooth_pairing_requests"),
    )
    op.create_index("ix_bluetooth_pairing_requests_state", "bluetooth_pairing_requests", ["state"])


def downgrade() -> None:
    op.drop_index("ix_bluetooth_pairing_requests_state", "bluetooth_pairing_requests")
    op.drop_table("bluetooth_pairing_requests")
