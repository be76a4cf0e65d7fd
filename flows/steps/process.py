"""What container and command steps share: a process whose stdout is the step's output.

* ``run`` (an argv, each item a template) or ``script`` (a template, run by ``/bin/sh -c``)
  and ``env`` (values are templates), rendered with the step's context (``item`` /
  ``index`` in a ``for_each`` step);
* the output is stdout (text); with ``output_schema`` it is parsed as JSON and checked
  (no repair: nobody to ask);
* a non-zero exit fails the step with the exit code and the last 20 lines of stderr
  (the env's and secrets' values masked); ``allow_failure: true`` completes it;
* downstream templates read ``steps.<id>.exit_code`` (a list for ``for_each``), and
  a container's ``steps.<id>.files``;
* each attempt is one ledger row (``core.calls.CallRecord.from_process``: kind, image,
  duration, exit code, cost 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from core.calls import PROCESS_PROVIDERS, CallRecord
from core.redact import redact
from flows import templates
from flows.context import current_run
from flows.errors import StepError
from flows.steps.base import BaseKind, StepContext, StepReport, StepResult, parse_output
from flows.steps.sandbox import CommandResult, failure_message

__all__ = ["ProcessKind", "Rendered", "finish", "record", "masked"]

TAIL_LINES = 20
BACKSTOP_S = 30.0  # Prefect's task timeout is the step's timeout plus this: the kind enforces its own first


class Rendered(dict):
    """One task run's rendered process: ``argv`` (the script as ``/bin/sh -c``), ``env``,
    ``index`` (the for_each item, or None)."""


class ProcessKind(BaseKind):
    """The shared part of the container and command kinds (``field``: the step's field)."""

    field: str = "?"

    def spec(self, step: Any) -> Any:
        return getattr(step, self.field)

    def validate(self, step: Any, wf: Any, registry: dict[str, Any]) -> list[str]:
        if step.agent is not None:
            return [f"step '{step.id}': agent: not allowed on a {self.name} step (it runs a process, not an agent)"]
        return []

    def templates(self, step: Any) -> list[tuple[str, str]]:
        spec = self.spec(step)
        found = [(f"{self.field}.run[{i}]", arg) for i, arg in enumerate(spec.run or ())]
        if spec.script is not None:
            found.append((f"{self.field}.script", spec.script))
        found += [(f"{self.field}.env.{k}", v) for k, v in spec.env.items()]
        return found

    def render(self, step: Any, ctx: StepContext) -> list[tuple[str, Rendered]]:
        """One (task-run label, rendered process) per task run."""
        spec = self.spec(step)
        if step.for_each is not None:
            items = templates.evaluate(step.for_each, ctx.values)
            if not isinstance(items, (list, tuple)):
                raise StepError(f"step '{step.id}': for_each must give a list, got {type(items).__name__}")
            scopes = [(f"{step.id}[{i}]", {**ctx.values, "item": it, "index": i}) for i, it in enumerate(items)]
        else:
            scopes = [(step.id, ctx.values)]
        out = []
        for label, values in scopes:
            argv = ([templates.render(a, values) for a in spec.run] if spec.run is not None
                    else ["/bin/sh", "-c", templates.render(spec.script, values)])
            env = {k: templates.render(v, values) for k, v in spec.env.items()}
            out.append((label, Rendered(argv=argv, env=env, index=values.get("index") if step.for_each else None)))
        return out

    def timeout(self, step: Any) -> float | None:
        """Prefect's task timeout: a backstop behind the kind's own (``params["timeout"]``)."""
        return step.timeout + BACKSTOP_S if step.timeout else None

    def report(self, report: StepReport, results: list[StepResult]) -> None:
        if not results:
            return
        many = len(results) > 1 or results[0].index is not None
        for key in dict.fromkeys(k for r in results for k in r.extra):
            values = [r.extra.get(key) for r in results]
            report.extra[key] = values if many else values[0]


def masked(text: str, values: list[str]) -> str:
    """``text`` with the given values (env, secrets) and every known secret shape masked."""
    for value in sorted({v for v in values if isinstance(v, str) and len(v) >= 4}, key=len, reverse=True):
        text = text.replace(value, "***")
    return redact(text)


@dataclass(frozen=True, slots=True)
class Started:
    """When an attempt started, and the key of its in-flight mark in the ledger."""

    at: float
    key: str | None


async def begin(kind: str, params: dict[str, Any], attempt: int) -> Started:
    """An attempt of a container or command step starts: its in-flight mark (closed by
    :func:`record`)."""
    run = current_run()
    key = await run.attempt_started(step=params["step"], model=params.get("image") or PROCESS_PROVIDERS[kind], agent=None,
                              attempt=attempt, kind=kind, image=params.get("image")) if run is not None else None
    return Started(time.perf_counter(), key)


def record(kind: str, params: dict[str, Any], attempt: int, started: Started, *, exit_code: int | None = None,
           error: str | None = None) -> None:
    """The attempt's ledger row (which closes its in-flight mark)."""
    run = current_run()
    if run is not None:
        run.record(CallRecord.from_process(kind, flow_run_id=run.flow_run_id, step=params["step"], attempt=attempt,
                                           latency_ms=(time.perf_counter() - started.at) * 1000, exit_code=exit_code,
                                           image=params.get("image"), error=error, key=started.key))


def finish(kind: str, params: dict[str, Any], attempt: int, started: Started, result: CommandResult,
           secrets: list[str], extra: dict[str, Any]) -> StepResult:
    """The step's result from a finished process, or StepError (a non-zero exit the step
    does not allow, a timeout, stdout that does not match output_schema)."""
    step = params["step"]
    hidden = list(params["env"].values()) + secrets
    extra = {"exit_code": result.exit_code, **extra}
    if not result.ok and not (params["allow_failure"] and not result.timed_out):
        message = masked(failure_message(result, tail_lines=TAIL_LINES), hidden)
        record(kind, params, attempt, started, exit_code=result.exit_code, error=message)
        raise StepError(f"step '{step}': {message}", details=extra)
    output: Any = masked(result.stdout, secrets) if secrets else result.stdout
    if params.get("output_schema") is not None:
        output, problem = parse_output(output, params["output_schema"])
        if problem is not None:
            message = f"stdout does not match output_schema: {problem}"
            record(kind, params, attempt, started, exit_code=result.exit_code, error=message)
            raise StepError(f"step '{step}': {message}", details=extra)
    record(kind, params, attempt, started, exit_code=result.exit_code)
    return StepResult(output, latency_ms=(time.perf_counter() - started.at) * 1000, extra=extra,
                      index=params.get("index"))
