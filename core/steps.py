"""One row of the ledger's ``steps`` table: a step of a run and its state, as Prefect names it.

The engine writes every step of a run when the run starts (``PENDING``, with its
upstream steps, so a run's DAG is known before it finishes, steps that never run
included) and again at each change, with what it was asked (``prompt``, rendered)
and what it answered (``output``): ``RUNNING``, ``PAUSED``, then one of
``COMPLETED``, ``FAILED``, ``SKIPPED`` (a false ``when:``), ``NOT_READY`` (below a
failed step), ``CANCELLED`` (the run was cancelled before it finished) or ``CRASHED``
(its process died: the reaper's doing). Later writes of a step replace earlier ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["StepState", "STEP_STATES", "FINAL_STEP_STATES"]

STEP_STATES = ("PENDING", "RUNNING", "PAUSED", "COMPLETED", "FAILED", "SKIPPED", "NOT_READY", "CANCELLED",
               "CRASHED")
FINAL_STEP_STATES = ("COMPLETED", "FAILED", "SKIPPED", "NOT_READY", "CANCELLED", "CRASHED")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True, slots=True)
class StepState:
    flow_run_id: str
    step: str
    state: str
    kind: str = "agent"
    depends_on: tuple[str, ...] = ()
    agent: str | None = None
    model: str | None = None
    items: int | None = None  # task runs of a for_each step
    error: str | None = None
    position: int = 0  # the step's place in the workflow
    prompt: str | None = None  # what the step was asked, rendered (a for_each step: every item's)
    output: Any = None  # its output, once COMPLETED
    at: datetime = field(default_factory=_now)  # when this state began

    def __post_init__(self) -> None:
        if self.state not in STEP_STATES:
            raise ValueError(f"StepState.state must be one of {STEP_STATES}, got {self.state!r}")
