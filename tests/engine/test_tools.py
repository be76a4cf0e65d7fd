"""Agents that use tools, end to end: real Prefect runs, the real SDKs against the wire fakes,
the MCP fake (stdio and HTTP) and a published MCP server, the ledger.

What every run here checks: the ledger's tool rows are the calls the MCP server received,
its call rows are the requests the provider received, and ``--json`` lists the step's
``tool_calls``."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from ledger import queries
from tests.fakes.mcp_server import CRASH_MESSAGE, MCPFake, read_log

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"openai": "openai:gpt-4.1-mini", "anthropic": "anthropic:claude-haiku-4-5"}


def run(workflow, inputs=None, **kwargs) -> tuple[dict, object]:
    from flows.engine import final_report
    from orchestra.flow import run_workflow

    async def main():
        state = await run_workflow(workflow=workflow, inputs=inputs or {}, return_state=True, **kwargs)
        return await final_report(state), state

    return asyncio.run(main())


def script(*rounds) -> str:
    return "TOOL_SCRIPT: " + json.dumps(list(rounds))


def call(tool: str, **arguments) -> dict:
    return {"tool": tool, "arguments": arguments}


def stdio(fake: MCPFake) -> dict:
    return {"command": sys.executable, "args": fake.args(), "cwd": str(ROOT), "env": {"PYTHONPATH": str(ROOT)}}


def workflow(prompt: str, servers: dict, model: str = MODELS["openai"], retries: int = 0, **agent) -> dict:
    return {"name": "tooly", "mcp_servers": servers,
            "agents": {"a": {"model": model, "servers": list(servers), **agent}},
            "steps": [{"id": "ask", "agent": "a", "prompt": f"{uuid.uuid4()}\n{prompt}", "retries": retries}]}


def calls_seen(fake: MCPFake) -> Counter:
    return Counter((e["server"], e["tool"], json.dumps(e["arguments"], sort_keys=True)) for e in fake.calls)


def calls_recorded(rows: list[dict]) -> Counter:
    return Counter((r["server"], r["tool"], json.dumps(r["arguments"], sort_keys=True)) for r in rows
                   if r["outcome"] not in ("invalid",))


@pytest.fixture
def mcp_stdio(tmp_path):
    with MCPFake("stdio", log=tmp_path / "calls.jsonl", name="fake") as fake:
        yield fake


@pytest.fixture(params=["openai", "anthropic"])
def llm(request):
    return request.param, request.getfixturevalue(f"{request.param}_fake")


# ---- each provider, end to end ---------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http"])
def test_a_tool_run_in_the_ledger_equals_what_the_servers_saw(orchestra_env, llm, transport, tmp_path):
    provider, fake = llm
    prompt = script([call("add", a=4, b=5), call("lookup", key="gamma")], [call("fail", message="nope")])
    with MCPFake(transport, log=tmp_path / "calls.jsonl", name="fake") as mcp:
        spec = stdio(mcp) if transport == "stdio" else {"url": mcp.url}
        report, state = run(workflow(prompt, {"fake": spec}, model=MODELS[provider]))
    assert state.is_completed(), state.message
    step = report["steps"]["ask"]
    assert step["output"] == "final: 9 | third letter | Error executing tool fail: nope"
    assert [(t["server"], t["tool"], t["ok"], t["attempt"]) for t in sorted(step["tool_calls"], key=lambda t: t["tool"])] \
        == [("fake", "add", True, 1), ("fake", "fail", False, 1), ("fake", "lookup", True, 1)]
    assert all(t["duration_s"] >= 0 for t in step["tool_calls"])

    rows = queries.tool_calls(orchestra_env, report["flow_run_id"])
    assert calls_recorded(rows) == calls_seen(mcp) and len(rows) == 3  # each call the server received, once
    assert {r["outcome"] for r in rows} == {"ok", "error"} and {r["step"] for r in rows} == {"ask"}
    assert next(r for r in rows if r["tool"] == "fail")["error"] == "Error executing tool fail: nope"

    ledger_calls = queries.run(orchestra_env, report["flow_run_id"])["calls"]
    assert len(ledger_calls) == fake.request_count == 3  # one row per provider request
    assert [c["purpose"] for c in ledger_calls] == ["call", "tool", "tool"]
    assert step["attempts"] == 1  # one attempt, whatever its round trips
    assert [(c["input_tokens"], c["output_tokens"]) for c in ledger_calls] == [
        (r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in fake.requests]
    assert step["input_tokens"] == sum(c["input_tokens"] for c in ledger_calls)
    assert all(c["priced"] and c["cost_usd"] > 0 for c in ledger_calls)  # each round trip priced
    assert step["cost_usd"] == pytest.approx(sum(c["cost_usd"] for c in ledger_calls))


def test_fast_agent_runs_the_same_servers_from_its_own_configuration(orchestra_env, openai_fake, mcp_stdio):
    """fast-agent's OpenAI provider streams: its tool calls come in fragments."""
    prompt = script([call("fake-add", a=1, b=2)], [call("fake-echo", text="done")])
    report, state = run(workflow(prompt, {"fake": stdio(mcp_stdio)}, model="fast-agent:openai.gpt-4.1-mini",
                                 tools=["fake.add", "fake.echo"]))
    assert state.is_completed(), state.message
    step = report["steps"]["ask"]
    assert step["output"] == "final: 3 | done"
    assert [(t["tool"], t["ok"]) for t in step["tool_calls"]] == [("add", True), ("echo", True)]
    assert all(r["body"]["stream"] for r in openai_fake.requests)
    tools = [t["function"]["name"] for t in openai_fake.requests[0]["body"]["tools"]]
    assert tools == ["fake-add", "fake-echo"]  # the allow-list, in fast-agent's naming
    rows = queries.tool_calls(orchestra_env, report["flow_run_id"])
    assert calls_recorded(rows) == calls_seen(mcp_stdio) and len(rows) == 2
    ledger_calls = queries.run(orchestra_env, report["flow_run_id"])["calls"]
    assert len(ledger_calls) == openai_fake.request_count == 3
    assert [c["purpose"] for c in ledger_calls] == ["call", "tool", "tool"]
    assert [(c["input_tokens"], c["output_tokens"]) for c in ledger_calls] == [
        (r["usage"]["input_tokens"], r["usage"]["output_tokens"]) for r in openai_fake.requests]
    # the server fast-agent started for the run ended with it
    pid = mcp_stdio.calls[0]["pid"]
    assert _gone(pid), f"the MCP server {pid} outlived the run"


def _gone(pid: int, wait: float = 15.0) -> bool:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().split(")")[-1].split()[0] == "Z":
                    return True
        except (ProcessLookupError, OSError):
            return True
        time.sleep(0.1)
    return False


def test_the_run_closes_its_sessions(orchestra_env, openai_fake, mcp_stdio):
    wf = workflow(script([call("echo", text="a")]), {"fake": stdio(mcp_stdio)})
    wf["steps"].append({"id": "again", "agent": "a", "depends_on": ["ask"], "prompt": script([call("echo", text="b")])})
    report, state = run(wf)
    assert state.is_completed(), state.message
    assert [e["arguments"]["text"] for e in mcp_stdio.calls] == ["a", "b"]
    pids = {e["pid"] for e in mcp_stdio.calls}
    assert len(pids) == 1  # one session for the run's two steps
    assert _gone(pids.pop())


# ---- limits, retries, the cache ----------------------------------------------------------


def test_max_tool_calls_fails_the_step_without_a_retry(orchestra_env, openai_fake, mcp_stdio):
    report, state = run(workflow(script([call("echo", text="again")], "forever"), {"fake": stdio(mcp_stdio)},
                                 retries=2, max_tool_calls=2))
    step = report["steps"]["ask"]
    assert state.is_failed() and step["state"] == "FAILED"
    assert step["error"] == ("step 'ask': agent 'a': stopped at max_tool_calls=2: after 2 tool call(s) the model "
                             "asked for 1 more (fake.echo) instead of answering; raise max_tool_calls or narrow "
                             "the task")
    assert step["attempts"] == 1 and len(mcp_stdio.calls) == 2 and openai_fake.request_count == 3
    assert len(step["tool_calls"]) == 2
    ledger_calls = queries.run(orchestra_env, report["flow_run_id"])["calls"]
    assert len(ledger_calls) == 3 and sum(c["cost_usd"] for c in ledger_calls) == pytest.approx(step["cost_usd"])


def test_a_transient_error_after_tool_calls_retries_the_whole_attempt(orchestra_env, openai_fake, mcp_stdio):
    openai_fake.configure(faults=[None, 500])  # the first round answers, the second gets a 500
    report, state = run(workflow(script([call("add", a=1, b=1)]), {"fake": stdio(mcp_stdio)}, retries=1))
    assert state.is_completed(), state.message
    step = report["steps"]["ask"]
    assert step["attempts"] == 2 and step["output"] == "final: 2"
    assert [(t["tool"], t["attempt"]) for t in step["tool_calls"]] == [("add", 1), ("add", 2)]
    assert [e["arguments"] for e in mcp_stdio.calls] == [{"a": 1, "b": 1}] * 2  # run again from the start
    assert len({e["pid"] for e in mcp_stdio.calls}) == 1  # on the run's one session
    ledger_calls = queries.run(orchestra_env, report["flow_run_id"])["calls"]
    assert [(c["attempt"], c["purpose"], c["status"]) for c in ledger_calls] == [
        (1, "call", "ok"), (1, "tool", "error"), (2, "call", "ok"), (2, "tool", "ok")]
    assert len(ledger_calls) == openai_fake.request_count


def test_a_cached_step_replays_no_tool_call(orchestra_env, openai_fake, mcp_stdio):
    wf = workflow(script([call("echo", text="once")]), {"fake": stdio(mcp_stdio)})
    first, _ = run(wf)
    second, state = run(wf)
    assert state.is_completed()
    assert first["steps"]["ask"]["output"] == second["steps"]["ask"]["output"] == "final: once"
    assert second["steps"]["ask"]["cached"] and second["steps"]["ask"]["tool_calls"] == []
    assert len(mcp_stdio.calls) == 1 and openai_fake.request_count == 2
    assert queries.tool_calls(orchestra_env, second["flow_run_id"]) == []
    changed = dict(wf, mcp_servers={"fake": {**stdio(mcp_stdio), "env": {"PYTHONPATH": str(ROOT), "X": "1"}}})
    third, _ = run(changed)  # another server definition: another answer
    assert not third["steps"]["ask"]["cached"] and len(mcp_stdio.calls) == 2


# ---- bad input at run time -----------------------------------------------------------------


def test_a_server_that_does_not_start_fails_the_step_with_its_stderr(orchestra_env, openai_fake, tmp_path):
    crash = MCPFake("stdio", crash_on_start=True, log=tmp_path / "calls.jsonl")
    report, state = run(workflow("x", {"fake": stdio(crash)}, retries=2))
    step = report["steps"]["ask"]
    assert state.is_failed() and step["state"] == "FAILED"
    assert step["error"].startswith("step 'ask': agent 'a': MCP server 'fake' (stdio: ")
    assert step["error"].endswith(f"did not start: connection closed; its stderr ends with: {CRASH_MESSAGE}")
    assert openai_fake.request_count == 0 and step["attempts"] == 0  # not retried: it would crash again
    assert queries.run(orchestra_env, report["flow_run_id"])["calls"] == []


def test_an_allow_list_naming_a_tool_the_server_lacks_fails_the_step(orchestra_env, openai_fake, mcp_stdio):
    report, state = run(workflow("x", {"fake": stdio(mcp_stdio)}, tools=["fake.add", "fake.subtract"]))
    assert report["steps"]["ask"]["error"] == (
        "step 'ask': agent 'a': tools: server 'fake' has no tool 'subtract' (it has: add, echo, fail, lookup, "
        "secret_echo, sleep)")
    assert openai_fake.request_count == 0


def test_arguments_failing_the_schema_are_a_tool_error_the_server_never_sees(orchestra_env, openai_fake, mcp_stdio):
    report, state = run(workflow(script([call("add", a="x", b=1)]), {"fake": stdio(mcp_stdio)}))
    assert state.is_completed(), state.message
    problem = "tool fake.add: arguments do not match its input schema: 'x' is not of type 'integer' at /a"
    assert report["steps"]["ask"]["output"] == f"final: {problem}"
    assert mcp_stdio.calls == []
    (row,) = queries.tool_calls(orchestra_env, report["flow_run_id"])
    assert (row["tool"], row["outcome"], row["error"], row["arguments"]) == ("add", "invalid", problem,
                                                                            {"a": "x", "b": 1})


# ---- secrets ------------------------------------------------------------------------------


def test_secret_headers_from_a_prefect_block_never_reach_the_ledger_or_the_report(orchestra_env, openai_fake,
                                                                                   tmp_path):
    from prefect.blocks.system import Secret

    token = "tok-" + uuid.uuid4().hex
    name = "mcp-token-" + uuid.uuid4().hex[:8]
    Secret(value=token).save(name)
    with MCPFake("http", require_token=token, log=tmp_path / "calls.jsonl") as mcp:
        servers = {"web": {"url": mcp.url, "headers": {"Authorization": "Bearer {{ secret('%s') }}" % name}}}
        prompt = script([call("secret_echo", token=token), call("echo", text="plain")])
        report, state = run(workflow(prompt, servers))
        assert state.is_completed(), state.message
        assert [e["tool"] for e in mcp.calls] == ["secret_echo", "echo"]  # the header got through
    step = report["steps"]["ask"]
    assert step["output"] == "final: *** | plain"  # the model never read the secret back
    rows = queries.tool_calls(orchestra_env, report["flow_run_id"])
    assert rows[0]["arguments"] == {"token": "***"}
    run_row = queries.run(orchestra_env, report["flow_run_id"])
    run_row.pop("workflow_ref")  # the workflow itself, for `orchestra rerun`: this test's prompt holds the token
    everything = json.dumps([report, rows, run_row], default=str)
    assert token not in everything

    missing = {"web": {"url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "{{ secret('NO_SUCH_VAR_X') }}"}}}
    report, state = run(workflow("x", missing))
    assert report["steps"]["ask"]["error"] == (
        "step 'ask': agent 'a': MCP server 'web': headers.Authorization: secret('NO_SUCH_VAR_X'): no environment "
        "variable NO_SUCH_VAR_X; not a Prefect block name (lowercase letters, digits, dashes), so no Secret block "
        "looked up")


def test_a_secret_from_the_environment_in_a_stdio_servers_env(orchestra_env, openai_fake, mcp_stdio, monkeypatch):
    monkeypatch.setenv("FAKE_SERVER_SECRET", "env-secret-" + uuid.uuid4().hex)
    spec = stdio(mcp_stdio)
    spec["env"] = {**spec["env"], "GIVEN": "{{ secret('FAKE_SERVER_SECRET') }}"}
    report, state = run(workflow(script([call("echo", text="ok")]), {"fake": spec}))
    assert state.is_completed(), state.message and report["steps"]["ask"]["output"] == "final: ok"


# ---- events, the example, a published server -----------------------------------------------------


def test_every_tool_call_is_an_event_of_its_task_run(orchestra_env, openai_fake, mcp_stdio):
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    report, state = run(workflow(script([call("add", a=1, b=2), call("fail", message="no")]),
                                 {"fake": stdio(mcp_stdio)}))
    assert state.is_completed(), state.message

    async def read():
        async with get_client() as client:
            flt = EventFilter(event=EventNameFilter(name=["orchestra.tool.call"]),
                              related=EventRelatedFilter(id=[f"prefect.flow-run.{report['flow_run_id']}"]))
            page = await client.request("POST", "/events/filter", json={"filter": flt.model_dump(mode="json"),
                                                                        "limit": 50})
            return page.json()["events"]

    deadline, events = time.monotonic() + 20, []
    while time.monotonic() < deadline and len(events) < 2:
        events = asyncio.run(read())
        time.sleep(0.3)
    assert sorted((e["resource"]["prefect.resource.id"], e["payload"]["outcome"]) for e in events) == [
        ("orchestra.tool.fake.add", "ok"), ("orchestra.tool.fake.fail", "error")]
    for e in events:
        roles = {r["prefect.resource.role"] for r in e["related"]}
        assert {"flow-run", "task-run", "workflow", "agent"} <= roles
        assert e["payload"]["step"] == "ask" and e["payload"]["attempt"] == 1


def test_the_research_with_tools_example_against_the_wire_fake(orchestra_env, openai_fake, monkeypatch, tmp_path):
    """The shipped example, its agent on the OpenAI fake and its server the real `orchestra mcp`."""
    monkeypatch.setenv("HOME", str(tmp_path))  # the server's own home (it gets HOME, PATH, ... only)
    question = ("Which agents review code?\n"
                + script([call("list_agents"), call("workflow_graph", workflow="code-review")],
                         [call("show_agent", name="reviewer")]))
    report, state = run("research-with-tools", {"question": question}, model="openai:gpt-4.1-mini")
    assert state.is_completed(), state.message
    step = report["steps"]["answer"]
    assert [(t["tool"], t["ok"]) for t in step["tool_calls"]] == [("list_agents", True), ("workflow_graph", True),
                                                                  ("show_agent", True)]
    offered = [t["function"]["name"] for t in openai_fake.requests[0]["body"]["tools"]]
    assert offered == ["orchestra__validate_workflow", "orchestra__workflow_graph", "orchestra__list_agents",
                       "orchestra__show_agent"]  # the allow-list: nothing that runs or reads the ledger
    results = [t["text"] for r in openai_fake.requests for t in r["tool_results"]]
    assert "reviewer" in results[0] and "flowchart TD" in results[1] and "security" in results[1]
    assert json.loads(results[2])["name"] == "reviewer"


def test_a_published_mcp_server_in_a_run(orchestra_env, openai_fake):
    from tests.support.published_mcp import mcp_server_time

    found = mcp_server_time()
    if found.command is None:
        pytest.skip(found.reason)
    servers = {"time": {"command": found.command[0], "args": found.command[1:]}}
    prompt = script([call("convert_time", source_timezone="UTC", time="09:30", target_timezone="Europe/Paris")])
    report, state = run(workflow(prompt, servers, tools=["time.convert_time"]))
    assert state.is_completed(), state.message
    (row,) = queries.tool_calls(orchestra_env, report["flow_run_id"])
    assert (row["server"], row["tool"], row["outcome"]) == ("time", "convert_time", "ok")
    assert "time_difference" in report["steps"]["ask"]["output"]


def test_fast_agent_bad_input_fails_the_step_before_any_request(orchestra_env, openai_fake, mcp_stdio, tmp_path):
    model = "fast-agent:openai.gpt-4.1-mini"
    report, state = run(workflow("x", {"fake": stdio(mcp_stdio)}, model=model, tools=["fake.add", "fake.subtract"]))
    assert report["steps"]["ask"]["error"] == (
        "step 'ask': agent 'a': tools: server 'fake' has no tool 'subtract' (it has: add, echo, fail, lookup, "
        "secret_echo, sleep)")
    crash = MCPFake("stdio", crash_on_start=True, log=tmp_path / "crash.jsonl")
    report, state = run(workflow("x", {"fake": stdio(crash)}, model=model))
    error = report["steps"]["ask"]["error"]
    assert error.startswith("step 'ask': agent 'a': MCP server 'fake' (stdio: "), error
    assert error.endswith(f"did not start: connection closed; its stderr ends with: {CRASH_MESSAGE}"), error
    assert openai_fake.request_count == 0
    assert queries.run(orchestra_env, report["flow_run_id"])["calls"] == []  # no request, no row
