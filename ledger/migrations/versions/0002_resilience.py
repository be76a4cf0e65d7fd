"""self-healing: breakers, breaker events, dead letters, provider limits, health
checks; runs.workflow_ref and runs.budget_usd for `orchestra rerun`

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision (never import the live models here).
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
ZERO = sa.text("0")


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("workflow_ref", sa.Text(), nullable=True))
        batch.add_column(sa.Column("budget_usd", sa.Float(), nullable=True))

    op.create_table(
        "breakers",
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("base_url", sa.String(400), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("state", sa.String(16), nullable=False, server_default="closed"),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("retry_at", TS, nullable=True),
        sa.Column("opened_at", TS, nullable=True),
        sa.Column("version", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("updated", TS, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_breakers"),
    )
    op.create_table(
        "breaker_events",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("key", sa.String(500), nullable=False),
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_breaker_events"),
    )
    op.create_index("ix_breaker_events_key_created", "breaker_events", ["key", "created"])

    op.create_table(
        "dead_letters",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("agent", sa.String(200), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=ZERO),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_created", "dead_letters", ["created"])
    op.create_index("ix_dead_letters_flow_run_id", "dead_letters", ["flow_run_id"])

    op.create_table(
        "provider_limits",
        sa.Column("provider", sa.String(50), nullable=False),
        sa.Column("concurrency", sa.Integer(), nullable=True),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("updated", TS, nullable=False),
        sa.PrimaryKeyConstraint("provider", name="pk_provider_limits"),
    )

    op.create_table(
        "health_checks",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False, server_default=ZERO),
        sa.Column("cost_usd", sa.Float(), nullable=False, server_default=ZERO),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_health_checks"),
    )
    op.create_index("ix_health_checks_agent_created", "health_checks", ["agent", "created"])
    # routing reads recent calls per agent
    op.create_index("ix_calls_agent_created", "calls", ["agent", "created"])


def downgrade() -> None:
    op.drop_index("ix_calls_agent_created", table_name="calls")
    op.drop_index("ix_health_checks_agent_created", table_name="health_checks")
    op.drop_table("health_checks")
    op.drop_table("provider_limits")
    op.drop_index("ix_dead_letters_flow_run_id", table_name="dead_letters")
    op.drop_index("ix_dead_letters_created", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_index("ix_breaker_events_key_created", table_name="breaker_events")
    op.drop_table("breaker_events")
    op.drop_table("breakers")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("budget_usd")
        batch.drop_column("workflow_ref")
