"""The task service (orchestra.tasks, orchestra.planner, orchestra.task_flow) in this process,
against the session's real Prefect API and a fresh ledger: tasks and projects, bad input,
status following real runs (each in its own process, as `tasks execute` starts them),
progress while a run is going, the planner against the OpenAI wire fake, and a project's
execution bounded by its concurrency limit."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ledger import queries
from orchestra import tasks as T

ACTOR = "test"
MINI = "openai:gpt-4.1-mini"


@pytest.fixture(autouse=True)
def _prefect_api_in_the_environment(monkeypatch, prefect_api):
    """The session's Prefect API as a user configures one (PREFECT_API_URL), so that nothing
    here starts Orchestra's local server."""
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)


def _counts(store) -> tuple[int, int, int, int]:
    """Projects, tasks, history rows and task runs in the ledger."""
    rows = queries.tasks(store)
    return (len(queries.projects(store)), len(rows), sum(len(queries.task_history(store, r["id"])) for r in rows),
            sum(len(queries.task_runs(store, r["id"])) for r in rows))


def _until(check, what: str, timeout: float = 180.0, every: float = 0.3):
    """Poll ``check()`` until it returns something truthy (a deadline, not an assertion on time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    pytest.fail(f"gave up waiting for {what}")


def _ledger_final(store, flow_run_id: str) -> dict:
    return _until(lambda: (r := queries.run(store, flow_run_id)) and r["state"] != "RUNNING" and r,
                  f"run {flow_run_id} to end in the ledger")


def _approval_workflow(path: Path, timeout: int = 300) -> Path:
    path.write_text(yaml.safe_dump({"name": "gated", "type": "sequential", "steps": [
        {"id": "draft", "prompt": f"Draft {uuid.uuid4().hex}"},
        {"id": "gate", "approval": {"message": "Publish {{ steps.draft.output }}?", "timeout": timeout}},
        {"id": "publish", "prompt": "Publish. Note: {{ steps.gate.output }}"}]}))
    return path


# --------------------------------------------------------------------------- tasks and projects


def test_tasks_projects_tree_and_every_change_in_the_history(orchestra_env):
    project = T.add_project("acme", "The acme shop", actor=ACTOR)
    assert (project["name"], project["description"], project["task_count"], project["tasks"],
            project["progress"]) == ("acme", "The acme shop", 0, [], 0.0)
    login = T.add_task("Add login", project="acme", actor=ACTOR, assignee="ada", labels=["auth", "auth", " web "])
    api = T.add_task("Login API", parent=login["id"], actor=ACTOR, description="POST /login")
    form = T.add_task("Login form", parent=login["id"], depends_on=[api["id"]], actor=ACTOR)
    loose = T.add_task("Greet", workflow="hello", inputs={"name": "Ada"}, actor=ACTOR)

    assert api["project"] == form["project"] == "acme"  # a child is in its parent's project
    assert login["labels"] == ["auth", "web"] and login["assignee"] == "ada" and login["status"] == "todo"
    assert loose["workflow"] == "hello" and loose["inputs"] == {"name": "Ada"} and loose["plan"] == {
        "source": "workflow"}  # a shipped name is kept as the name, not a path
    shown = T.get_project("acme")
    assert [(t["id"], t["depth"]) for t in shown["tasks"]] == [(login["id"], 0), (api["id"], 1), (form["id"], 1)]
    assert shown["tasks"][0]["children"] == [api["id"], form["id"]] and shown["statuses"] == {"todo": 3}
    assert [t["id"] for t in T.list_tasks(project="acme")] == [login["id"], api["id"], form["id"]]
    assert [t["id"] for t in T.list_tasks(status="todo")] == [login["id"], api["id"], form["id"], loose["id"]]
    assert [p["name"] for p in T.list_projects()] == ["acme"] and T.list_projects()[0]["task_count"] == 3

    T.update_task(form["id"], actor="someone", assignee="bob", title="The login form")
    history = T.get_task(form["id"])["history"]
    assert [(h["actor"], h["field"], h["old"], h["new"]) for h in history] == [
        (ACTOR, "created", None, "todo"), ("someone", "title", "Login form", "The login form"),
        ("someone", "assignee", None, "bob")]
    assert all(h["at"] for h in history)
    T.update_task(form["id"], actor="someone", assignee="bob")  # no change: no history row
    assert len(T.get_task(form["id"])["history"]) == 3


BAD_ADDS = [
    (dict(project="nope"), "unknown project 'nope' (projects: acme)"),
    (dict(parent=999), "unknown parent task 999"),
    (dict(workflow="no-such-workflow"), "no-such-workflow: no workflow file or shipped workflow by that name"),
    (dict(workflow="hello", inputs={"colour": "red"}), "unknown input 'colour' (declared inputs: name)"),
    (dict(workflow="fan-out", inputs={"topics": "not a list"}), "input 'topics': expected array, got 'not a list'"),
    (dict(inputs={"name": "Ada"}), "inputs: give the workflow they are for"),
    (dict(depends_on=[999]), "depends on unknown task 999"),
    (dict(title=""), "title: 1 to 500 characters"),
    (dict(parent="abc"), "parent 'abc': a task id is a number"),
]


@pytest.mark.parametrize("kwargs, message", BAD_ADDS, ids=[m.split(":")[0][:30] for _, m in BAD_ADDS])
def test_bad_input_is_one_clear_error_and_nothing_is_written(orchestra_env, kwargs, message):
    T.add_project("acme", actor=ACTOR)
    T.add_task("Exists", project="acme", actor=ACTOR)
    before = _counts(orchestra_env)
    with pytest.raises(T.TaskError) as caught:
        T.add_task(kwargs.pop("title", "New task"), actor=ACTOR, **kwargs)
    assert message in str(caught.value)
    assert _counts(orchestra_env) == before


def test_cycles_and_links_across_projects_are_refused(orchestra_env):
    T.add_project("acme", actor=ACTOR)
    T.add_project("other", actor=ACTOR)
    top = T.add_task("Top", project="acme", actor=ACTOR)
    mid = T.add_task("Middle", parent=top["id"], actor=ACTOR)
    leaf = T.add_task("Leaf", parent=mid["id"], actor=ACTOR)
    elsewhere = T.add_task("Elsewhere", project="other", actor=ACTOR)
    before = _counts(orchestra_env)

    def refused(message: str, **changes):
        target = changes.pop("task", top["id"])
        with pytest.raises(T.TaskError) as caught:
            T.update_task(target, actor=ACTOR, **changes)
        assert message in str(caught.value), str(caught.value)

    refused(f"task {top['id']} would be its own ancestor (task {top['id']} -> task {mid['id']} -> task "
            f"{leaf['id']} -> task {top['id']})", parent=leaf["id"])
    refused("a task cannot be its own parent", parent=top["id"])
    refused("a dependency cycle", task=leaf["id"], depends_on=[top["id"]])  # top waits for its descendants
    refused("a task cannot depend on itself", task=leaf["id"], depends_on=[leaf["id"]])
    refused("dependencies are tasks of the same project", task=leaf["id"], depends_on=[elsewhere["id"]])
    refused("a child is in its parent's project", task=elsewhere["id"], parent=top["id"])
    sibling = T.add_task("Sibling", parent=mid["id"], depends_on=[leaf["id"]], actor=ACTOR)
    refused("a dependency cycle", task=leaf["id"], depends_on=[sibling["id"]])
    with pytest.raises(T.TaskError, match="a dependency cycle"):  # a new task after its own parent
        T.add_task("Deadlock", parent=mid["id"], depends_on=[mid["id"]], actor=ACTOR)
    after = _counts(orchestra_env)
    assert after[1:3] == (before[1] + 1, before[2] + 1)  # only the sibling was written

    moved = T.update_task(leaf["id"], actor=ACTOR, parent=None)  # a top-level task again
    assert moved["parent_id"] is None and moved["history"][-1]["field"] == "parent_id"


@pytest.mark.parametrize("status, run_state, open_children, expected", [
    ("running", None, False, "running"), ("running", "PENDING", False, "running"),
    ("running", "RUNNING", True, "running"), ("running", "PAUSED", False, "running"),
    ("running", "CANCELLING", False, "running"), ("running", "COMPLETED", False, "done"),
    ("running", "COMPLETED", True, "blocked"), ("running", "FAILED", False, "failed"),
    ("running", "CRASHED", True, "failed"), ("running", "CANCELLED", False, "cancelled"),
    ("blocked", "COMPLETED", False, "done"), ("blocked", "COMPLETED", True, "blocked"),
    ("done", "COMPLETED", True, "blocked"), ("done", "COMPLETED", False, "done"),
    ("todo", None, True, "todo"), ("cancelled", "COMPLETED", False, "cancelled"),
    ("failed", "RUNNING", False, "failed"),
])
def test_the_status_follows_the_latest_run(status, run_state, open_children, expected):
    assert T.follow(status, run_state, open_children) == expected


# --------------------------------------------------------------------------- runs


def test_a_completed_run_makes_a_task_done_unless_it_has_open_children(orchestra_env):
    parent = T.add_task("Parent", workflow="hello", inputs={"name": f"p-{uuid.uuid4().hex[:6]}"}, actor=ACTOR)
    child = T.add_task("Child", parent=parent["id"], workflow="hello", inputs={"name": f"c-{uuid.uuid4().hex[:6]}"},
                       actor=ACTOR)
    started = asyncio.run(T.execute_task(parent["id"], actor=ACTOR))
    assert set(started) == {"task_id", "flow_run_id"} and started["task_id"] == parent["id"]
    assert T.get_task(parent["id"])["status"] == "running"  # at once: the run goes on in its own process
    after = asyncio.run(T.wait_for_task(parent["id"], started["flow_run_id"]))
    assert after["status"] == "blocked"  # its run completed, its child is open
    assert [r["state"] for r in after["runs"]] == ["COMPLETED"] and after["progress"] == 0.0  # its child's

    run = asyncio.run(T.execute_task(child["id"], actor=ACTOR))
    asyncio.run(T.wait_for_task(child["id"], run["flow_run_id"]))
    parent_now, child_now = T.get_task(parent["id"]), T.get_task(child["id"])
    assert (child_now["status"], parent_now["status"]) == ("done", "done")
    assert (child_now["progress"], parent_now["progress"]) == (1.0, 1.0)
    followed = [(h["actor"], h["old"], h["new"]) for h in parent_now["history"] if h["field"] == "status"]
    assert followed == [(ACTOR, "todo", "running"), (T.SYSTEM, "running", "blocked"), (T.SYSTEM, "blocked", "done")]
    assert f"flow run {started['flow_run_id']} COMPLETED" in parent_now["history"][2]["reason"]

    T.add_task("Late child", parent=parent["id"], actor=ACTOR)  # a new open child: done -> blocked
    assert T.get_task(parent["id"])["status"] == "blocked"


def test_a_failed_run_makes_the_task_failed_and_the_key_stays_out(orchestra_env, openai_fake, tmp_path):
    openai_fake.configure(faults=[401])
    wf = tmp_path / "ask.yaml"
    wf.write_text(yaml.safe_dump({"name": "ask", "agents": {"a": {"model": MINI}},
                                  "steps": [{"id": "ask", "agent": "a", "prompt": "hi", "retries": 0}]}))
    task = T.add_task("Ask", workflow=str(wf), actor=ACTOR)
    assert task["workflow"] == str(wf)
    run = asyncio.run(T.execute_task(task["id"], actor=ACTOR))
    failed = asyncio.run(T.wait_for_task(task["id"], run["flow_run_id"]))
    assert failed["status"] == "failed" and failed["runs"][0]["state"] == "FAILED"
    assert "sk-test-not-a-real-key" not in json.dumps(failed)


def test_progress_while_a_run_is_going_then_approve(orchestra_env, tmp_path):
    """A paused approval step holds the run in the middle: 1 of 3 steps finished."""
    from flows.steps.approval import answer

    T.add_project("web", actor=ACTOR)
    parent = T.add_task("Ship the page", project="web", actor=ACTOR)
    gated = T.add_task("Publish", parent=parent["id"], workflow=str(_approval_workflow(tmp_path / "gated.yaml")),
                       actor=ACTOR)
    T.add_task("Announce", parent=parent["id"], actor=ACTOR)
    run = asyncio.run(T.execute_task(gated["id"], actor=ACTOR))

    status = _until(lambda: (s := asyncio.run(T.workflow_status(task_id=gated["id"])))["state"] == "PAUSED" and s,
                    "the run to pause at its approval step")
    assert status["flow_run_id"] == run["flow_run_id"] and status["task_id"] == gated["id"]
    assert [(s["step"], s["state"]) for s in status["steps"]] == [
        ("draft", "COMPLETED"), ("gate", "PAUSED"), ("publish", "PENDING")]
    assert status["progress"] == pytest.approx(1 / 3) and status["workflow"] == "gated" and status["cost_usd"] == 0.0
    assert T.get_task(gated["id"])["progress"] == pytest.approx(1 / 3, abs=1e-4)
    assert T.get_task(parent["id"])["progress"] == pytest.approx(1 / 6, abs=1e-4)  # the mean of its children
    assert T.get_project("web")["progress"] == pytest.approx(1 / 6, abs=1e-4)  # the mean of its top-level tasks
    assert same_status(status, asyncio.run(T.workflow_status(flow_run_id=run["flow_run_id"])))

    asyncio.run(answer(run["flow_run_id"], approved=True, reason="ship it"))
    done = asyncio.run(T.wait_for_task(gated["id"], run["flow_run_id"]))
    assert done["status"] == "done" and done["progress"] == 1.0
    assert T.get_task(parent["id"])["progress"] == 0.5 and T.get_task(parent["id"])["status"] == "todo"
    final = asyncio.run(T.workflow_status(task_id=gated["id"]))
    assert final["state"] == "COMPLETED" and final["progress"] == 1.0 and final["ended"]


def same_status(a: dict, b: dict) -> bool:
    keep = ("flow_run_id", "task_id", "workflow", "steps")
    return {k: a[k] for k in keep} == {k: b[k] for k in keep}


def test_executing_a_running_task_is_refused_and_two_racing_starts_run_it_once(orchestra_env):
    from prefect.client.orchestration import get_client

    project = T.add_project(f"race-{uuid.uuid4().hex[:8]}", actor=ACTOR)["name"]  # its runs' tag is unique
    task = T.add_task("Greet", project=project, workflow="hello", inputs={"name": f"r-{uuid.uuid4().hex[:6]}"},
                      actor=ACTOR)

    async def race():
        return await asyncio.gather(*(T.execute_task(task["id"], actor=ACTOR) for _ in range(2)),
                                    return_exceptions=True)

    results = asyncio.run(race())
    won = [r for r in results if isinstance(r, dict)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1, results
    assert isinstance(lost[0], T.TaskError) and "is running now" in str(lost[0])
    with pytest.raises(T.TaskError, match=f"task {task['id']} is already running \\(flow run "
                                          f"{won[0]['flow_run_id']}\\)"):
        asyncio.run(T.execute_task(task["id"], actor=ACTOR))
    assert [r["flow_run_id"] for r in queries.task_runs(orchestra_env, task["id"])] == [won[0]["flow_run_id"]]

    async def prefect_runs():
        async with get_client() as client:
            from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

            return await client.read_flow_runs(flow_run_filter=FlowRunFilter(
                tags=FlowRunFilterTags(all_=[f"orchestra-project:{project}"])))

    asyncio.run(T.wait_for_task(task["id"], won[0]["flow_run_id"]))
    states = {str(r.id): r.state.type.value for r in asyncio.run(prefect_runs())}
    assert states.pop(won[0]["flow_run_id"]) == "COMPLETED"
    assert list(states.values()) == ["CANCELLED"]  # the loser's flow run never ran
    assert T.get_task(task["id"])["status"] == "done"


def test_cancel_a_running_task_stops_its_run_and_the_task_stays_cancelled(orchestra_env, openai_fake, tmp_path):
    from prefect.client.orchestration import get_client

    openai_fake.configure(latency_ms=3000)
    wf = tmp_path / "slow.yaml"
    wf.write_text(yaml.safe_dump({"name": "slow", "agents": {"a": {"model": MINI}},
                                  "steps": [{"id": "think", "agent": "a", "prompt": f"Think {uuid.uuid4().hex}"}]}))
    task = T.add_task("Think slowly", workflow=str(wf), actor=ACTOR)
    run = asyncio.run(T.execute_task(task["id"], actor=ACTOR))
    _until(lambda: any(s["state"] == "RUNNING" for s in queries.steps(orchestra_env, run["flow_run_id"])),
           "the step to run")
    cancelled = asyncio.run(T.cancel_task(task["id"], actor=ACTOR))
    assert cancelled["status"] == "cancelled"
    assert cancelled["history"][-1]["reason"] == (f"cancelled by {ACTOR}; flow run {run['flow_run_id']} "
                                                  "CANCELLING")

    async def state():
        async with get_client() as client:
            return (await client.read_flow_run(uuid.UUID(run["flow_run_id"]))).state.type.value

    _ledger_final(orchestra_env, run["flow_run_id"])  # the run's watcher saw CANCELLING and stopped it
    assert queries.run(orchestra_env, run["flow_run_id"])["state"] == "CANCELLED"
    assert asyncio.run(state()) == "CANCELLED"
    assert T.get_task(task["id"])["status"] == "cancelled"  # a run that ends later does not change it
    with pytest.raises(T.TaskError, match="is cancelled already"):
        asyncio.run(T.cancel_task(task["id"], actor=ACTOR))


def _engine_pid(flow_run_id: str) -> int:
    """The process `runs.start` launched for a flow run (`python -m prefect.engine <id>`)."""
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"prefect.engine" in args and flow_run_id.encode() in args:
            return int(proc.name)
    raise LookupError(flow_run_id)


def test_a_run_whose_process_is_killed_makes_the_task_failed(orchestra_env, openai_fake, tmp_path):
    """SIGKILL: the run's process never ends it. The reaper (run by the refresh) finds its
    pid gone, ends it CRASHED in the ledger and in Prefect, and the task follows."""
    import os
    import signal

    openai_fake.configure(latency_ms=5000)
    wf = tmp_path / "slow.yaml"
    wf.write_text(yaml.safe_dump({"name": "slow", "agents": {"a": {"model": MINI}},
                                  "steps": [{"id": "think", "agent": "a", "prompt": f"Think {uuid.uuid4().hex}"}]}))
    task = T.add_task("Think slowly", workflow=str(wf), actor=ACTOR)
    run = asyncio.run(T.execute_task(task["id"], actor=ACTOR))
    _until(lambda: any(s["state"] == "RUNNING" for s in queries.steps(orchestra_env, run["flow_run_id"])),
           "the step to run")
    assert T.get_task(task["id"])["status"] == "running"
    os.kill(_engine_pid(run["flow_run_id"]), signal.SIGKILL)  # the process this test started
    failed = _until(lambda: (t := T.get_task(task["id"]))["status"] != "running" and t, "the task to follow")
    assert failed["status"] == "failed"
    assert queries.run(orchestra_env, run["flow_run_id"])["state"] == "CRASHED"
    assert f"flow run {run['flow_run_id']} CRASHED" in failed["history"][-1]["reason"]


# --------------------------------------------------------------------------- the planner


def _plan_reply(agent: str = "backend", prompt: str = "Design the login API") -> str:
    return json.dumps({"name": "login", "description": "the login feature", "steps": [
        {"id": "api", "agent": agent, "prompt": prompt},
        {"id": "tests", "agent": "qa", "depends_on": ["api"], "prompt": "Test this: {{ steps.api.output }}"}]})


INVALID = json.dumps({"name": "login", "steps": [
    {"id": "api", "agent": "nobody", "prompt": "Design {{ steps.nope.output }}"}]})


@pytest.fixture
def planner(monkeypatch, openai_fake):
    monkeypatch.setenv("ORCHESTRA_PLANNER", MINI)
    return openai_fake


def _asked(fake) -> list[str]:
    return [r["body"]["messages"][-1]["content"] for r in fake.requests]


def _planning_run(store, plan: dict) -> dict:
    """The planning's flow run as the ledger and Prefect keep it: the ledger's run, and
    the Prefect flow run's (flow name, run name, state, [(task run name, state)]), once
    its task run's final state has reached the server."""
    from prefect.client.orchestration import get_client

    from tests.engine.test_engine import wait_for_task_runs

    async def read():
        async with get_client() as client:
            flow_run = await client.read_flow_run(uuid.UUID(plan["flow_run_id"]))
            flow = await client.read_flow(flow_run.flow_id)
        return flow.name, flow_run.name, flow_run.state.type.value

    task_runs = wait_for_task_runs(plan["flow_run_id"], 1)
    return {**queries.run(store, plan["flow_run_id"]),
            "prefect": (*asyncio.run(read()), [(t.name, t.state.type.value) for t in task_runs])}


def test_the_planner_writes_a_valid_workflow_that_is_kept_and_runs(orchestra_env, planner):
    planner.configure(reply=_plan_reply())
    T.add_project("shop", "An online shop", actor=ACTOR)
    task = T.add_task("Add login", project="shop", description="email and password", actor=ACTOR)
    planned = asyncio.run(T.plan_task(task["id"], actor=ACTOR))
    assert planned["source"] == "planner" and planned["workflow"] == "login"
    assert [s["id"] for s in planned["definition"]["steps"]] == ["api", "tests"]
    assert yaml.safe_load(planned["yaml"]) == planned["definition"]
    (prompt,) = _asked(planner)
    assert "Task #1: Add login" in prompt and "email and password" in prompt and "Project: shop" in prompt
    assert "- backend:" in prompt and '"steps"' in prompt  # the agents it may use, and the format
    kept = T.get_task(task["id"])
    assert kept["definition"] == planned["definition"] and kept["status"] == "todo"
    assert kept["plan"]["ok"] is True and kept["plan"]["attempts"] == 1 and kept["plan"]["model"] == MINI
    assert kept["plan"]["cost_usd"] > 0 and kept["plan"]["input_tokens"] > 0
    assert [h["field"] for h in kept["history"]] == ["created", "definition", "plan"]
    # planning is a flow run of its own, and its call a ledger row like any step's
    planning = _planning_run(orchestra_env, kept["plan"])
    assert planning["prefect"] == ("planner", f"plan-task-{task['id']}", "COMPLETED", [("plan", "COMPLETED")])
    assert (planning["workflow"], planning["state"]) == ("planner", "COMPLETED")
    (call,) = planning["calls"]
    assert (call["step"], call["agent"], call["model"], call["purpose"], call["status"]) == (
        "plan", "planner", MINI, "call", "ok")
    assert call["cost_usd"] == pytest.approx(kept["plan"]["cost_usd"]) and call["priced"]
    assert call["input_tokens"] == kept["plan"]["input_tokens"]
    (step,) = queries.steps(orchestra_env, kept["plan"]["flow_run_id"])
    assert step["state"] == "COMPLETED" and "Task #1: Add login" in step["prompt"]

    run = asyncio.run(T.execute_task(task["id"], actor=ACTOR))  # its agents use the default model: offline
    done = asyncio.run(T.wait_for_task(task["id"], run["flow_run_id"]))
    assert done["status"] == "done" and done["runs"][0]["workflow"] == "login"
    assert len(planner.requests) == 1  # the planned workflow ran as kept: no planning again


def test_an_invalid_plan_is_repaired_with_the_validators_errors_quoted(orchestra_env, planner):
    planner.configure(reply=[INVALID, _plan_reply()])
    task = T.add_task("Add login", actor=ACTOR)
    planned = asyncio.run(T.plan_task(task["id"], actor=ACTOR))
    assert planned["source"] == "planner" and planned["plan"]["attempts"] == 2
    first, repair = _asked(planner)
    assert INVALID in repair and first in repair
    assert "step 'api': unknown agent 'nobody'" in repair and "unknown step 'nope'" in repair
    assert T.get_task(task["id"])["definition"]["steps"][0]["agent"] == "backend"
    planning = _planning_run(orchestra_env, planned["plan"])
    assert [(c["step"], c["purpose"], c["status"]) for c in planning["calls"]] == [
        ("plan", "call", "ok"), ("plan", "repair", "ok")]
    assert planning["cost_usd"] == pytest.approx(planned["plan"]["cost_usd"])


@pytest.mark.parametrize("answer", [INVALID, "Sure! Here is a plan: first design the API, then test it.",
                                    _plan_reply(prompt="Use {{ inputs.missing }}")],
                         ids=["unknown agent and step", "prose", "an input it does not declare"])
def test_a_plan_that_stays_invalid_leaves_the_task_todo_with_the_errors_kept(orchestra_env, planner, answer):
    planner.configure(reply=answer)
    task = T.add_task("Add login", actor=ACTOR)
    with pytest.raises(T.TaskError) as caught:
        asyncio.run(T.plan_task(task["id"], actor=ACTOR))
    message = str(caught.value)
    assert "still invalid after one repair round" in message and "the task stays todo" in message
    kept = T.get_task(task["id"])
    assert kept["status"] == "todo" and kept["definition"] is None and kept["workflow"] is None
    assert kept["plan"]["ok"] is False and kept["plan"]["attempts"] == 2 and kept["plan"]["errors"]
    assert all(e in message for e in kept["plan"]["errors"])
    assert kept["history"][-1]["field"] == "plan" and kept["history"][-1]["reason"] == (
        "the planner's workflow is invalid")
    planning = _planning_run(orchestra_env, kept["plan"])  # paid for, and FAILED everywhere
    assert planning["prefect"][2:] == ("FAILED", [("plan", "FAILED")]) and planning["state"] == "FAILED"
    assert len(planning["calls"]) == 2 and "not a valid workflow" in planning["error"]
    with pytest.raises(T.TaskError, match="still invalid"):  # executing plans again: still invalid, nothing runs
        asyncio.run(T.execute_task(task["id"], actor=ACTOR))
    assert queries.task_runs(orchestra_env, task["id"]) == [] and len(planner.requests) == 4


def test_a_planner_that_cannot_be_asked_is_an_error_and_its_failed_call_a_ledger_row(orchestra_env, planner):
    from orchestra.planner import PlannerError

    planner.configure(faults=[401])
    task = T.add_task("Add login", actor=ACTOR)
    with pytest.raises(PlannerError, match="planner 'planner' \\(openai:gpt-4.1-mini\\): .*authentication failed"):
        asyncio.run(T.plan_task(task["id"], actor=ACTOR))
    kept = T.get_task(task["id"])
    assert kept["status"] == "todo" and kept["definition"] is None and kept["plan"]["ok"] is False
    planning = _planning_run(orchestra_env, kept["plan"])
    assert planning["prefect"][2:] == ("FAILED", [("plan", "FAILED")]) and planning["state"] == "FAILED"
    (call,) = planning["calls"]
    assert (call["status"], call["cost_usd"]) == ("error", 0) and "authentication failed" in call["error"]
    assert "sk-test" not in json.dumps(planning, default=str)


def test_a_planning_step_that_breaks_is_a_planner_error_not_an_invalid_plan(orchestra_env, planner, monkeypatch):
    from orchestra import planner as planning

    def broken(*args, **kwargs):
        raise RuntimeError("a defect")

    monkeypatch.setattr(planning, "prompt_for", lambda *a, **k: "plan this")
    monkeypatch.setattr(planning, "check", broken)
    planner.configure(reply=_plan_reply())
    task = T.add_task("Add login", actor=ACTOR)
    with pytest.raises(planning.PlannerError, match="planning failed"):
        asyncio.run(T.plan_task(task["id"], actor=ACTOR))
    kept = T.get_task(task["id"])
    assert kept["definition"] is None and kept["plan"]["ok"] is False
    assert _planning_run(orchestra_env, kept["plan"])["state"] == "FAILED"


def test_without_a_planner_a_task_gets_the_shipped_task_workflow(orchestra_env, monkeypatch):
    monkeypatch.delenv("ORCHESTRA_PLANNER", raising=False)
    task = T.add_task("Write a haiku about retries", description="five, seven, five", actor=ACTOR)
    planned = asyncio.run(T.plan_task(task["id"], actor=ACTOR))
    assert planned["source"] == "default" and planned["workflow"] == "task"
    assert [s["id"] for s in planned["definition"]["steps"]] == ["plan", "do", "review"]
    assert [s.get("agent") for s in planned["definition"]["steps"]] == ["coordinator", "assistant", "qa"]
    run = asyncio.run(T.execute_task(task["id"], actor=ACTOR))
    done = asyncio.run(T.wait_for_task(task["id"], run["flow_run_id"]))
    assert done["status"] == "done"
    row = queries.run(orchestra_env, run["flow_run_id"])
    assert row["inputs"] == {"title": "Write a haiku about retries", "description": "five, seven, five"}


def test_a_planner_setting_that_names_nothing_is_a_clear_error(orchestra_env, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_PLANNER", "nobody-at-all")
    task = T.add_task("Add login", actor=ACTOR)
    with pytest.raises(T.TaskError, match="ORCHESTRA_PLANNER=nobody-at-all: no agent by that name"):
        asyncio.run(T.plan_task(task["id"], actor=ACTOR))
    assert T.get_task(task["id"])["status"] == "todo"


# --------------------------------------------------------------------------- a project's execution


def test_a_project_runs_ready_tasks_first_at_most_limit_at_once(orchestra_env):
    from prefect.client.orchestration import get_client

    from orchestra.task_flow import execute_project, start_project

    T.add_project("site", actor=ACTOR)
    a = T.add_task("A", project="site", workflow="hello", inputs={"name": f"a-{uuid.uuid4().hex[:6]}"}, actor=ACTOR)
    b = T.add_task("B", project="site", workflow="hello", inputs={"name": f"b-{uuid.uuid4().hex[:6]}"}, actor=ACTOR)
    c = T.add_task("C", project="site", workflow="hello", inputs={"name": f"c-{uuid.uuid4().hex[:6]}"},
                   depends_on=[a["id"], b["id"]], actor=ACTOR)
    skipped = T.add_task("Skipped", project="site", workflow="hello", actor=ACTOR)
    asyncio.run(T.cancel_task(skipped["id"], actor=ACTOR))
    assert T.readiness(T.get_project("site")["tasks"]) == ([a["id"], b["id"]], {c["id"]: [a["id"], b["id"]]})
    with pytest.raises(T.TaskError, match="limit"):
        asyncio.run(start_project("site", actor=ACTOR, limit=0))

    result = asyncio.run(execute_project("site", limit=1, actor=ACTOR))
    assert result["statuses"] == {str(a["id"]): "done", str(b["id"]): "done", str(c["id"]): "done",
                                  str(skipped["id"]): "cancelled"}
    assert result["errors"] == {} and result["waiting"] == {} and result["limit"] == 1
    runs = {r["task_id"]: queries.run(orchestra_env, r["flow_run_id"]) for r in result["started"]}
    assert set(runs) == {a["id"], b["id"], c["id"]}
    first, second = sorted((runs[a["id"]], runs[b["id"]]), key=lambda r: r["started"])
    assert first["ended"] <= second["started"]  # limit 1: one run at a time
    assert max(first["ended"], second["ended"]) <= runs[c["id"]]["started"]  # C after both of its dependencies

    async def limit():
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(T.concurrency_name(T.get_project("site")))

    gcl = asyncio.run(limit())
    assert gcl.limit == 1 and gcl.active and gcl.active_slots == 0  # every slot given back
    assert T.get_project("site")["progress"] == 1.0
    nothing = asyncio.run(start_project("site", actor=ACTOR))
    assert nothing["flow_run_id"] is None and nothing["ready"] == []  # nothing left to do
