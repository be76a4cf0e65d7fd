"""calls.purpose (call | repair | route: the one rule for a step's attempts) and
runs.metadata (the /run-graph body's metadata, kept on the run)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 00:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("purpose", sa.String(8), nullable=False, server_default="call"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("metadata", JSON, nullable=True))
    # Before 0003 a repair call was marked by its error text, a router call by its step name.
    calls = sa.table("calls", sa.column("purpose"), sa.column("error"), sa.column("status"), sa.column("step"))
    op.execute(calls.update().where(calls.c.status == "ok", calls.c.error == "repair attempt")
               .values(purpose="repair", error=None))
    op.execute(calls.update().where(calls.c.step.like("%:route")).values(purpose="route"))


def downgrade() -> None:
    calls = sa.table("calls", sa.column("purpose"), sa.column("error"), sa.column("status"))
    op.execute(calls.update().where(calls.c.purpose == "repair", calls.c.status == "ok")
               .values(error="repair attempt"))
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("metadata")
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("purpose")
