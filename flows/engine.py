"""Compile a Workflow onto Prefect and run it.

One Prefect flow run per workflow run, one Prefect task run per step (one per item
of a `for_each` step). Steps are async tasks awaited on the flow's own event loop:
each starts the moment its last upstream step completes, so independent steps run
concurrently and share one HTTP client per provider. Prefect supplies the retries
(exponential backoff with jitter, transient errors only), the per-step timeout,
the result cache (keyed by rendered prompt, agent config and model) and its
persistence, the task-run states in the UI and the cost artifact.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import get_run_context
from prefect.events import emit_event
from prefect.states import Failed, State
from prefect.tasks import exponential_backoff

from agents.base import AgentCallError, AgentConfig, AgentResult, default_model, parse_model
from flows import approval, resilience, templates
from flows.spec import RouteSpec, Step, Workflow, WorkflowError, coerce_inputs, load_workflow, parse_workflow

__all__ = ["run_workflow", "execute", "final_report", "resolve_workflow", "StepError", "add_listener",
           "remove_listener"]


class StepError(Exception):
    """A step attempt that failed; `transient` decides whether Prefect retries it."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# ---------------------------------------------------------------------------
# progress listeners (the CLI's live table)

Listener = Callable[[str, str, dict], None]
_listeners: list[Listener] = []


def add_listener(fn: Listener) -> None:
    _listeners.append(fn)


def remove_listener(fn: Listener) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def _notify(step_id: str, state: str, info: dict | None = None) -> None:
    for fn in list(_listeners):
        try:
            fn(step_id, state, info or {})
        except Exception:  # a broken listener must never break a run
            pass


# ---------------------------------------------------------------------------
# the report of a run, for callers in this process

# The flow returns its report as its result, but does not persist it: when Prefect
# adopts the server's copy of the final state (it can under load), that copy carries
# no data. The report is kept here too, by flow-run id, until a caller reads it.
_reports: dict[str, dict] = {}


async def final_report(state: State) -> Any:
    """The report (or the exception) of a finished `run_workflow` flow run of this process."""
    from prefect.exceptions import MissingResult

    kept = _reports.pop(str(state.state_details.flow_run_id), None)
    try:
        return await state.result(raise_on_failure=False)
    except MissingResult:
        if kept is None:
            raise
        return kept


# ---------------------------------------------------------------------------
# per-run state shared by the step tasks


@dataclass
class _Run:
    flow_run_id: str
    workflow: str
    store: Any
    calls: list[dict] = field(default_factory=list)

    def record(self, **row: Any) -> None:
        row.setdefault("created", datetime.now(timezone.utc))
        row["flow_run_id"] = self.flow_run_id
        self.calls.append(row)
        if self.store is not None:
            self.store.record_call(row)
        if not row["cached"]:
            _emit_call_event(self.workflow, row)


def _emit_call_event(workflow: str, row: dict) -> None:
    """`orchestra.agent.call` for every attempt (Prefect relates it to the task run)."""
    emit_event(
        event="orchestra.agent.call",
        resource={"prefect.resource.id": f"orchestra.agent.{row['agent']}", "prefect.resource.name": row["agent"]},
        related=[{"prefect.resource.id": f"orchestra.workflow.{workflow}", "prefect.resource.role": "workflow",
                  "prefect.resource.name": workflow}],
        payload={k: row[k] for k in ("step", "model", "provider", "attempt", "status", "input_tokens",
                                     "output_tokens", "cached_tokens", "cost_usd", "latency_ms")},
    )


_current_run: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("orchestra_run", default=None)


def _retry_delay() -> float:
    try:
        return max(0.0, float(os.environ.get("ORCHESTRA_RETRY_DELAY", "1")))
    except ValueError:
        return 1.0


async def _is_transient(task, task_run, state: State) -> bool:
    """Prefect's retry condition: retry 429, 5xx, timeouts and connection errors only."""
    exc = await state.result(raise_on_failure=False)
    if isinstance(exc, StepError):
        return exc.transient
    return isinstance(exc, (TimeoutError, asyncio.TimeoutError))


def _cache_key(context, parameters: dict[str, Any]) -> str:
    """Cache by what decides the answer: rendered prompt, agent config, model, schema."""
    material = {k: parameters[k] for k in ("prompt", "agent", "model", "output_schema")}
    digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
    return f"orchestra-step-{digest}"


@functools.lru_cache(maxsize=256)
def _step_task_variant(retries: int, timeout: float | None, no_cache: bool, delay: float):
    """The step task with a step's options. `with_options` builds a new Task (and reads
    the function's source): done once per distinct option set, not once per step."""
    options: dict[str, Any] = dict(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=delay)(retries) if retries else 0,
        retry_jitter_factor=0.5,
        timeout_seconds=timeout,
    )
    return (uncached_step_task if no_cache else step_task).with_options(**options)


def _attempt() -> int:
    ctx = get_run_context()
    return getattr(ctx.task_run, "run_count", 1) or 1


async def _step(
    label: str,
    step: str,
    prompt: str,
    agent: dict[str, Any],
    model: str,
    timeout: float | None = None,
    output_schema: dict[str, Any] | None = None,
    upstream: list[Any] | None = None,
) -> dict[str, Any]:
    """One agent call (one attempt per Prefect task-run try), recorded in the ledger.

    `upstream` holds the results of the upstream task runs, unread: Prefect links a
    parameter to the task run that returned it, which draws the DAG's edges in the UI
    (cheaper than `wait_for`, which resolves every upstream state on another thread)."""
    run = _current_run.get()
    config = AgentConfig.model_validate(agent)
    attempt = _attempt()
    _notify(step, "RUNNING", {"attempt": attempt})
    config, model, result, outcome = await resilience.with_fallbacks(  # breaker open / retries exhausted -> fallbacks
        lambda cfg, m: _call(run, step, cfg, m, prompt, timeout, attempt, json_mode=output_schema is not None),
        config, model, step)
    output: Any = result.output
    if output_schema is not None:
        output, problem = _parse_output(result.output, output_schema)
        if problem is not None:
            # one repair attempt, then the step fails for good
            repair = (
                f"{prompt}\n\nYour previous answer was not valid: {problem}\n"
                f"Previous answer:\n{result.output}\n\n"
                f"Reply with only a JSON value that matches this JSON Schema:\n{json.dumps(output_schema)}"
            )
            fixed, fixed_outcome = await _call(run, step, config, model, repair, timeout, attempt,
                                               json_mode=True, repair=True)
            outcome = _merge(outcome, fixed_outcome)
            output, problem = _parse_output(fixed.output, output_schema)
            if problem is not None:
                raise StepError(f"step '{step}': output does not match output_schema after one repair attempt: {problem}")
    return {**outcome, "output": output}


# One step, as Prefect sees it: a task run named after the step. The cached variant
# keys its persisted result on what decides the answer; `--no-cache` uses the other.
step_task = task(_step, name="step", task_run_name="{label}", persist_result=True,
                 cache_key_fn=_cache_key, retry_condition_fn=_is_transient)
uncached_step_task = task(_step, name="step", task_run_name="{label}", persist_result=False,
                          cache_policy=NO_CACHE, retry_condition_fn=_is_transient)


async def _call(run: _Run | None, step: str, config: AgentConfig, model: str, prompt: str,
                timeout: float | None, attempt: int, json_mode: bool, repair: bool = False) -> tuple[AgentResult, dict]:
    from flows.resilience import guarded_call  # call_agent + budget, circuit breaker, provider limits

    provider = model.split(":", 1)[0]
    started = time.perf_counter()
    row = {"step": step, "agent": config.name, "provider": provider, "model": model, "attempt": attempt, "cached": False}
    try:
        credentials = await _credentials(provider, config)
        result = await guarded_call(config, prompt, model=model, timeout=timeout, json_mode=json_mode, step=step,
                                    **credentials)
    except AgentCallError as exc:
        latency = (time.perf_counter() - started) * 1000
        if run:
            run.record(**row, status="error", error=exc.message, latency_ms=latency, input_tokens=0,
                       output_tokens=0, cached_tokens=0, cost_usd=0.0, priced=False)
        raise StepError(f"step '{step}': {exc.message}", transient=exc.transient) from None
    except asyncio.CancelledError:
        latency = (time.perf_counter() - started) * 1000
        if run:
            run.record(**row, status="error", error=f"timed out after {timeout}s" if timeout else "cancelled",
                       latency_ms=latency, input_tokens=0, output_tokens=0, cached_tokens=0, cost_usd=0.0, priced=False)
        raise
    if run:
        run.record(**row, status="ok", error="repair attempt" if repair else None, latency_ms=result.latency_ms,
                   input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                   cached_tokens=result.cached_tokens, cost_usd=result.cost_usd, priced=result.priced)
    outcome = {
        "agent": config.name,
        "model": model,
        "input_tokens": result.input_tokens,
        "output_tokens": result.output_tokens,
        "cached_tokens": result.cached_tokens,
        "cost_usd": result.cost_usd,
        "priced": result.priced,
        "latency_ms": result.latency_ms,
    }
    return result, outcome


_KEY_VARS = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}


async def _credentials(provider: str, config: AgentConfig) -> dict[str, str | None]:
    """Explicit credentials when the agent names a block or the SDK's variable is unset:
    the block the agent names, then the environment, then `<provider>-default`."""
    key_var = _KEY_VARS.get(provider)
    if key_var is None or (not config.credentials and os.environ.get(key_var)):
        return {}  # fast-agent, or the SDK reads its own environment variables
    from blocks.credentials import CredentialsError, aresolve_credentials

    try:
        found = await aresolve_credentials(provider, config.credentials)
    except CredentialsError as exc:
        raise AgentCallError(str(exc), provider=provider, model=provider, transient=False) from None
    return {"api_key": found.api_key, "base_url": found.base_url}


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k in ("input_tokens", "output_tokens", "cached_tokens", "cost_usd", "latency_ms"):
        out[k] = a[k] + b[k]
    out["priced"] = a["priced"] and b["priced"]
    return out


def _parse_output(text: str, schema: dict) -> tuple[Any, str | None]:
    import jsonschema

    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[4:] if body.lower().startswith("json") else body
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        return None, f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        path = "/".join(str(p) for p in exc.absolute_path)
        return None, f"{exc.message}" + (f" at /{path}" if path else "")
    return value, None


# ---------------------------------------------------------------------------
# resolution of workflows and agents


def resolve_workflow(workflow: str | dict | Workflow) -> Workflow:
    """A Workflow from a model, a dict (ours or /run-graph), a path, or a shipped name."""
    from services.runtime import workflows_dir

    if isinstance(workflow, Workflow):
        return workflow
    if isinstance(workflow, dict):
        return parse_workflow(workflow, source="<inline workflow>", default_name="inline")
    path = Path(workflow)
    if path.suffix and path.is_file():
        return load_workflow(path)
    for suffix in (".yaml", ".yml", ".json", ".py"):
        candidate = workflows_dir() / f"{workflow}{suffix}"
        if candidate.is_file():
            return load_workflow(candidate)
    known = sorted(p.stem for p in workflows_dir().glob("*.y*ml"))
    raise WorkflowError(str(workflow), [f"no workflow file or shipped workflow by that name (shipped: {', '.join(known)})"])


def resolve_agent(wf: Workflow, step: Step, registry: dict[str, AgentConfig] | None = None) -> AgentConfig:
    if step.agent is None:
        return AgentConfig(name="default")
    if isinstance(step.agent, RouteSpec):
        raise StepError(f"step '{step.id}': capability routing is not available yet")
    if step.agent in wf.agents:
        return AgentConfig(name=step.agent, **wf.agents[step.agent].model_dump(exclude_unset=True))
    if registry is None:
        from agents.registry import load_registry

        registry = load_registry()
    if step.agent in registry:
        return registry[step.agent]
    raise StepError(f"step '{step.id}': unknown agent '{step.agent}'")


# ---------------------------------------------------------------------------
# the flow


@dataclass
class _StepReport:
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

    def as_dict(self) -> dict:
        d = {
            "state": self.state, "agent": self.agent, "model": self.model, "output": self.output,
            "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
            "cost_usd": round(self.cost_usd, 10), "attempts": self.attempts, "cached": self.cached,
            "duration_s": round(self.duration_s, 3),
        }
        if self.error:
            d["error"] = self.error
        return d


@flow(name="run_workflow", persist_result=False, validate_parameters=False)
async def run_workflow(
    workflow: str | dict[str, Any],
    inputs: dict[str, Any] | None = None,
    model: str | None = None,
    no_cache: bool = False,
    budget_usd: float | None = None,
) -> dict[str, Any]:
    """Run an Orchestra workflow: a shipped name, a path, or an inline definition
    (ours or the AI Orchestra `/run-graph` JSON format). `budget_usd` overrides the
    workflow's own budget."""
    try:
        wf = resolve_workflow(workflow)
        values = coerce_inputs(wf, inputs or {})
        if model:
            parse_model(model)
    except (WorkflowError, ValueError) as exc:
        get_run_logger().error(str(exc))
        return Failed(message=str(exc))
    return await execute(wf, values, model=model, no_cache=no_cache, budget_usd=budget_usd)


async def execute(wf: Workflow, inputs: dict[str, Any], *, model: str | None = None,
                  no_cache: bool = False, store: Any = "default", budget_usd: float | None = None) -> dict[str, Any] | State:
    """The body of a workflow flow run (call inside a Prefect flow)."""
    ctx = get_run_context()
    flow_run_id = str(ctx.flow_run.id)
    logger = get_run_logger()
    if store == "default":
        from services.store import get_store

        store = get_store()
    try:  # checked before anything is written: approval steps need a server; a budget must be >= 0
        if problem := approval.no_server_problem(wf):
            raise ValueError(problem)
        guard = await resilience.begin_run(wf, store, budget_usd=budget_usd, model_override=model)
    except ValueError as exc:
        logger.error(str(exc))
        return Failed(message=str(exc))
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    run = _Run(flow_run_id=flow_run_id, workflow=wf.name, store=store)
    if store is not None:
        store.start_run(flow_run_id=flow_run_id, workflow=wf.name, inputs=inputs, started=started,
                        model_override=model, workflow_ref=resilience.workflow_ref(wf), budget_usd=budget_usd)
    token = _current_run.set(run)
    reports = {s.id: _StepReport() for s in wf.steps}
    try:
        await _run_steps(wf, inputs, model, no_cache, reports)
    finally:
        _current_run.reset(token)
        resilience.finish_run(guard, store, flow_run_id, wf, reports)  # dead letters
    failed = [sid for sid, r in reports.items() if r.state == "FAILED"]
    state = "FAILED" if failed else "COMPLETED"
    report = {
        "workflow": wf.name,
        "flow_run_id": flow_run_id,
        "state": state,
        "duration_s": round(time.perf_counter() - t0, 3),
        "cost_usd": round(sum(c["cost_usd"] for c in run.calls), 10),
        "input_tokens": sum(c["input_tokens"] for c in run.calls),
        "output_tokens": sum(c["output_tokens"] for c in run.calls),
        "steps": {sid: r.as_dict() for sid, r in reports.items()},
    }
    error = "; ".join(reports[sid].error or sid for sid in failed) or None
    if store is not None:
        store.finish_run(flow_run_id=flow_run_id, state=state, ended=datetime.now(timezone.utc), error=error)
    emit_event(
        event="orchestra.run.finished",
        # Prefect's triggers compare labels as strings: a fixed-width cost label lets an
        # automation match "cost above a threshold" (deployments/automations/cost-alert.yaml).
        resource={"prefect.resource.id": f"orchestra.workflow.{wf.name}", "prefect.resource.name": wf.name,
                  "orchestra.cost-usd": f"{max(report['cost_usd'], 0.0):013.6f}"},
        payload={k: report[k] for k in ("state", "duration_s", "cost_usd", "input_tokens", "output_tokens")}
        | {"steps": len(reports), "failed_steps": failed, "calls": sum(not c["cached"] for c in run.calls)},
    )
    await _cost_artifact(wf, report)
    _reports[flow_run_id] = report
    if failed:
        logger.error("%s failed: %s", wf.name, error)
        return Failed(message=f"{len(failed)} step(s) failed: {error}", data=report)
    logger.info("%s completed: %d steps, $%.6f", wf.name, len(reports), report["cost_usd"])
    return report


async def _run_steps(wf: Workflow, inputs: dict, model_override: str | None, no_cache: bool,
                     reports: dict[str, _StepReport]) -> None:
    deps = wf.dependencies()
    done: dict[str, asyncio.Future] = {s.id: asyncio.get_running_loop().create_future() for s in wf.steps}
    results: dict[str, list[dict]] = {}  # each step's task-run results, for the UI's edges
    outputs: dict[str, dict] = {}
    registry: dict | None = None
    delay = _retry_delay()

    async def run_step(step: Step) -> None:
        nonlocal registry
        report = reports[step.id]
        try:
            await asyncio.gather(*(done[d] for d in deps[step.id]))
            blocked = [d for d in deps[step.id] if reports[d].state in ("FAILED", "NOT_READY")]
            if blocked:
                report.state, report.error = "NOT_READY", f"upstream step '{blocked[0]}' did not complete"
                _notify(step.id, report.state, {})
                return
            context = {"inputs": inputs, "steps": outputs}
            if wf.type == "sequential" and deps[step.id]:
                context["previous"] = outputs[deps[step.id][0]]
            if step.when is not None and not _truthy(templates.evaluate(step.when, context)):
                report.state = "SKIPPED"
                outputs[step.id] = {"output": None}
                _notify(step.id, "SKIPPED", {})
                return
            if step.approval is not None and await approval.gate(step, context, report, outputs):
                return  # a pure approval gate, approved
            if registry is None and isinstance(step.agent, str) and step.agent not in wf.agents:
                from agents.registry import load_registry

                registry = load_registry()
            agent = (await resilience.route(wf, step, registry, _current_run.get())
                     if isinstance(step.agent, RouteSpec) else resolve_agent(wf, step, registry))
            model = model_override or agent.model or default_model()
            report.agent, report.model = agent.name, model
            prompt_source = _prompt_source(wf, step, deps)
            if step.for_each is not None:
                items = templates.evaluate(step.for_each, context)
                if not isinstance(items, (list, tuple)):
                    raise StepError(f"step '{step.id}': for_each must give a list, got {type(items).__name__}")
                prompts = [(f"{step.id}[{i}]", templates.render(prompt_source, {**context, "item": it, "index": i}))
                           for i, it in enumerate(items)]
            else:
                prompts = [(step.id, templates.render(prompt_source, context))]
            resilience.remember_prompts(step.id, prompts)  # for the dead letter, should the step fail for good
            step_fn = _step_task_variant(step.retries, resilience.attempt_timeout(step.timeout, agent), no_cache, delay)
            agent_params = agent.model_dump(exclude_defaults=True)
            upstream = [v for d in deps[step.id] for v in results.get(d, ())]
            t_start = time.perf_counter()
            _notify(step.id, "RUNNING", {"agent": agent.name, "model": model})

            async def one(run_name: str, prompt: str) -> State:
                return await step_fn(
                    label=run_name, step=step.id, prompt=prompt, agent=agent_params, model=model,
                    timeout=step.timeout, output_schema=step.output_schema,
                    upstream=upstream, return_state=True,
                )

            step_states = list(await asyncio.gather(*(one(n, p) for n, p in prompts)))
            report.duration_s = time.perf_counter() - t_start
            results[step.id] = await _collect(step, step_states, report, outputs, is_list=step.for_each is not None)
        except (StepError, templates.TemplateError) as exc:
            report.state = "FAILED"
            report.error = str(exc) if isinstance(exc, StepError) else f"step '{step.id}': {exc}"
            _notify(step.id, "FAILED", {"error": report.error})
        finally:
            if not done[step.id].done():
                done[step.id].set_result(None)

    await asyncio.gather(*(run_step(s) for s in wf.steps))


async def _collect(step: Step, step_states: list[State], report: _StepReport, outputs: dict,
                   is_list: bool) -> list[dict]:
    """Fold a step's task-run states into its report; returns the completed results."""
    completed = []
    values = []
    errors = []
    run = _current_run.get()
    all_cached = True
    for st in step_states:
        value = await st.result(raise_on_failure=False)
        if st.is_completed():
            cached = st.name == "Cached"
            all_cached &= cached
            report.agent, report.model = value.get("agent", report.agent), value.get("model", report.model)
            if cached:
                if run:  # a cache hit costs nothing: record it so the ledger shows the step was served
                    run.record(step=step.id, agent=value["agent"], provider=value["model"].split(":", 1)[0],
                               model=value["model"], attempt=0, cached=True, status="ok", error=None,
                               latency_ms=0.0, input_tokens=0, output_tokens=0, cached_tokens=0,
                               cost_usd=0.0, priced=value.get("priced", False))
            else:
                report.input_tokens += value["input_tokens"]
                report.output_tokens += value["output_tokens"]
                report.cost_usd += value["cost_usd"]
            values.append(value["output"])
            completed.append(value)
        else:
            errors.append(str(value) if isinstance(value, BaseException) else (st.message or st.name))
    if run:
        report.attempts = sum(1 for c in run.calls if c["step"] == step.id and not c["cached"]
                              and c.get("error") != "repair attempt")
        # failed attempts cost nothing at the provider but are counted in the totals anyway
        report.cost_usd = sum(c["cost_usd"] for c in run.calls if c["step"] == step.id)
    report.cached = all_cached and not errors
    if errors:
        report.state = "FAILED"
        report.error = errors[0]
        _notify(step.id, "FAILED", {"error": report.error})
        return completed
    report.state = "COMPLETED"
    report.output = values if is_list else values[0]
    outputs[step.id] = {"output": report.output}
    _notify(step.id, "COMPLETED", report.as_dict())
    return completed


def _prompt_source(wf: Workflow, step: Step, deps: dict[str, list[str]]) -> str:
    """A sequential step receives the previous step's output, appended when its prompt
    does not place it itself."""
    if wf.type != "sequential" or not deps[step.id]:
        return step.prompt
    prev = deps[step.id][0]
    free, paths = templates.references(step.prompt)
    if "previous" in free or any(root == "steps" and key == prev for root, key, _ in paths):
        return step.prompt
    return step.prompt + "\n\n{{ previous.output }}"


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "none", "off")
    return bool(value)


async def _cost_artifact(wf: Workflow, report: dict) -> None:
    rows = [
        {"step": sid, "state": s["state"], "agent": s["agent"] or "", "model": s["model"] or "",
         "attempts": s["attempts"], "cached": s["cached"], "input_tokens": s["input_tokens"],
         "output_tokens": s["output_tokens"], "cost_usd": s["cost_usd"], "duration_s": s["duration_s"]}
        for sid, s in report["steps"].items()
    ]
    rows.append({"step": "TOTAL", "state": report["state"], "agent": "", "model": "", "attempts":
                 sum(r["attempts"] for r in rows), "cached": False, "input_tokens": report["input_tokens"],
                 "output_tokens": report["output_tokens"], "cost_usd": report["cost_usd"],
                 "duration_s": report["duration_s"]})
    await acreate_table_artifact(
        table=rows,
        key=f"{wf.name}-cost",
        description=f"Tokens and cost per step of `{wf.name}`: ${report['cost_usd']:.6f} in total.",
    )
