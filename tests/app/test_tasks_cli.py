"""`orchestra tasks` and `orchestra projects` as a user runs them: subprocesses, the
session's real Prefect API, a ledger in a temporary folder, offline (fast-agent's
passthrough model, no planner: the shipped `task` workflow)."""

from __future__ import annotations

import getpass

import json
import socket
import time
import uuid

import pytest

from tests.app.test_cli import assert_clean_error, cli  # noqa: F401  (the fixture)


def _ok(proc) -> str:
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc.stdout


def _json(proc):
    return json.loads(_ok(proc))


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_task_from_add_to_done_as_the_readme_shows_it(cli):
    assert "project demo added" in _ok(cli("projects", "add", "demo", "-d", "A first project"))
    task_id = _ok(cli("tasks", "add", "Write a haiku about retries", "--project", "demo", "--assignee", "ada",
                      "-q")).strip()
    assert task_id == "1"

    plan = cli("tasks", "plan", task_id)
    assert "workflow task (default)" in plan.stderr
    assert _ok(plan).startswith("name: task\n") and "agent: coordinator" in plan.stdout  # the YAML it will run

    run = cli("tasks", "execute", task_id, "--wait")
    assert "agent: qa" in _ok(run)  # shown before it runs
    assert f"task {task_id}: done · 100%" in run.stdout

    shown = _json(cli("tasks", "show", task_id, "--json"))
    assert (shown["status"], shown["progress"], shown["assignee"], shown["project"]) == ("done", 1.0, "ada", "demo")
    assert [r["state"] for r in shown["runs"]] == ["COMPLETED"] and shown["runs"][0]["workflow"] == "task"
    me = getpass.getuser()  # the CLI acts as the machine's user (orchestra.access.cli_actor)
    assert [(h["actor"], h["field"], h["new"]) for h in shown["history"]] == [
        (me, "created", "todo"), (me, "workflow", "task"), (me, "plan", json.dumps(
            shown["plan"], sort_keys=True)), (me, "status", "running"), ("orchestra", "status", "done")]
    audited = [(a["actor"], a["via"], a["action"], a["outcome"]) for a in _json(cli("audit", "--json"))]
    for action in ("task.create", "task.plan", "task.execute"):  # each write of a person is in the audit log
        assert (me, "cli", action, "ok") in audited, audited
    table = _ok(cli("tasks", "show", task_id))
    assert "done" in table and "history" in table and shown["runs"][0]["flow_run_id"] in table

    projects = _json(cli("projects", "list", "--json"))
    assert [(p["name"], p["task_count"], p["progress"], p["statuses"]) for p in projects] == [
        ("demo", 1, 1.0, {"done": 1})]
    assert "100%" in _ok(cli("projects", "show", "demo"))
    assert [t["id"] for t in _json(cli("tasks", "list", "--status", "done", "--json"))] == [1]


def test_bad_input_exits_2_with_one_clear_line_and_writes_nothing(cli):
    _ok(cli("projects", "add", "acme"))
    top = _json(cli("tasks", "add", "Top", "--project", "acme", "--json"))["id"]
    child = _json(cli("tasks", "add", "Child", "--parent", str(top), "--json"))["id"]
    before = _json(cli("tasks", "list", "--json"))

    assert_clean_error(cli("tasks", "add", "x", "--project", "nope"), 2, "unknown project 'nope' (projects: acme)")
    assert_clean_error(cli("tasks", "add", "x", "--parent", "99"), 2, "unknown parent task 99")
    assert_clean_error(cli("tasks", "add", "x", "--workflow", "nope"), 2,
                       "nope: no workflow file or shipped workflow by that name")
    assert_clean_error(cli("tasks", "add", "x", "--workflow", "hello", "-i", "colour=red"), 2,
                       "unknown input 'colour' (declared inputs: name)")
    assert_clean_error(cli("tasks", "add", "x", "-i", "name=Ada"), 2, "inputs: give the workflow they are for")
    assert_clean_error(cli("tasks", "add", "x", "-i", "name"), 2, "-i 'name': expected key=value")
    assert_clean_error(cli("tasks", "update", str(top), "--parent", str(child)), 2,
                       f"task {top} would be its own ancestor")
    assert_clean_error(cli("tasks", "update", str(child), "--after", str(top)), 2, "a dependency cycle")
    assert_clean_error(cli("tasks", "show", "42"), 2, "unknown task 42")
    assert_clean_error(cli("tasks", "list", "--status", "later"), 2, "status 'later': one of todo, running")
    assert_clean_error(cli("projects", "add", "acme"), 2, "a project named 'acme' exists already")
    assert_clean_error(cli("projects", "show", "nope"), 2, "unknown project 'nope'")
    assert _json(cli("tasks", "list", "--json")) == before  # nothing written, no status changed

    assert_clean_error(cli("tasks", "plan", str(top), ORCHESTRA_PLANNER="nobody"), 2,
                       "ORCHESTRA_PLANNER=nobody: no agent by that name")
    key = "sk-test-tasks-cli-0123456789"
    unreachable = cli("tasks", "plan", str(top), ORCHESTRA_PLANNER="openai:gpt-4.1-mini", OPENAI_API_KEY=key,
                      OPENAI_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1")
    assert_clean_error(unreachable, 1, "planner 'planner' (openai:gpt-4.1-mini)")
    assert key not in unreachable.stdout + unreachable.stderr
    assert _json(cli("tasks", "show", str(top), "--json"))["status"] == "todo"


def test_executing_a_running_task_exits_2_and_cancel(cli):
    task = _json(cli("tasks", "add", "Greet", "--workflow", "hello", "-i", f"name={uuid.uuid4().hex[:8]}",
                     "--json"))
    started = _json(cli("tasks", "execute", str(task["id"]), "--json"))
    assert set(started) == {"task_id", "flow_run_id"}
    again = cli("tasks", "execute", str(task["id"]))
    assert_clean_error(again, 2, f"task {task['id']} is already running (flow run {started['flow_run_id']})")

    deadline = time.monotonic() + 180
    shown = None
    while time.monotonic() < deadline:
        shown = _json(cli("tasks", "show", str(task["id"]), "--json"))
        if shown["status"] != "running":
            break
        time.sleep(0.5)
    assert shown["status"] == "done", shown
    assert [r["flow_run_id"] for r in shown["runs"]] == [started["flow_run_id"]]
    assert_clean_error(cli("tasks", "cancel", str(task["id"])), 2, "is done already: nothing to cancel")

    todo = _json(cli("tasks", "add", "Not now", "--json"))["id"]
    assert f"task {todo}: cancelled (cancelled by {getpass.getuser()})" in _ok(cli("tasks", "cancel", str(todo)))


def test_a_project_executes_its_tasks_in_dependency_order(cli):
    _ok(cli("projects", "add", "site"))
    first = _json(cli("tasks", "add", "First", "-p", "site", "-w", "hello", "-i", f"name=f{uuid.uuid4().hex[:6]}",
                      "--json"))["id"]
    second = _json(cli("tasks", "add", "Second", "-p", "site", "-w", "hello", "-i", f"name=s{uuid.uuid4().hex[:6]}",
                       "--after", str(first), "--json"))["id"]
    planned = _json_exit(cli("projects", "plan", "site", "--json"), 0)
    assert [(t["task_id"], t["source"], t["ok"]) for t in planned["tasks"]] == [
        (first, "workflow", True), (second, "workflow", True)]

    ran = cli("projects", "execute", "site", "--wait", "--limit", "1", "--json")
    result = _json_exit(ran, 0)
    assert result["statuses"] == {str(first): "done", str(second): "done"} and result["errors"] == {}
    order = [r["task_id"] for r in result["started"]]
    assert order == [first, second]
    assert "done" in _ok(cli("projects", "show", "site")) and "100%" in _ok(cli("projects", "list"))


def _json_exit(proc, code: int):
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return json.loads(proc.stdout)
