"""The planner: a workflow in Orchestra's own format, written by an agent for a task.

    agent = planner_agent()                  # None: no planner configured (offline)
    plan = await write_workflow(agent, task) # Plan(definition | None, errors, attempts, ...)

Which agent plans: the ``planner`` setting (``ORCHESTRA_PLANNER``: an agent's name in
``agents/``, or a model string, which gets the built-in instruction), else the
``planner`` agent of ``agents/`` if there is one, else none. Its answer must pass the
validator every workflow file passes (``flows.spec.parse_workflow``) and run without
inputs; when it does not, the planner is asked once more with the validator's errors
quoted (the repair round). A second invalid answer is a :class:`Plan` without a
definition, with the errors of that answer.

Light: no Prefect import (the planner's credentials may come from a ProviderCredentials
block, read over the Prefect API only when the agent names one or the key variable is unset).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agents import AgentCallError, AgentConfig, call_agent, load_registry, parse_model
from core.redact import redact
from core.settings import settings
from flows.spec import WorkflowError, coerce_inputs, parse_text, parse_workflow

__all__ = ["INSTRUCTION", "Plan", "PlannerError", "PlannerSettingError", "planner_agent", "write_workflow"]

PLANNER = "planner"
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
    """The planner could not be asked (credentials, the provider failed)."""


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

    def record(self) -> dict[str, Any]:
        """What the task keeps of this plan (``tasks.plan``)."""
        return {"source": "planner", "agent": self.agent, "model": self.model, "ok": self.definition is not None,
                "errors": self.errors, "attempts": self.attempts, "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens, "cost_usd": round(self.cost_usd, 10)}


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


async def _ask(agent: AgentConfig, prompt: str, plan: Plan) -> str:
    from blocks.credentials import acall_credentials

    model = agent.model or settings().default_model
    try:
        credentials = await acall_credentials(parse_model(model)[0], agent.credentials)
        result = await call_agent(agent, prompt, model=model, json_mode=True, **credentials)
    except AgentCallError as exc:
        raise PlannerError(f"planner {agent.name!r} ({model}): {exc}") from None
    except ValueError as exc:  # credentials that cannot be found
        raise PlannerError(f"planner {agent.name!r} ({model}): {redact(str(exc))}") from None
    plan.attempts += 1
    plan.input_tokens += result.input_tokens
    plan.output_tokens += result.output_tokens
    plan.cost_usd += result.cost_usd
    return result.output


async def write_workflow(agent: AgentConfig, task: dict[str, Any], context: dict[str, Any] | None = None) -> Plan:
    """Ask ``agent`` for a workflow that carries out ``task`` (a task as ``ledger.queries``
    returns it); one repair round quoting the validator's errors. PlannerError when the
    planner cannot be asked."""
    plan = Plan(agent=agent.name, model=agent.model or settings().default_model)
    agents = load_registry()
    first = prompt_for(task, agents, context)
    answer = await _ask(agent, first, plan)
    plan.definition, plan.errors = check(answer, task["id"])
    if plan.definition is not None:
        return plan
    repair = (f"{first}\n\nYour answer was:\n{answer}\n\nIt is not a valid workflow. The validator says:\n"
              + "\n".join(f"- {e}" for e in plan.errors)
              + "\n\nAnswer with the corrected workflow as one JSON object and nothing else.")
    answer = await _ask(agent, repair, plan)
    plan.definition, plan.errors = check(answer, task["id"])
    return plan


def as_yaml(definition: dict[str, Any]) -> str:
    """A definition as the YAML a workflow file holds."""
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(definition)), sort_keys=False, allow_unicode=True, width=100)
