"""SQLAlchemy 2 declarative models of the Orchestra ledger.

Tables:

* ``runs``  -- one row per Prefect flow run (a workflow execution); the token and
  cost totals are written by :meth:`ledger.store.Store.finish_run`, computed in
  SQL from the ``calls`` rows.
* ``calls`` -- one row per provider attempt (one call = one attempt = one request).
* ``breakers`` / ``breaker_events`` -- circuit-breaker state per provider endpoint,
  shared by every process on the database, and its transitions (revision 0002).
* ``dead_letters`` -- steps that failed for good, with the rendered prompt and error.
* ``provider_limits`` -- concurrency and requests-per-minute per provider.
* ``health_checks`` -- results of ``orchestra agents health`` probes.
* ``steps`` -- every step of a run and its state (revision 0004).
* ``tool_calls`` -- one row per tool call an agent asked for (revision 0007).
* ``open_calls`` -- attempts in flight, each until its ``calls`` row is written (revision 0009).
* ``projects`` / ``tasks`` / ``task_history`` / ``task_runs`` -- work items, every
  change to one, and the flow runs that executed one (revision 0008, ``orchestra.tasks``).
* ``call_rollup`` -- the calls summed per UTC day, workflow, step, model and agent,
  written in the same transaction as the calls (revision 0010): what the cost and KPI
  queries read instead of scanning every call.
* ``users`` / ``audit`` / ``agent_versions`` -- who may use the dashboard (argon2
  password hashes, never a password), every change and refused change with its
  before and after (redacted), and each saved agent file's text (revision 0010).

Timestamps are timezone-aware UTC datetimes in Python on every backend
(:class:`UTCDateTime`).  The schema itself is owned by the Alembic revisions in
``ledger/migrations/versions``; a test checks that these models and the
migrated schema do not drift apart.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "Run",
    "Call",
    "Step",
    "ToolCall",
    "Breaker",
    "BreakerEvent",
    "DeadLetter",
    "ProviderLimit",
    "HealthCheck",
    "Project",
    "Task",
    "TaskHistory",
    "TaskRun",
    "User",
    "AuditEntry",
    "AgentVersion",
    "CallRollup",
    "UTCDateTime",
    "RUN_STATES",
    "FINAL_RUN_STATES",
    "CALL_STATUSES",
    "NAMING_CONVENTION",
]

# Run states (Prefect's flow-run state types that Orchestra records).
RUN_STATES = ("RUNNING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED")
FINAL_RUN_STATES = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
from core.calls import CALL_STATUSES  # noqa: E402  (one definition, shared with the engine)

# Deterministic constraint names, so later Alembic revisions can drop/alter them
# on every backend (SQLite batch mode needs names too).
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

UTC = timezone.utc


class UTCDateTime(TypeDecorator[datetime]):
    """A ``TIMESTAMP WITH TIME ZONE`` that always round-trips as aware UTC.

    * bind: naive datetimes are taken as UTC; aware ones are converted to UTC.
      SQLite has no time zones, so the value is stored as naive UTC text
      (``YYYY-MM-DD HH:MM:SS.ffffff``), which also sorts and groups correctly.
    * result: always an aware datetime in UTC (PostgreSQL returns the session
      time zone; SQLite returns naive values).
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        else:
            value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSONB on PostgreSQL (indexable later), JSON (text) elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")
# 64-bit ids on PostgreSQL; SQLite's rowid alias must be exactly INTEGER.
CallId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    __tablename__ = "runs"

    flow_run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="RUNNING", server_default="RUNNING")
    inputs: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    started: Mapped[datetime] = mapped_column(UTCDateTime())
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    duration_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    calls: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model_override: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # How to find the definition again (`orchestra rerun`): a file path, or the
    # workflow as inline JSON. Revision 0002.
    workflow_ref: Mapped[str | None] = mapped_column(Text, nullable=True)
    budget_usd: Mapped[float | None] = mapped_column(Float, nullable=True)
    # The workflow's `metadata` (a /run-graph body's), revision 0003. The attribute is
    # `meta` because declarative models reserve `metadata`.
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONType, nullable=True)
    # Which process runs it and when it last said so (revision 0005): the reaper's evidence.
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    heartbeat: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)

    __table_args__ = (
        Index("ix_runs_state", "state"),
        Index("ix_runs_started", "started"),
        Index("ix_runs_workflow_started", "workflow", "started"),
        Index("ix_runs_state_started", "state", "started"),  # failed runs, success rates (0010)
    )

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Run({self.flow_run_id!r}, {self.workflow!r}, {self.state})"


class Call(Base):
    __tablename__ = "calls"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    flow_run_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("runs.flow_run_id", ondelete="CASCADE"), index=True
    )
    step: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    input_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    priced: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    status: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")  # core.calls.CALL_STATUSES
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cached: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # why the call was made: call | repair | route (core.calls), revision 0003
    purpose: Mapped[str] = mapped_column(String(8), default="call", server_default="call")
    # what ran: agent | container | command (core.calls), with a container's image and a
    # container's or command's exit code; revision 0006
    kind: Mapped[str] = mapped_column(String(16), default="agent", server_default="agent")
    image: Mapped[str | None] = mapped_column(String(400), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_calls_created", "created"),
        Index("ix_calls_agent_created", "agent", "created"),  # routing statistics (0002)
        # latency percentiles walk these in order (0010): successful provider calls only
        Index("ix_calls_model_latency", "model", "latency_ms", "created",
              sqlite_where=text("cached = 0 AND status = 'ok'"),
              postgresql_where=text("cached IS false AND status = 'ok'")),
        Index("ix_calls_agent_latency", "agent", "latency_ms", "created",
              sqlite_where=text("cached = 0 AND status = 'ok'"),
              postgresql_where=text("cached IS false AND status = 'ok'")),
    )

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"Call({self.id}, {self.flow_run_id!r}, {self.step!r}, {self.model!r})"


class Step(Base):
    """A step of a run and its state (revision 0004); see ``core.steps``."""

    __tablename__ = "steps"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    flow_run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.flow_run_id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16), default="agent", server_default="agent")
    state: Mapped[str] = mapped_column(String(16))
    depends_on: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    agent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    items: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)  # rendered, redacted, clipped
    output: Mapped[Any] = mapped_column(JSONType, nullable=True)  # redacted, clipped
    position: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))  # order in the workflow
    started: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    ended: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    updated: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("flow_run_id", "step"), Index("ix_steps_state", "state"))


class ToolCall(Base):
    """One tool call an agent asked for in a step attempt (revision 0007); see ``core.calls.ToolCallRecord``."""

    __tablename__ = "tool_calls"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    flow_run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.flow_run_id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    agent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    server: Mapped[str] = mapped_column(String(100))
    tool: Mapped[str] = mapped_column(String(200))
    call_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    arguments: Mapped[Any] = mapped_column(JSONType, nullable=True)  # redacted
    outcome: Mapped[str] = mapped_column(String(16))  # core.calls.TOOL_OUTCOMES
    duration_s: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_tool_calls_flow_run_id", "flow_run_id"),)


class OpenCall(Base):
    """An attempt that started and has not ended (revision 0009): written when it starts,
    deleted in the transaction that writes its ``calls`` row; one left behind becomes an
    ``interrupted`` call (the reaper, or the end of its run). See ``core.calls.CallRecord.in_flight``."""

    __tablename__ = "open_calls"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    flow_run_id: Mapped[str] = mapped_column(String(64), ForeignKey("runs.flow_run_id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    purpose: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))
    image: Mapped[str | None] = mapped_column(String(400), nullable=True)
    priced: Mapped[bool] = mapped_column(Boolean)
    created: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_open_calls_flow_run_id", "flow_run_id"),)


# --------------------------------------------------------------------------- revision 0002


class Breaker(Base):
    """One circuit breaker per provider endpoint; ``version`` makes transitions compare-and-set."""

    __tablename__ = "breakers"

    key: Mapped[str] = mapped_column(String(500), primary_key=True)
    provider: Mapped[str] = mapped_column(String(50))
    base_url: Mapped[str] = mapped_column(String(400))
    model: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="closed", server_default="closed")
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    updated: Mapped[datetime] = mapped_column(UTCDateTime())


class BreakerEvent(Base):
    """A breaker transition (closed -> open -> half_open -> closed | open)."""

    __tablename__ = "breaker_events"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(500))
    provider: Mapped[str] = mapped_column(String(50))
    model: Mapped[str] = mapped_column(String(200))
    from_state: Mapped[str] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    failures: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_breaker_events_key_created", "key", "created"),)


class DeadLetter(Base):
    """A step that failed for good: what it was asked and why it failed (both redacted)."""

    __tablename__ = "dead_letters"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    flow_run_id: Mapped[str] = mapped_column(String(64))
    workflow: Mapped[str] = mapped_column(String(200))
    step: Mapped[str] = mapped_column(String(200))
    agent: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model: Mapped[str | None] = mapped_column(String(200), nullable=True)
    prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    created: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (
        Index("ix_dead_letters_created", "created"),
        Index("ix_dead_letters_flow_run_id", "flow_run_id"),
    )


class ProviderLimit(Base):
    """``orchestra limits set``: at most ``concurrency`` calls in flight, ``rpm`` a minute."""

    __tablename__ = "provider_limits"

    provider: Mapped[str] = mapped_column(String(50), primary_key=True)
    concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated: Mapped[datetime] = mapped_column(UTCDateTime())


class HealthCheck(Base):
    """One ``orchestra agents health`` probe of one agent."""

    __tablename__ = "health_checks"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    agent: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index("ix_health_checks_agent_created", "agent", "created"),)


# --------------------------------------------------------------------------- revision 0008


class Project(Base):
    """A named group of tasks (``orchestra projects add``)."""

    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    updated: Mapped[datetime] = mapped_column(UTCDateTime())


class Task(Base):
    """A work item: what to do, who does it, the workflow that executes it, its status (``core.tasks``)."""

    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    project_id: Mapped[int | None] = mapped_column(CallId, ForeignKey("projects.id", ondelete="CASCADE"),
                                                   nullable=True, index=True)
    parent_id: Mapped[int | None] = mapped_column(CallId, ForeignKey("tasks.id", ondelete="CASCADE"),
                                                  nullable=True, index=True)
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="todo", server_default="todo")
    assignee: Mapped[str | None] = mapped_column(String(200), nullable=True)
    labels: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    # a shipped workflow's name or a file's absolute path; or `definition`, the workflow itself
    workflow: Mapped[str | None] = mapped_column(Text, nullable=True)
    inputs: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    definition: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # how the workflow came to be: source, planner, model, attempts, errors, cost
    plan: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    depends_on: Mapped[list[int] | None] = mapped_column(JSONType, nullable=True)  # task ids
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    updated: Mapped[datetime] = mapped_column(UTCDateTime())


class TaskHistory(Base):
    """One change of a task: who or what made it, when, the field, from, to and why."""

    __tablename__ = "task_history"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(CallId, ForeignKey("tasks.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    field: Mapped[str] = mapped_column(String(32))
    old: Mapped[str | None] = mapped_column(Text, nullable=True)
    new: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index("ix_task_history_task_id_id", "task_id", "id"),)


class TaskRun(Base):
    """A flow run that executed a task (its state is the run's, in ``runs``, once the engine wrote it)."""

    __tablename__ = "task_runs"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    task_id: Mapped[int] = mapped_column(CallId, ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    flow_run_id: Mapped[str] = mapped_column(String(64), unique=True)
    actor: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UTCDateTime())


# --------------------------------------------------------------------------- revision 0010


class User(Base):
    """A dashboard user: a role (``orchestra.access.ROLES``) and an argon2 hash (None: OIDC only)."""

    __tablename__ = "users"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(String(400), nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime())
    updated: Mapped[datetime] = mapped_column(UTCDateTime())


class AuditEntry(Base):
    """One change (or refused change): who, when, what, before and after (redacted)."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    actor: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    via: Mapped[str] = mapped_column(String(16))  # cli | password | oidc | local
    action: Mapped[str] = mapped_column(String(64))  # e.g. agent.edit, run.start
    target: Mapped[str | None] = mapped_column(String(400), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | refused | failed
    before: Mapped[Any] = mapped_column(JSONType, nullable=True)
    after: Mapped[Any] = mapped_column(JSONType, nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index("ix_audit_at", "at"),
        Index("ix_audit_actor_at", "actor", "at"),
    )


class AgentVersion(Base):
    """One saved version of an agent file (its whole text); ``action``: create | edit | restore | delete."""

    __tablename__ = "agent_versions"

    id: Mapped[int] = mapped_column(CallId, primary_key=True, autoincrement=True)
    agent: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    file: Mapped[str] = mapped_column(String(400))
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    actor: Mapped[str] = mapped_column(String(200))
    created: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (UniqueConstraint("agent", "version"),)


class CallRollup(Base):
    """The calls of one UTC day, workflow, step, model and agent ('' for none), summed;
    kept by the write path in the transaction that inserts the calls (revision 0010)."""

    __tablename__ = "call_rollup"

    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    workflow: Mapped[str] = mapped_column(String(200), primary_key=True)
    step: Mapped[str] = mapped_column(String(200), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    agent: Mapped[str] = mapped_column(String(200), primary_key=True)
    calls: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cache_hits: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    errors: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    cached_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    error_cost_usd: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    unpriced_calls: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    unpriced_input_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    unpriced_output_tokens: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    ok_calls: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))  # successful, not cached
    ok_latency_ms: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))  # their sum
