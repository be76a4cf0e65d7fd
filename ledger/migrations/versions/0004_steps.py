"""steps: every step of a run and its state (the DAG of a run, steps that never ran included)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "steps",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False, server_default="agent"),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("depends_on", JSON, nullable=True),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("items", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("output", JSON, nullable=True),
        sa.Column("position", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("started", TS, nullable=True),
        sa.Column("ended", TS, nullable=True),
        sa.Column("updated", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_steps"),
        sa.ForeignKeyConstraint(["flow_run_id"], ["runs.flow_run_id"], name="fk_steps_flow_run_id_runs",
                                ondelete="CASCADE"),
        sa.UniqueConstraint("flow_run_id", "step", name="uq_steps_flow_run_id_step"),
    )


def downgrade() -> None:
    op.drop_table("steps")
