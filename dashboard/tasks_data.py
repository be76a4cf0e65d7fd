"""What the Tasks page shows and does, as plain data: the task service (``orchestra.tasks``)
read, and called as the logged-in user (an ``orchestra.access.Actor``: the service checks
the role and audits the write). No SQL, no Streamlit (unit-testable), no secret
(the service and the ledger redact free text before it is stored).
"""

from __future__ import annotations

import asyncio
from typing import Any

from orchestra import tasks as service

__all__ = ["NO_PROJECT", "execute", "overview", "plan", "task_detail", "tree_rows"]

NO_PROJECT = "(no project)"


def overview() -> dict[str, Any]:
    """{projects: [{name, progress, tasks, statuses, description}], loose: tasks outside any project}."""
    projects = service.list_projects()
    loose = [t for t in service.list_tasks() if t["project_id"] is None]
    return {"projects": projects, "loose": len(loose)}


def _workflow(t: dict[str, Any]) -> str:
    plan = t.get("plan") or {}
    if t.get("definition"):
        return f"{t['definition'].get('name')} ({plan.get('source', 'given')})"
    if t.get("workflow"):
        return t["workflow"] + (" (default)" if plan.get("source") == "default" else "")
    return "not planned" + (" (plan invalid)" if plan and not plan.get("ok", True) else "")


def tree_rows(project: str | None) -> list[dict[str, Any]]:
    """A project's tasks (``None``: those outside any project) in tree order, for a table:
    id, task (indented title), status, assignee, progress (0..1), workflow, after, runs."""
    if project is None:
        rows = [t for t in service.list_tasks() if t["project_id"] is None]
    else:
        rows = service.list_tasks(project=project)
    return [{"id": t["id"], "task": "\u2003" * t["depth"] + ("└ " if t["depth"] else "") + t["title"],
             "title": t["title"], "depth": t["depth"], "status": t["status"], "assignee": t["assignee"] or "",
             "progress": t["progress"], "workflow": _workflow(t), "after": ", ".join(map(str, t["depends_on"])),
             "runs": t["runs"]} for t in service.tree(rows)]


def task_detail(task_id: int) -> dict[str, Any]:
    """One task for the page: the task, its workflow as YAML (None before it is planned),
    its runs and its history as table rows, the errors of its last plan."""
    task = service.get_task(task_id)
    try:
        shown = service.shown_workflow(task_id)
    except service.TaskError:
        shown = None
    runs = [{"flow_run_id": r["flow_run_id"], "workflow": r["workflow"] or "", "state": r["state"] or "starting",
             "progress": r["progress"], "started": r["started"], "ended": r["ended"], "cost_usd": r["cost_usd"]}
            for r in task["runs"]]
    history = [{"at": h["at"], "by": h["actor"], "field": h["field"], "from": h["old"] or "", "to": h["new"] or "",
                "why": h["reason"] or ""} for h in task["history"]]
    return {"task": task, "workflow": _workflow(task), "yaml": shown["yaml"] if shown else None,
            "runs": runs[::-1], "history": history[::-1], "plan_errors": (task["plan"] or {}).get("errors") or []}


def plan(task_id: int, actor: Any) -> tuple[bool, str]:
    """Create the task's workflow (as `orchestra tasks plan`) as ``actor``: (ok, what happened)."""
    from orchestra.access import Forbidden
    from orchestra.planner import PlannerError

    try:
        planned = asyncio.run(service.plan_task(task_id, actor=actor))
    except (service.TaskError, PlannerError, Forbidden) as exc:
        return False, str(exc)
    return True, f"task {task_id}: workflow {planned['workflow']} ({planned['source']})"


def execute(task_id: int, actor: Any) -> tuple[bool, str]:
    """Start the task's workflow in the background (as `orchestra tasks execute`) as ``actor``:
    (ok, what happened)."""
    from orchestra.access import Forbidden
    from orchestra.planner import PlannerError

    try:
        started = asyncio.run(service.execute_task(task_id, actor=actor))
    except (service.TaskError, PlannerError, RuntimeError, Forbidden) as exc:
        return False, str(exc)
    return True, f"task {task_id}: flow run {started['flow_run_id']} started"
