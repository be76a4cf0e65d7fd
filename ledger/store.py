"""The ledger's write path: runs, provider calls, tool calls and step states in SQL
(SQLite or PostgreSQL).

    from ledger.store import get_store
    from core.calls import CallRecord
    store = get_store()                       # one Store per URL per process
    store.start_run(flow_run_id=..., workflow="code-review", inputs={...}, started=now)
    store.record_call(CallRecord(flow_run_id=..., step="security", model="openai:gpt-4.1-mini",
                                 input_tokens=270, output_tokens=80, cost_usd=0.00014, priced=True))
    store.finish_run(flow_run_id=..., state="COMPLETED", ended=now)   # flushes, then totals in SQL

The Store satisfies the engine's ``flows.ports.Ledger``; everything that reads the
ledger goes through ``ledger.queries``.

Writes of calls never block the caller: :meth:`Store.record_call` only puts the
record on an in-memory queue (a few µs); one background writer thread per Store
commits the queue in batches, each batch one transaction (so each row is atomic): what
is queued while it commits, and, when nothing waits for the batch, what arrives within
``GROUP_S`` (50 ms) of its first record.
:meth:`Store.flush` waits until everything queued so far is committed;
``finish_run`` and the read queries flush first, and an ``atexit`` hook flushes
every Store before the interpreter exits.

Tool calls (:meth:`Store.record_tool_call`) and step states (:meth:`Store.record_step`)
take the same queue, in order.

Error texts (and string inputs, tool-call arguments) pass through
:func:`core.redact.redact` before they are written: no secret reaches the store.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import logging
import math
import os
import queue
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError

from core.calls import INTERRUPTED, CallRecord, ToolCallRecord
from core.steps import FINAL_STEP_STATES, StepState
from core.redact import redact, redact_url, redact_data
from ledger.db import WRITE, is_memory_sqlite, make_engine, resolve_url
from ledger.migrations import MIGRATIONS_DIR, VERSION_TABLE, head_revisions, known_revisions
from ledger.access_store import AccessStore, UserExists
from ledger.models import FINAL_RUN_STATES, Call, CallRollup, OpenCall, Run, Step, ToolCall
from ledger.resilience_store import ResilienceStore
from ledger.task_store import TaskConflict, TaskStore
from ledger.rows import aware, state_name, totals_dict, totals_select

__all__ = ["Store", "CallRecord", "get_store", "COST_GROUPS", "StoreError", "TaskConflict", "UserExists"]

log = logging.getLogger("orchestra.store")

UTC = timezone.utc
COST_GROUPS = ("model", "agent", "workflow", "day")
MAX_ERROR_CHARS = 20_000
MAX_BATCH = 500
# A batch that nobody waits for yet takes what else arrives within this time (s): records
# come one after another in a run of sequential steps, and each transaction costs more
# than its rows do. A mark's wake-up, a flush or the end of the process commits at once.
GROUP_S = 0.05
# pg_advisory_xact_lock key that serializes concurrent migrations (any constant).
_PG_MIGRATE_LOCK = 7_267_001_842
_RUNS = Run.__table__
_CALLS = Call.__table__
_OPEN = OpenCall.__table__
_STEPS = Step.__table__
_TOOL_CALLS = ToolCall.__table__
_ROLLUP = CallRollup.__table__
_ROLLUP_KEYS = ("day", "workflow", "step", "model", "agent")  # call_rollup's primary key, in this order
_ROLLUP_SUMS = ("calls", "cache_hits", "errors", "input_tokens", "output_tokens", "cached_tokens", "cost_usd",
                "error_cost_usd", "unpriced_calls", "unpriced_input_tokens", "unpriced_output_tokens", "ok_calls",
                "ok_latency_ms")
MAX_ARGUMENT_CHARS = 20_000
_TOTAL_KWARGS = frozenset(
    {"input_tokens", "output_tokens", "cached_tokens", "cost_usd", "calls", "duration_s"}
)


class StoreError(RuntimeError):
    """The store cannot be used as asked (e.g. a database newer than this code)."""


_STOP = object()


@dataclass(frozen=True, slots=True)
class _Open:
    """An attempt that starts (``CallRecord.in_flight``): its ``open_calls`` row."""

    call: CallRecord


@dataclass(frozen=True, slots=True)
class _Signal:
    """Something with a thread-safe ``set()`` to call once what was queued before it is
    committed (a waiting attempt's wake-up on its own event loop)."""

    target: Any


@dataclass(frozen=True, slots=True)
class _Drop:
    """An in-flight mark whose attempt sent no request: removed, no call row."""

    key: str


@dataclass(frozen=True, slots=True)
class _Beat:
    """A running run's heartbeat (and, the first time, its process)."""

    flow_run_id: str
    at: datetime
    pid: int | None = None
    host: str | None = None


def _clean_error(error: Any) -> str | None:
    if error is None:
        return None
    text_ = redact(str(error))
    if len(text_) > MAX_ERROR_CHARS:
        text_ = text_[:MAX_ERROR_CHARS] + f"... [{len(text_) - MAX_ERROR_CHARS} chars truncated]"
    return text_


MAX_TEXT_CHARS = 100_000


def _clip_text(value: str) -> str:
    text_ = redact(str(value))
    if len(text_) > MAX_TEXT_CHARS:
        text_ = text_[:MAX_TEXT_CHARS] + f"... [{len(text_) - MAX_TEXT_CHARS} chars truncated]"
    return text_


def _clip_json(value: Any) -> Any:
    """A step's output as stored: redacted, JSON-able, at most MAX_TEXT_CHARS when dumped
    (a larger one is kept as its clipped JSON text)."""
    clean = json.loads(json.dumps(redact_data(value), default=str))
    dumped = json.dumps(clean)
    return clean if len(dumped) <= MAX_TEXT_CHARS else _clip_text(dumped)


def _finite(x: Any) -> float:
    x = float(x or 0.0)
    return x if math.isfinite(x) else 0.0  # NaN/inf would poison every SUM


@functools.lru_cache(maxsize=4)
def _rollup_upsert(dialect: Any) -> Any:
    """Add call rows' sums to ``call_rollup``: one INSERT ... ON CONFLICT DO UPDATE, the same
    on SQLite and PostgreSQL, as text (SQLAlchemy's dialect upserts are compiled anew on
    every execution; a text statement is compiled once)."""
    quote = dialect.identifier_preparer.quote
    table, keys = quote(_ROLLUP.name), _ROLLUP_KEYS
    columns = keys + _ROLLUP_SUMS
    return text(f"INSERT INTO {table} ({', '.join(map(quote, columns))}) "
                f"VALUES ({', '.join(':' + c for c in columns)}) "
                f"ON CONFLICT ({', '.join(map(quote, keys))}) DO UPDATE SET "
                + ", ".join(f"{quote(c)} = {table}.{quote(c)} + excluded.{quote(c)}" for c in _ROLLUP_SUMS))


@functools.lru_cache(maxsize=64)
def _step_update(columns: tuple[str, ...], started: bool) -> Any:
    """The update of one step's row that sets ``columns`` (parameters ``v_<column>``; the
    step ``k_run``, ``k_step``); with ``started``, the first RUNNING wins (a retry does not
    move it). One statement per set of columns, so it is compiled once."""
    values: dict[str, Any] = {c: bindparam(f"v_{c}", type_=_STEPS.c[c].type) for c in columns}
    if started:
        values["started"] = func.coalesce(_STEPS.c.started, bindparam("v_started", type_=_STEPS.c.started.type))
    return (update(_STEPS).where(_STEPS.c.flow_run_id == bindparam("k_run"), _STEPS.c.step == bindparam("k_step"))
            .values(values))


# --------------------------------------------------------------------------- store


class Store(ResilienceStore, TaskStore, AccessStore):
    """The ledger on one database URL.  Thread-safe; see the module docstring.

    The self-healing tables (breakers, dead letters, limits, health) are read and
    written by the methods of :class:`ledger.resilience_store.ResilienceStore`; projects
    and tasks by those of :class:`ledger.task_store.TaskStore`; users, the audit log and
    agent versions by :class:`ledger.access_store.AccessStore`."""

    def __init__(self, url: str | URL | None = None, *, auto_migrate: bool = True) -> None:
        self.url: URL = resolve_url(url)
        self.engine = make_engine(self.url)
        self._write_engine = self.engine.execution_options(**WRITE)
        self.backend: str = self.url.get_backend_name()
        self.auto_migrate = auto_migrate
        # An in-memory SQLite database is one shared connection: serialize its use.
        self._dblock: Any = threading.RLock() if is_memory_sqlite(self.url) else None
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._workflows: dict[str, str] = {}  # run -> workflow, for the rollup (read once per run)
        self._reset_writer()
        self.write_errors = 0
        self.last_write_error: str | None = None
        _STORES.add(self)

    def _reset_writer(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Store({redact_url(self.url)!r})"

    @property
    def display_url(self) -> str:
        """The URL with its password masked."""
        return self.url.render_as_string(hide_password=True)

    # ------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A read connection (the transaction is rolled back at the end)."""
        self._ready()
        with self._dblock or contextlib.nullcontext(), self.engine.connect() as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[Connection]:
        """One write transaction (SQLite: BEGIN IMMEDIATE), committed at the end."""
        self._ready()
        with self._dblock or contextlib.nullcontext(), self._write_engine.begin() as conn:
            yield conn

    def _ready(self) -> None:
        if not self._migrated and self.auto_migrate:
            self.migrate()

    # ------------------------------------------------------------ migrations

    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (``alembic upgrade head``).

        Idempotent and cheap when already at head: one ``SELECT`` on the version
        table, no Alembic import.  Concurrent callers (threads or processes) are
        serialized: SQLite by ``BEGIN IMMEDIATE``, PostgreSQL by an advisory lock.
        """
        if self._migrated:
            return
        with self._migrate_lock:
            if self._migrated:
                return
            self._migrate()
            self._migrated = True

    def current_revisions(self) -> frozenset[str] | None:
        """Revisions recorded in the database; ``None`` if it was never migrated."""
        with self._dblock or contextlib.nullcontext(), self.engine.connect() as conn:
            return self._read_revisions(conn)

    @staticmethod
    def _read_revisions(conn: Connection) -> frozenset[str] | None:
        try:
            rows = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        except DBAPIError:
            conn.rollback()
            return None
        conn.rollback()
        return frozenset(rows)

    def _migrate(self) -> None:
        heads = head_revisions()
        if self.current_revisions() == heads:  # the fast path: nothing to do
            return
        with self._dblock or contextlib.nullcontext(), self._write_engine.connect() as conn:
            with conn.begin():
                if self.backend == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATE_LOCK})
                # Re-check under the lock: another process may have just migrated.
                current = self._read_revisions_in_tx(conn)
                if current == heads:
                    return
                unknown = (current or frozenset()) - known_revisions()
                if unknown:
                    raise StoreError(
                        f"the store at {self.display_url} is at revision {sorted(unknown)}, "
                        f"which this version of Orchestra does not know (head {sorted(heads)}); "
                        "upgrade Orchestra"
                    )
                self._alembic_upgrade(conn)
        log.info("migrated %s to %s", self.display_url, ",".join(sorted(heads)))

    @staticmethod
    def _read_revisions_in_tx(conn: Connection) -> frozenset[str] | None:
        from sqlalchemy import inspect

        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        return frozenset(conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())

    def _alembic_upgrade(self, conn: Connection) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.set_main_option("path_separator", "os")
        # The URL for env.py's fallback ('%' escaped for configparser); the open
        # connection (already inside our locked transaction) takes precedence.
        cfg.set_main_option(
            "sqlalchemy.url", self.url.render_as_string(hide_password=False).replace("%", "%%")
        )
        cfg.attributes["connection"] = conn
        cfg.attributes["configure_logging"] = False
        command.upgrade(cfg, "head")

    # ------------------------------------------------------------ runs

    def start_run(
        self,
        *,
        flow_run_id: str,
        workflow: str,
        inputs: Mapping[str, Any] | None = None,
        started: datetime | None = None,
        model_override: str | None = None,
        workflow_ref: str | None = None,
        budget_usd: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Insert the run as RUNNING.

        ``workflow_ref`` (a file path or the workflow as inline JSON), the inputs,
        ``model_override`` and ``budget_usd`` are what ``orchestra rerun`` runs again.
        Starting an existing run again (a Prefect flow-run retry) sets it back to
        RUNNING and keeps its first ``started``, its inputs and its calls.
        """
        started = aware(started)
        clean_inputs = json.loads(json.dumps(redact_data(dict(inputs or {})), default=str))
        clean_meta = json.loads(json.dumps(redact_data(dict(metadata)), default=str)) if metadata else None
        with self._write() as conn:
            exists = conn.execute(
                select(_RUNS.c.flow_run_id).where(_RUNS.c.flow_run_id == flow_run_id)
            ).first()
            if exists:
                conn.execute(
                    update(_RUNS)
                    .where(_RUNS.c.flow_run_id == flow_run_id)
                    .values(state="RUNNING", ended=None, duration_s=None, error=None)
                )
            else:
                conn.execute(
                    insert(_RUNS).values(
                        flow_run_id=flow_run_id,
                        workflow=workflow,
                        state="RUNNING",
                        inputs=clean_inputs,
                        started=started,
                        model_override=model_override,
                        workflow_ref=workflow_ref,
                        budget_usd=budget_usd,
                        metadata=clean_meta,
                    )
                )

    def finish_run(
        self,
        *,
        flow_run_id: str,
        state: Any,
        ended: datetime | None = None,
        error: str | BaseException | None = None,
        **totals: Any,
    ) -> dict[str, Any]:
        """Flush the queued calls, then close the run in one transaction.

        The totals (tokens, cost, number of calls) are summed in SQL from the
        run's ``calls`` rows; totals passed as keyword arguments are accepted for
        compatibility and ignored.  Returns the totals written.  ``KeyError`` for
        an unknown run, ``ValueError`` for a state that is not final.
        """
        unknown = set(totals) - _TOTAL_KWARGS
        if unknown:
            raise TypeError(f"finish_run() got unexpected keyword arguments {sorted(unknown)}")
        final = state_name(state)
        if final not in FINAL_RUN_STATES:
            raise ValueError(f"finish_run state must be one of {FINAL_RUN_STATES}, got {state!r}")
        ended = aware(ended)
        self.flush()
        with self._write() as conn:
            started = conn.execute(
                select(_RUNS.c.started).where(_RUNS.c.flow_run_id == flow_run_id)
            ).scalar_one_or_none()
            if started is None:
                raise KeyError(f"no run {flow_run_id!r} in the store")
            self._close_open(conn, flow_run_id, INTERRUPTED if final == "CRASHED" else
                             f"the run ended {final} while this attempt was in flight")
            sums = totals_dict(
                conn.execute(totals_select().where(_CALLS.c.flow_run_id == flow_run_id))
                .mappings()
                .one()
            )
            duration_s = max(0.0, (ended - started).total_seconds())
            conn.execute(
                update(_RUNS)
                .where(_RUNS.c.flow_run_id == flow_run_id)
                .values(
                    state=final,
                    ended=ended,
                    duration_s=duration_s,
                    error=_clean_error(error),
                    **sums,
                )
            )
        return {**sums, "duration_s": duration_s}

    # ------------------------------------------------------------ calls (hot path)

    def record_call(self, call: CallRecord | Mapping[str, Any]) -> None:
        """Queue one attempt for the background writer; never waits for the disk."""
        if not isinstance(call, CallRecord):
            if not isinstance(call, Mapping):
                raise TypeError(f"record_call expects a CallRecord or a mapping, got {type(call).__name__}")
            call = CallRecord(**call)
        self._queue.put((call, call.created or datetime.now(UTC)))
        if self._writer is None:
            self._start_writer()

    def record_call_start(self, call: CallRecord, committed: Any = None) -> Any:
        """Queue the mark of an attempt that starts (``CallRecord.in_flight``); the row of
        the same ``key`` removes it, in the transaction that writes that row. Never waits:
        ``committed`` (anything with a thread-safe ``set()``, by default a new
        ``threading.Event``) is set by the writer once the mark is committed, and returned."""
        if not isinstance(call, CallRecord) or not call.key:
            raise TypeError("record_call_start expects a CallRecord made by CallRecord.in_flight")
        committed = threading.Event() if committed is None else committed
        self._queue.put(_Open(call))
        self._queue.put(committed if isinstance(committed, threading.Event) else _Signal(committed))
        if self._writer is None:
            self._start_writer()
        return committed

    def drop_call_start(self, key: str) -> None:
        """Queue the removal of an in-flight mark whose attempt sent no request. Never waits."""
        self._queue.put(_Drop(key))
        if self._writer is None:
            self._start_writer()

    def heartbeat(self, flow_run_id: str, *, pid: int | None = None, host: str | None = None) -> None:
        """Queue "this run is alive" (with its process the first time); never waits."""
        self._queue.put(_Beat(flow_run_id, datetime.now(UTC), pid, host))
        if self._writer is None:
            self._start_writer()

    def close_steps(self, flow_run_id: str, state: str, error: str | None = None) -> int:
        """Every step of a run that is not final ends ``state`` (the reaper: CRASHED or
        CANCELLED); how many did."""
        now = datetime.now(UTC)
        self.flush()
        with self._write() as conn:
            done = conn.execute(update(_STEPS).where(_STEPS.c.flow_run_id == flow_run_id,
                                                     _STEPS.c.state.not_in(FINAL_STEP_STATES))
                                .values(state=state, error=_clean_error(error), ended=now, updated=now))
        return int(done.rowcount or 0)

    def record_step(self, step: StepState) -> None:
        """Queue a step's state for the background writer (after the calls queued before it)."""
        if not isinstance(step, StepState):
            raise TypeError(f"record_step expects a StepState, got {type(step).__name__}")
        self._queue.put(step)
        if self._writer is None:
            self._start_writer()

    def record_tool_call(self, call: ToolCallRecord) -> None:
        """Queue one tool call for the background writer (after the calls queued before it)."""
        if not isinstance(call, ToolCallRecord):
            raise TypeError(f"record_tool_call expects a ToolCallRecord, got {type(call).__name__}")
        self._queue.put(call)
        if self._writer is None:
            self._start_writer()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every call queued before this call is committed (or failed).

        Returns False if ``timeout`` (seconds) ran out first.
        """
        if self._writer is None:
            if self._queue.empty():
                return True
            self._start_writer()
        elif not self._writer.is_alive():  # pragma: no cover - the writer never raises
            self._writer = None
            self._start_writer()
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Flush, stop the writer thread and close pooled connections.

        The Store stays usable: the writer and connections come back on demand.
        """
        with self._writer_lock:
            writer, self._writer = self._writer, None
        if writer is not None and writer.is_alive():
            done = threading.Event()
            self._queue.put(done)
            done.wait(timeout)
            self._queue.put(_STOP)
            writer.join(timeout)
        self.engine.dispose()

    def _start_writer(self) -> None:
        with self._writer_lock:
            if self._writer is not None:
                return
            t = threading.Thread(target=self._writer_loop, name="orchestra-store-writer", daemon=True)
            t.start()
            self._writer = t

    def _writer_loop(self) -> None:
        q = self._queue
        while True:
            item = q.get()
            batch: list[tuple[CallRecord, datetime]] = []
            steps: list[StepState] = []
            beats: list[_Beat] = []
            tools: list[ToolCallRecord] = []
            opens: list[CallRecord] = []
            drops: set[str] = set()
            events: list[Any] = []  # each with set(): threading.Event or _Signal's target
            stop = False
            deadline = 0.0
            while True:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    events.append(item)
                elif isinstance(item, _Signal):
                    events.append(item.target)
                elif isinstance(item, StepState):
                    steps.append(item)
                elif isinstance(item, _Beat):
                    beats.append(item)
                elif isinstance(item, ToolCallRecord):
                    tools.append(item)
                elif isinstance(item, _Open):
                    opens.append(item.call)
                elif isinstance(item, _Drop):
                    drops.add(item.key)
                else:
                    batch.append(item)
                if stop or len(batch) >= MAX_BATCH:
                    break
                try:
                    item = q.get_nowait()
                except queue.Empty:
                    if events:  # somebody waits (an attempt for its mark, a flush): commit now
                        break
                    deadline = deadline or time.monotonic() + GROUP_S
                    try:
                        item = q.get(timeout=max(0.0, deadline - time.monotonic()))
                    except queue.Empty:
                        break
            try:
                self._commit(batch, opens, drops, tools, steps, beats)
            except BaseException as exc:  # pragma: no cover - last resort, keep the thread
                self._write_failed(len(batch) + len(opens) + len(tools) + len(steps), exc)
            for ev in events:
                ev.set()
            if stop:
                return

    def _commit(self, batch: list[tuple[CallRecord, datetime]], opens: list[CallRecord], drops: set[str],
                tools: list[ToolCallRecord], steps: list[StepState], beats: list[_Beat]) -> None:
        """What one batch holds, in one transaction: in-flight marks, call rows (with the
        marks they close and the rollup), tool calls, step states, heartbeats, in that order.
        A transaction is a BEGIN, locks and a write of the WAL, the larger part of a small
        batch's cost; a run of steps one after another makes batches of one or two records.
        When the transaction fails (a row of an unknown run, a malformed value), each kind
        is written on its own, and each of those falls back to one row at a time."""
        ended = {c.key for c, _ in batch if c.key} | drops  # a mark whose attempt ended here is never written
        open_rows = self._rows(self._open_row, [o for o in opens if o.key not in ended])
        drops = drops - {o.key for o in opens}
        call_rows, keys = self._call_rows(batch, skip_open={o.key for o in opens})
        tool_rows = self._rows(self._tool_row, tools)
        merged, first = {}, {}
        try:
            merged, first = self._merge_steps(steps)
        except Exception as exc:  # a malformed state must not sink the batch
            self._write_failed(len(steps), exc)
        latest = self._merge_beats(beats)
        if not (open_rows or drops or call_rows or tool_rows or merged or latest):
            return
        try:
            with self._write() as conn:
                if drops:
                    conn.execute(delete(_OPEN).where(_OPEN.c.key.in_(sorted(drops))))
                if open_rows:
                    conn.execute(insert(_OPEN), open_rows)
                if call_rows:
                    self._insert_calls(conn, call_rows, keys)
                if tool_rows:
                    conn.execute(insert(_TOOL_CALLS), tool_rows)
                self._upsert_steps(conn, merged, first)
                self._update_beats(conn, latest)
            return
        except Exception:
            pass
        for write, args in ((self._write_opens, (open_rows, drops)), (self._write_calls, (call_rows, keys)),
                            (self._write_tool_rows, (tool_rows,)), (self._write_steps, (merged, first))):
            try:
                write(*args)
            except BaseException as exc:  # pragma: no cover - last resort, keep the thread
                self._write_failed(len(args[0]), exc)
        try:
            if latest:
                with self._write() as conn:
                    self._update_beats(conn, latest)
        except Exception as exc:  # a missed heartbeat is the next one's
            log.debug("orchestra store: heartbeat not written: %s", exc)

    def _rows(self, make: Any, records: list[Any]) -> list[dict[str, Any]]:
        """``make(record)`` of each record; a malformed one is counted and left out."""
        rows = []
        for record in records:
            try:
                rows.append(make(record))
            except Exception as exc:  # a malformed record must not sink the batch
                self._write_failed(1, exc)
        return rows

    @staticmethod
    def _row(call: CallRecord, created: datetime) -> dict[str, Any]:
        return {
            "flow_run_id": call.flow_run_id,
            "step": call.step,
            "agent": call.agent,
            "provider": call.provider,
            "model": call.model,
            "attempt": int(call.attempt),
            "input_tokens": int(call.input_tokens or 0),
            "output_tokens": int(call.output_tokens or 0),
            "cached_tokens": int(call.cached_tokens or 0),
            "cost_usd": _finite(call.cost_usd),
            "priced": bool(call.priced),
            "latency_ms": float(call.latency_ms or 0.0),
            "status": call.status,
            "error": _clean_error(call.error),
            "cached": bool(call.cached),
            "purpose": call.purpose,
            "kind": call.kind,
            "image": call.image,
            "exit_code": None if call.exit_code is None else int(call.exit_code),
            "created": created,
        }

    def _call_rows(self, batch: list[tuple[CallRecord, datetime]],
                   skip_open: set[str]) -> tuple[list[dict[str, Any]], list[str | None]]:
        def row_and_key(item: tuple[CallRecord, datetime]) -> tuple[dict[str, Any], str | None]:
            call, created = item
            return self._row(call, created), (call.key if call.key not in skip_open else None)

        pairs = self._rows(row_and_key, batch)
        return [row for row, _ in pairs], [key for _, key in pairs]

    def _write_calls(self, rows: list[dict[str, Any]], keys: list[str | None]) -> None:
        """Call rows in one transaction of their own (retried when the database is busy),
        else one by one."""
        if not rows:
            return
        delays = (0.05, 0.25, 1.0)
        for attempt in range(len(delays) + 1):
            try:
                with self._write() as conn:
                    self._insert_calls(conn, rows, keys)
                return
            except IntegrityError:
                break  # some row is bad (e.g. unknown run): write the others one by one
            except DBAPIError as exc:
                if attempt == len(delays) or not exc.connection_invalidated and not _transient(exc):
                    break
                time.sleep(delays[attempt])
        if len(rows) == 1:
            try:
                with self._write() as conn:
                    self._insert_calls(conn, rows, keys)
            except Exception as exc:
                self._write_failed(1, exc, rows[0])
            return
        for row, key in zip(rows, keys):
            try:
                with self._write() as conn:
                    self._insert_calls(conn, [row], [key])
            except Exception as exc:
                self._write_failed(1, exc, row)

    def _insert_calls(self, conn: Connection, rows: list[dict[str, Any]], keys: list[str | None]) -> None:
        """Insert call rows and, in the same transaction, remove the in-flight marks they close
        and add them to ``call_rollup``, so the rollup always sums exactly the calls that are there.
        Every insert into ``calls`` goes through here."""
        conn.execute(insert(_CALLS), rows)
        if closed := [k for k in keys if k]:
            conn.execute(delete(_OPEN).where(_OPEN.c.key.in_(closed)))
        workflows = {r["flow_run_id"]: self._workflows.get(r["flow_run_id"]) for r in rows}
        if unknown := sorted(run_id for run_id, name in workflows.items() if name is None):
            found = dict(conn.execute(select(_RUNS.c.flow_run_id, _RUNS.c.workflow)
                                      .where(_RUNS.c.flow_run_id.in_(unknown))).all())
            workflows.update(found)
            self._workflows.update(found)  # a run's workflow never changes
        sums: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
        for r in rows:
            key = (aware(r["created"]).strftime("%Y-%m-%d"), workflows.get(r["flow_run_id"]) or "", r["step"],
                   r["model"], r["agent"] or "")
            acc = sums.setdefault(key, dict.fromkeys(_ROLLUP_SUMS, 0))
            ok = r["status"] == "ok"  # an error, or an interrupted attempt, is a failure
            unpriced = not r["priced"] and not r["cached"] and ok
            acc["calls"] += 1
            acc["cache_hits"] += int(r["cached"])
            acc["errors"] += int(not ok)
            for k in ("input_tokens", "output_tokens", "cached_tokens", "cost_usd"):
                acc[k] += r[k]
            acc["error_cost_usd"] += 0.0 if ok else r["cost_usd"]
            if not r["cached"] and ok:
                acc["ok_calls"] += 1
                acc["ok_latency_ms"] += r["latency_ms"]
            if unpriced:
                acc["unpriced_calls"] += 1
                acc["unpriced_input_tokens"] += r["input_tokens"]
                acc["unpriced_output_tokens"] += r["output_tokens"]
        values = [dict(zip(_ROLLUP_KEYS, key), **acc) for key, acc in sums.items()]
        conn.execute(_rollup_upsert(self.engine.dialect), values)

    @staticmethod
    def _open_row(call: CallRecord) -> dict[str, Any]:
        return {"key": call.key, "flow_run_id": call.flow_run_id, "step": call.step, "agent": call.agent,
                "provider": call.provider, "model": call.model, "attempt": int(call.attempt),
                "purpose": call.purpose, "kind": call.kind, "image": call.image, "priced": bool(call.priced),
                "created": aware(call.created)}

    def _write_opens(self, rows: list[dict[str, Any]], drops: set[str]) -> None:
        if drops:
            with self._write() as conn:
                conn.execute(delete(_OPEN).where(_OPEN.c.key.in_(sorted(drops))))
        self._insert_each(_OPEN, rows)

    def _insert_each(self, table: Any, rows: list[dict[str, Any]]) -> None:
        """Rows into ``table`` in one transaction, else one by one (e.g. one of an unknown run)."""
        if not rows:
            return
        try:
            with self._write() as conn:
                conn.execute(insert(table), rows)
            return
        except Exception:
            pass
        for row in rows:
            try:
                with self._write() as conn:
                    conn.execute(insert(table), [row])
            except Exception as exc:
                self._write_failed(1, exc, row)

    def _close_open(self, conn: Connection, flow_run_id: str, why: str) -> int:
        """The run's in-flight marks become ``interrupted`` calls (``CallRecord.interrupted``)."""
        marks = conn.execute(select(_OPEN).where(_OPEN.c.flow_run_id == flow_run_id)).mappings().all()
        if not marks:
            return 0
        now = datetime.now(UTC)
        calls = [CallRecord(**{k: m[k] for k in ("flow_run_id", "step", "agent", "provider", "model", "attempt",
                                                 "purpose", "kind", "image", "priced", "key")},
                            created=aware(m["created"]), status="interrupted").interrupted(ended=now, why=why)
                 for m in marks]
        self._insert_calls(conn, [self._row(c, c.created) for c in calls], [c.key for c in calls])
        return len(calls)

    @staticmethod
    def _tool_row(call: ToolCallRecord) -> dict[str, Any]:
        arguments = json.loads(json.dumps(redact_data(call.arguments), default=str))
        shown = json.dumps(arguments, ensure_ascii=False)
        if len(shown) > MAX_ARGUMENT_CHARS:  # keep the row small: the start of the text, marked
            arguments = {"_truncated": shown[:MAX_ARGUMENT_CHARS], "_chars": len(shown)}
        return {
            "flow_run_id": call.flow_run_id,
            "step": call.step,
            "attempt": int(call.attempt),
            "agent": call.agent,
            "server": call.server,
            "tool": call.tool,
            "call_id": call.call_id,
            "arguments": arguments,
            "outcome": call.outcome,
            "duration_s": _finite(call.duration_s),
            "error": _clean_error(call.error),
            "created": aware(call.created),
        }

    def _write_tool_rows(self, rows: list[dict[str, Any]]) -> None:
        self._insert_each(_TOOL_CALLS, rows)

    @staticmethod
    def _merge_steps(steps: list[StepState]) -> tuple[dict[tuple[str, str], dict[str, Any]],
                                                      dict[tuple[str, str], StepState]]:
        """Step states in order, one set of values per step: a later state of a step replaces
        an earlier one; ``started`` is its first RUNNING, ``ended`` its final state."""
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        created: dict[tuple[str, str], StepState] = {}
        for st in steps:
            key = (st.flow_run_id, st.step)
            created.setdefault(key, st)
            values = merged.setdefault(key, {})
            values.update(state=st.state, kind=st.kind, updated=aware(st.at), error=_clean_error(st.error))
            values.update({f: getattr(st, f) for f in ("agent", "model", "items") if getattr(st, f) is not None})
            if st.prompt is not None:
                values["prompt"] = _clip_text(st.prompt)
            if st.output is not None:
                values["output"] = _clip_json(st.output)
            if st.state == "RUNNING":
                values.setdefault("started", aware(st.at))
            if st.state in FINAL_STEP_STATES:
                values["ended"] = aware(st.at)
        return merged, created

    def _write_steps(self, merged: dict[tuple[str, str], dict[str, Any]],
                     created: dict[tuple[str, str], StepState]) -> None:
        if merged:
            with self._write() as conn:
                self._upsert_steps(conn, merged, created)

    @staticmethod
    def _upsert_steps(conn: Connection, merged: dict[tuple[str, str], dict[str, Any]],
                      created: dict[tuple[str, str], StepState]) -> None:
        for (run_id, step), given in merged.items():
            values = dict(given)
            started = values.pop("started", None)
            params = {f"v_{k}": v for k, v in values.items()}
            if started is not None:
                params["v_started"] = started
            done = conn.execute(_step_update(tuple(values), started is not None),
                                dict(params, k_run=run_id, k_step=step))
            if done.rowcount == 0:
                first = created[(run_id, step)]
                conn.execute(insert(_STEPS), dict(values, flow_run_id=run_id, step=step, position=first.position,
                                                  depends_on=list(first.depends_on), started=started))

    @staticmethod
    def _merge_beats(beats: list[_Beat]) -> dict[str, dict[str, Any]]:
        latest: dict[str, dict[str, Any]] = {}
        for b in beats:
            values = latest.setdefault(b.flow_run_id, {})
            values["heartbeat"] = b.at
            if b.pid is not None:
                values.update(pid=b.pid, host=b.host)
        return latest

    @staticmethod
    def _update_beats(conn: Connection, latest: dict[str, dict[str, Any]]) -> None:
        for run_id, values in latest.items():
            conn.execute(update(_RUNS).where(_RUNS.c.flow_run_id == run_id, _RUNS.c.state == "RUNNING")
                         .values(**values))

    def _write_failed(self, n: int, exc: BaseException, row: Mapping[str, Any] | None = None) -> None:
        self.write_errors += n
        message = redact(f"{type(exc).__name__}: {exc}".splitlines()[0])
        self.last_write_error = message
        where = f" (run {row['flow_run_id']!r}, step {row['step']!r})" if row else ""
        log.warning("orchestra store: could not record %d call(s)%s: %s", n, where, message)

    # ------------------------------------------------------------ queries

    def _sync_reads(self) -> None:
        # Reads in this process see this process's queued calls.
        if self._writer is not None:
            self.flush()

    @contextlib.contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read connection after this process's queued calls are written (ledger.queries)."""
        self._sync_reads()
        with self._connect() as conn:
            yield conn


def _transient(exc: DBAPIError) -> bool:
    text_ = str(exc.orig).lower()
    return any(s in text_ for s in ("locked", "busy", "connection", "timeout", "terminat"))


# --------------------------------------------------------------------------- registry

_STORES: weakref.WeakSet[Store] = weakref.WeakSet()
_BY_URL: dict[str, Store] = {}
_BY_URL_LOCK = threading.Lock()


def get_store(url: str | URL | None = None) -> Store:
    """The process-wide Store of ``url`` (default: ``$ORCHESTRA_DB_URL`` or the
    SQLite store in ``$ORCHESTRA_HOME``), created on first use."""
    key = resolve_url(url).render_as_string(hide_password=False)
    store = _BY_URL.get(key)
    if store is not None:
        return store
    with _BY_URL_LOCK:
        store = _BY_URL.get(key)
        if store is None:
            store = _BY_URL[key] = Store(key)
        return store


def _flush_all_at_exit() -> None:
    for store in list(_STORES):
        try:
            if store._writer is not None:
                store.close(timeout=10.0)
        except Exception:  # pragma: no cover - never fail the interpreter's exit
            log.exception("orchestra store: flush at exit failed")


def _after_fork_in_child() -> None:
    # The writer thread does not exist in a forked child, and pooled connections
    # belong to the parent: start afresh (calls queued in the parent stay its own).
    global _BY_URL_LOCK
    _BY_URL_LOCK = threading.Lock()
    for store in list(_STORES):
        store._reset_writer()
        store._migrate_lock = threading.Lock()
        if store._dblock is not None:
            store._dblock = threading.RLock()
        store.engine.dispose(close=False)


atexit.register(_flush_all_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
