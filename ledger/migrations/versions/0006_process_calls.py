"""calls.kind, calls.image, calls.exit_code: container and command steps' attempts
(kind container|command, the image, the exit code; cost 0) beside the agents' calls

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="agent"))
        batch.add_column(sa.Column("image", sa.String(400), nullable=True))
        batch.add_column(sa.Column("exit_code", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("exit_code")
        batch.drop_column("image")
        batch.drop_column("kind")
