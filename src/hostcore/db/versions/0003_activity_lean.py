"""activity: one index fewer on the table every request writes to

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

Every request inserts one activity row, and each index on the table costs an
insert of its own: (principal, at) doubled the cost of writing a row. Queries
by principal scan the newest rows first (by id), which is what they ask for;
the index on ``at`` stays for time ranges and retention by age.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_activity_principal_at", "activity")


def downgrade() -> None:
    op.create_index("ix_activity_principal_at", "activity", ["principal", "at"])
