"""`orchestra tasks add|list|show|update|plan|execute|cancel` and `orchestra projects
add|list|show|plan|execute`: the task service (``orchestra.tasks``) on the command line.

A mistake (an unknown project, parent, task or workflow, a cycle, inputs that do not
match, a task already running, a planner answer that stays invalid) exits 2 with one
line (or the validator's list); a planner or Prefect that cannot be reached exits 1.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

import typer
from rich.markup import escape

from orchestra.cli.common import Exit, err, fail, out, parse_pairs, print_json

COLORS = {"todo": "white", "running": "yellow", "done": "green", "failed": "red", "blocked": "magenta",
          "cancelled": "dim"}


def _actor():
    """Who the CLI acts as: the machine's user, the owner (``orchestra.access.cli_actor``)."""
    from orchestra.access import cli_actor

    return cli_actor()


def register(app: typer.Typer) -> None:
    tasks_app = typer.Typer(no_args_is_help=True, help="Tasks: work items that become workflow runs.")
    for name, fn in (("add", add), ("list", list_), ("show", show), ("update", update), ("plan", plan),
                     ("execute", execute), ("cancel", cancel)):
        tasks_app.command(name)(fn)
    app.add_typer(tasks_app, name="tasks")
    projects_app = typer.Typer(no_args_is_help=True, help="Projects: groups of tasks, with their progress.")
    for name, fn in (("add", project_add), ("list", project_list), ("show", project_show),
                     ("plan", project_plan), ("execute", project_execute)):
        projects_app.command(name)(fn)
    app.add_typer(projects_app, name="projects")


def _service(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call the task service (a coroutine is run to its end); its errors as exit codes."""
    from orchestra.planner import PlannerError
    from orchestra.tasks import TaskError

    try:
        result = fn(*args, **kwargs)
        if asyncio.iscoroutine(result):
            result = asyncio.run(result)
        return result
    except TaskError as exc:
        raise fail(str(exc)) from None
    except (PlannerError, RuntimeError) as exc:
        raise fail(str(exc), 1) from None


def _inputs(pairs: list[str]) -> dict[str, str] | None:
    return parse_pairs(pairs) or None


def _status(status: str) -> str:
    color = COLORS.get(status, "white")
    return f"[{color}]{status}[/{color}]"


def _percent(x: float | None) -> str:
    return f"{round(100 * (x or 0.0))}%"


def _workflow_label(t: dict) -> str:
    plan = t.get("plan") or {}
    if t.get("definition"):
        return f"{t['definition'].get('name')} ({plan.get('source', 'given')})"
    if t.get("workflow"):
        return t["workflow"] if plan.get("source") != "default" else f"{t['workflow']} (default)"
    return "not planned" + (" (plan invalid)" if plan and not plan.get("ok", True) else "")


def _task_table(rows: list[dict], title: str) -> None:
    from rich.table import Table

    from orchestra.tasks import tree

    table = Table(title=title, title_justify="left")
    for col in ("id", "project", "title", "status", "assignee", "progress", "workflow", "after"):
        table.add_column(col, justify="right" if col in ("id", "progress") else "left")
    for t in tree(rows):
        indent = "  " * t["depth"] + ("└ " if t["depth"] else "")
        table.add_row(str(t["id"]), escape(t["project"] or ""), indent + escape(t["title"]), _status(t["status"]),
                      escape(t["assignee"] or ""), _percent(t["progress"]), escape(_workflow_label(t)),
                      ", ".join(map(str, t["depends_on"])))
    out.print(table)


# --------------------------------------------------------------------------- tasks


def add(
    title: str = typer.Argument(..., help="What to do"),
    project: Optional[str] = typer.Option(None, "--project", "-p", help="The project (name or id)"),
    parent: Optional[int] = typer.Option(None, "--parent", help="The parent task's id"),
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="A shipped workflow's name or a file "
                                                                          "(default: planned later)"),
    input: list[str] = typer.Option([], "-i", "--input", help="key=value for the workflow, repeatable"),
    assignee: Optional[str] = typer.Option(None, "--assignee", "-a", help="Who owns it"),
    description: Optional[str] = typer.Option(None, "--description", "-d", help="Details"),
    label: list[str] = typer.Option([], "--label", "-l", help="A label, repeatable"),
    after: list[int] = typer.Option([], "--after", help="A task of the project it runs after, repeatable"),
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print only the new task's id"),
) -> None:
    """Add a task (status todo)."""
    from orchestra import tasks

    task = _service(tasks.add_task, title, actor=_actor(), project=project, parent=parent, workflow=workflow,
                    inputs=_inputs(input), assignee=assignee, description=description, labels=label,
                    depends_on=after)
    if as_json:
        print_json(task)
    elif quiet:
        out.print(str(task["id"]))
    else:
        where = [f"project {task['project']}"] if task["project"] else []
        where += [f"parent {task['parent_id']}"] if task["parent_id"] else []
        out.print(f"task {task['id']} added: {escape(task['title'])}" + (f" ({', '.join(where)})" if where else ""),
                  highlight=False)


def list_(
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only this project's tasks"),
    status: Optional[str] = typer.Option(None, "--status", "-s", help="todo|running|done|failed|blocked|cancelled"),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list"),
) -> None:
    """The tasks (a tree: children under their parent) with status, assignee and progress."""
    from orchestra import tasks

    rows = _service(tasks.list_tasks, project=project, status=status)
    if as_json:
        print_json(rows)
    elif not rows:
        out.print("no tasks" + (f" in project {project}" if project else "") + (f" with status {status}" if status
                                                                                 else ""))
    else:
        _task_table(rows, "tasks")


def show(
    task_id: int = typer.Argument(..., help="The task's id"),
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON"),
) -> None:
    """One task: its fields, progress, workflow, runs and history."""
    from orchestra import tasks

    task = _service(tasks.get_task, task_id)
    if as_json:
        print_json(task)
        return
    _print_task(task)


def _print_task(t: dict) -> None:
    from rich import box
    from rich.table import Table

    out.print(f"[bold]task {t['id']}[/bold]: {escape(t['title'])} — {_status(t['status'])} · "
              f"{_percent(t['progress'])}", highlight=False)
    facts = [("project", t["project"]), ("parent", t["parent_id"]), ("children", ", ".join(map(str, t["children"]))),
             ("runs after", ", ".join(map(str, t["depends_on"]))), ("assignee", t["assignee"]),
             ("labels", ", ".join(t["labels"])), ("workflow", _workflow_label(t)),
             ("inputs", t["inputs"] or None), ("description", t["description"])]
    for key, value in facts:
        if value not in (None, "", {}):
            out.print(f"  {key}: {escape(str(value))}", highlight=False)
    plan = t.get("plan") or {}
    if plan.get("errors"):
        err.print(f"[red]the last plan failed ({escape(str(plan.get('model') or ''))}):[/red]", highlight=False)
        for e in plan["errors"]:
            err.print(f"  - {escape(e)}", highlight=False)
    if t["runs"]:
        runs = Table(title="runs", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                     collapse_padding=True)
        runs.add_column("flow run", no_wrap=True, min_width=36)
        for col in ("state", "started (UTC)"):
            runs.add_column(col, no_wrap=True)
        runs.add_column("cost $", no_wrap=True, min_width=7, justify="right")
        for r in t["runs"]:
            state = (r["state"] or "starting") + (f" {_percent(r['progress'])}" if r["state"] == "RUNNING" else "")
            runs.add_row(r["flow_run_id"], state, _when(r["started"]), f"{r['cost_usd']:.4f}")
        out.print(runs)
    history = Table(title="history", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                     collapse_padding=True)
    history.add_column("at (UTC)", no_wrap=True)
    for col in ("by", "field", "from", "to", "why"):
        history.add_column(col, overflow="fold")
    for h in t["history"]:
        history.add_row(_when(h["at"]), escape(h["actor"]), h["field"], escape(_clip(h["old"])), escape(_clip(h["new"])),
                        escape(h["reason"] or ""))
    out.print(history)


def _when(iso: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC)."""
    return (iso or "")[:19].replace("T", " ")


def _clip(text: str | None, n: int = 60) -> str:
    text = text or ""
    return text if len(text) <= n else text[: n - 1] + "…"


def update(
    task_id: int = typer.Argument(..., help="The task's id"),
    title: Optional[str] = typer.Option(None, "--title"),
    description: Optional[str] = typer.Option(None, "--description", "-d"),
    assignee: Optional[str] = typer.Option(None, "--assignee", "-a", help="Who owns it ('' for nobody)"),
    label: Optional[list[str]] = typer.Option(None, "--label", "-l", help="The labels, repeatable (replace them)"),
    parent: Optional[int] = typer.Option(None, "--parent", help="A new parent task"),
    no_parent: bool = typer.Option(False, "--no-parent", help="Make it a top-level task"),
    after: Optional[list[int]] = typer.Option(None, "--after", help="The tasks it runs after (replace them)"),
    no_after: bool = typer.Option(False, "--no-after", help="It runs after no task"),
    workflow: Optional[str] = typer.Option(None, "--workflow", "-w", help="A shipped workflow's name or a file"),
    input: list[str] = typer.Option([], "-i", "--input", help="key=value for the workflow (replace them)"),
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON"),
) -> None:
    """Change a task: its title, description, assignee, labels, parent, dependencies or workflow."""
    from orchestra import tasks

    if parent is not None and no_parent:
        raise fail("--parent and --no-parent: give one")
    changes: dict[str, Any] = {}
    for key, value in (("title", title), ("description", description), ("assignee", assignee),
                       ("labels", label), ("workflow", workflow)):
        if value is not None:
            changes[key] = value
    if parent is not None or no_parent:
        changes["parent"] = None if no_parent else parent
    if after is not None or no_after:
        changes["depends_on"] = [] if no_after else after
    if input:
        changes["inputs"] = parse_pairs(input)
    if not changes:
        raise fail("nothing to change: give --title, --description, --assignee, --label, --parent, --after, "
                   "--workflow or -i")
    task = _service(tasks.update_task, task_id, actor=_actor(), **changes)
    print_json(task) if as_json else out.print(f"task {task['id']} updated", highlight=False)


def plan(
    task_id: int = typer.Argument(..., help="The task's id"),
    as_json: bool = typer.Option(False, "--json", help="Print {task_id, source, workflow, definition, ...}"),
) -> None:
    """Create the task's workflow (the planner, or the shipped `task` workflow) and print it."""
    from orchestra import tasks

    planned = _service(tasks.plan_task, task_id, actor=_actor())
    if as_json:
        print_json(planned)
        return
    err.print(f"task {task_id}: workflow [bold]{escape(planned['workflow'] or '')}[/bold] ({planned['source']})",
              highlight=False)
    out.print(planned["yaml"].rstrip(), markup=False, highlight=False)


def execute(
    task_id: int = typer.Argument(..., help="The task's id"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run; exit 0 when the task is done, 1 otherwise"),
    as_json: bool = typer.Option(False, "--json", help="Print {task_id, flow_run_id} (with --wait: the task)"),
) -> None:
    """Run the task's workflow in the background (planned first when it has none); shows the workflow first."""
    from orchestra import tasks

    _service(tasks.ensure_prefect)  # before Prefect is imported
    before = _service(tasks.get_task, task_id)
    if before["workflow"] is None and before["definition"] is None:
        shown = _service(tasks.plan_task, task_id, actor=_actor())
    else:
        shown = _service(tasks.shown_workflow, task_id)
    if not as_json:
        err.print(f"task {task_id}: workflow [bold]{escape(shown['workflow'] or '')}[/bold] ({shown['source']})",
                  highlight=False)
        out.print(shown["yaml"].rstrip(), markup=False, highlight=False)
    started = _service(tasks.execute_task, task_id, actor=_actor())
    if not wait:
        print_json(started) if as_json else out.print(
            f"task {task_id}: flow run {started['flow_run_id']} started (`orchestra tasks show {task_id}`)",
            highlight=False)
        return
    if not as_json:
        err.print(f"[dim]task {task_id}: flow run {started['flow_run_id']} started; waiting for it[/dim]")
    task = _service(tasks.wait_for_task, task_id, started["flow_run_id"])
    if as_json:
        print_json(task)
    else:
        out.print(f"task {task['id']}: {_status(task['status'])} · {_percent(task['progress'])} · flow run "
                  f"{started['flow_run_id']}", highlight=False)
    raise Exit(0 if task["status"] in ("done", "blocked") else 1)


def cancel(task_id: int = typer.Argument(..., help="The task's id")) -> None:
    """Cancel a task (and ask Prefect to cancel its running flow run)."""
    from orchestra import tasks

    if _service(tasks.get_task, task_id)["status"] == "running":
        _service(tasks.ensure_prefect)  # before Prefect is imported
    task = _service(tasks.cancel_task, task_id, actor=_actor())
    why = task["history"][-1]["reason"] if task["history"] else ""
    out.print(f"task {task['id']}: {task['status']} ({escape(why or '')})", highlight=False)


# --------------------------------------------------------------------------- projects


def project_add(
    name: str = typer.Argument(..., help="The project's name"),
    description: Optional[str] = typer.Option(None, "--description", "-d"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Add a project."""
    from orchestra import tasks

    p = _service(tasks.add_project, name, description, actor=_actor())
    print_json(p) if as_json else out.print(f"project {escape(p['name'])} added (id {p['id']})", highlight=False)


def project_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The projects with their number of tasks and progress."""
    from rich.table import Table

    from orchestra import tasks

    rows = _service(tasks.list_projects)
    if as_json:
        print_json(rows)
        return
    if not rows:
        out.print("no projects (add one with `orchestra projects add NAME`)")
        return
    table = Table(title="projects", title_justify="left")
    for col in ("id", "name", "tasks", "progress", "statuses", "description"):
        table.add_column(col)
    for p in rows:
        table.add_row(str(p["id"]), escape(p["name"]), str(p["task_count"]), f"{_bar(p['progress'])} {_percent(p['progress'])}",
                      ", ".join(f"{n} {s}" for s, n in p["statuses"].items()), escape(p["description"] or ""))
    out.print(table)


def _bar(x: float, width: int = 10) -> str:
    full = round((x or 0.0) * width)
    return "█" * full + "░" * (width - full)


def project_show(name: str = typer.Argument(..., help="The project's name or id"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """A project's task tree with status, assignee and progress."""
    from orchestra import tasks

    p = _service(tasks.get_project, name)
    if as_json:
        print_json(p)
        return
    out.print(f"[bold]project {escape(p['name'])}[/bold] — {_bar(p['progress'])} {_percent(p['progress'])}"
              + (f"\n  {escape(p['description'])}" if p["description"] else ""), highlight=False)
    if p["tasks"]:
        _task_table(p["tasks"], "tasks")
    else:
        out.print(f"no tasks yet (`orchestra tasks add TITLE --project {p['name']}`)", highlight=False)


def project_plan(name: str = typer.Argument(..., help="The project's name or id"),
                 as_json: bool = typer.Option(False, "--json")) -> None:
    """Create the workflow of every task of the project that has none; exit 2 if one stays invalid."""
    from orchestra import tasks

    planned = _service(tasks.plan_project, name, actor=_actor())
    if as_json:
        print_json(planned)
    else:
        for t in planned["tasks"]:
            line = f"task {t['task_id']}: " + (f"{t['workflow']} ({t['source']})" if t["ok"] else "invalid plan")
            out.print(escape(line), highlight=False)
            for e in t["errors"]:
                err.print(f"  - {escape(e)}", highlight=False)
    raise Exit(0 if all(t["ok"] for t in planned["tasks"]) else 2)


def project_execute(
    name: str = typer.Argument(..., help="The project's name or id"),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Task runs at once (default: "
                                                                     "ORCHESTRA_PROJECT_CONCURRENCY, 4)"),
    wait: bool = typer.Option(False, "--wait", help="Run here until no task is left to run; exit 1 if one failed"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run the project's tasks that have no open dependency, in parallel (at most --limit at once),
    then those that become ready, in the background (or here, with --wait)."""
    from orchestra import tasks

    _service(tasks.ensure_prefect)  # before Prefect is imported
    if not wait:
        started = _service(_start_project, name, limit)
        if as_json:
            print_json(started)
        elif started["flow_run_id"] is None:
            out.print(f"project {escape(started['project'])}: no task is ready to run"
                      + _waiting(started["waiting"]), highlight=False)
        else:
            out.print(f"project {escape(started['project'])}: flow run {started['flow_run_id']} runs tasks "
                      f"{', '.join(map(str, started['ready']))} first (at most {started['limit']} at once)"
                      + _waiting(started["waiting"]), highlight=False)
        return
    from core.settings import settings
    from orchestra.task_flow import execute_project

    from orchestra import access

    project = _service(tasks.get_project, name)
    who = _actor()
    access.perform(who, "project.execute", f"project:{project['name']}", lambda: None)  # this process runs it
    result = _service(execute_project, str(project["id"]), limit or settings().project_concurrency, who.name)
    if as_json:
        print_json(result)
    else:
        for tid, status in result["statuses"].items():
            line = f"task {tid}: {_status(status)}"
            if tid in result["errors"]:
                line += f" — {escape(result['errors'][tid])}"
            out.print(line, highlight=False)
    raise Exit(0 if not result["errors"] and all(s != "failed" for s in result["statuses"].values()) else 1)


async def _start_project(name: str, limit: int | None) -> dict:
    from orchestra.task_flow import start_project

    return await start_project(name, actor=_actor(), limit=limit)


def _waiting(waiting: dict) -> str:
    if not waiting:
        return ""
    return "; waiting: " + ", ".join(f"{t} (for {', '.join(map(str, w))})" for t, w in waiting.items())
