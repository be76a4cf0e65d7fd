"""Tasks and projects: work items that become workflow runs (`orchestra tasks|projects`,
the MCP task tools, the dashboard's Tasks page: all of them call these functions).

    me = access.cli_actor()                        # or the dashboard's user, access.mcp_actor()
    add_project("acme", actor=me)
    t = add_task("Add login to the app", project="acme", actor=me)           # a dict, as get_task returns
    await plan_task(t["id"], actor=me)             # its workflow: named, written by the planner, or `task`
    await execute_task(t["id"], actor=me)          # {task_id, flow_run_id}: started, not waited for
    get_task(t["id"])                              # status, progress, runs, history

**Writes.** Every write of a project or a task goes through :func:`write` (the actor:
an ``orchestra.access.Actor`` — the CLI's, the MCP server's, the dashboard's user —
checked and audited by ``access.perform``; or a name, ``orchestra`` for changes that
follow a run), which hands it to the ledger's write path (``ledger.store.Store``): one
transaction per change, one ``task_history`` row per changed field, under the actor's name.

**Status** (``core.tasks``) follows the task's latest run: a run that is going makes it
``running``; a completed run makes it ``done``, or ``blocked`` while it has open
children (a ``blocked`` task becomes ``done`` when its last child closes, a ``done``
one ``blocked`` again when a child opens); a failed or crashed run ``failed``, a
cancelled one ``cancelled``. A child is *open* until it is ``done`` or ``cancelled``.
Readers bring the statuses up to date first (:func:`refresh`), so there is no daemon.

**Dependencies.** A task may name tasks of its project it runs after (``depends_on``,
``tasks add --after ID``); its children count as dependencies too (a parent's own
workflow runs after its children). Dependencies never form a cycle, and a task is
never its own ancestor. A project's execution (``orchestra.task_flow``) runs the tasks
left to do (``todo``, ``failed``) whose dependencies are all closed.

**Progress** (0..1): a task with children is the mean of its children (cancelled ones
left out); otherwise ``done`` is 1, ``todo`` 0, a running task the share of its run's
steps that are finished (``ledger.queries.progress``), a failed or cancelled one the
share of its last run's steps that completed. A project is the mean of its top-level tasks.

**Workflows.** A task names a shipped or file workflow (and its inputs; the task's
title and description fill the workflow's ``title`` and ``description`` inputs when it
declares them and they are not given), or none: :func:`plan_task` then writes one with
the planner (``orchestra.planner``), or, without a planner, gives it the shipped
``task`` workflow. The definition is kept with the task (``definition``, ``plan``).

Errors a user can cause are :class:`TaskError` (a ValueError: exit 2, an MCP tool
error) naming the task, project, workflow or input; nothing is written then.
"""

from __future__ import annotations

import graphlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from core.redact import redact
from core.tasks import EXECUTABLE, PROJECT_RUNS, TASK_STATUSES
from flows.spec import WorkflowError
from orchestra import runs

__all__ = [
    "SYSTEM", "TaskError", "add_project", "add_task", "cancel_run", "cancel_task", "ensure_prefect", "execute_task",
    "get_project",
    "get_task", "list_projects", "list_tasks", "plan_project", "plan_task", "readiness", "refresh", "run_project",
    "shown_workflow", "update_task", "wait_for_task", "workflow_status", "write",
]

SYSTEM = "orchestra"  # the actor of the changes that follow a run
DEFAULT_WORKFLOW = "task"  # the shipped workflow of a task when no planner is configured
RUN_GOING = ("SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING")  # Prefect's, and the ledger's RUNNING
RUN_ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
_UNSET: Any = object()
T = TypeVar("T")


class TaskError(ValueError):
    """A request about tasks or projects that cannot be done as asked; the message names why."""


def _store():
    from orchestra.runtime import ledger

    return ledger()


# --------------------------------------------------------------------------- the one door of every write


def write(actor: Any, action: str, target: str, change: Callable[[Any], T]) -> T:
    """Make one change of a project or a task: ``change(store)`` with the ledger's Store.

    Every write of this module comes here, with who makes it (``actor``), what it is
    (``action``: ``project.create``, ``task.create``, ``task.update``, ``task.plan``,
    ``task.execute``, ``task.cancel``, ``task.follow``) and what it touches (``target``:
    ``project:<name>``, ``task:<id>``). A person (an ``orchestra.access.Actor``: the CLI's,
    the MCP server's, the dashboard's logged-in user) goes through ``access.perform``: the
    role is checked and the change audited. A name alone is Orchestra itself: ``SYSTEM``
    (a status that follows a run) or a project's execution acting for the person who
    started it (whose start was checked and audited)."""
    from orchestra import access

    if isinstance(actor, access.Actor):
        return access.perform(actor, action, target, lambda: change(_store()))
    if not isinstance(actor, str) or not actor.strip():
        raise TaskError("actor: name who makes the change (e.g. cli, mcp, dashboard)")
    return change(_store())


async def _cancel_flow_run(actor: Any, flow_run_id: str) -> dict[str, Any]:
    """``runs.cancel``; for a person through ``access.perform`` (``run.cancel``, audited)."""
    import anyio

    from orchestra import access

    if not isinstance(actor, access.Actor):
        return await runs.cancel(flow_run_id)
    access.require(actor, "run.cancel", flow_run_id)
    result = await runs.cancel(flow_run_id, by=actor.name)
    await anyio.to_thread.run_sync(lambda: access.audit(actor, "run.cancel", flow_run_id, after=result))
    return result


def _name(actor: Any) -> str:
    """The name a task's history records for ``actor`` (an Actor or a name)."""
    return getattr(actor, "name", actor)


# --------------------------------------------------------------------------- projects


def _project(key: str | int) -> dict[str, Any]:
    from ledger import queries

    found = queries.project(_store(), key if isinstance(key, int) else str(key).strip())
    if found is None:
        names = ", ".join(p["name"] for p in queries.projects(_store())) or "none yet: `orchestra projects add NAME`"
        raise TaskError(f"unknown project {key!r} (projects: {names})")
    return found


def add_project(name: str, description: str | None = None, *, actor: Any) -> dict[str, Any]:
    """A new project; TaskError when the name is taken or not usable."""
    from ledger import queries

    name = (name or "").strip()
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise TaskError(f"project name {name!r}: 1 to 200 printable characters")
    if name.isdigit():
        raise TaskError(f"project name {name!r}: not only digits (a project is also named by its id)")
    if (found := queries.project(_store(), name)) is not None and found["name"] == name:
        raise TaskError(f"a project named {name!r} exists already")
    description = description.strip() if description and description.strip() else None
    try:
        project_id = write(actor, "project.create", f"project:{name}",
                           lambda store: store.create_project(name, description))
    except ValueError as exc:  # another writer took the name meanwhile
        raise TaskError(str(exc)) from None
    return get_project(project_id)


def list_projects() -> list[dict[str, Any]]:
    """Every project: id, name, description, task_count, progress, statuses (count per status)."""
    from ledger import queries

    rows = refresh()
    found = []
    for p in queries.projects(_store()):
        mine = [t for t in rows if t["project_id"] == p["id"]]
        found.append({**p, "progress": _project_progress(mine), "statuses": _counts(mine)})
    return found


def get_project(key: str | int) -> dict[str, Any]:
    """One project with its progress and its tasks as a tree (``depth``, parents first)."""
    p = _project(key)
    rows = refresh(p["id"])
    return {**p, "progress": _project_progress(rows), "statuses": _counts(rows), "tasks": tree(rows)}


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    return {s: n for s in TASK_STATUSES if (n := sum(r["status"] == s for r in rows))}


# --------------------------------------------------------------------------- tasks: reading


def _task(task_id: Any) -> dict[str, Any]:
    from ledger import queries

    tid = _task_id(task_id)
    found = queries.task(_store(), tid)
    if found is None:
        raise TaskError(f"unknown task {tid} (see `orchestra tasks list`)")
    return found


def _task_id(value: Any, what: str = "task") -> int:
    try:
        tid = int(str(value).strip().lstrip("#"))
    except (TypeError, ValueError):
        raise TaskError(f"{what} {value!r}: a task id is a number (see `orchestra tasks list`)") from None
    if tid < 1:
        raise TaskError(f"{what} {value!r}: a task id is a number from 1")
    return tid


def list_tasks(project: str | int | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """Tasks (with ``progress`` and ``children``), optionally of one project and status."""
    if status is not None and status not in TASK_STATUSES:
        raise TaskError(f"status {status!r}: one of {', '.join(TASK_STATUSES)}")
    project_id = _project(project)["id"] if project is not None else None
    rows = refresh(project_id)
    return [r for r in rows if status is None or r["status"] == status]


def get_task(task_id: Any) -> dict[str, Any]:
    """One task with ``progress``, ``children`` (ids), ``runs`` (each with its state and
    cost from the ledger, and its progress) and ``history`` (every change)."""
    from ledger import queries

    task = _task(task_id)
    rows = refresh(task["project_id"], no_project=task["project_id"] is None)
    task = next(r for r in rows if r["id"] == task["id"])
    store = _store()
    task["runs"] = [{**r, "progress": queries.progress(store, r["flow_run_id"]) or 0.0}
                    for r in queries.task_runs(store, task["id"])]
    task["history"] = queries.task_history(store, task["id"])
    return task


def tree(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks in tree order (each parent before its children, by id), each with ``depth``."""
    ids = {r["id"] for r in rows}
    kids: dict[int | None, list[dict[str, Any]]] = {}
    for r in rows:
        kids.setdefault(r["parent_id"] if r["parent_id"] in ids else None, []).append(r)
    out: list[dict[str, Any]] = []

    def walk(parent: int | None, depth: int) -> None:
        for r in sorted(kids.get(parent, []), key=lambda r: r["id"]):
            out.append({**r, "depth": depth})
            walk(r["id"], depth + 1)

    walk(None, 0)
    return out


# --------------------------------------------------------------------------- status and progress


def _closed(status: str) -> bool:
    return status in ("done", "cancelled")


def follow(status: str, run_state: str | None, open_children: bool) -> str:
    """The status a task moves to, from its status, its latest run's state (the ledger's,
    else Prefect's, None when unknown) and whether a child is open."""
    if status == "running":
        if run_state is None or run_state in RUN_GOING:
            return "running"
        if run_state == "COMPLETED":
            return "blocked" if open_children else "done"
        if run_state in ("FAILED", "CRASHED"):
            return "failed"
        if run_state == "CANCELLED":
            return "cancelled"
        return status
    if status == "blocked" and not open_children:
        return "done"
    if status == "done" and open_children:
        return "blocked"
    return status


def _prefect_states(flow_run_ids: list[str]) -> dict[str, str]:
    """Prefect's state of flow runs the ledger has not seen end (best effort: {} when no
    Prefect API is known or it does not answer)."""
    if not flow_run_ids:
        return {}
    from orchestra import prefect_server, runtime

    runtime.configure(quiet_console=True)
    try:
        if prefect_server.known_api() is None:
            return {}
        from uuid import UUID

        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        with get_client(sync_client=True) as client:
            found = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=[UUID(i) for i in flow_run_ids])))
    except Exception:  # a status read never fails on Prefect: the ledger says the rest later
        return {}
    return {str(r.id): r.state.type.value for r in found if r.state is not None}


def _reap(store: Any, flow_run_ids: list[str]) -> bool:
    """Run the reaper (``orchestra.reaper``) when one of ``flow_run_ids`` is among the runs it
    ended; best effort, like the Prefect read."""
    from orchestra import prefect_server, reaper

    try:
        ended = reaper.reap(store, api=prefect_server.known_api())
    except Exception:
        return False
    return any(e["flow_run_id"] in flow_run_ids for e in ended)


def refresh(project_id: int | None = None, *, no_project: bool = False) -> list[dict[str, Any]]:
    """Bring the statuses of tasks (a project's, the tasks outside any project with
    ``no_project``, else all) up to date with their runs, children first; the tasks,
    each with ``children`` (ids) and ``progress``."""
    from ledger import queries
    from ledger.store import TaskConflict

    store = _store()
    rows = queries.tasks(store, project_id=project_id, no_project=no_project)
    going = [r["last_run"]["flow_run_id"] for r in rows
             if r["status"] == "running" and r["last_run"] and r["last_run"]["state"] in (None, "RUNNING")]
    prefect = _prefect_states(going)  # a run that crashed, or ended before the engine wrote it
    if going and _reap(store, going):  # a run whose process died ends CRASHED first: its task follows
        rows = queries.tasks(store, project_id=project_id, no_project=no_project)
    by_id = {r["id"]: r for r in rows}
    children: dict[int, list[int]] = {r["id"]: [] for r in rows}
    for r in rows:
        if r["parent_id"] in children:
            children[r["parent_id"]].append(r["id"])

    def depth(r: dict[str, Any]) -> int:
        d, seen = 0, set()
        while r["parent_id"] in by_id and r["id"] not in seen:
            seen.add(r["id"])
            r, d = by_id[r["parent_id"]], d + 1
        return d

    for r in sorted(rows, key=depth, reverse=True):  # children before their parents
        last = r["last_run"] or {}
        seen = prefect.get(last.get("flow_run_id", ""))
        state = seen if seen in RUN_ENDED else (last.get("state") or seen)
        open_children = any(not _closed(by_id[c]["status"]) for c in children[r["id"]])
        new = follow(r["status"], state, open_children)
        if new == r["status"]:
            continue
        why = (f"flow run {last['flow_run_id']} {state}" if r["status"] == "running" and state else
               "a child is open again" if new == "blocked" else "its last open child closed")
        try:
            write(SYSTEM, "task.follow", f"task:{r['id']}",
                  lambda s, r=r, new=new, why=why: s.update_task(r["id"], {"status": new}, actor=SYSTEM, reason=why,
                                                                 expect_status=[r["status"]]))
        except TaskConflict as exc:  # someone else changed it meanwhile: theirs stands
            new = exc.status or r["status"]
        r["status"] = new
    for r in rows:
        r["children"] = children[r["id"]]
    _progress(rows, children)
    return rows


def _progress(rows: list[dict[str, Any]], children: dict[int, list[int]]) -> None:
    from ledger import queries

    store = _store()
    by_id = {r["id"]: r for r in rows}
    memo: dict[int, float] = {}

    def own(r: dict[str, Any]) -> float:
        status, last = r["status"], r["last_run"]
        if status in ("done", "blocked"):
            return 1.0
        if last is None or status == "todo":
            return 0.0
        if status == "running":
            return queries.progress(store, last["flow_run_id"]) or 0.0
        steps = queries.steps(store, last["flow_run_id"])  # failed, cancelled: what completed
        return sum(s["state"] in ("COMPLETED", "SKIPPED") for s in steps) / len(steps) if steps else 0.0

    def of(tid: int, seen: frozenset[int] = frozenset()) -> float:
        if tid not in memo:
            kids = [c for c in children.get(tid, []) if by_id[c]["status"] != "cancelled" and c not in seen]
            memo[tid] = (sum(of(c, seen | {tid}) for c in kids) / len(kids)) if kids else own(by_id[tid])
        return memo[tid]

    for r in rows:
        r["progress"] = round(of(r["id"]), 4)


def _project_progress(rows: list[dict[str, Any]]) -> float:
    top = [r for r in rows if r["parent_id"] is None and r["status"] != "cancelled"]
    return round(sum(r["progress"] for r in top) / len(top), 4) if top else 0.0


# --------------------------------------------------------------------------- tasks: writing


def _clean_list(values: Iterable[Any] | None, what: str) -> list[str]:
    out: list[str] = []
    for v in values or []:
        if not isinstance(v, str) or not v.strip():
            raise TaskError(f"{what}: each is a non-empty string (got {v!r})")
        if v.strip() not in out:
            out.append(v.strip())
    return out


def _workflow(workflow: Any, inputs: dict[str, Any] | None, title: str, description: str | None,
              ) -> tuple[str | None, dict[str, Any] | None, dict[str, Any]]:
    """A task's workflow as kept (a shipped name or an absolute path; or the definition)
    and its inputs, checked against it. TaskError naming the workflow or input."""
    given = dict(inputs or {})
    try:
        wf, ref = runs.resolve(workflow)
        runs.prepare(ref, _fill(wf, given, title, description))
    except (WorkflowError, ValueError) as exc:
        raise TaskError(f"workflow: {exc}") from None
    if isinstance(ref, dict):
        return None, ref, given
    text = str(workflow).strip()
    keep = text if runs.shipped_file(text) is not None and not Path(text).is_file() else str(ref)
    return keep, None, given


def _fill(wf: Any, inputs: dict[str, Any], title: str, description: str | None) -> dict[str, Any]:
    """The task's title and description fill the workflow's inputs of those names, when not given."""
    values = dict(inputs)
    for name, value in (("title", title), ("description", description or "")):
        if name in wf.inputs and name not in values:
            values[name] = value
    return values


def _graph_problem(rows: dict[int, dict[str, Any]]) -> str | None:
    """A cycle among dependencies (``depends_on``, and children before their parent), named."""
    graph = {tid: set(r["depends_on"]) for tid, r in rows.items()}
    for tid, r in rows.items():
        if r["parent_id"] is not None and r["parent_id"] in graph:
            graph[r["parent_id"]].add(tid)
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        return "a dependency cycle (children count as dependencies of their parent): " + " -> ".join(
            f"task {t}" if t else "the new task" for t in reversed(cycle))
    return None


def _check_links(task_id: int | None, project_id: int | None, parent: int | None, depends_on: list[int],
                 rows: dict[int, dict[str, Any]]) -> None:
    if parent is not None:
        if parent not in rows:
            raise TaskError(f"unknown parent task {parent} (see `orchestra tasks list`)")
        if rows[parent]["project_id"] != project_id:
            raise TaskError(f"parent task {parent} is in project {rows[parent]['project'] or '(none)'}: a child "
                            "is in its parent's project")
        ancestor, seen = parent, []
        while ancestor is not None:
            if ancestor == task_id:
                chain = " -> ".join(f"task {t}" for t in [task_id, *seen[::-1]])
                raise TaskError(f"parent {parent}: task {task_id} would be its own ancestor ({chain} -> task "
                                f"{task_id})" if seen else f"parent {parent}: a task cannot be its own parent")
            seen.append(ancestor)
            ancestor = rows[ancestor]["parent_id"] if ancestor in rows else None
    for dep in depends_on:
        if dep == task_id:
            raise TaskError(f"depends on {dep}: a task cannot depend on itself")
        if dep not in rows:
            raise TaskError(f"depends on unknown task {dep} (see `orchestra tasks list`)")
        if rows[dep]["project_id"] != project_id:
            raise TaskError(f"depends on task {dep}, which is in project {rows[dep]['project'] or '(none)'}: "
                            "dependencies are tasks of the same project")


def add_task(title: str, *, actor: Any, project: str | int | None = None, parent: Any = None,
             workflow: Any = None, inputs: dict[str, Any] | None = None, assignee: str | None = None,
             description: str | None = None, labels: Iterable[str] = (), depends_on: Iterable[Any] = ()
             ) -> dict[str, Any]:
    """A new task (``todo``), checked whole before anything is written: TaskError for an
    unknown project, parent, dependency or workflow, inputs that do not match the
    workflow, or inputs without one. Returns it as :func:`get_task` does."""
    from ledger import queries

    title = (title or "").strip()
    if not title or len(title) > 500:
        raise TaskError("title: 1 to 500 characters")
    description = description.strip() if description and description.strip() else None
    project_row = _project(project) if project is not None else None
    parent_id = _task_id(parent, "parent") if parent is not None else None
    deps = sorted({_task_id(d, "depends on") for d in depends_on or []})
    store = _store()
    rows = {r["id"]: r for r in queries.tasks(store)}
    if parent_id is not None and parent_id in rows and project_row is None:
        project_id = rows[parent_id]["project_id"]  # a child is in its parent's project
    else:
        project_id = project_row["id"] if project_row else None
    _check_links(None, project_id, parent_id, deps, rows)
    if problem := _graph_problem({**rows, 0: {"id": 0, "parent_id": parent_id, "depends_on": deps}}):
        raise TaskError(problem)
    if inputs and workflow is None:
        raise TaskError("inputs: give the workflow they are for (--workflow); a task without one gets a "
                        "generated workflow that takes none")
    values: dict[str, Any] = {"project_id": project_id, "parent_id": parent_id, "title": title,
                              "description": description, "assignee": (assignee or "").strip() or None,
                              "labels": _clean_list(labels, "labels") or None, "depends_on": deps or None}
    if workflow is not None:
        ref, definition, given = _workflow(workflow, inputs, title, description)
        values.update(workflow=ref, definition=definition, inputs=given or None,
                      plan={"source": "given" if definition else "workflow"})
    task_id = write(actor, "task.create", "task:new", lambda s: s.create_task(values, actor=_name(actor)))
    return get_task(task_id)


def update_task(task_id: Any, *, actor: Any, title: str = _UNSET, description: str | None = _UNSET,
                assignee: str | None = _UNSET, labels: Iterable[str] = _UNSET, parent: Any = _UNSET,
                depends_on: Iterable[Any] = _UNSET, workflow: Any = _UNSET,
                inputs: dict[str, Any] | None = _UNSET) -> dict[str, Any]:
    """Change a task's fields (those given; ``parent=None`` makes it a top-level task),
    checked as :func:`add_task` checks them, and a parent cycle refused. A running task's
    workflow and inputs stay as they are."""
    from ledger import queries

    task = _task(task_id)
    rows = {r["id"]: r for r in queries.tasks(_store())}
    changes: dict[str, Any] = {}
    if title is not _UNSET:
        if not (title or "").strip() or len(title.strip()) > 500:
            raise TaskError("title: 1 to 500 characters")
        changes["title"] = title.strip()
    if description is not _UNSET:
        changes["description"] = description.strip() if description and description.strip() else None
    if assignee is not _UNSET:
        changes["assignee"] = (assignee or "").strip() or None
    if labels is not _UNSET:
        changes["labels"] = _clean_list(labels, "labels") or None
    parent_id = task["parent_id"] if parent is _UNSET else (_task_id(parent, "parent") if parent is not None
                                                            else None)
    deps = task["depends_on"] if depends_on is _UNSET else sorted({_task_id(d, "depends on") for d in depends_on})
    if parent is not _UNSET or depends_on is not _UNSET:
        _check_links(task["id"], task["project_id"], parent_id, deps, rows)
        after = {**rows, task["id"]: {**task, "parent_id": parent_id, "depends_on": deps}}
        if problem := _graph_problem(after):
            raise TaskError(f"task {task['id']}: {problem}")
        changes.update(parent_id=parent_id, depends_on=deps or None)
    if workflow is not _UNSET or inputs is not _UNSET:
        if task["status"] == "running":
            raise TaskError(f"task {task['id']} is running: its workflow changes once its run ends")
        new_workflow = (task["workflow"] or task["definition"]) if workflow is _UNSET else workflow
        new_inputs = task["inputs"] if inputs is _UNSET else (inputs or {})
        if new_workflow is None:
            if new_inputs:
                raise TaskError("inputs: give the workflow they are for (--workflow)")
            changes.update(workflow=None, definition=None, inputs=None, plan=None)
        else:
            ref, definition, given = _workflow(new_workflow, new_inputs, changes.get("title", task["title"]),
                                               changes.get("description", task["description"]))
            changes.update(workflow=ref, definition=definition, inputs=given or None,
                           plan={"source": "given" if definition else "workflow"})
    if changes:
        write(actor, "task.update", f"task:{task['id']}",
              lambda s: s.update_task(task["id"], changes, actor=_name(actor)))
    return get_task(task["id"])


# --------------------------------------------------------------------------- from a task to a workflow


def _definition_text(task: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None, str]:
    """The task's workflow: (its name, its definition as a dict, its text as YAML)."""
    from orchestra.planner import as_yaml

    if task["definition"] is not None:
        return task["definition"].get("name"), task["definition"], as_yaml(task["definition"])
    wf, ref = runs.resolve(task["workflow"])
    text = Path(ref).read_text(encoding="utf-8") if isinstance(ref, str) and Path(ref).is_file() else as_yaml(
        wf.model_dump(exclude_defaults=True))
    return wf.name, wf.model_dump(exclude_defaults=True), text


def _planned(task: dict[str, Any], source: str) -> dict[str, Any]:
    try:
        name, definition, text = _definition_text(task)
    except (WorkflowError, ValueError) as exc:
        raise TaskError(f"task {task['id']}: its workflow cannot be read: {exc}") from None
    return {"task_id": task["id"], "source": source, "workflow": name, "definition": definition, "yaml": text,
            "inputs": task["inputs"], "plan": task["plan"]}


def shown_workflow(task_id: Any) -> dict[str, Any]:
    """The task's workflow as :func:`plan_task` returns it, without planning; TaskError
    when it has none yet."""
    task = _task(task_id)
    if task["workflow"] is None and task["definition"] is None:
        raise TaskError(f"task {task['id']} has no workflow yet (`orchestra tasks plan {task['id']}`)")
    return _planned(task, (task["plan"] or {}).get("source") or "workflow")


async def plan_task(task_id: Any, *, actor: Any) -> dict[str, Any]:
    """``create_workflow_from_task``: the task's workflow, written now when it names none.

    A task that names a workflow keeps it. Otherwise the planner writes one (validated,
    one repair round) and it is kept with the task; without a planner the task gets the
    shipped ``task`` workflow. Returns {task_id, source (workflow | given | planner |
    default), workflow (its name), definition, yaml, inputs, plan}. TaskError when the
    planner's answer stays invalid (the task stays as it was, the errors are kept in its
    ``plan``), PlannerError when the planner cannot be asked."""
    import anyio

    from orchestra import planner as planning

    task = _task(task_id)
    source = (task["plan"] or {}).get("source")
    if source in ("workflow", "given"):
        return _planned(task, source)
    if task["status"] == "running":
        raise TaskError(f"task {task['id']} is running: plan it again once its run ends")
    try:
        agent = planning.planner_agent()
    except planning.PlannerSettingError as exc:
        raise TaskError(str(exc)) from None
    target = f"task:{task['id']}"
    if agent is None:
        changes = {"workflow": DEFAULT_WORKFLOW, "definition": None, "inputs": None,
                   "plan": {"source": "default", "reason": "no planner configured (ORCHESTRA_PLANNER, "
                                                           "agents/planner.yaml)"}}
        write(actor, "task.plan", target, lambda s: s.update_task(task["id"], changes, actor=_name(actor),
                                                                 reason="the shipped task workflow"))
        return _planned(_task(task["id"]), "default")
    context = _context(task)
    await anyio.to_thread.run_sync(lambda: ensure_prefect(background=False))  # planning is a flow run
    try:
        plan = await planning.write_workflow(agent, task, context, ledger=_store())
    except planning.PlannerError as exc:
        record = {"source": "planner", "agent": agent.name, "model": agent.model, "ok": False, "errors": [str(exc)],
                  "flow_run_id": exc.flow_run_id}
        write(actor, "task.plan", target, lambda s: s.update_task(task["id"], {"plan": record}, actor=_name(actor),
                                                                 reason="the planner could not be asked"))
        raise
    if plan.definition is None:
        write(actor, "task.plan", target, lambda s: s.update_task(
            task["id"], {"plan": plan.record()}, actor=_name(actor), reason="the planner's workflow is invalid"))
        raise TaskError(f"task {task['id']}: the planner's workflow is still invalid after one repair round "
                        f"(the task stays {task['status']}; `orchestra tasks show {task['id']}` keeps the errors):"
                        + "".join(f"\n  - {e}" for e in plan.errors))
    changes = {"workflow": None, "definition": plan.definition, "inputs": None, "plan": plan.record()}
    write(actor, "task.plan", target, lambda s: s.update_task(task["id"], changes, actor=_name(actor),
                                                             reason=f"written by the planner ({plan.model})"))
    return _planned(_task(task["id"]), "planner")


def _context(task: dict[str, Any]) -> dict[str, Any]:
    from ledger import queries

    context: dict[str, Any] = {}
    if task["project"]:
        p = queries.project(_store(), task["project_id"])
        context["project"] = p["name"] + (f" - {p['description']}" if p and p["description"] else "")
    if task["parent_id"] is not None:
        parent = queries.task(_store(), task["parent_id"])
        context["parent"] = parent["title"] if parent else None
    return context


async def plan_project(project: str | int, *, actor: Any) -> dict[str, Any]:
    """``create_workflows_for_project``: plan every task of the project that has no
    workflow yet (those that name one keep it). {project, tasks: [{task_id, source,
    workflow, ok, errors}]}; one task's invalid plan does not stop the others."""
    p = _project(project)
    out = []
    for t in tree(refresh(p["id"])):
        plan = t["plan"] or {}
        if plan.get("source") in ("workflow", "given") or (plan.get("source") and plan.get("ok", True)):
            out.append({"task_id": t["id"], "source": plan["source"], "ok": True, "errors": [],
                        "workflow": t["workflow"] or (t["definition"] or {}).get("name")})
            continue
        try:
            planned = await plan_task(t["id"], actor=actor)
        except TaskError as exc:
            errors = (_task(t["id"])["plan"] or {}).get("errors") or [str(exc)]
            out.append({"task_id": t["id"], "source": "planner", "workflow": None, "ok": False, "errors": errors})
            continue
        out.append({"task_id": t["id"], "source": planned["source"], "workflow": planned["workflow"], "ok": True,
                    "errors": []})
    return {"project": p["name"], "tasks": out}


# --------------------------------------------------------------------------- execution


def _request(task: dict[str, Any]) -> Any:
    ref = task["definition"] if task["definition"] is not None else task["workflow"]
    try:
        wf, resolved = runs.resolve(ref)
        return runs.prepare(resolved, _fill(wf, task["inputs"] or {}, task["title"], task["description"]))
    except (WorkflowError, ValueError) as exc:
        raise TaskError(f"task {task['id']}: {exc}") from None


def ensure_prefect(*, background: bool = True) -> None:
    """A Prefect server for runs in the background (``runs.ensure_prefect``); TaskError when
    the configured one does not answer or, for a run in the background, the setting is
    ephemeral (planning, in this process, can use Prefect's ephemeral server)."""
    from orchestra.prefect_server import UnreachableServer

    try:
        url = runs.ensure_prefect()
    except UnreachableServer as exc:
        raise TaskError(str(exc)) from None
    if url is None and background:
        raise TaskError("a task runs in the background, which needs a Prefect server: unset "
                        "ORCHESTRA_PREFECT=ephemeral (Orchestra's local server) or set PREFECT_API_URL")


async def execute_task(task_id: Any, *, actor: Any, reason: str | None = None) -> dict[str, Any]:
    """``execute_task_workflow``: start the task's workflow (planned first when it has
    none) as a flow run in the background; {task_id, flow_run_id} at once. TaskError when
    the task is running (or blocked), its workflow or inputs do not hold any more, or its
    plan is invalid; the task is ``running`` exactly when its flow run exists."""
    import anyio

    from ledger.store import TaskConflict

    task = _task(task_id)
    rows = refresh(task["project_id"], no_project=task["project_id"] is None)
    task = next(r for r in rows if r["id"] == task["id"])
    if task["status"] == "running":
        run = (task["last_run"] or {}).get("flow_run_id")
        raise TaskError(f"task {task['id']} is already running (flow run {run}); wait for it, or "
                        f"`orchestra tasks cancel {task['id']}`")
    if task["status"] not in EXECUTABLE:
        raise TaskError(f"task {task['id']} is {task['status']}: its run completed and it waits for its children "
                        f"({', '.join(str(c) for c in task['children'] if not _closed(_status(rows, c)))})")
    if task["workflow"] is None and task["definition"] is None:
        await plan_task(task["id"], actor=actor)
        task = _task(task["id"])
    request = _request(task)
    await anyio.to_thread.run_sync(ensure_prefect)
    before = task["status"]

    def claim(flow_run_id: str) -> None:
        try:
            write(actor, "task.execute", f"task:{task['id']}", lambda s: s.update_task(
                task["id"], {"status": "running"}, actor=_name(actor), expect_status=[before], add_run=flow_run_id,
                reason=f"flow run {flow_run_id} of {request.wf.name}" + (f" ({reason})" if reason else "")))
        except TaskConflict as exc:
            raise TaskError(f"task {task['id']} is {exc.status} now (another request started it meanwhile)") from None

    tags = [f"orchestra-task:{task['id']}"] + ([f"orchestra-project:{task['project']}"] if task["project"] else [])
    try:
        flow_run_id = await runs.start(request, tags=tags, on_created=claim)
    except TaskError:
        raise
    except ValueError as exc:
        raise TaskError(f"task {task['id']}: {exc}") from None
    return {"task_id": task["id"], "flow_run_id": flow_run_id}


def _status(rows: list[dict[str, Any]], task_id: int) -> str:
    return next(r["status"] for r in rows if r["id"] == task_id)


async def wait_for_task(task_id: Any, flow_run_id: str, *, check_every: int = 10) -> dict[str, Any]:
    """Wait for a task's flow run to end (Prefect's ``wait_for_flow_run``), then return the
    task, its status brought up to date. A run asked to cancel stays CANCELLING on the API
    when nothing executes the cancellation, so every ``check_every`` seconds the task and
    the ledger are asked too: a cancelled task, or a run the ledger has finished, ends the wait."""
    from uuid import UUID

    import anyio
    from prefect.exceptions import FlowRunWaitTimeout
    from prefect.flow_runs import wait_for_flow_run

    from ledger import queries

    while True:
        try:
            await wait_for_flow_run(UUID(flow_run_id), timeout=check_every)
            return get_task(task_id)
        except FlowRunWaitTimeout:
            task = await anyio.to_thread.run_sync(get_task, task_id)
            run = queries.run(_store(), flow_run_id)
            if task["status"] == "cancelled" or (run is not None and run["state"] != "RUNNING"
                                                 and task["status"] != "running"):
                return task


async def cancel_task(task_id: Any, *, actor: Any) -> dict[str, Any]:
    """Cancel a task: its running flow run is asked to cancel (CANCELLING on the Prefect
    API), and the task is ``cancelled`` (it stays so: a run that ends later does not
    change it). TaskError for a task that is done or cancelled already."""
    import anyio

    from ledger.store import TaskConflict

    task = _task(task_id)
    rows = refresh(task["project_id"], no_project=task["project_id"] is None)
    task = next(r for r in rows if r["id"] == task["id"])
    if task["status"] in ("done", "cancelled"):
        raise TaskError(f"task {task['id']} is {task['status']} already: nothing to cancel")
    reason = f"cancelled by {_name(actor)}"
    run = task["last_run"]["flow_run_id"] if task["status"] == "running" and task["last_run"] else None
    if run is not None:
        await anyio.to_thread.run_sync(ensure_prefect)
        try:
            cancelled = await _cancel_flow_run(actor, run)
            reason += f"; flow run {run} {cancelled['state']}"
        except ValueError as exc:  # the run is not on this Prefect server: the task is cancelled all the same
            reason += f"; flow run {run}: {exc}"
    try:
        write(actor, "task.cancel", f"task:{task['id']}", lambda s: s.update_task(
            task["id"], {"status": "cancelled"}, actor=_name(actor), reason=reason, expect_status=[task["status"]]))
    except TaskConflict as exc:
        raise TaskError(f"task {task['id']} is {exc.status} now (it changed meanwhile); try again") from None
    return get_task(task["id"])


async def cancel_run(flow_run_id: str, *, actor: Any) -> dict[str, Any]:
    """``cancel_run``: ask Prefect to cancel a flow run (CANCELLING); when it executes a
    running task, that task is cancelled too. {flow_run_id, state, previous, task_id}."""
    import anyio

    from ledger import queries

    flow_run_id = str(flow_run_id).strip()
    task_id = queries.task_of_run(_store(), flow_run_id)
    await anyio.to_thread.run_sync(ensure_prefect)
    cancelled = await _cancel_flow_run(actor, flow_run_id)
    if task_id is not None:
        task = _task(task_id)
        if task["status"] == "running" and (task["last_run"] or {}).get("flow_run_id") == flow_run_id:
            from ledger.store import TaskConflict

            try:
                write(actor, "task.cancel", f"task:{task_id}", lambda s: s.update_task(
                    task_id, {"status": "cancelled"}, actor=_name(actor), expect_status=["running"],
                    reason=f"cancelled by {_name(actor)}; flow run {flow_run_id} {cancelled['state']}"))
            except TaskConflict:  # it finished meanwhile: its status follows the run
                pass
    return {**cancelled, "task_id": task_id}


async def workflow_status(flow_run_id: str | None = None, task_id: Any = None) -> dict[str, Any]:
    """``get_workflow_status``: a flow run's (or a task's latest run's) state (Prefect's
    when it answers, else the ledger's), its steps with their states, progress (0..1) and
    cost so far. TaskError for an unknown run or task, or a task without a run yet."""
    from ledger import queries

    if (flow_run_id is None) == (task_id is None):
        raise TaskError("give flow_run_id or task_id (one of them)")
    store = _store()
    if task_id is not None:
        task = get_task(task_id)
        if task["last_run"] is None:
            raise TaskError(f"task {task['id']} has no run yet (`orchestra tasks execute {task['id']}`)")
        flow_run_id = task["last_run"]["flow_run_id"]
    flow_run_id = str(flow_run_id).strip()
    owner = queries.task_of_run(store, flow_run_id)
    if owner is not None:
        refresh(_task(owner)["project_id"], no_project=_task(owner)["project_id"] is None)
    row = queries.run(store, flow_run_id)
    prefect = _prefect_states([flow_run_id]) if _looks_like_uuid(flow_run_id) else {}
    if row is None and flow_run_id not in prefect:
        raise TaskError(f"no flow run {flow_run_id!r} in the ledger or on the Prefect server")
    steps = queries.steps(store, flow_run_id)
    return {"flow_run_id": flow_run_id, "task_id": owner, "workflow": row["workflow"] if row else None,
            "state": prefect.get(flow_run_id) or row["state"], "ledger_state": row["state"] if row else None,
            "progress": queries.progress(store, flow_run_id) or 0.0,
            "cost_usd": row["cost_usd"] if row else 0.0, "calls": row["n_calls"] if row else 0,
            "started": row["started"] if row else None, "ended": row["ended"] if row else None,
            "steps": [{k: s[k] for k in ("step", "kind", "state", "agent", "model", "error", "started", "ended")}
                      for s in steps]}


def _looks_like_uuid(text: str) -> bool:
    from uuid import UUID

    try:
        UUID(text)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- a project's execution


def readiness(rows: list[dict[str, Any]], skip: Iterable[int] = ()) -> tuple[list[int], dict[int, list[int]]]:
    """Of a project's tasks: those to run now (``todo`` or ``failed``, every dependency
    and child closed) and those waiting ({task_id: the open tasks it waits for})."""
    by_id = {r["id"]: r for r in rows}
    skip = set(skip)
    ready, waiting = [], {}
    for r in rows:
        if r["status"] not in PROJECT_RUNS or r["id"] in skip:
            continue
        needs = sorted({*r["depends_on"], *r.get("children", [])})
        open_ = [d for d in needs if d in by_id and not _closed(by_id[d]["status"])]
        if open_:
            waiting[r["id"]] = open_
        else:
            ready.append(r["id"])
    return ready, waiting


def concurrency_name(project: dict[str, Any]) -> str:
    """The Prefect global concurrency limit that bounds a project's task runs."""
    return f"orchestra-project-{project['id']}"


async def run_project(project: str | int, *, actor: str, limit: int) -> dict[str, Any]:
    """The body of a project's execution (``orchestra.task_flow``): run the tasks that are
    ready, at most ``limit`` at once, and those that become ready as others finish,
    until none is left. The bound is a Prefect global concurrency limit
    (``orchestra-project-<id>``, ``limit`` slots) held by each task's run from its start to
    its final state, so two executions of one project share it. Each task is tried once
    per execution. {project, limit, started: [{task_id, flow_run_id}], errors: {task_id:
    message}, statuses: {task_id: status}, waiting: {task_id: [open tasks]}}."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.concurrency.asyncio import concurrency

    from orchestra.planner import PlannerError

    p = _project(project)
    name = concurrency_name(p)
    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(name, int(limit))
        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=True))
    started: list[dict[str, Any]] = []
    errors: dict[int, str] = {}
    tried: set[int] = set()
    in_flight: dict[int, asyncio.Task] = {}

    async def one(task_id: int) -> None:
        async with concurrency(name, occupy=1, strict=True):
            try:
                run = await execute_task(task_id, actor=actor, reason=f"project {p['name']}")
            except (TaskError, PlannerError) as exc:
                errors[task_id] = str(exc)
                return
            except Exception as exc:  # one task that cannot start does not stop the others
                errors[task_id] = redact(f"{type(exc).__name__}: {exc}")
                return
            started.append(run)
            await wait_for_task(task_id, run["flow_run_id"])

    while True:
        ready, waiting = readiness(refresh(p["id"]), skip=tried)
        for tid in ready:
            tried.add(tid)
            in_flight[tid] = asyncio.create_task(one(tid))
        if not in_flight:
            break
        done, _ = await asyncio.wait(in_flight.values(), return_when=asyncio.FIRST_COMPLETED)
        for tid in [t for t, f in in_flight.items() if f in done]:
            in_flight.pop(tid).result()
    rows = refresh(p["id"])
    return {"project": p["name"], "limit": int(limit), "started": started,
            "errors": {str(k): v for k, v in errors.items()},
            "statuses": {str(r["id"]): r["status"] for r in rows}, "waiting": {str(k): v for k, v in waiting.items()}}

