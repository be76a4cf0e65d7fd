"""runs.pid, runs.host, runs.heartbeat: which process runs a run, and when it last said so
(the reaper marks a run whose process died CRASHED)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("heartbeat", sa.DateTime(timezone=True), nullable=True))
    op.create_index("ix_runs_state", "runs", ["state"])


def downgrade() -> None:
    op.drop_index("ix_runs_state", table_name="runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat")
        batch.drop_column("host")
        batch.drop_column("pid")
