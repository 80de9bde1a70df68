"""tokens: the token a token was got with, so revoking one revokes what it got

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30

A client's token can get another token (for itself, narrower or as long at
most; with ``auth:admin``, for another client). Revoking a leaked token must
also revoke what it was used to get: each token records its parent's jti, and
a revocation by jti follows them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: Sequence[str] | None = None
depends_on: Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tokens", sa.Column("parent_jti", sa.String(36), nullable=True))
    op.create_index("ix_tokens_parent_jti", "tokens", ["parent_jti"])


def downgrade() -> None:
    op.drop_index("ix_tokens_parent_jti", "tokens")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("parent_jti")
