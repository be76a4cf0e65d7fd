"""The engine: a Workflow run as one Prefect flow run, each step attempt a task run.

Call :func:`execute` inside a Prefect flow (the app layer's ``run_workflow``). Each
step starts the moment its last upstream step completes, on the flow's own event
loop, so independent steps run concurrently and share one HTTP client per provider.
The step's kind (``flows.steps``) renders it and runs each attempt; the engine owns
the DAG and what Prefect supplies: the retries (exponential backoff with jitter,
transient errors only), the per-step timeout, the result cache (keyed by what the
kind says decides the answer) and its persistence, task-run states and edges in the
UI (exactly the ``depends_on`` edges: upstream results are passed to each task run),
the ``<workflow>-cost`` artifact and the ``orchestra.run.finished`` event. It reads the
run's map of MCP servers when the run starts (the FastAgentSettings block included) and
closes the run's MCP sessions when it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from datetime import datetime, timezone
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Failed, State
from prefect.tasks import exponential_backoff

from core.calls import CallRecord, counts_as_attempt
from core.settings import settings
from flows import resilience, steps, supervision, templates
from flows import tools as run_tools
from flows.context import RunState, current_run, reset_run, set_run
from flows.errors import StepError
from flows.results import result_files
from flows.spec import Workflow
from flows.steps.approval import no_server_problem
from flows.steps.base import StepContext, StepReport, StepResult

__all__ = ["execute", "final_report"]


# ---------------------------------------------------------------------------
# the report of a run, for callers in this process

# The flow returns its report as its result, but does not persist it: when Prefect
# adopts the server's copy of the final state (it can under load), that copy carries
# no data. The report is kept here too, by flow-run id, until a caller reads it.
_reports: dict[str, dict] = {}


async def final_report(state: State) -> Any:
    """The report (or the exception) of a finished flow run that called :func:`execute` here."""
    from prefect.exceptions import MissingResult

    kept = _reports.pop(str(state.state_details.flow_run_id), None)
    try:
        return await state.result(raise_on_failure=False)
    except MissingResult:
        if kept is None:
            raise
        return kept


# ---------------------------------------------------------------------------
# one attempt of a step: a Prefect task run


async def _is_transient(task, task_run, state: State) -> bool:
    """Prefect's retry condition: retry 429, 5xx, timeouts and connection errors only."""
    exc = await state.result(raise_on_failure=False)
    if isinstance(exc, StepError):
        return exc.transient
    return isinstance(exc, (TimeoutError, asyncio.TimeoutError))


def _cache_key(context, parameters: dict[str, Any]) -> str:
    return steps.kind(parameters["kind"]).cache_key(parameters["params"])


def _attempt_number() -> int:
    return getattr(get_run_context().task_run, "run_count", 1) or 1


async def _attempt(label: str, kind: str, params: dict[str, Any], upstream: list[Any] | None = None) -> StepResult:
    """One attempt of a step, by its kind.

    ``upstream`` holds the results of the upstream task runs, unread: Prefect links a
    parameter to the task run that returned it, which draws the DAG's edges in the UI
    (cheaper than ``wait_for``, which resolves every upstream state on another thread)."""
    return await steps.kind(kind).attempt(params, _attempt_number())


# One step attempt, as Prefect sees it: a task run named after the step. The cached variant
# keys its persisted result on what decides the answer; `--no-cache` uses the other.
step_task = task(_attempt, name="step", task_run_name="{label}", persist_result=True,
                 cache_key_fn=_cache_key, retry_condition_fn=_is_transient)
uncached_step_task = task(_attempt, name="step", task_run_name="{label}", persist_result=False,
                          cache_policy=NO_CACHE, retry_condition_fn=_is_transient)


def _task_variant(retries: int, timeout: float | None, no_cache: bool, delay: float):
    """The step task with a step's options; the cached variant keeps its results in
    :class:`flows.results.ResultFiles` under Prefect's local storage path."""
    storage = None if no_cache else str(get_current_settings().results.local_storage_path)
    return _variant(retries, timeout, no_cache, delay, storage)


@functools.lru_cache(maxsize=256)
def _variant(retries: int, timeout: float | None, no_cache: bool, delay: float, storage: str | None):
    """`with_options` builds a new Task (and reads the function's source): done once per
    distinct option set, not once per step."""
    variant = (uncached_step_task if no_cache else step_task).with_options(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=delay)(retries) if retries else 0,
        retry_jitter_factor=0.5,
        timeout_seconds=timeout,
    )
    if storage is not None:
        # Set after the Task is built: its constructor takes only a saved block (for task
        # workers, which load it from the server); these task runs run here, and Prefect's
        # own default storage is as unsaved a LocalFileSystem as this one.
        variant.result_storage = result_files(storage)
    return variant


# ---------------------------------------------------------------------------
# the flow run's body


class _NoCompletedLines:
    """Drops Prefect's "Finished in state Completed()" INFO line of each task run: the task
    run's state already says it, and shipping it costs the server a log row per step.
    Failures (logged at ERROR), retries and everything a step itself logs still go."""

    def filter(self, record: Any) -> bool:
        return not (record.levelno == logging.INFO and isinstance(record.msg, str)
                    and record.msg.startswith(("Finished in state Completed", "Finished in state Cached")))


def _ship_completed_lines(ship: bool) -> None:
    """Install (or, with ``ORCHESTRA_COMPLETED_TASK_LOGS``, remove) the filter; once per run."""
    logger = logging.getLogger("prefect.task_runs")
    mine = [f for f in logger.filters if isinstance(f, _NoCompletedLines)]
    if ship:
        for f in mine:
            logger.removeFilter(f)
    elif not mine:
        logger.addFilter(_NoCompletedLines())


class _NoStepTracebacks:
    """Prefect logs a task run that failed for good with ``exc_info``: the traceback of a
    step's StepError, or "NoneType: None" for a task that returned a Failed state. The
    message already names the step and what failed; the traceback only reached the
    terminal, the API's logs and the UI as noise. Dropped unless ``ORCHESTRA_DEBUG``; any
    other exception (a defect) keeps its traceback."""

    def filter(self, record: Any) -> bool:
        if record.exc_info and not settings().debug:
            exc = record.exc_info[1]
            if exc is None or isinstance(exc, StepError):
                record.exc_info = record.exc_text = None
        return True


def quiet_step_failures() -> None:
    """Install :class:`_NoStepTracebacks` on Prefect's task-run logger (idempotent)."""
    logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _NoStepTracebacks) for f in logger.filters):
        logger.addFilter(_NoStepTracebacks())


async def execute(wf: Workflow, inputs: dict[str, Any], *, ledger: Any = None, model: str | None = None,
                  no_cache: bool = False, budget_usd: float | None = None) -> dict[str, Any] | State:
    """Run ``wf`` inside the current Prefect flow run; its report (or a Failed state
    carrying it). ``ledger`` satisfies ``flows.ports.Ledger`` (None: record nothing)."""
    ctx = get_run_context()
    flow_run_id = str(ctx.flow_run.id)
    logger = get_run_logger()
    _ship_completed_lines(settings().completed_task_logs)
    quiet_step_failures()
    try:  # checked before anything is written: approval steps need a server; a budget must be >= 0;
        # the FastAgentSettings block the settings name must be readable (its MCP servers join the map)
        if problem := no_server_problem(wf):
            raise ValueError(problem)
        servers = await run_tools.run_map(wf)
        guard = await resilience.begin_run(wf, ledger, budget_usd=budget_usd, model_override=model)
    except (ValueError, RuntimeError) as exc:
        logger.error(str(exc))
        return Failed(message=str(exc))
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    run = RunState(flow_run_id=flow_run_id, workflow=wf.name, ledger=ledger, model_override=model,
                   servers=servers, mcp=run_tools.pool(servers))
    if ledger is not None:
        ledger.start_run(flow_run_id=flow_run_id, workflow=wf.name, inputs=inputs, started=started,
                         model_override=model, workflow_ref=resilience.workflow_ref(wf), budget_usd=budget_usd,
                         metadata=wf.metadata or None)
    token = set_run(run)
    reports = {s.id: StepReport(kind=s.kind) for s in wf.steps}
    run.kinds = {s.id: s.kind for s in wf.steps}
    deps = wf.dependencies()
    for position, s in enumerate(wf.steps):  # the run's whole DAG, before anything runs
        run.step_changed(s.id, "PENDING", depends_on=tuple(deps[s.id]), position=position)
    cancelled: str | None = None
    try:
        async with supervision.watch(flow_run_id, ledger) as control:
            control.task = asyncio.ensure_future(_run_steps(wf, inputs, model, no_cache, reports))
            try:
                await control.task
            except asyncio.CancelledError:
                if control.reason is None:  # the flow run itself is being torn down: not ours to report
                    raise
            cancelled = control.reason
        if cancelled:
            for sid, r in reports.items():
                if r.state in ("PENDING", "RUNNING", "PAUSED"):
                    r.state, r.error = "CANCELLED", f"step '{sid}': {cancelled}"
                    run.step_changed(sid, "CANCELLED", error=r.error)
            await _cancel_task_runs(flow_run_id)
    finally:
        try:
            await run.mcp.aclose()  # the run's MCP sessions (stdio servers end)
            await run.resources.aclose()  # what the steps shared: a Dagger connection
        finally:
            reset_run(token)
            resilience.finish_run(guard, ledger, flow_run_id, wf, reports)  # dead letters
    failed = [sid for sid, r in reports.items() if r.state == "FAILED"]
    state = "CANCELLED" if cancelled else "FAILED" if failed else "COMPLETED"
    report = {
        "workflow": wf.name,
        "flow_run_id": flow_run_id,
        "state": state,
        "duration_s": round(time.perf_counter() - t0, 3),
        "cost_usd": round(sum(c.cost_usd for c in run.calls), 10),
        "input_tokens": sum(c.input_tokens for c in run.calls),
        "output_tokens": sum(c.output_tokens for c in run.calls),
        "steps": {sid: r.as_dict() for sid, r in reports.items()},
    }
    if wf.metadata:
        report["metadata"] = wf.metadata
    error = cancelled or "; ".join(reports[sid].error or sid for sid in failed) or None
    if ledger is not None:
        ledger.finish_run(flow_run_id=flow_run_id, state=state, ended=datetime.now(timezone.utc), error=error)
    emit_event(
        event="orchestra.run.finished",
        # Prefect's triggers compare labels as strings: a fixed-width cost label lets an
        # automation match "cost above a threshold" (deployments/automations/cost-alert.yaml).
        resource={"prefect.resource.id": f"orchestra.workflow.{wf.name}", "prefect.resource.name": wf.name,
                  "orchestra.cost-usd": f"{max(report['cost_usd'], 0.0):013.6f}"},
        payload={k: report[k] for k in ("state", "duration_s", "cost_usd", "input_tokens", "output_tokens")}
        | {"steps": len(reports), "failed_steps": failed, "calls": sum(not c.cached for c in run.calls)},
    )
    await _cost_artifact(wf, report)
    _reports[flow_run_id] = report
    if cancelled:
        logger.warning("%s cancelled: %s", wf.name, cancelled)
        return Cancelled(message=cancelled, data=report)
    if failed:
        logger.error("%s failed: %s", wf.name, error)
        return Failed(message=f"{len(failed)} step(s) failed: {error}", data=report)
    logger.info("%s completed: %d steps, $%.6f", wf.name, len(reports), report["cost_usd"])
    return report


async def _run_steps(wf: Workflow, inputs: dict, model_override: str | None, no_cache: bool,
                     reports: dict[str, StepReport]) -> None:
    deps = wf.dependencies()
    done: dict[str, asyncio.Future] = {s.id: asyncio.get_running_loop().create_future() for s in wf.steps}
    results: dict[str, list[StepResult]] = {}  # each step's task-run results, for the UI's edges
    outputs: dict[str, dict] = {}
    delay = settings().retry_delay
    run = current_run()

    async def run_step(step) -> None:
        report = reports[step.id]
        try:
            await asyncio.gather(*(done[d] for d in deps[step.id]))
            blocked = [d for d in deps[step.id] if reports[d].state in ("FAILED", "NOT_READY")]
            if blocked:
                report.state, report.error = "NOT_READY", f"upstream step '{blocked[0]}' did not complete"
                run.step_changed(step.id, report.state, error=report.error)
                return
            values = {"inputs": inputs, "steps": outputs}
            if wf.type == "sequential" and deps[step.id]:
                values["previous"] = outputs[deps[step.id][0]]
            if step.when is not None and not _truthy(templates.evaluate(step.when, values)):
                report.state = "SKIPPED"
                outputs[step.id] = {"output": None}
                run.step_changed(step.id, "SKIPPED")
                return
            kind = steps.kind(step.kind)
            t_start = time.perf_counter()
            if step.kind != "agent":  # an agent step is RUNNING once it knows its agent (below)
                run.step_changed(step.id, "RUNNING")
            prepared = await kind.prepare(step, StepContext(wf=wf, values=values, deps=deps[step.id], run=run,
                                                            model_override=model_override))
            report.agent, report.model = prepared.agent, prepared.model
            if prepared.done:  # finished in the flow itself (an approval)
                report.state, report.output = "COMPLETED", prepared.output
                report.duration_s = time.perf_counter() - t_start
                outputs[step.id] = {"output": report.output}
                run.step_changed(step.id, "COMPLETED", report.as_dict(), prompt=prepared.prompt, output=report.output)
                return
            step_fn = _task_variant(step.retries, prepared.timeout, no_cache, delay)
            upstream = [r for d in deps[step.id] for r in results.get(d, ())]
            run.step_changed(step.id, "RUNNING", {"agent": prepared.agent, "model": prepared.model, **prepared.info},
                             agent=prepared.agent, model=prepared.model, prompt=prepared.prompt,
                             items=len(prepared.runs) if step.for_each is not None else None)
            # max_concurrency: the step's own bound, in this flow run (a task run exists once its
            # item starts), inside the run's own (`max_task_runs`); provider limits still apply
            # inside each attempt
            bound = asyncio.Semaphore(step.max_concurrency) if step.max_concurrency else contextlib.nullcontext()

            async def one(label: str, params: dict) -> State:
                async with bound, run.task_runs:
                    await run.starting.turn()  # a few starts per pass of the loop (RunState.starting)
                    return await step_fn(label=label, kind=step.kind, params=params, upstream=upstream,
                                         return_state=True)

            states = await asyncio.gather(*(one(label, params) for label, params in prepared.runs))
            report.duration_s = time.perf_counter() - t_start
            results[step.id] = await _collect(step, kind, list(states), report, outputs, run, prepared.tools)
        except (StepError, templates.TemplateError) as exc:
            report.state = "FAILED"
            report.error = str(exc) if isinstance(exc, StepError) else f"step '{step.id}': {exc}"
            run.step_changed(step.id, "FAILED", {"error": report.error}, error=report.error)
        finally:
            if not done[step.id].done():
                done[step.id].set_result(None)

    await asyncio.gather(*(run_step(s) for s in wf.steps))


async def _collect(step, kind, states: list[State], report: StepReport, outputs: dict,
                   run: RunState, uses_tools: bool = False) -> list[StepResult]:
    """Fold a step's task-run states into its report; returns the completed results."""
    completed: list[StepResult] = []
    errors = []
    all_cached = True
    for st in states:
        value = await st.result(raise_on_failure=False)
        if st.is_completed() and isinstance(value, StepResult):
            cached = st.name == "Cached"
            all_cached &= cached
            report.agent, report.model = value.agent or report.agent, value.model or report.model
            if cached:  # a cache hit costs nothing: a row, so the ledger shows the step was served
                run.record(CallRecord.cache_hit(flow_run_id=run.flow_run_id, step=step.id, model=value.model or "",
                                                agent=value.agent, priced=value.priced, kind=step.kind,
                                                image=value.extra.get("image")))
            completed.append(value)
        else:
            errors.append(str(value) if isinstance(value, BaseException) else (st.message or st.name))
            if isinstance(value, StepError):  # what the report keeps of a failed attempt (an exit code)
                report.extra.update(value.details)
    rows = [c for c in run.calls if c.step == step.id]  # every attempt, failed ones included (they cost 0)
    report.attempts = sum(counts_as_attempt(cached=c.cached, purpose=c.purpose) for c in rows)
    report.input_tokens = sum(c.input_tokens for c in rows)
    report.output_tokens = sum(c.output_tokens for c in rows)
    report.cost_usd = sum(c.cost_usd for c in rows)
    report.cached = all_cached and not errors
    tool_calls = [t.report_entry() for t in run.tool_calls if t.step == step.id]  # this run's: a cache hit made none
    if uses_tools or tool_calls:
        report.extra["tool_calls"] = tool_calls
    kind.report(report, completed)
    if errors:
        report.state = "FAILED"
        report.error = errors[0]
        run.step_changed(step.id, "FAILED", {"error": report.error, **report.extra}, error=report.error,
                         agent=report.agent, model=report.model)
        return completed
    report.state = "COMPLETED"
    report.output = [r.output for r in completed] if step.for_each is not None else completed[0].output
    # what downstream templates read: steps.<id>.output, and the kind's own fields (exit_code, files)
    outputs[step.id] = {"output": report.output, **{k: report.extra[k] for k in kind.outputs if k in report.extra}}
    run.step_changed(step.id, "COMPLETED", report.as_dict(), agent=report.agent, model=report.model,
                     output=report.output)
    return completed


async def _cancel_task_runs(flow_run_id: str) -> None:
    """Task runs of a cancelled run that are not final (their coroutines were cancelled
    in flight) end CANCELLED in Prefect too. Best effort."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    try:
        async with get_client() as client:
            task_runs = await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            for tr in task_runs:
                if tr.state is not None and not tr.state.is_final():
                    await client.set_task_run_state(tr.id, Cancelled(message="the run was cancelled"), force=True)
    except Exception as exc:
        get_run_logger().debug("could not mark the task runs cancelled: %s", exc)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "off")
    return bool(value)


async def _cost_artifact(wf: Workflow, report: dict) -> None:
    rows = [
        {"step": sid, "kind": s["kind"], "state": s["state"], "agent": s["agent"] or "", "model": s["model"] or "",
         "image": s.get("image") or "", "exit_code": "" if s.get("exit_code") is None else str(s["exit_code"]),
         "attempts": s["attempts"], "cached": s["cached"], "input_tokens": s["input_tokens"],
         "output_tokens": s["output_tokens"], "cost_usd": s["cost_usd"], "duration_s": s["duration_s"],
         "tool_calls": len(s.get("tool_calls") or ())}
        for sid, s in report["steps"].items()
    ]
    rows.append({"step": "TOTAL", "kind": "", "state": report["state"], "agent": "", "model": "", "image": "",
                 "exit_code": "", "attempts":
                 sum(r["attempts"] for r in rows), "cached": False, "input_tokens": report["input_tokens"],
                 "output_tokens": report["output_tokens"], "cost_usd": report["cost_usd"],
                 "duration_s": report["duration_s"], "tool_calls": sum(r["tool_calls"] for r in rows)})
    await acreate_table_artifact(
        table=rows,
        key=f"{wf.name}-cost",
        description=f"Tokens and cost per step of `{wf.name}` (container and command steps: image, exit code, "
                    f"duration, cost 0): ${report['cost_usd']:.6f} in total.",
    )
