"""The AI Orchestra service's ``POST /run-graph`` body, taken as it is.

    {"workflow_type": "graph", "metadata": {...},
     "tasks": [{"agent_id", "agent_role", "input_data": {"task": ...}, "depends_on": [...]}]}

``agent_id`` becomes the step id, ``agent_role`` the agent, ``input_data.task`` the
prompt (other ``input_data`` keys are appended as JSON), and each dependency's output
is appended to the prompt. ``metadata`` is kept on the run and returned in its report.
"""

from __future__ import annotations

import json
from typing import Any

from flows.errors import WorkflowError

__all__ = ["from_run_graph", "is_run_graph", "literal"]

ALLOWED = ("workflow_type", "tasks", "name", "description", "inputs", "metadata")


def is_run_graph(data: Any) -> bool:
    return isinstance(data, dict) and "tasks" in data and "steps" not in data


def from_run_graph(data: dict, *, source: str, default_name: str, registry: dict[str, Any] | None) -> dict:
    """The body as a workflow document of ours (validated by the same validator after)."""
    problems: list[str] = []
    wtype = data.get("workflow_type", "graph")
    if wtype not in ("graph", "sequential", "parallel"):
        problems.append(f"workflow_type: must be graph, sequential or parallel (got {wtype!r})")
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise WorkflowError(source, problems + ["tasks: must be a non-empty list"])
    for key in sorted(set(data) - set(ALLOWED)):
        problems.append(f"{key}: unknown field (a /run-graph body has {', '.join(ALLOWED)})")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        problems.append(f"metadata: must be an object (got {type(metadata).__name__})")
        metadata = {}
    steps = []
    previous = None
    for i, task in enumerate(tasks):
        where = f"tasks[{i}]"
        if not isinstance(task, dict):
            problems.append(f"{where}: must be an object")
            continue
        sid = str(task.get("agent_id", "")).strip()
        if not sid:
            problems.append(f"{where}: agent_id is required")
            continue
        where = f"task '{sid}'"
        role = task.get("agent_role")
        if not role:
            problems.append(f"{where}: agent_role is required")
        elif registry is not None and role not in registry:
            problems.append(f"{where}: unknown agent_role '{role}' (known: {', '.join(sorted(registry))})")
        input_data = task.get("input_data") or {}
        if not isinstance(input_data, dict) or not isinstance(input_data.get("task"), str):
            problems.append(f"{where}: input_data.task must be a string")
            continue
        raw = task.get("depends_on") or []
        if not isinstance(raw, list) or not all(isinstance(d, (str, int)) for d in raw):
            problems.append(f"{where}: depends_on must be a list of agent_ids (got {type(raw).__name__}"
                            + (f" {raw!r}" if isinstance(raw, str) else "") + ")")
            raw = []
        depends = [str(d) for d in raw]
        if wtype == "sequential":
            context = [previous] if previous else []
        elif wtype == "parallel":
            context = []
        else:
            context = depends
        prompt = literal(input_data["task"])
        extra = {k: v for k, v in input_data.items() if k != "task"}
        if extra:
            prompt += "\n\nInput data:\n" + literal(json.dumps(extra, indent=2, ensure_ascii=False))
        for dep in context:
            prompt += f"\n\nOutput of task {dep}:\n{{{{ steps['{dep}'].output }}}}"
        step: dict[str, Any] = {"id": sid, "agent": role, "prompt": prompt}
        if wtype == "graph":
            step["depends_on"] = depends
        steps.append(step)
        previous = sid
    if problems:
        raise WorkflowError(source, problems)
    return {
        "name": data.get("name") or default_name,
        "description": data.get("description") or "Submitted in the /run-graph format",
        "type": wtype,
        "inputs": data.get("inputs") or {},
        "metadata": metadata,
        "steps": steps,
    }


def literal(text: str) -> str:
    """Literal text inside a template."""
    if "{" not in text and "%" not in text:
        return text
    return "{% raw %}" + text.replace("{% endraw %}", "{% endraw %}{{ '{% endraw %}' }}{% raw %}") + "{% endraw %}"
