"""A project's execution as a Prefect flow run: ``execute_project`` runs the project's
tasks that are ready (``orchestra.tasks.readiness``), in parallel, at most ``limit`` at
once (a Prefect global concurrency limit, ``orchestra-project-<id>``), and those that
become ready as others finish (``orchestra.tasks.run_project``).

    await start_project("acme", actor="mcp")   # its flow run in the background: {project, flow_run_id, ...}
    await execute_project("acme", limit=2, actor="cli")   # or in this process (`projects execute --wait`)

Each task's workflow is a flow run of its own (``orchestra.runs.start``); this flow run
only coordinates them, and shows in the Prefect UI as ``execute_project``. This module
imports Prefect: call ``orchestra.tasks.ensure_prefect()`` before importing it.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from core.settings import settings
from orchestra import runs, tasks

__all__ = ["ENTRYPOINT", "execute_project", "start_project"]

ENTRYPOINT = "orchestra/task_flow.py:execute_project"


@flow(name="execute_project", persist_result=False, validate_parameters=False)
async def execute_project(project: str, limit: int, actor: str) -> dict[str, Any]:
    """Run a project's tasks that have no open dependency, at most ``limit`` at once, until none is left."""
    return await tasks.run_project(project, actor=actor, limit=limit)


async def start_project(project: str | int, *, actor: Any, limit: int | None = None) -> dict[str, Any]:
    """``execute_workflows_for_project``: start the project's execution in the background;
    at once {project, flow_run_id, limit, ready: [task ids], waiting: {task_id: [open
    tasks]}} (flow_run_id None when no task is ready). TaskError for an unknown project
    or a limit below 1."""
    import anyio

    limit = settings().project_concurrency if limit is None else limit
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise tasks.TaskError(f"limit: a number of task runs at once, from 1 (got {limit!r})")
    p = tasks.get_project(project)
    ready, waiting = tasks.readiness(p["tasks"])
    found = {"project": p["name"], "flow_run_id": None, "limit": limit, "ready": ready,
             "waiting": {str(k): v for k, v in waiting.items()}}
    if not ready:
        return found
    await anyio.to_thread.run_sync(tasks.ensure_prefect)

    async def start() -> str:  # the execution acts for the person who started it, by name
        return await runs.start_flow(
            execute_project, {"project": p["name"], "limit": limit, "actor": getattr(actor, "name", actor)},
            entrypoint=ENTRYPOINT, tags=[f"orchestra-project:{p['name']}"])

    from orchestra import access

    if isinstance(actor, access.Actor):  # checked and audited as the person's
        access.require(actor, "project.execute", f"project:{p['name']}")
        found["flow_run_id"] = await start()
        await anyio.to_thread.run_sync(lambda: access.audit(actor, "project.execute", f"project:{p['name']}",
                                                            after={"flow_run_id": found["flow_run_id"]}))
    else:
        found["flow_run_id"] = await start()
    return found
