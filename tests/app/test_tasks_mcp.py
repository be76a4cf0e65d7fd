"""The task tools of `orchestra mcp` through the official `mcp` client, over stdio and over
streamable HTTP (`orchestra mcp --http`, with the bearer token), each a server subprocess
against the session's real Prefect API, a ledger in a temporary folder and, for the one
slow step, the OpenAI wire fake. Then HTTP's refusals: no token, a wrong token, a
non-loopback host without a token, a non-loopback Host header."""

from __future__ import annotations

import getpass

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from anyio.from_thread import start_blocking_portal
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client

ROOT = Path(__file__).resolve().parents[2]
KEY = "sk-test-mcp-tasks-secret-0123456789"
TOKEN = "mcp-token-" + "7" * 24
TIMEOUT = timedelta(seconds=180)
TASK_TOOLS = {"create_project", "list_projects", "create_task", "update_task", "list_tasks", "get_task",
              "create_workflow_from_task", "execute_task_workflow", "get_workflow_status",
              "create_workflows_for_project", "execute_workflows_for_project", "approve_run", "cancel_run", "rerun"}


def _env(home: Path, prefect_api: str, openai_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "PYTEST", "ORCHESTRA_"))}
    env.update(ORCHESTRA_HOME=str(home), ORCHESTRA_DB_URL=f"sqlite:///{home / 'ledger.db'}",
               PREFECT_API_URL=prefect_api, PREFECT_LOCAL_STORAGE_PATH=str(home / "results"),
               ORCHESTRA_RETRY_DELAY="0.01", OPENAI_API_KEY=KEY, OPENAI_BASE_URL=openai_url)
    env.update(extra)
    return env


class Client:
    """A synchronous face on an MCP ClientSession living in a portal's event loop."""

    def __init__(self, portal, session: ClientSession, home: Path, transport: str):
        self.portal, self.session, self.home, self.transport = portal, session, home, transport

    def call(self, tool: str, **arguments):
        return self.portal.call(lambda: self.session.call_tool(tool, arguments, read_timeout_seconds=TIMEOUT))

    def ok(self, tool: str, **arguments) -> dict:
        result = self.call(tool, **arguments)
        assert not result.isError, result.content
        assert json.loads(result.content[0].text) == result.structuredContent
        return result.structuredContent

    def error(self, tool: str, **arguments) -> str:
        result = self.call(tool, **arguments)
        assert result.isError, result
        text = "\n".join(c.text for c in result.content)
        assert "Traceback" not in text and KEY not in text and TOKEN not in text
        return text

    def until(self, what: str, check, timeout: float = 180.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = check()
            if found:
                return found
            time.sleep(0.5)
        pytest.fail(f"gave up waiting for {what}")


@pytest.fixture(scope="module")
def slow_openai():
    """The OpenAI wire fake, every answer 2.5 s late (the step a cancel catches running)."""
    from tests.fakes import OpenAIFake

    with OpenAIFake(latency_ms=2500, require_key=KEY) as fake:
        yield fake


def _start_http(home: Path, env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    """`orchestra mcp --http --port 0`; the URL it prints once it listens."""
    errlog = open(home / "stderr.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "orchestra.cli", "mcp", "--http", "--port", "0", *args], cwd=ROOT,
                            env=env, stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog)
    errlog.close()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        text = (home / "stderr.log").read_text()
        for line in text.splitlines():
            if "streamable HTTP on " in line:
                return proc, line.split("streamable HTTP on ", 1)[1].split()[0]
        assert proc.poll() is None, text
        time.sleep(0.2)
    proc.kill()
    pytest.fail("orchestra mcp --http did not start")


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.fixture(scope="module", params=["stdio", "http"])
def mcp(request, tmp_path_factory, prefect_api, slow_openai):
    home = tmp_path_factory.mktemp(f"orchestra-mcp-tasks-{request.param}")
    proc = None
    with start_blocking_portal() as portal:
        if request.param == "stdio":
            env = _env(home, prefect_api, slow_openai.base_url)
            params = StdioServerParameters(command=sys.executable, args=["-m", "orchestra.cli", "mcp"], env=env,
                                           cwd=str(ROOT))
            errlog = open(home / "stderr.log", "w")
            transport = stdio_client(params, errlog=errlog)
        else:
            env = _env(home, prefect_api, slow_openai.base_url, ORCHESTRA_MCP_TOKEN=TOKEN)
            proc, url = _start_http(home, env)
            transport = streamablehttp_client(url, headers={"Authorization": f"Bearer {TOKEN}"})
        try:
            with portal.wrap_async_context_manager(transport) as streams:
                read, write = streams[0], streams[1]
                session = portal.call(lambda: ClientSession(read, write, read_timeout_seconds=TIMEOUT))
                with portal.wrap_async_context_manager(session):
                    assert portal.call(session.initialize).serverInfo.name == "orchestra"
                    yield Client(portal, session, home, request.param)
        finally:
            if proc is not None:
                _stop(proc)
            elif request.param == "stdio":
                errlog.close()
    stderr = (home / "stderr.log").read_text(errors="replace")
    assert "Traceback" not in stderr and KEY not in stderr and TOKEN not in stderr, stderr


def _gated(path: Path) -> str:
    path.write_text(yaml.safe_dump({"name": "gated", "type": "sequential", "steps": [
        {"id": "draft", "prompt": f"Draft {uuid.uuid4().hex}"},
        {"id": "gate", "approval": {"message": "Publish {{ steps.draft.output }}?", "timeout": 300}},
        {"id": "publish", "prompt": "Publish. Note: {{ steps.gate.output }}"}]}))
    return str(path)


# --------------------------------------------------------------------------- every task tool, both transports


def test_the_task_tools_are_listed_with_their_arguments(mcp):
    tools = {t.name: t for t in mcp.portal.call(mcp.session.list_tools).tools}
    assert TASK_TOOLS <= set(tools)
    assert tools["execute_task_workflow"].inputSchema["required"] == ["task_id"]
    assert set(tools["get_workflow_status"].inputSchema["properties"]) == {"flow_run_id", "task_id"}
    assert tools["create_task"].inputSchema["required"] == ["title"]
    assert tools["list_tasks"].annotations.readOnlyHint is True
    assert tools["cancel_run"].annotations.destructiveHint is True


def test_projects_tasks_and_plans_and_bad_input_is_a_tool_error(mcp):
    name = f"shop-{mcp.transport}"
    project = mcp.ok("create_project", name=name, description="An online shop")
    assert project["name"] == name and project["task_count"] == 0
    login = mcp.ok("create_task", title="Add login", project=name, assignee="ada", labels=["auth"])
    api = mcp.ok("create_task", title="Login API", parent=login["id"], workflow="hello", inputs={"name": "API"})
    form = mcp.ok("create_task", title="Login form", parent=login["id"], depends_on=[api["id"]])
    assert (api["project"], form["depends_on"], login["status"]) == (name, [api["id"]], "todo")
    assert mcp.ok("update_task", task_id=form["id"], assignee="bob")["assignee"] == "bob"
    listed = mcp.ok("list_tasks", project=name)["tasks"]
    assert [t["id"] for t in listed] == [login["id"], api["id"], form["id"]]
    assert listed[0]["children"] == [api["id"], form["id"]]
    shown = mcp.ok("get_task", task_id=form["id"])
    me = getpass.getuser()  # the MCP server acts as the machine's user (orchestra.access.mcp_actor)
    assert [(h["actor"], h["field"]) for h in shown["history"]] == [(me, "created"), (me, "assignee")]
    assert any(p["name"] == name and p["task_count"] == 3 for p in mcp.ok("list_projects")["projects"])

    before = mcp.ok("list_tasks")["tasks"]
    assert "unknown project 'nope'" in mcp.error("create_task", title="x", project="nope")
    assert "unknown parent task 9999" in mcp.error("create_task", title="x", parent=9999)
    assert "no-such-flow: no workflow file or shipped workflow" in mcp.error("create_task", title="x",
                                                                             workflow="no-such-flow")
    assert "unknown input 'colour'" in mcp.error("create_task", title="x", workflow="hello", inputs={"colour": 1})
    assert f"task {login['id']} would be its own ancestor" in mcp.error("update_task", task_id=login["id"],
                                                                         parent=form["id"])
    assert "a dependency cycle" in mcp.error("update_task", task_id=api["id"], depends_on=[form["id"]])
    assert "unknown task 9999" in mcp.error("get_task", task_id=9999)
    assert "unknown task 9999" in mcp.error("execute_task_workflow", task_id=9999)
    assert "unknown project 'nope'" in mcp.error("execute_workflows_for_project", project="nope")
    assert "give flow_run_id or task_id" in mcp.error("get_workflow_status")
    assert f"task {login['id']} has no run yet" in mcp.error("get_workflow_status", task_id=login["id"])
    assert "not a flow run id" in mcp.error("cancel_run", flow_run_id="not-a-uuid")
    assert "not a flow run id" in mcp.error("approve_run", flow_run_id="not-a-uuid")
    assert "no run 'not-a-run'" in mcp.error("rerun", flow_run_id="not-a-run")
    assert mcp.ok("list_tasks")["tasks"] == before  # nothing written

    planned = mcp.ok("create_workflow_from_task", task_id=form["id"])
    assert (planned["source"], planned["workflow"]) == ("default", "task")
    assert [s["agent"] for s in planned["definition"]["steps"]] == ["coordinator", "assistant", "qa"]
    assert yaml.safe_load(planned["yaml"])["name"] == "task"
    kept = mcp.ok("create_workflow_from_task", task_id=api["id"])
    assert (kept["source"], kept["workflow"], kept["inputs"]) == ("workflow", "hello", {"name": "API"})
    whole = mcp.ok("create_workflows_for_project", project=name)
    assert [(t["task_id"], t["source"], t["ok"]) for t in whole["tasks"]] == [
        (login["id"], "default", True), (api["id"], "workflow", True), (form["id"], "default", True)]


def test_a_run_in_the_background_its_progress_and_an_approval(mcp, tmp_path):
    task = mcp.ok("create_task", title="Publish the post", workflow=_gated(tmp_path / "gated.yaml"))
    started = mcp.ok("execute_task_workflow", task_id=task["id"])
    assert set(started) == {"task_id", "flow_run_id"} and started["task_id"] == task["id"]
    assert "is already running" in mcp.error("execute_task_workflow", task_id=task["id"])

    paused = mcp.until("the run to pause", lambda: (s := mcp.ok("get_workflow_status", task_id=task["id"]))
                       ["state"] == "PAUSED" and s)
    assert paused["flow_run_id"] == started["flow_run_id"] and paused["workflow"] == "gated"
    assert [(s["step"], s["state"]) for s in paused["steps"]] == [
        ("draft", "COMPLETED"), ("gate", "PAUSED"), ("publish", "PENDING")]
    assert paused["progress"] == pytest.approx(1 / 3) and paused["cost_usd"] == 0.0
    assert mcp.ok("get_task", task_id=task["id"])["progress"] == pytest.approx(1 / 3, abs=1e-4)
    assert mcp.ok("get_workflow_status", flow_run_id=started["flow_run_id"])["steps"] == paused["steps"]

    answered = mcp.ok("approve_run", flow_run_id=started["flow_run_id"], reason="ship it")
    assert answered == {"flow_run_id": started["flow_run_id"], "approved": True, "reason": "ship it"}
    done = mcp.until("the run to complete", lambda: (s := mcp.ok("get_workflow_status", task_id=task["id"]))
                     ["state"] == "COMPLETED" and s)
    assert done["progress"] == 1.0 and [s["state"] for s in done["steps"]] == ["COMPLETED"] * 3
    shown = mcp.ok("get_task", task_id=task["id"])
    assert (shown["status"], shown["progress"]) == ("done", 1.0)
    assert "not waiting for an approval" in mcp.error("approve_run", flow_run_id=started["flow_run_id"])


def test_a_project_runs_in_the_background_then_a_rerun(mcp):
    name = f"site-{mcp.transport}"
    mcp.ok("create_project", name=name)
    first = mcp.ok("create_task", title="First", project=name, workflow="hello",
                   inputs={"name": uuid.uuid4().hex[:8]})
    second = mcp.ok("create_task", title="Write the release note", project=name, depends_on=[first["id"]])
    started = mcp.ok("execute_workflows_for_project", project=name, limit=1)
    assert started["project"] == name and started["limit"] == 1 and started["flow_run_id"]
    assert started["ready"] == [first["id"]] and started["waiting"] == {str(second["id"]): [first["id"]]}

    tasks = mcp.until("the project's tasks to be done", lambda: (
        t := mcp.ok("list_tasks", project=name)["tasks"]) and all(x["status"] == "done" for x in t) and t, 300)
    assert [t["progress"] for t in tasks] == [1.0, 1.0]
    assert mcp.ok("get_task", task_id=second["id"])["plan"]["source"] == "default"  # planned on the way
    coordinator = mcp.until("the project's flow run to end", lambda: (
        s := mcp.ok("get_workflow_status", flow_run_id=started["flow_run_id"]))["state"] == "COMPLETED" and s)
    assert coordinator["task_id"] is None and coordinator["steps"] == []  # it runs no steps itself
    assert next(p for p in mcp.ok("list_projects")["projects"] if p["name"] == name)["progress"] == 1.0

    run_id = mcp.ok("get_task", task_id=first["id"])["last_run"]["flow_run_id"]
    again = mcp.ok("rerun", flow_run_id=run_id)
    assert again["state"] == "COMPLETED" and again["flow_run_id"] != run_id
    assert again["steps"]["greet"]["cached"] is True


def test_cancel_run_cancels_the_task_and_it_stays_cancelled(mcp, tmp_path):
    wf = tmp_path / "slow.yaml"
    wf.write_text(yaml.safe_dump({"name": "slow", "agents": {"a": {"model": "openai:gpt-4.1-mini"}},
                                  "steps": [{"id": "think", "agent": "a", "prompt": f"Think {uuid.uuid4().hex}"}]}))
    task = mcp.ok("create_task", title="Think slowly", workflow=str(wf))
    run_id = mcp.ok("execute_task_workflow", task_id=task["id"])["flow_run_id"]
    mcp.until("the step to run", lambda: any(
        s["state"] == "RUNNING" for s in mcp.ok("get_workflow_status", flow_run_id=run_id)["steps"]))
    cancelled = mcp.ok("cancel_run", flow_run_id=run_id)
    assert cancelled == {"flow_run_id": run_id, "state": "CANCELLING", "previous": "RUNNING", "task_id": task["id"]}
    shown = mcp.ok("get_task", task_id=task["id"])
    assert shown["status"] == "cancelled" and "flow run " + run_id + " CANCELLING" in shown["history"][-1]["reason"]
    mcp.until("the run's process to end", lambda: mcp.ok("get_workflow_status", flow_run_id=run_id)[
        "ledger_state"] not in (None, "RUNNING"))
    assert mcp.ok("get_task", task_id=task["id"])["status"] == "cancelled"
    status = mcp.ok("get_workflow_status", flow_run_id=run_id)
    final = status["state"]
    assert final == "CANCELLED" and status["ledger_state"] == "CANCELLED"  # the run's watcher stopped it
    assert mcp.ok("cancel_run", flow_run_id=run_id)["state"] == final


# --------------------------------------------------------------------------- HTTP's refusals


def _initialize(url: str, **headers: str) -> httpx.Response:
    return httpx.post(url.rstrip("/") + "/", headers={"Content-Type": "application/json",
                                                      "Accept": "application/json, text/event-stream", **headers},
                      json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                       "clientInfo": {"name": "raw", "version": "0"}}}, timeout=30)


def test_http_refuses_every_request_without_the_bearer_token(tmp_path, prefect_api, slow_openai):
    env = _env(tmp_path, prefect_api, slow_openai.base_url, ORCHESTRA_MCP_TOKEN=TOKEN, ORCHESTRA_MCP_WARMUP="0")
    proc, url = _start_http(tmp_path, env)
    try:
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                        {"Authorization": f"Basic {TOKEN}"}):
            refused = _initialize(url, **headers)
            assert refused.status_code == 401, headers
            assert refused.json()["error"] == "invalid_token" and TOKEN not in refused.text
        assert _initialize(url, Authorization=f"Bearer {TOKEN}").status_code == 200

        async def without_token():
            async with streamablehttp_client(url) as (read, write, _):
                async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=30)) as session:
                    await session.initialize()

        with start_blocking_portal() as portal, pytest.raises(BaseException) as caught:
            portal.call(without_token)
        assert "401" in repr(caught.value) or "Unauthorized" in repr(caught.value)
    finally:
        _stop(proc)
    stderr = (tmp_path / "stderr.log").read_text()
    assert "a bearer token (ORCHESTRA_MCP_TOKEN) is required" in stderr and TOKEN not in stderr


def test_http_without_a_token_listens_on_loopback_only(tmp_path, prefect_api, slow_openai):
    env = _env(tmp_path, prefect_api, slow_openai.base_url, ORCHESTRA_MCP_WARMUP="0")
    refused = subprocess.run([sys.executable, "-m", "orchestra.cli", "mcp", "--http", "--host", "0.0.0.0"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--host 0.0.0.0 is not a loopback address: set ORCHESTRA_MCP_TOKEN" in refused.stderr
    short = subprocess.run([sys.executable, "-m", "orchestra.cli", "mcp", "--http"], cwd=ROOT,
                           env={**env, "ORCHESTRA_MCP_TOKEN": "short-secret"}, capture_output=True, text=True,
                           timeout=60)
    assert short.returncode == 2 and "ORCHESTRA_MCP_TOKEN: must be at least 16 characters" in short.stderr
    assert "short-secret" not in short.stderr

    proc, url = _start_http(tmp_path, env)
    try:
        assert "no token: loopback only" in (tmp_path / "stderr.log").read_text()

        async def list_projects():
            async with streamablehttp_client(url) as (read, write, _):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return await session.call_tool("list_projects", {})

        with start_blocking_portal() as portal:
            result = portal.call(list_projects)
        assert not result.isError and result.structuredContent == {"projects": []}
        port = url.split(":")[2].split("/")[0]
        rebound = _initialize(url, Host=f"attacker.example:{port}")  # DNS rebinding: not a loopback Host
        assert rebound.status_code == 421
        assert _initialize(url, Origin="http://attacker.example").status_code == 400
    finally:
        _stop(proc)
