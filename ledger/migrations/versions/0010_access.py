"""access: dashboard users (hashed passwords), the audit log, agent file versions; and the
dashboard's speed on a big ledger: call_rollup (calls summed per day, workflow, step, model,
agent; backfilled here), two partial indexes for latency percentiles, steps by state and
runs by state

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("password_hash", sa.String(400), nullable=True),
        sa.Column("created", TS, nullable=False),
        sa.Column("updated", TS, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_users"),
    )
    op.create_table(
        "audit",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(400), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("before", JSON, nullable=True),
        sa.Column("after", JSON, nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_actor_at", "audit", ["actor", "at"])
    op.create_table(
        "agent_versions",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("file", sa.String(400), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_versions"),
        sa.UniqueConstraint("agent", "version", name="uq_agent_versions_agent_version"),
    )


    rollup_columns = [
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("step", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
    ]
    for name in ("calls", "cache_hits", "errors", "unpriced_calls", "ok_calls"):
        rollup_columns.append(sa.Column(name, sa.Integer(), nullable=False, server_default=sa.text("0")))
    for name in ("input_tokens", "output_tokens", "cached_tokens", "unpriced_input_tokens", "unpriced_output_tokens"):
        rollup_columns.append(sa.Column(name, sa.BigInteger(), nullable=False, server_default=sa.text("0")))
    for name in ("cost_usd", "error_cost_usd", "ok_latency_ms"):
        rollup_columns.append(sa.Column(name, sa.Float(), nullable=False, server_default=sa.text("0")))
    op.create_table("call_rollup", *rollup_columns,
                    sa.PrimaryKeyConstraint("day", "workflow", "step", "model", "agent", name="pk_call_rollup"))
    bind = op.get_bind()
    day = "substr(c.created, 1, 10)" if bind.dialect.name == "sqlite" else \
        "to_char(c.created AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    true, false = ("1", "0") if bind.dialect.name == "sqlite" else ("true", "false")
    unpriced = f"c.priced = {false} AND c.cached = {false} AND c.status = 'ok'"
    ok = f"c.cached = {false} AND c.status = 'ok'"
    op.execute(f"""
        INSERT INTO call_rollup (day, workflow, step, model, agent, calls, cache_hits, errors, input_tokens,
                                 output_tokens, cached_tokens, cost_usd, error_cost_usd, unpriced_calls,
                                 unpriced_input_tokens, unpriced_output_tokens, ok_calls, ok_latency_ms)
        SELECT {day}, r.workflow, c.step, c.model, coalesce(c.agent, ''), count(*),
               sum(CASE WHEN c.cached = {true} THEN 1 ELSE 0 END),
               sum(CASE WHEN c.status <> 'ok' THEN 1 ELSE 0 END),
               sum(c.input_tokens), sum(c.output_tokens), sum(c.cached_tokens), sum(c.cost_usd),
               sum(CASE WHEN c.status <> 'ok' THEN c.cost_usd ELSE 0 END),
               sum(CASE WHEN {unpriced} THEN 1 ELSE 0 END),
               sum(CASE WHEN {unpriced} THEN c.input_tokens ELSE 0 END),
               sum(CASE WHEN {unpriced} THEN c.output_tokens ELSE 0 END),
               sum(CASE WHEN {ok} THEN 1 ELSE 0 END),
               sum(CASE WHEN {ok} THEN c.latency_ms ELSE 0 END)
        FROM calls c JOIN runs r ON r.flow_run_id = c.flow_run_id
        GROUP BY {day}, r.workflow, c.step, c.model, coalesce(c.agent, '')
    """)
    where = sa.text(f"cached = {false} AND status = 'ok'")
    op.create_index("ix_calls_model_latency", "calls", ["model", "latency_ms", "created"],
                    sqlite_where=where, postgresql_where=where)
    op.create_index("ix_calls_agent_latency", "calls", ["agent", "latency_ms", "created"],
                    sqlite_where=where, postgresql_where=where)
    op.create_index("ix_steps_state", "steps", ["state"])
    op.create_index("ix_runs_state_started", "runs", ["state", "started"])


def downgrade() -> None:
    op.drop_index("ix_runs_state_started", table_name="runs")
    op.drop_index("ix_steps_state", table_name="steps")
    op.drop_index("ix_calls_agent_latency", table_name="calls")
    op.drop_index("ix_calls_model_latency", table_name="calls")
    op.drop_table("call_rollup")
    op.drop_table("agent_versions")
    op.drop_index("ix_audit_actor_at", table_name="audit")
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_table("audit")
    op.drop_table("users")
