"""tasks and projects: projects, tasks (parent, dependencies, workflow, status), every
change of a task (task_history) and the flow runs that executed one (task_runs)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the types at this revision (never import the live models here).
ROW_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created", TS, nullable=False),
        sa.Column("updated", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_projects"),
        sa.UniqueConstraint("name", name="uq_projects_name"),
    )
    op.create_table(
        "tasks",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("project_id", ROW_ID, nullable=True),
        sa.Column("parent_id", ROW_ID, nullable=True),
        sa.Column("title", sa.String(500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="todo"),
        sa.Column("assignee", sa.String(200), nullable=True),
        sa.Column("labels", JSON, nullable=True),
        sa.Column("workflow", sa.Text(), nullable=True),
        sa.Column("inputs", JSON, nullable=True),
        sa.Column("definition", JSON, nullable=True),
        sa.Column("plan", JSON, nullable=True),
        sa.Column("depends_on", JSON, nullable=True),
        sa.Column("created", TS, nullable=False),
        sa.Column("updated", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name="fk_tasks_project_id_projects",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["parent_id"], ["tasks.id"], name="fk_tasks_parent_id_tasks", ondelete="CASCADE"),
    )
    op.create_index("ix_tasks_project_id", "tasks", ["project_id"])
    op.create_index("ix_tasks_parent_id", "tasks", ["parent_id"])
    op.create_table(
        "task_history",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("task_id", ROW_ID, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("field", sa.String(32), nullable=False),
        sa.Column("old", sa.Text(), nullable=True),
        sa.Column("new", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_task_history"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_history_task_id_tasks", ondelete="CASCADE"),
    )
    op.create_index("ix_task_history_task_id_id", "task_history", ["task_id", "id"])
    op.create_table(
        "task_runs",
        sa.Column("id", ROW_ID, autoincrement=True, nullable=False),
        sa.Column("task_id", ROW_ID, nullable=False),
        sa.Column("flow_run_id", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("created", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_task_runs"),
        sa.ForeignKeyConstraint(["task_id"], ["tasks.id"], name="fk_task_runs_task_id_tasks", ondelete="CASCADE"),
        sa.UniqueConstraint("flow_run_id", name="uq_task_runs_flow_run_id"),
    )
    op.create_index("ix_task_runs_task_id", "task_runs", ["task_id"])


def downgrade() -> None:
    op.drop_index("ix_task_runs_task_id", table_name="task_runs")
    op.drop_table("task_runs")
    op.drop_index("ix_task_history_task_id_id", table_name="task_history")
    op.drop_table("task_history")
    op.drop_index("ix_tasks_parent_id", table_name="tasks")
    op.drop_index("ix_tasks_project_id", table_name="tasks")
    op.drop_table("tasks")
    op.drop_table("projects")
