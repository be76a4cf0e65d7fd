"""The state of one run, shared by its steps (a context variable of the flow's loop).

``RunState.record`` is the one way a call reaches the ledger: the row goes to the
run's own list (for its report), to the ledger it was given, and, for a provider
attempt, out as an ``orchestra.agent.call`` Prefect event. ``RunState.record_tool_call``
is the same for a tool call (``core.calls.ToolCallRecord``): the run's list, the
ledger's ``tool_calls``, an ``orchestra.tool.call`` event and a line in the step's
Prefect log. ``RunState.step_changed`` is the one way a step's state is told: to this
process's listeners (the CLI's live table) and to the ledger (``core.steps.StepState``).
What the run's steps share is closed by the engine when the run ends:
``RunState.resources`` (``flows.resources.RunResources``: a Dagger connection) and
``RunState.mcp`` (``agents.mcp.MCPPool``: its MCP sessions).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from core.calls import CallRecord, ToolCallRecord
from core.settings import settings
from core.steps import StepState
from flows import progress
from flows.resources import RunResources

MARK_WAIT_S = 2.0  # the longest an attempt waits for its in-flight mark to be committed
STARTING = 32  # a run's step task runs that start in one pass of the event loop (StartPacer)

__all__ = ["RunState", "current_run", "set_run", "reset_run"]


@dataclass
class RunState:
    flow_run_id: str
    workflow: str
    ledger: Any  # flows.ports.Ledger, or None
    model_override: str | None = None
    calls: list[CallRecord] = field(default_factory=list)
    registry: dict[str, Any] | None = None
    kinds: dict[str, str] = field(default_factory=dict)  # step id -> kind
    resources: RunResources = field(default_factory=RunResources)  # closed by the engine when the run ends
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    servers: dict[str, Any] | None = None  # the run's map of MCP servers (flows.tools.ServerEntry by name)
    mcp: Any = None  # agents.mcp.MCPPool: the run's MCP sessions
    # at most `max_task_runs` step task runs of this run at once: thousands started together
    # keep the loop too busy to serve its own connections (their connect timeouts fire)
    task_runs: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(settings().max_task_runs))
    # at most STARTING of them start per pass of the event loop (StartPacer)
    starting: StartPacer = field(default_factory=lambda: StartPacer(STARTING))

    def step_changed(self, step: str, state: str, info: dict[str, Any] | None = None, **fields: Any) -> None:
        """A step's new state: the listeners hear it, the ledger keeps it (``fields``:
        agent, model, items, error, depends_on, position)."""
        progress.notify(step, state, info or {})
        if self.ledger is not None:
            self.ledger.record_step(StepState(flow_run_id=self.flow_run_id, step=step, state=state,
                                              kind=self.kinds.get(step, "agent"), **fields))

    async def attempt_started(self, *, step: str, model: str, agent: str | None, attempt: int,
                              purpose: str = "call", kind: str = "agent", image: str | None = None) -> str:
        """An attempt starts now: the ledger keeps its mark until the row with the returned
        key (``CallRecord.*(key=...)``) closes it, so a process that dies while the request
        is out leaves an ``interrupted`` row for it. Returns once the mark is committed (at
        most ``MARK_WAIT_S``: a slow ledger delays no call for longer). The key."""
        mark = CallRecord.in_flight(flow_run_id=self.flow_run_id, step=step, model=model, agent=agent,
                                    attempt=attempt, purpose=purpose, kind=kind, image=image)  # type: ignore[arg-type]
        if self.ledger is not None:
            # woken on this loop by the ledger's writer thread: no thread of our own per attempt
            loop = asyncio.get_running_loop()
            committed = loop.create_future()
            self.ledger.record_call_start(mark, _Wake(loop, committed))
            timer = loop.call_later(MARK_WAIT_S, _resolve, committed)
            try:
                await committed
            finally:
                timer.cancel()
        return mark.key or ""

    def attempt_dropped(self, key: str) -> None:
        """The attempt of ``key`` sent no request after all: its mark goes, no row is written."""
        if self.ledger is not None:
            self.ledger.drop_call_start(key)

    def record(self, call: CallRecord) -> None:
        self.calls.append(call)
        if self.ledger is not None:
            self.ledger.record_call(call)
        if not call.cached and settings().call_events:
            _emit_call_event(self.workflow, call)

    def record_tool_call(self, call: ToolCallRecord) -> None:
        self.tool_calls.append(call)
        if self.ledger is not None:
            self.ledger.record_tool_call(call)
        _emit_tool_event(self.workflow, call)
        _log_tool_call(call)

    def agents(self) -> dict[str, Any]:
        """agents/*.yaml, loaded once per run."""
        if self.registry is None:
            from agents.registry import load_registry

            self.registry = load_registry()
        return self.registry


class StartPacer:
    """At most ``per_pass`` callers of :meth:`turn` go on in one pass of the event loop;
    the others wait, first come first served, for the next passes.

    Prefect's start of a task run (the run, its Pending and Running states and their
    events, the cache lookup: 3-5 ms of CPU) does not yield to the loop, nor does a step's
    body until its first request is out. A fan-out's items admitted together would all do
    that in one pass, and for that pass the loop reads no socket: with a thousand items,
    3.5-10 s (bench/README.md), long enough for connects made just before it to time out,
    five in a row to open the provider's breaker and the whole fan-out to fail."""

    __slots__ = ("per_pass", "_used", "_waiting", "_next_pass_due")

    def __init__(self, per_pass: int):
        self.per_pass = per_pass
        self._used = 0  # turns given in this pass
        self._waiting: deque[asyncio.Future] = deque()
        self._next_pass_due = False

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._next_pass_due:  # the count starts again in the next pass
            self._next_pass_due = True
            loop.call_soon(self._next_pass, loop)
        if self._used < self.per_pass and not self._waiting:
            self._used += 1
            return
        waiter = loop.create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):  # not there any more if its turn was already given
                self._waiting.remove(waiter)
            raise

    def _next_pass(self, loop: asyncio.AbstractEventLoop) -> None:
        self._used = 0
        while self._waiting and self._used < self.per_pass:  # they go on in the pass after this one
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._used += 1
        self._next_pass_due = bool(self._waiting)
        if self._next_pass_due:
            loop.call_soon(self._next_pass, loop)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class _Wake:
    """``set()`` from any thread resolves ``future`` on its loop (a closed loop: nothing)."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future):
        self.loop, self.future = loop, future

    def set(self) -> None:
        try:
            self.loop.call_soon_threadsafe(_resolve, self.future)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass


def _emit_call_event(workflow: str, call: CallRecord) -> None:
    """``orchestra.agent.call`` for every provider attempt, ``orchestra.container.exec`` /
    ``orchestra.command.exec`` for a container's or command's (resource: the step);
    Prefect relates it to the task run."""
    from prefect.events import emit_event

    if call.kind == "agent":
        event, name = "orchestra.agent.call", call.agent or "default"
        resource = {"prefect.resource.id": f"orchestra.agent.{name}", "prefect.resource.name": name}
    else:
        event = f"orchestra.{call.kind}.exec"
        resource = {"prefect.resource.id": f"orchestra.step.{workflow}.{call.step}",
                    "prefect.resource.name": call.step}
    emit_event(
        event=event,
        resource=resource,
        related=[{"prefect.resource.id": f"orchestra.workflow.{workflow}", "prefect.resource.role": "workflow",
                  "prefect.resource.name": workflow}],
        payload=call.event_payload(),
    )


def _emit_tool_event(workflow: str, call: ToolCallRecord) -> None:
    """``orchestra.tool.call`` for every tool call (related to the task run it was made in)."""
    from prefect.events import emit_event

    agent = call.agent or "default"
    emit_event(
        event="orchestra.tool.call",
        resource={"prefect.resource.id": f"orchestra.tool.{call.server}.{call.tool}",
                  "prefect.resource.name": f"{call.server}.{call.tool}"},
        related=[{"prefect.resource.id": f"orchestra.workflow.{workflow}", "prefect.resource.role": "workflow",
                  "prefect.resource.name": workflow},
                 {"prefect.resource.id": f"orchestra.agent.{agent}", "prefect.resource.role": "agent",
                  "prefect.resource.name": agent}],
        payload=call.event_payload(),
    )


def _log_tool_call(call: ToolCallRecord) -> None:
    """One line in the step's Prefect log (the task run's logger), never the arguments."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        logger: Any = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger("orchestra.tools")
    payload = call.event_payload()
    if call.ok:
        logger.info("tool %s.%s: ok in %.3f s (attempt %d)", call.server, call.tool, call.duration_s, call.attempt)
    else:
        logger.warning("tool %s.%s: %s in %.3f s (attempt %d): %s", call.server, call.tool, call.outcome,
                       call.duration_s, call.attempt, payload["error"])


_current: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("orchestra_run", default=None)


def current_run() -> RunState | None:
    return _current.get()


def set_run(run: RunState) -> contextvars.Token:
    return _current.set(run)


def reset_run(token: contextvars.Token) -> None:
    _current.reset(token)
