"""activity: no index on the table every request writes to

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

The index on ``at`` was more than half of the work of writing a row (an SQLite
insert of 1.8 us a row without it, 4.6 with it, before the checkpoint copies
the pages again), paid on every request for queries an administrator makes now
and then. Rows are written in about time order, so the row id orders them by
time, roughly: retention deletes from the lowest ids, and a time range is read
from an id found by bisecting the ids, as :mod:`hostcore.security.activity`
describes.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_activity_at", "activity")


def downgrade() -> None:
    op.create_index("ix_activity_at", "activity", ["at"])
