"""open_calls: an attempt's mark from its start until its calls row is written (one left
behind becomes an ``interrupted`` call); calls.status wide enough for ``interrupted``

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "open_calls",
        sa.Column("key", sa.String(32), nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(8), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("image", sa.String(400), nullable=True),
        sa.Column("priced", sa.Boolean(), nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_open_calls"),
        sa.ForeignKeyConstraint(["flow_run_id"], ["runs.flow_run_id"], name="fk_open_calls_flow_run_id_runs",
                                ondelete="CASCADE"),
    )
    op.create_index("ix_open_calls_flow_run_id", "open_calls", ["flow_run_id"])
    with op.batch_alter_table("calls") as batch:
        batch.alter_column("status", existing_type=sa.String(8), type_=sa.String(16),
                           existing_nullable=False, existing_server_default="ok")


def downgrade() -> None:
    calls = sa.table("calls", sa.column("status", sa.String(16)))
    # before 0009 a call was ok or error: an interrupted one is kept as an error (its text says why)
    op.execute(calls.update().where(calls.c.status == "interrupted").values(status="error"))
    with op.batch_alter_table("calls") as batch:
        batch.alter_column("status", existing_type=sa.String(16), type_=sa.String(8),
                           existing_nullable=False, existing_server_default="ok")
    op.drop_index("ix_open_calls_flow_run_id", table_name="open_calls")
    op.drop_table("open_calls")
