"""The planner: a workflow in Orchestra's own format, written by an agent for a task.

    agent = planner_agent()                          # None: no planner configured (offline)
    plan = await write_workflow(agent, task, ledger=store)  # Plan(definition | None, errors, attempts, ...)

Which agent plans: the ``planner`` setting (``ORCHESTRA_PLANNER``: an agent's name in
``agents/``, or a model string, which gets the built-in instruction), else the
``planner`` agent of ``agents/`` if there is one, else none. Its answer must pass the
validator every workflow file passes (``flows.spec.parse_workflow``) and run without
inputs; when it does not, the planner is asked once more with the validator's errors
quoted (the repair round). A second invalid answer is a :class:`Plan` without a
definition, with the errors of that answer.

Planning is a Prefect flow run of its own (flow ``planner``, named ``plan-task-<id>``)
with one task run, ``plan``, kept in the ledger like a workflow's run: a ``runs`` row of
workflow ``planner``, its one step ``plan`` and a ``calls`` row per request (built by
``core.calls.CallRecord``; the repair round's purpose is ``repair``), so what planning
costs shows wherever costs do. Flow run and task run COMPLETE with a valid workflow and
FAIL otherwise. Prefect is imported only here, when a planner is asked (choosing one
stays light).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agents import AgentCallError, AgentConfig, call_agent, load_registry, parse_model
from core.calls import CallRecord
from core.redact import redact
from core.settings import settings
from core.steps import StepState
from flows.spec import WorkflowError, coerce_inputs, parse_text, parse_workflow

__all__ = ["INSTRUCTION", "Plan", "PlannerError", "PlannerSettingError", "planner_agent", "write_workflow"]

PLANNER = "planner"
WORKFLOW = "planner"  # the planning flow run's flow and its ledger run's workflow
STEP = "plan"  # its one step
INSTRUCTION = ("You plan work for Orchestra, which runs AI-agent workflows as DAGs of steps. You answer with "
               "one workflow in Orchestra's JSON format and nothing else.")
_FENCE = re.compile(r"^\s*```[A-Za-z]*\s*\n(.*?)\n\s*```\s*$", re.S)
FORMAT = """A workflow is one JSON object:
{"name": "lowercase-with-dashes", "description": "one line",
 "steps": [{"id": "research", "agent": "researcher", "prompt": "What this step must do, in full."},
           {"id": "write", "agent": "writer", "depends_on": ["research"],
            "prompt": "Write it up using: {{ steps.research.output }}"}]}
Rules:
- every step has an id (letters, digits, - or _), an agent from the list below and a prompt;
- depends_on lists the steps that must finish first (no cycles); a prompt may quote the
  answer of a step it depends on, directly or not, as {{ steps.<id>.output }};
- no inputs: write everything the steps need into their prompts;
- 2 to 6 steps; steps that do not depend on each other run in parallel."""


class PlannerError(RuntimeError):
    """The planner could not be asked (credentials, the provider failed); ``flow_run_id``:
    the planning flow run, once it ran."""

    flow_run_id: str | None = None


class PlannerSettingError(ValueError):
    """The ``planner`` setting names neither an agent nor a model (the user fixes it)."""


@dataclass
class Plan:
    """What the planner wrote: ``definition`` (the valid workflow as a dict) or ``errors``."""

    agent: str
    model: str
    definition: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    attempts: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    flow_run_id: str | None = None  # the planning flow run (its ledger run)

    def record(self) -> dict[str, Any]:
        """What the task keeps of this plan (``tasks.plan``)."""
        return {"source": "planner", "agent": self.agent, "model": self.model, "ok": self.definition is not None,
                "errors": self.errors, "attempts": self.attempts, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": round(self.cost_usd, 10),
                "flow_run_id": self.flow_run_id}


def planner_agent() -> AgentConfig | None:
    """The agent that plans, or None (no planner: tasks get the shipped ``task`` workflow).
    PlannerSettingError naming ORCHESTRA_PLANNER when it names neither an agent nor a model
    (or an agent file is broken)."""
    wanted = settings().planner
    try:
        registry = load_registry()
    except ValueError as exc:
        raise PlannerSettingError(f"agents/: {exc}") from None
    if wanted is None:
        return registry.get(PLANNER)
    if wanted in registry:
        return registry[wanted]
    try:
        parse_model(wanted)
    except ValueError:
        raise PlannerSettingError(f"ORCHESTRA_PLANNER={wanted}: no agent by that name in agents/ "
                           f"({', '.join(sorted(registry)) or 'none'}) and not a model string "
                           "(provider:model, e.g. openai:gpt-4.1-mini)") from None
    return AgentConfig(name=PLANNER, model=wanted, instruction=INSTRUCTION, temperature=0)


def prompt_for(task: dict[str, Any], agents: dict[str, AgentConfig], context: dict[str, Any] | None = None) -> str:
    """The planner's prompt: the format, the agents it may use, and the task."""
    listed = "\n".join(f"- {name}: {a.description or (a.instruction or '').strip().splitlines()[0][:120]}"
                       for name, a in sorted(agents.items()) if name != PLANNER)
    context = context or {}
    about = [f"Task #{task['id']}: {task['title']}"]
    if task.get("description"):
        about.append(task["description"])
    if task.get("labels"):
        about.append("Labels: " + ", ".join(task["labels"]))
    if context.get("project"):
        about.append(f"Project: {context['project']}")
    if context.get("parent"):
        about.append(f"Part of: {context['parent']}")
    return (f"{INSTRUCTION}\n\n{FORMAT}\n\nAgents:\n{listed}\n\n" + "\n".join(about)
            + f'\n\nAnswer with the workflow for task #{task["id"]} as one JSON object.')


def _document(answer: str) -> Any:
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    return parse_text(text, "<answer>")


def check(answer: str, task_id: int) -> tuple[dict[str, Any] | None, list[str]]:
    """The planner's answer as a valid workflow definition, or the validator's errors."""
    source = f"<planner's workflow for task {task_id}>"
    try:
        doc = _document(answer)
        if not isinstance(doc, dict):
            return None, [f"the answer is not one JSON object (got {type(doc).__name__})"]
        wf = parse_workflow(doc, source=source, default_name=f"task-{task_id}")
        coerce_inputs(wf, {})  # it must run without inputs
    except WorkflowError as exc:
        return None, list(exc.problems)
    return wf.model_dump(exclude_defaults=True), []


async def _ask(agent: AgentConfig, prompt: str, plan: Plan, keep: Callable[[CallRecord], Any], purpose: str) -> str:
    """One request to the planner; ``keep`` gets its ``calls`` row whatever its outcome."""
    from blocks.credentials import acall_credentials

    model = agent.model or settings().default_model
    started = time.perf_counter()

    def failed(message: str) -> PlannerError:
        keep(CallRecord.from_error(message, flow_run_id=plan.flow_run_id, step=STEP, model=model, agent=agent.name,
                                   attempt=1, purpose=purpose, latency_ms=(time.perf_counter() - started) * 1000))
        return PlannerError(f"planner {agent.name!r} ({model}): {message}")

    try:
        credentials = await acall_credentials(parse_model(model)[0], agent.credentials)
        result = await call_agent(agent, prompt, model=model, json_mode=True, **credentials)
    except AgentCallError as exc:
        raise failed(str(exc)) from None
    except ValueError as exc:  # credentials that cannot be found
        raise failed(redact(str(exc))) from None
    keep(CallRecord.from_result(result, flow_run_id=plan.flow_run_id, step=STEP, attempt=1, agent=agent.name,
                                purpose=purpose))
    plan.attempts += 1
    plan.input_tokens += result.input_tokens
    plan.output_tokens += result.output_tokens
    plan.cost_usd += result.cost_usd
    return result.output


class _InvalidPlan(Exception):
    """The planning step's end when the second answer is not a valid workflow either."""


async def _plan(agent: AgentConfig, task: dict[str, Any], first: str, plan: Plan,
                keep: Callable[[CallRecord], Any]) -> Plan:
    """The planning step (a Prefect task run): the request, the repair round if need be;
    _InvalidPlan when the workflow stays invalid (``plan`` holds what was written)."""
    answer = await _ask(agent, first, plan, keep, "call")
    plan.definition, plan.errors = check(answer, task["id"])
    if plan.definition is not None:
        return plan
    repair = (f"{first}\n\nYour answer was:\n{answer}\n\nIt is not a valid workflow. The validator says:\n"
              + "\n".join(f"- {e}" for e in plan.errors)
              + "\n\nAnswer with the corrected workflow as one JSON object and nothing else.")
    answer = await _ask(agent, repair, plan, keep, "repair")
    plan.definition, plan.errors = check(answer, task["id"])
    if plan.definition is None:
        raise _InvalidPlan("the answer is not a valid workflow after one repair round: " + "; ".join(plan.errors))
    return plan


async def write_workflow(agent: AgentConfig, task: dict[str, Any], context: dict[str, Any] | None = None, *,
                         ledger: Any = None) -> Plan:
    """Ask ``agent`` for a workflow that carries out ``task`` (a task as ``ledger.queries``
    returns it); one repair round quoting the validator's errors. A Prefect flow run of
    its own, recorded in ``ledger`` (a ``flows.ports.Ledger``: the app's store) when one is
    given. PlannerError when the planner cannot be asked."""
    from prefect import flow
    from prefect import task as prefect_task
    from prefect.cache_policies import NO_CACHE
    from prefect.context import FlowRunContext
    from prefect.states import Completed, Failed

    from flows.engine import quiet_step_failures

    quiet_step_failures()  # the plan task run's Failed state: one line, as a step's
    model = agent.model or settings().default_model
    asked: list[PlannerError] = []  # the planner could not be asked: raised here, after the flow run

    async def planner(task_id: int) -> Any:
        ctx = FlowRunContext.get()
        plan = Plan(agent=agent.name, model=model, flow_run_id=str(ctx.flow_run.id) if ctx and ctx.flow_run else None)
        run_id = plan.flow_run_id
        recorded = ledger is not None and run_id is not None
        if recorded:
            ledger.start_run(flow_run_id=run_id, workflow=WORKFLOW, inputs={"task": task_id},
                             started=datetime.now(UTC))
            ledger.record_step(StepState(run_id, STEP, "RUNNING", agent=agent.name, model=model))
        first = prompt_for(task, load_registry(), context)

        async def plan_step() -> Any:
            # expected ends are states, not exceptions: Prefect logs one line, no traceback
            try:
                await _plan(agent, task, first, plan, ledger.record_call if recorded else lambda call: None)
            except PlannerError as exc:
                asked.append(exc)
                return Failed(message=str(exc))
            except _InvalidPlan as exc:
                return Failed(message=str(exc))
            return Completed(data=plan)

        step = prefect_task(plan_step, name=STEP, task_run_name=STEP, persist_result=False, cache_policy=NO_CACHE)
        error: str | None = None
        state = "FAILED"
        try:
            stepped = await step(return_state=True)
        except asyncio.CancelledError:
            state, error = "CANCELLED", "planning was cancelled"
            raise
        except BaseException as exc:
            error = f"planning stopped: {type(exc).__name__}"
            raise
        else:
            if stepped.is_completed():
                state = "COMPLETED"
            else:
                error = stepped.message or "planning failed"
        finally:
            if recorded:
                ledger.record_step(StepState(run_id, STEP, state, agent=agent.name, model=model, error=error,
                                             prompt=first, output=plan.definition))
                ledger.finish_run(flow_run_id=run_id, state=state, ended=datetime.now(UTC), error=error)
        return Completed(data=plan) if error is None else Failed(message=error, data=plan)

    planning = flow(name=WORKFLOW, flow_run_name=f"plan-task-{task['id']}", persist_result=False,
                    validate_parameters=False)(planner)
    state = await planning(task_id=task["id"], return_state=True)
    result = await state.aresult(raise_on_failure=False)
    if asked:
        asked[0].flow_run_id = str(state.state_details.flow_run_id)
        raise asked[0]
    if isinstance(result, BaseException):
        raise result
    if result.definition is None and not result.errors:  # the step ended some other way: not "invalid"
        error = PlannerError(f"planner {agent.name!r} ({model}): planning failed: {state.message}")
        error.flow_run_id = result.flow_run_id
        raise error
    return result


def as_yaml(definition: dict[str, Any]) -> str:
    """A definition as the YAML a workflow file holds."""
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(definition)), sort_keys=False, allow_unicode=True, width=100)
