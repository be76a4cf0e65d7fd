"""`orchestra mcp` as an MCP client sees it: `python -m orchestra.cli mcp` in a subprocess,
driven by the official `mcp` client (stdio_client + ClientSession), against the
session's real Prefect API and a ledger in a temporary folder. One server serves
the whole module (a BlockingPortal keeps its session open between tests)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import McpError

ROOT = Path(__file__).resolve().parents[2]
HELLO = "deployments/workflows/hello.yaml"  # relative: the server runs in ROOT
KEY = "sk-test-mcp-secret-0123456789abcdef"
TOOLS = {"run_workflow", "validate_workflow", "workflow_graph", "list_runs", "get_run", "costs", "list_agents",
         "show_agent",
         # the task tools (tests/app/test_tasks_mcp.py)
         "create_project", "list_projects", "create_task", "update_task", "list_tasks", "get_task",
         "create_workflow_from_task", "execute_task_workflow", "get_workflow_status", "create_workflows_for_project",
         "execute_workflows_for_project", "approve_run", "cancel_run", "rerun"}
TIMEOUT = timedelta(seconds=120)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(home: Path, prefect_api: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "PYTEST"))}
    env.update(ORCHESTRA_HOME=str(home), ORCHESTRA_DB_URL=f"sqlite:///{home / 'ledger.db'}",
               PREFECT_API_URL=prefect_api, PREFECT_LOCAL_STORAGE_PATH=str(home / "results"),
               # a key to keep secret, and an OpenAI endpoint that refuses connections
               OPENAI_API_KEY=KEY, OPENAI_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1")
    env.update(extra)
    return env


class Client:
    """A synchronous face on an MCP ClientSession living in a portal's event loop."""

    def __init__(self, portal, session: ClientSession, home: Path, errlog):
        self.portal, self.session, self.home, self.errlog = portal, session, home, errlog

    def call(self, tool: str, **arguments):
        return self.portal.call(lambda: self.session.call_tool(tool, arguments, read_timeout_seconds=TIMEOUT))

    def ok(self, tool: str, **arguments):
        """The structured result of a call that must succeed; its text content is the same JSON."""
        result = self.call(tool, **arguments)
        assert not result.isError, result.content
        assert result.structuredContent is not None
        if set(result.structuredContent) != {"result"}:  # dict results: the text is that dict as JSON
            assert json.loads(result.content[0].text) == result.structuredContent
        return result.structuredContent

    def error(self, tool: str, **arguments) -> str:
        result = self.call(tool, **arguments)
        assert result.isError, result
        text = "\n".join(c.text for c in result.content)
        assert "Traceback" not in text and KEY not in text
        return text

    def read(self, uri: str) -> str:
        result = self.portal.call(self.session.read_resource, uri)
        return result.contents[0].text

    def stderr(self) -> str:
        self.errlog.flush()
        return (self.home / "stderr.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def mcp_client(tmp_path_factory, prefect_api):
    home = tmp_path_factory.mktemp("orchestra-mcp")
    params = StdioServerParameters(command=sys.executable, args=["-m", "orchestra.cli", "mcp"],
                                   env=_server_env(home, prefect_api), cwd=str(ROOT))
    with open(home / "stderr.log", "w") as errlog, start_blocking_portal() as portal:
        with portal.wrap_async_context_manager(stdio_client(params, errlog=errlog)) as (read, write):
            session = portal.call(lambda: ClientSession(read, write, read_timeout_seconds=TIMEOUT))
            with portal.wrap_async_context_manager(session):
                info = portal.call(session.initialize)
                assert info.serverInfo.name == "orchestra"
                client = Client(portal, session, home, errlog)
                yield client
        stderr = client.stderr()
        assert "Traceback" not in stderr and KEY not in stderr, stderr


def test_lists_the_tools_and_resources(mcp_client):
    tools = {t.name: t for t in mcp_client.portal.call(mcp_client.session.list_tools).tools}
    assert set(tools) == TOOLS
    run = tools["run_workflow"]
    assert set(run.inputSchema["properties"]) == {"workflow", "inputs", "model", "no_cache", "budget_usd"}
    assert run.inputSchema["required"] == ["workflow"]
    assert tools["costs"].inputSchema["properties"]["by"]["enum"] == ["model", "agent", "workflow", "day"]
    assert tools["list_runs"].annotations.readOnlyHint is True and run.annotations.readOnlyHint is False

    resources = mcp_client.portal.call(mcp_client.session.list_resources).resources
    assert [str(r.uri) for r in resources] == ["orchestra://workflows"]
    templates = mcp_client.portal.call(mcp_client.session.list_resource_templates).resourceTemplates
    assert {t.uriTemplate for t in templates} == {"orchestra://workflows/{name}", "orchestra://runs/{flow_run_id}"}

    shipped = {w["name"]: w for w in json.loads(mcp_client.read("orchestra://workflows"))}
    assert {"hello", "code-review", "research", "fan-out"} <= set(shipped)
    hello_text = (ROOT / HELLO).read_text()
    assert shipped["hello"]["description"] in hello_text and shipped["hello"]["steps"] == ["greet"]
    assert shipped["hello"]["inputs"]["name"]["default"] == "world"
    assert mcp_client.read("orchestra://workflows/hello") == hello_text


def test_run_workflow_then_the_ledger_has_it(mcp_client, prefect_api):
    name = f"Ada-{uuid.uuid4().hex[:8]}"
    report = mcp_client.ok("run_workflow", workflow=HELLO, inputs={"name": name})
    assert set(report) == {"workflow", "flow_run_id", "state", "duration_s", "cost_usd", "input_tokens",
                           "output_tokens", "steps"}
    assert report["workflow"] == "hello" and report["state"] == "COMPLETED"
    greet = report["steps"]["greet"]
    assert list(report["steps"]) == ["greet"]
    assert greet["state"] == "COMPLETED" and greet["model"] == "fast-agent:passthrough" and greet["cached"] is False
    assert greet["output"] == f"Say hello to {name} in one short sentence."  # passthrough echoes the prompt
    assert greet["attempts"] == 1 and report["cost_usd"] == 0.0
    run_id = report["flow_run_id"]
    assert str(uuid.UUID(run_id)) == run_id

    # a real flow run on the session's Prefect server
    state, flow_name = asyncio.run(_flow_run(run_id))
    assert (state, flow_name) == ("COMPLETED", "hello")

    runs = mcp_client.ok("list_runs", workflow="hello")["runs"]
    mine = [r for r in runs if r["flow_run_id"] == run_id]
    assert len(mine) == 1 and mine[0]["state"] == "COMPLETED" and mine[0]["inputs"] == {"name": name}
    assert mine[0]["started"] and mine[0]["cost_usd"] == 0.0

    run = mcp_client.ok("get_run", flow_run_id=run_id)
    assert run["workflow"] == "hello" and run["state"] == "COMPLETED" and run["n_calls"] == 1
    assert [(c["step"], c["model"]) for c in run["calls"]] == [("greet", "fast-agent:passthrough")]
    assert json.loads(mcp_client.read(f"orchestra://runs/{run_id}"))["calls"][0]["step"] == "greet"

    by_model = mcp_client.ok("costs")
    assert by_model["by"] == "model"
    row = next(r for r in by_model["rows"] if r["model"] == "fast-agent:passthrough")
    assert row["calls"] >= 1 and row["cost_usd"] == 0.0 and {"input_tokens", "output_tokens"} <= set(row)
    by_workflow = mcp_client.ok("costs", by="workflow")["rows"]
    assert any(r["workflow"] == "hello" and r["calls"] >= 1 for r in by_workflow)

    # the same again: the step comes from Prefect's cache
    again = mcp_client.ok("run_workflow", workflow="hello", inputs={"name": name})
    assert again["state"] == "COMPLETED" and again["steps"]["greet"]["cached"] is True
    assert again["steps"]["greet"]["output"] == greet["output"] and again["flow_run_id"] != run_id


async def _flow_run(run_id: str) -> tuple[str, str]:
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        flow_run = await client.read_flow_run(uuid.UUID(run_id))
        flow = await client.read_flow(flow_run.flow_id)
    return flow_run.state.type.value, flow.name


def test_inline_definition_runs(mcp_client):
    definition = {"name": "inline-echo", "inputs": {"n": {"type": "integer"}},
                  "steps": [{"id": "first", "prompt": "n is {{ inputs.n }}"},
                            {"id": "second", "depends_on": ["first"], "prompt": "got: {{ steps.first.output }}"}]}
    report = mcp_client.ok("run_workflow", workflow=definition, inputs={"n": 41}, no_cache=True)
    assert report["workflow"] == "inline-echo" and report["state"] == "COMPLETED"
    assert report["steps"]["second"]["output"] == "got: n is 41"


def test_failed_run_is_a_result_naming_the_step_without_the_key(mcp_client):
    report = mcp_client.ok("run_workflow", workflow="hello", model="openai:gpt-4.1-mini", no_cache=True)
    assert report["state"] == "FAILED"
    greet = report["steps"]["greet"]
    assert greet["state"] == "FAILED" and greet["model"] == "openai:gpt-4.1-mini"
    assert "greet" in greet["error"] or "openai" in greet["error"].lower()
    assert KEY not in json.dumps(report)
    run = mcp_client.ok("get_run", flow_run_id=report["flow_run_id"])
    assert run["state"] == "FAILED" and KEY not in json.dumps(run)


def test_validate_workflow_returns_located_errors(mcp_client, tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nsteps:\n  - id: a\n    agent: nobody\n    prompt: hi\n"
                      "  - id: b\n    prompt: '{{ steps.nope.output }} {{ inputs.who }}'\n")
    result = mcp_client.ok("validate_workflow", workflow=str(broken))
    assert result["ok"] is False and result["source"] == str(broken) and result["workflow"] is None
    errors = result["errors"]  # every problem at once, each with its file and step
    assert len(errors) == 3 and all(e.startswith(f"{broken}: ") for e in errors), errors
    assert any("step 'a'" in e and "unknown agent 'nobody'" in e for e in errors)
    assert any("step 'b'" in e and "unknown step 'nope'" in e for e in errors)
    assert any("step 'b'" in e and "unknown input 'who'" in e for e in errors)

    typo = tmp_path / "typo.yaml"
    typo.write_text("name: typo\nsteps:\n  - id: a\n    prompt: hi\n    colour: red\n")
    assert mcp_client.ok("validate_workflow", workflow=str(typo))["errors"] == [
        f"{typo}: step 'a': colour: unknown field"]

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nsteps: [\n")
    errors = mcp_client.ok("validate_workflow", workflow=str(bad_yaml))["errors"]
    assert len(errors) == 1 and "invalid YAML" in errors[0] and "line 3" in errors[0]

    good = mcp_client.ok("validate_workflow", workflow="code-review")
    assert good == {"ok": True, "workflow": "code-review", "source": str(ROOT / "deployments/workflows/code-review.yaml"),
                    "type": "graph", "steps": ["security", "correctness", "style", "summary"], "errors": [], "warnings": []}

    # run_workflow refuses the broken file with the same located errors, and writes nothing
    before = len(mcp_client.ok("list_runs", limit=1000)["runs"])
    text = mcp_client.error("run_workflow", workflow=str(broken))
    assert str(broken) in text and "nobody" in text and "nope" in text
    assert len(mcp_client.ok("list_runs", limit=1000)["runs"]) == before


def test_user_errors_are_tool_errors_naming_the_culprit(mcp_client):
    text = mcp_client.error("run_workflow", workflow="no-such-workflow-xyz")
    assert "no-such-workflow-xyz" in text and "hello" in text  # names it and what ships
    assert "no-such-workflow-xyz" in mcp_client.error("workflow_graph", workflow="no-such-workflow-xyz")
    assert "unknown input 'colour'" in mcp_client.error("run_workflow", workflow="hello", inputs={"colour": "red"})
    assert "model" in mcp_client.error("run_workflow", workflow="hello", model="gpt-4")
    assert "budget_usd" in mcp_client.error("run_workflow", workflow="hello", budget_usd=-1)
    assert "no run 'not-a-run'" in mcp_client.error("get_run", flow_run_id="not-a-run")
    assert "unknown agent 'ghost'" in mcp_client.error("show_agent", name="ghost")
    assert "by" in mcp_client.error("costs", by="colour")
    with pytest.raises(McpError, match="no run"):
        mcp_client.read("orchestra://runs/not-a-run")


def test_graph_and_agents(mcp_client):
    mermaid = mcp_client.ok("workflow_graph", workflow="code-review")["result"]
    assert mermaid.splitlines()[0] == "flowchart TD"
    assert "s_security --> s_summary" in mermaid and "s_style --> s_summary" in mermaid

    agents = {a["name"]: a for a in mcp_client.ok("list_agents")["agents"]}
    assert {"reviewer", "frontend", "backend", "qa", "debugger", "coordinator"} <= set(agents)
    import yaml

    reviewer_file = yaml.safe_load((ROOT / "agents" / "reviewer.yaml").read_text())
    shown = mcp_client.ok("show_agent", name="reviewer")
    assert shown["name"] == "reviewer"
    for key in ("model", "instruction"):
        if key in reviewer_file:
            assert shown[key] == reviewer_file[key]


@pytest.mark.parametrize("stop", ["close stdin", "SIGTERM"])
def test_stdout_is_only_json_rpc_and_the_server_stops_cleanly(tmp_path, prefect_api, stop):
    """A raw client: every stdout line is a JSON-RPC message; the server ends with exit 0 when
    its stdin closes, and on SIGTERM while it waits for input (how the SDK's client stops it)."""
    proc = subprocess.Popen([sys.executable, "-m", "orchestra.cli", "mcp"], cwd=ROOT,
                            env=_server_env(tmp_path, prefect_api, ORCHESTRA_MCP_WARMUP="0"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    messages = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize",
         "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
         "params": {"name": "workflow_graph", "arguments": {"workflow": "research"}}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "list_runs", "arguments": {}}},
    ]
    try:
        for message in messages:
            proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()
        replies = [json.loads(proc.stdout.readline()) for _ in range(3)]  # nothing but JSON on stdout
        if stop == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            proc.stdin.close()
        else:
            proc.stdin.close()
            assert proc.wait(timeout=30) == 0
        rest, stderr = proc.stdout.read(), proc.stderr.read()
    finally:
        proc.kill()
    assert [r["id"] for r in replies] == [1, 2, 3] and rest == "", replies
    assert replies[1]["result"]["structuredContent"]["result"].startswith("flowchart TD")
    assert replies[2]["result"]["structuredContent"] == {"runs": []}
    assert "Traceback" not in stderr, stderr
