"""tool_calls: one row per tool call an agent asked for (server, tool, redacted arguments, outcome)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "tool_calls",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("server", sa.String(100), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=True),
        sa.Column("arguments", JSON, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=False, server_default=sa.text("0")),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tool_calls"),
        sa.ForeignKeyConstraint(["flow_run_id"], ["runs.flow_run_id"], name="fk_tool_calls_flow_run_id_runs",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_tool_calls_flow_run_id", "tool_calls", ["flow_run_id"])


def downgrade() -> None:
    op.drop_index("ix_tool_calls_flow_run_id", table_name="tool_calls")
    op.drop_table("tool_calls")
