"""runs and calls: the cost ledger

Revision ID: 0001
Revises:
Create Date: 2025-01-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision (never import the live models here).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
CALL_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
ZERO = sa.text("0")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="RUNNING"),
        sa.Column("inputs", JSON, nullable=False),
        sa.Column("started", TS, nullable=False),
        sa.Column("ended", TS, nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("output_tokens", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("cached_tokens", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default=ZERO),
        sa.Column("calls", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model_override", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("flow_run_id", name="pk_runs"),
    )
    op.create_index("ix_runs_started", "runs", ["started"])
    op.create_index("ix_runs_workflow_started", "runs", ["workflow", "started"])

    op.create_table(
        "calls",
        sa.Column("id", CALL_ID, autoincrement=True, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("input_tokens", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("output_tokens", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("cached_tokens", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default=ZERO),
        sa.Column("priced", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("latency_ms", sa.Float(), nullable=False, server_default=ZERO),
        sa.Column("status", sa.String(8), nullable=False, server_default="ok"),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cached", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["flow_run_id"], ["runs.flow_run_id"],
            name="fk_calls_flow_run_id_runs", ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_calls"),
    )
    op.create_index("ix_calls_flow_run_id", "calls", ["flow_run_id"])
    op.create_index("ix_calls_created", "calls", ["created"])


def downgrade() -> None:
    op.drop_index("ix_calls_created", table_name="calls")
    op.drop_index("ix_calls_flow_run_id", table_name="calls")
    op.drop_table("calls")
    op.drop_index("ix_runs_workflow_started", table_name="runs")
    op.drop_index("ix_runs_started", table_name="runs")
    op.drop_table("runs")
