"""The task tools of `orchestra mcp`: the task service (``orchestra.tasks``) with the
meaning of the `orchestra tasks|projects` commands, and the run operations the CLI has.

| tool | CLI |
| --- | --- |
| ``create_project(name, description)``, ``list_projects()`` | ``orchestra projects add`` / ``list --json`` |
| ``create_task(title, project, parent, workflow, inputs, assignee, ...)`` | ``orchestra tasks add`` |
| ``update_task(task_id, ...)`` | ``orchestra tasks update`` |
| ``list_tasks(project, status)``, ``get_task(task_id)`` | ``orchestra tasks list`` / ``show --json`` |
| ``create_workflow_from_task(task_id)`` | ``orchestra tasks plan`` |
| ``execute_task_workflow(task_id)`` -> ``{task_id, flow_run_id}`` | ``orchestra tasks execute`` (no wait) |
| ``get_workflow_status(flow_run_id | task_id)`` | state, steps, progress, cost so far |
| ``create_workflows_for_project(project)`` | ``orchestra projects plan`` |
| ``execute_workflows_for_project(project, limit)`` | ``orchestra projects execute`` (no wait) |
| ``approve_run(flow_run_id, approve, reason)`` | ``orchestra approve`` |
| ``cancel_run(flow_run_id)`` | ``orchestra tasks cancel`` for a task's run |
| ``rerun(flow_run_id, model, budget_usd)`` | ``orchestra rerun --json`` (waits) |

Every change is made as ``orchestra.access.mcp_actor()`` (the machine's user, an owner,
via ``mcp``): role-checked and audited like the CLI's. A mistake is a tool error (``isError``)
naming the task, project, workflow or input; nothing is written then.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import anyio
from mcp.types import ToolAnnotations
from pydantic import Field

from orchestra.mcp_common import READ_ONLY, WRITES, jsonable, prepare_engine, tool, user_errors

RUNS = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True)
CANCELS = ToolAnnotations(readOnlyHint=False, destructiveHint=True, openWorldHint=False)

def _actor():
    from orchestra.access import mcp_actor

    return mcp_actor()


TaskId = Annotated[int, Field(ge=1, description="A task's id (from create_task or list_tasks)")]
ProjectArg = Annotated[str, Field(description="A project's name (or id)")]
FlowRunId = Annotated[str, Field(description="A flow run's id (from execute_task_workflow, get_task or list_runs)")]
Status = Literal["todo", "running", "done", "failed", "blocked", "cancelled"]


async def _sync(fn, *args: Any, **kwargs: Any) -> Any:
    """A service call that reads the ledger (and maybe the Prefect API), off the event loop."""
    return jsonable(await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs)))


def _tasks():
    from orchestra import tasks

    return tasks


# --------------------------------------------------------------------------- projects


@tool(title="Create a project", annotations=WRITES)
async def create_project(
    name: Annotated[str, Field(description="The project's name (not only digits)")],
    description: Annotated[str | None, Field(description="What the project is about")] = None,
) -> dict[str, Any]:
    """Create a project (what `orchestra projects add` does): {id, name, description, tasks, progress, ...}."""
    with user_errors("create_project"):
        return await _sync(_tasks().add_project, name, description, actor=_actor())


@tool(title="The projects", annotations=READ_ONLY)
async def list_projects() -> dict[str, Any]:
    """Every project with its number of tasks, progress (0..1, the mean of its top-level tasks) and
    statuses: {projects: [...]}."""
    with user_errors("list_projects"):
        return {"projects": await _sync(_tasks().list_projects)}


# --------------------------------------------------------------------------- tasks


@tool(title="Create a task", annotations=WRITES)
async def create_task(
    title: Annotated[str, Field(description="What to do")],
    project: Annotated[str | None, Field(description="The project's name; a child is in its parent's")] = None,
    parent: Annotated[int | None, Field(ge=1, description="The parent task's id")] = None,
    workflow: Annotated[str | dict[str, Any] | None, Field(
        description="The workflow that executes it: a shipped workflow's name, a file path or an inline "
                    "definition; none: create_workflow_from_task writes one")] = None,
    inputs: Annotated[dict[str, Any], Field(description="The workflow's inputs (only with workflow); the "
                                                        "task's title and description fill `title` and "
                                                        "`description` inputs")] = {},
    assignee: Annotated[str | None, Field(description="Who owns it")] = None,
    description: Annotated[str | None, Field(description="Details and constraints")] = None,
    labels: Annotated[list[str], Field(description="Labels")] = [],
    depends_on: Annotated[list[int], Field(description="Ids of tasks of the same project it runs after")] = [],
) -> dict[str, Any]:
    """Create a task (status todo), as `orchestra tasks add` does; the task as get_task returns it.
    An unknown project, parent, dependency or workflow, inputs that do not match the workflow, or a
    dependency cycle is a tool error, and nothing is written."""
    with user_errors("create_task"):
        return await _sync(_tasks().add_task, title, actor=_actor(), project=project, parent=parent, workflow=workflow,
                           inputs=inputs or None, assignee=assignee, description=description, labels=labels,
                           depends_on=depends_on)


@tool(title="Change a task", annotations=WRITES)
async def update_task(
    task_id: TaskId,
    title: Annotated[str | None, Field(description="A new title")] = None,
    description: Annotated[str | None, Field(description="A new description")] = None,
    assignee: Annotated[str | None, Field(description="A new assignee ('' for nobody)")] = None,
    labels: Annotated[list[str] | None, Field(description="The labels (replace them)")] = None,
    parent: Annotated[int | None, Field(ge=0, description="A new parent task's id; 0: a top-level task")] = None,
    depends_on: Annotated[list[int] | None, Field(description="The tasks it runs after (replace them)")] = None,
    workflow: Annotated[str | dict[str, Any] | None, Field(description="A new workflow (name, path or "
                                                                       "definition)")] = None,
    inputs: Annotated[dict[str, Any] | None, Field(description="The workflow's inputs (replace them)")] = None,
) -> dict[str, Any]:
    """Change a task's fields (those given), as `orchestra tasks update` does. A parent that would make
    the task its own ancestor, or a dependency cycle, is a tool error and nothing changes."""
    changes: dict[str, Any] = {k: v for k, v in (("title", title), ("description", description),
                                                 ("assignee", assignee), ("labels", labels),
                                                 ("depends_on", depends_on), ("workflow", workflow),
                                                 ("inputs", inputs)) if v is not None}
    if parent is not None:
        changes["parent"] = parent or None
    with user_errors("update_task"):
        return await _sync(_tasks().update_task, task_id, actor=_actor(), **changes)


@tool(title="The tasks", annotations=READ_ONLY)
async def list_tasks(
    project: Annotated[str | None, Field(description="Only this project's tasks")] = None,
    status: Annotated[Status | None, Field(description="Only tasks with this status")] = None,
) -> dict[str, Any]:
    """Tasks by id (what `orchestra tasks list --json` prints): {tasks: [{id, project, parent_id, title,
    status, assignee, progress (0..1), children, depends_on, workflow, last_run, ...}]}."""
    with user_errors("list_tasks"):
        return {"tasks": await _sync(_tasks().list_tasks, project=project, status=status)}


@tool(title="One task", annotations=READ_ONLY)
async def get_task(task_id: TaskId) -> dict[str, Any]:
    """One task (what `orchestra tasks show --json` prints): its fields, status, progress, workflow
    (definition and how it was planned, with the planner's errors when its answer was invalid), runs
    (state, progress, cost) and history (every change: at, actor, field, old, new, reason)."""
    with user_errors("get_task"):
        return await _sync(_tasks().get_task, task_id)


@tool(title="Create a task's workflow", annotations=ToolAnnotations(readOnlyHint=False, openWorldHint=True))
async def create_workflow_from_task(task_id: TaskId) -> dict[str, Any]:
    """The workflow that will execute the task, written now when it names none (`orchestra tasks plan`):
    the planner (ORCHESTRA_PLANNER or the planner agent) writes one in Orchestra's format, validated with
    one repair round; without a planner the shipped `task` workflow (plan, do, review). Returns {task_id,
    source (workflow|given|planner|default), workflow, definition, yaml, inputs, plan}. A planner answer
    that stays invalid is a tool error listing the validator's errors (the task stays todo, the errors
    are kept in get_task's plan)."""
    with user_errors("create_workflow_from_task"):
        return jsonable(await _tasks().plan_task(task_id, actor=_actor()))


@tool(title="Execute a task's workflow", annotations=RUNS)
async def execute_task_workflow(task_id: TaskId) -> dict[str, Any]:
    """Start the task's workflow (created first when it has none) as a flow run in the background and
    return at once: {task_id, flow_run_id}. Follow it with get_workflow_status. A task already running
    is a tool error."""
    with user_errors("execute_task_workflow"):
        await prepare_engine()
        return jsonable(await _tasks().execute_task(task_id, actor=_actor()))


@tool(title="A workflow run's status", annotations=READ_ONLY)
async def get_workflow_status(
    flow_run_id: Annotated[str | None, Field(description="A flow run's id")] = None,
    task_id: Annotated[int | None, Field(ge=1, description="Or a task's id: its latest run")] = None,
) -> dict[str, Any]:
    """The state of a flow run (or of a task's latest run): {flow_run_id, task_id, workflow, state
    (Prefect's: SCHEDULED, PENDING, RUNNING, PAUSED, CANCELLING, COMPLETED, FAILED, CRASHED, CANCELLED),
    steps: [{step, state, agent, model, error}], progress (0..1, the share of finished steps), cost_usd
    so far, calls, started, ended}."""
    with user_errors("get_workflow_status"):
        await prepare_engine()
        return jsonable(await _tasks().workflow_status(flow_run_id=flow_run_id, task_id=task_id))


@tool(title="Create a project's workflows", annotations=ToolAnnotations(readOnlyHint=False, openWorldHint=True))
async def create_workflows_for_project(project: ProjectArg) -> dict[str, Any]:
    """create_workflow_from_task for every task of the project that has no workflow yet
    (`orchestra projects plan`): {project, tasks: [{task_id, source, workflow, ok, errors}]}; a task
    whose planner answer stays invalid is listed with its errors, the others are planned."""
    with user_errors("create_workflows_for_project"):
        return jsonable(await _tasks().plan_project(project, actor=_actor()))


@tool(title="Execute a project's workflows", annotations=RUNS)
async def execute_workflows_for_project(
    project: ProjectArg,
    limit: Annotated[int | None, Field(ge=1, le=100, description="Task runs at once (default: "
                                                                 "ORCHESTRA_PROJECT_CONCURRENCY, 4)")] = None,
) -> dict[str, Any]:
    """Run the project's tasks that have no open dependency (their depends_on tasks and children done
    or cancelled), in parallel, at most `limit` at once (a Prefect global concurrency limit), then the
    tasks that become ready, in a flow run of its own; returns at once: {project, flow_run_id (that
    flow run; null when no task is ready), limit, ready: [task ids], waiting: {task_id: [open tasks]}}."""
    with user_errors("execute_workflows_for_project"):
        await prepare_engine()
        from orchestra.task_flow import start_project

        return jsonable(await start_project(project, actor=_actor(), limit=limit))


# --------------------------------------------------------------------------- run operations


@tool(title="Approve (or reject) a paused run", annotations=ToolAnnotations(readOnlyHint=False,
                                                                            openWorldHint=False))
async def approve_run(
    flow_run_id: FlowRunId,
    approve: Annotated[bool, Field(description="false: reject (the run fails with the reason)")] = True,
    reason: Annotated[str, Field(description="Why (the approval step's output, or the rejection's error)")] = "",
) -> dict[str, Any]:
    """Answer a flow run that waits at an approval step (`orchestra approve`): {flow_run_id, approved,
    reason}. A run that is not paused at an approval is a tool error."""
    with user_errors("approve_run"):
        await prepare_engine()
        from flows.steps.approval import answer
        from orchestra import access

        run_id, who = flow_run_id.strip(), _actor()
        await anyio.to_thread.run_sync(lambda: access.require(who, "run.approve", run_id))
        await answer(run_id, approved=approve, reason=reason)
        await anyio.to_thread.run_sync(lambda: access.audit(who, "run.approve", run_id, after={
            "approved": approve, "reason": reason or None}))
        return {"flow_run_id": run_id, "approved": approve, "reason": reason}


@tool(title="Cancel a run", annotations=CANCELS)
async def cancel_run(flow_run_id: FlowRunId) -> dict[str, Any]:
    """Ask Prefect to cancel a flow run: its state becomes CANCELLING on the Prefect API (a finished
    run is left as it is) and the run's own watcher stops it within seconds (it ends CANCELLED with
    what it spent); the task it executes, if running, is cancelled. Returns {flow_run_id, state,
    previous, task_id}."""
    with user_errors("cancel_run"):
        await prepare_engine()
        return jsonable(await _tasks().cancel_run(flow_run_id, actor=_actor()))


@tool(title="Run a recorded run again", annotations=RUNS)
async def rerun(
    flow_run_id: FlowRunId,
    model: Annotated[str | None, Field(description="Use this model for every agent (default: the run's)")] = None,
    budget_usd: Annotated[float | None, Field(description="Budget in USD (default: the run's)")] = None,
) -> dict[str, Any]:
    """Run a recorded run's workflow again with the same inputs and wait for it (`orchestra rerun
    --json`): steps that completed come from the cache. Returns the run's report, like run_workflow."""
    from orchestra import runs

    with user_errors("rerun"):
        request = await anyio.to_thread.run_sync(lambda: runs.rerun_request(flow_run_id.strip(), model=model,
                                                                            budget=budget_usd))
        await prepare_engine()
        from orchestra import access, actions

        await anyio.to_thread.run_sync(lambda: actions.note_run(access.mcp_actor(), request))
        return jsonable(await runs.run(request))
