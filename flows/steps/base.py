"""The step-kind protocol: what the engine asks of each kind of step.

The engine owns the DAG (waiting for upstream steps, ``when``, ``NOT_READY`` below
a failure), the Prefect task runs (retries on transient errors, timeouts, the cache
and its persistence), the ledger rows of cache hits, the report and the events. A
kind owns what is particular to it:

* ``validate(step, wf, registry)`` -> problems, each naming the step (``orchestra validate``);
* ``templates(step)`` -> the (field, template) pairs rendered with the step's context,
  so the validator checks their names; ``outputs``: the fields downstream templates may
  read (``steps.<id>.output``, ...);
* ``prepare(step, ctx)`` -> :class:`Prepared`: render, decide who runs it, one
  parameter set per task run (a ``for_each`` step has one per item); a kind that runs
  in the flow itself (an approval: a pause of the flow run) finishes here;
* ``cache_key(params)``: what decides the answer (the step cache);
* ``attempt(params, attempt)`` -> :class:`StepResult`: one try, inside its task run,
  recording its ledger rows through ``flows.context.current_run()``; raises
  ``flows.errors.StepError`` (``transient`` decides a retry);
* ``report(report, results)``: folds the results of its task runs into the step's report;
* ``warnings(step, wf)`` -> what ``orchestra validate`` says without failing (a container
  step and no engine configured).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from flows.context import RunState

__all__ = ["StepKind", "Prepared", "StepContext", "StepResult", "StepReport", "BaseKind", "parse_output"]


class StepResult:
    """What one task run of a step returns. A plain class on purpose: Prefect links a
    downstream task run to every object *inside* an upstream result (one level deep),
    so a dict holding the shared model or agent name would draw false edges in the UI;
    this object is linked as a whole, and only where it is passed on."""

    def __init__(self, output: Any, *, agent: str | None = None, model: str | None = None,
                 input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0, cost_usd: float = 0.0,
                 priced: bool = True, latency_ms: float = 0.0, extra: dict[str, Any] | None = None,
                 index: int | None = None):
        self.output = output
        self.agent = agent
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.cached_tokens = cached_tokens
        self.cost_usd = cost_usd
        self.priced = priced
        self.latency_ms = latency_ms
        self.extra = extra or {}  # kind-specific fields for the report (exit_code, files, ...)
        self.index = index  # the item of a for_each step this result is for (None: not a for_each step)

    def __repr__(self) -> str:
        return f"StepResult(agent={self.agent!r}, model={self.model!r}, cost_usd={self.cost_usd})"


@dataclass
class StepContext:
    """What ``prepare`` sees: the workflow, the template context and the run."""

    wf: Any
    values: dict[str, Any]  # inputs, steps (upstream outputs), previous
    deps: list[str]
    run: RunState | None
    model_override: str | None = None


@dataclass
class Prepared:
    """A prepared step: one ``(task-run name, parameters)`` per task run, or done already."""

    runs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    agent: str | None = None
    model: str | None = None
    timeout: float | None = None  # of one attempt (Prefect's task timeout)
    prompt: str | None = None  # what the step is asked, rendered, as a person reads it
    done: bool = False  # finished in the flow (no task run): ``output`` is the step's output
    output: Any = None
    info: dict[str, Any] = field(default_factory=dict)  # what the live table shows while it runs (image, ...)
    tools: bool = False  # it may call tools: its report lists its ``tool_calls``


@dataclass
class StepReport:
    """A step in the run's report (``orchestra run --json``)."""

    kind: str = "agent"
    state: str = "PENDING"
    agent: str | None = None
    model: str | None = None
    output: Any = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    attempts: int = 0
    cached: bool = False
    duration_s: float = 0.0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # kind-specific keys (exit_code, tool_calls, ...)

    def as_dict(self) -> dict[str, Any]:
        d = {
            "state": self.state, "kind": self.kind, "agent": self.agent, "model": self.model,
            "output": self.output, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 10), "attempts": self.attempts, "cached": self.cached,
            "duration_s": round(self.duration_s, 3),
        }
        d.update(self.extra)
        if self.error:
            d["error"] = self.error
        return d


class StepKind(Protocol):
    name: ClassVar[str]
    outputs: ClassVar[tuple[str, ...]]

    def validate(self, step: Any, wf: Any, registry: dict[str, Any]) -> list[str]: ...

    def templates(self, step: Any) -> list[tuple[str, str]]: ...

    async def prepare(self, step: Any, ctx: StepContext) -> Prepared: ...

    def cache_key(self, params: dict[str, Any]) -> str: ...

    async def attempt(self, params: dict[str, Any], attempt: int) -> StepResult: ...

    def report(self, report: StepReport, results: list[StepResult]) -> None: ...

    def warnings(self, step: Any, wf: Any) -> list[str]: ...


class BaseKind:
    """Defaults: no extra checks, outputs ``output``, the report's totals and output."""

    name: ClassVar[str] = "?"
    outputs: ClassVar[tuple[str, ...]] = ("output",)

    def validate(self, step: Any, wf: Any, registry: dict[str, Any]) -> list[str]:
        return []

    def templates(self, step: Any) -> list[tuple[str, str]]:
        return []

    def cache_key(self, params: dict[str, Any]) -> str:
        raise NotImplementedError(f"the {self.name} kind runs no task")

    async def attempt(self, params: dict[str, Any], attempt: int) -> StepResult:
        raise NotImplementedError(f"the {self.name} kind runs no task")

    def report(self, report: StepReport, results: list[StepResult]) -> None:
        """Nothing kind-specific by default (the engine sums tokens and cost)."""

    def warnings(self, step: Any, wf: Any) -> list[str]:
        return []


def parse_output(text: str, schema: dict) -> tuple[Any, str | None]:
    """``text`` as JSON matching ``schema``: (value, None), or (None, the problem)."""
    import json

    import jsonschema

    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[4:] if body.lower().startswith("json") else body
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    from referencing import Registry
    from referencing.exceptions import Unresolvable

    # an empty registry: only in-document references resolve, nothing is ever fetched
    validator = jsonschema.validators.validator_for(schema)(schema, registry=Registry())
    try:
        validator.validate(value)
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        return None, f"{exc.message}" + (f" at /{path}" if path else "")
    except Unresolvable as exc:
        return None, f"output_schema: unresolvable reference ({exc})"
    return value, None
