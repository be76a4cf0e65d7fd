"""The state of one run, shared by its steps (a context variable of the flow's loop).

``RunState.record`` is the one way a call reaches the ledger: the row goes to the
run's own list (for its report), to the ledger it was given, and, for a provider
attempt, out as an ``orchestra.agent.call`` Prefect event. ``RunState.step_changed``
is the one way a step's state is told: to this process's listeners (the CLI's live
table) and to the ledger (``core.steps.StepState``). ``RunState.resources``
(``flows.resources.RunResources``) holds what the run's steps share and the run
closes when it ends (a Dagger connection).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import Any

from core.calls import CallRecord
from core.steps import StepState
from flows import progress
from flows.resources import RunResources

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

    def step_changed(self, step: str, state: str, info: dict[str, Any] | None = None, **fields: Any) -> None:
        """A step's new state: the listeners hear it, the ledger keeps it (``fields``:
        agent, model, items, error, depends_on, position)."""
        progress.notify(step, state, info or {})
        if self.ledger is not None:
            self.ledger.record_step(StepState(flow_run_id=self.flow_run_id, step=step, state=state,
                                              kind=self.kinds.get(step, "agent"), **fields))

    def record(self, call: CallRecord) -> None:
        self.calls.append(call)
        if self.ledger is not None:
            self.ledger.record_call(call)
        if not call.cached:
            _emit_call_event(self.workflow, call)

    def agents(self) -> dict[str, Any]:
        """agents/*.yaml, loaded once per run."""
        if self.registry is None:
            from agents.registry import load_registry

            self.registry = load_registry()
        return self.registry


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


_current: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("orchestra_run", default=None)


def current_run() -> RunState | None:
    return _current.get()


def set_run(run: RunState) -> contextvars.Token:
    return _current.set(run)


def reset_run(token: contextvars.Token) -> None:
    _current.reset(token)
