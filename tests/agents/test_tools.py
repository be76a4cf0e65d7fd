"""The tool loop of the OpenAI and Anthropic adapters (agents.tools.converse) with the real
SDKs against the wire fakes, and the MCP sessions (agents.mcp.MCPPool) on the real ``mcp``
client against the MCP fake (stdio and streamable HTTP) and a published server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from agents import AgentConfig, call_agent, tool_format
from agents.mcp import MCPPool, MCPServerSpec, resolve_command
from agents.tools import Toolbox, ToolUseError, arguments_problem, converse, wire_name
from tests.fakes.mcp_server import CRASH_MESSAGE, MCPFake, read_log

REPO = Path(__file__).resolve().parents[2]
MODELS = {"openai": "openai:gpt-4.1-mini", "anthropic": "anthropic:claude-haiku-4-5"}
WHERE = "step 's': agent 'a'"


def script(*rounds) -> str:
    return "TOOL_SCRIPT: " + json.dumps(list(rounds))


def call(tool: str, **arguments) -> dict:
    return {"tool": tool, "arguments": arguments}


def stdio_spec(fake: MCPFake) -> MCPServerSpec:
    return MCPServerSpec(command=sys.executable, args=fake.args(), cwd=str(REPO), env={"PYTHONPATH": str(REPO)})


def spec_of(fake: MCPFake) -> MCPServerSpec:
    return stdio_spec(fake) if fake.transport == "stdio" else MCPServerSpec(url=fake.url, headers=fake.headers)


@pytest.fixture(params=["openai", "anthropic"])
def llm(request):
    """(provider, its wire fake); the SDK reads the fake's URL and a key from the environment."""
    return request.param, request.getfixturevalue(f"{request.param}_fake")


@pytest.fixture(params=["stdio", "http"])
def server(request, tmp_path):
    with MCPFake(request.param, log=tmp_path / "calls.jsonl", name="fake") as fake:
        yield fake


@pytest.fixture
def stdio_server(tmp_path):
    with MCPFake("stdio", log=tmp_path / "calls.jsonl", name="fake") as fake:
        yield fake


def run_loop(provider: str, prompt: str, servers: dict[str, MCPServerSpec], **agent_fields):
    """One attempt's tool loop, as the engine runs it: (rounds, tool results, error)."""
    model = MODELS[provider]
    agent = AgentConfig(name="a", model=model, servers=list(servers), **agent_fields)
    results = []

    async def main():
        pool = MCPPool(servers)
        try:
            box = await Toolbox.open(pool, agent, where=WHERE, on_call=results.append)
            return await converse(tool_format(provider), prompt, toolbox=box, max_tool_calls=agent.max_tool_calls,
                                  send=lambda c: call_agent(agent, "", model=model, conversation=c), where=WHERE)
        finally:
            await pool.aclose()

    try:
        return asyncio.run(main()), results, None
    except ToolUseError as e:
        return e.rounds, results, e


def offered(request: dict) -> list[str]:
    tools = request["body"].get("tools") or []
    return [t["function"]["name"] if "function" in t else t["name"] for t in tools]


# ---- each provider's loop --------------------------------------------------------------


def test_single_tool_call(llm, server):
    provider, fake = llm
    rounds, results, error = run_loop(provider, "Add.\n" + script([call("add", a=2, b=3)]), {"fake": spec_of(server)})
    assert error is None
    assert rounds[-1].output == "final: 5" and len(rounds) == 2
    assert [(r.server, r.tool, r.arguments, r.outcome, r.text) for r in results] == [
        ("fake", "add", {"a": 2, "b": 3}, "ok", "5")]
    assert [(e["tool"], e["arguments"], e["ok"]) for e in server.calls] == [("add", {"a": 2, "b": 3}, True)]
    requests = fake.requests
    assert offered(requests[0]) == ["fake__add", "fake__echo", "fake__lookup", "fake__fail", "fake__sleep",
                                    "fake__secret_echo"]
    assert [t["text"] for t in requests[1]["tool_results"]] == ["5"]
    # each round trip is one request, priced on its own usage
    assert [(r.input_tokens, r.output_tokens) for r in rounds] == [
        (q["usage"]["input_tokens"], q["usage"]["output_tokens"]) for q in requests]
    assert all(r.priced and r.cost_usd > 0 for r in rounds)


def test_parallel_calls_of_one_reply_run_at_once(llm, stdio_server):
    provider, fake = llm
    rounds, results, error = run_loop(
        provider, script([call("sleep", seconds=1.5), call("echo", text="b"), call("sleep", seconds=0.1)]),
        {"fake": stdio_spec(stdio_server)})
    assert error is None and len(rounds) == 2  # three calls in one reply: answered in one request
    assert rounds[-1].output == "final: slept 1.5 | b | slept 0.1"  # results in the order the model asked
    assert len(fake.requests[1]["tool_results"]) == 3
    # run at once: the server finished (and logged) them in the order they took, not the order asked
    assert [(e["tool"], e["arguments"].get("seconds")) for e in stdio_server.calls] == [
        ("echo", None), ("sleep", 0.1), ("sleep", 1.5)]
    assert [r.tool for r in results] == ["echo", "sleep", "sleep"]  # on_call hears each as it ends


def test_chained_calls(llm, server):
    provider, fake = llm
    rounds, results, error = run_loop(provider, script([call("echo", text="x")], [call("lookup", key="alpha")]),
                                      {"fake": spec_of(server)})
    assert error is None and rounds[-1].output == "final: x | first letter" and len(rounds) == 3
    assert [r["round"] for r in fake.requests] == [0, 1, 2]
    assert [[t["text"] for t in r["tool_results"]] for r in fake.requests] == [[], ["x"], ["first letter"]]
    assert [e["tool"] for e in server.calls] == ["echo", "lookup"]


def test_a_tool_error_goes_back_to_the_model(llm, stdio_server):
    provider, fake = llm
    rounds, results, error = run_loop(provider, script([call("fail", message="boom")], [call("lookup", key="zeta")]),
                                      {"fake": stdio_spec(stdio_server)})
    assert error is None
    assert rounds[-1].output == "final: Error executing tool fail: boom | Error executing tool lookup: unknown key 'zeta'"
    assert [(r.outcome, r.error) for r in results] == [
        ("error", "Error executing tool fail: boom"), ("error", "Error executing tool lookup: unknown key 'zeta'")]
    if provider == "anthropic":  # Anthropic's tool_result says so itself
        assert [t["is_error"] for r in fake.requests for t in r["tool_results"]] == [True, True]


def test_max_tool_calls_stops_the_loop(llm, stdio_server):
    provider, fake = llm
    rounds, results, error = run_loop(provider, script([call("echo", text="again")], "forever"),
                                      {"fake": stdio_spec(stdio_server)}, max_tool_calls=3)
    assert isinstance(error, ToolUseError) and not error.transient
    assert error.message.startswith(f"{WHERE}: stopped at max_tool_calls=3: after 3 tool call(s) the model asked "
                                    "for 1 more (fake.echo) instead of answering")
    assert len(rounds) == 4 == fake.request_count  # the rounds made are kept: they were paid for
    assert len(stdio_server.calls) == 3 and len(results) == 3  # the fourth call never ran


def test_arguments_that_fail_the_schema_never_reach_the_server(llm, stdio_server):
    provider, fake = llm
    rounds, results, error = run_loop(provider, script([call("add", a="two", b=1)], [call("add", a=2, b=1)]),
                                      {"fake": stdio_spec(stdio_server)})
    assert error is None
    problem = "tool fake.add: arguments do not match its input schema: 'two' is not of type 'integer' at /a"
    assert [(r.outcome, r.error) for r in results] == [("invalid", problem), ("ok", None)]
    assert rounds[-1].output == f"final: {problem} | 3"  # the model read why, and could try again
    assert [e["arguments"] for e in stdio_server.calls] == [{"a": 2, "b": 1}]


def test_a_tool_that_does_not_answer_in_time_is_a_tool_error(llm, stdio_server):
    provider, fake = llm
    rounds, results, error = run_loop(provider, script([call("sleep", seconds=30), call("echo", text="fast")]),
                                      {"fake": stdio_spec(stdio_server)}, tool_timeout=0.5)
    assert error is None
    by_tool = {r.tool: r for r in results}
    assert by_tool["sleep"].outcome == "timeout"
    assert by_tool["sleep"].error == "tool fake.sleep: no answer within 0.5 s (tool_timeout)"
    assert by_tool["echo"].outcome == "ok"
    assert rounds[-1].output == "final: tool fake.sleep: no answer within 0.5 s (tool_timeout) | fast"


def test_an_allow_list_offers_only_its_tools(llm, stdio_server):
    provider, fake = llm
    rounds, results, error = run_loop(provider, script([call("echo", text="hi")]), {"fake": stdio_spec(stdio_server)},
                                      tools=["fake.echo", "fake.lookup"])
    assert error is None and rounds[-1].output == "final: hi"
    assert offered(fake.requests[0]) == ["fake__echo", "fake__lookup"]


def test_an_allow_list_naming_a_tool_the_server_lacks_stops_before_any_request(openai_fake, stdio_server):
    rounds, results, error = run_loop("openai", "x", {"fake": stdio_spec(stdio_server)}, tools=["fake.nope"])
    assert isinstance(error, ToolUseError) and not error.transient
    assert error.message == (f"{WHERE}: tools: server 'fake' has no tool 'nope' (it has: add, echo, fail, lookup, "
                             "secret_echo, sleep)")
    assert openai_fake.request_count == 0


def test_secret_values_are_masked_before_the_model_reads_them(openai_fake, stdio_server):
    from core.redact import register_secret

    register_secret("blk-secret-value-4242")
    rounds, results, _ = run_loop("openai", script([call("secret_echo", token="blk-secret-value-4242")]),
                                  {"fake": stdio_spec(stdio_server)})
    assert rounds[-1].output == "final: ***" and results[0].text == "***"
    assert openai_fake.requests[1]["tool_results"][0]["text"] == "***"


# ---- servers that cannot be used -------------------------------------------------------


def test_a_server_that_crashes_on_start_is_named_with_its_stderr(openai_fake, tmp_path):
    fake = MCPFake("stdio", crash_on_start=True, log=tmp_path / "calls.jsonl")
    rounds, _, error = run_loop("openai", "x", {"fake": stdio_spec(fake)})
    assert isinstance(error, ToolUseError) and not error.transient
    assert error.message.startswith(f"{WHERE}: MCP server 'fake' (stdio: {sys.executable} -m tests.fakes.mcp_server")
    assert "did not start: connection closed; its stderr ends with: " + CRASH_MESSAGE in error.message
    assert openai_fake.request_count == 0 and read_log(tmp_path / "calls.jsonl") == []


def test_a_command_that_does_not_exist(openai_fake):
    rounds, _, error = run_loop("openai", "x", {"gone": MCPServerSpec(command="no-such-mcp-server-here")})
    assert error.message == (f"{WHERE}: MCP server 'gone' (stdio: no-such-mcp-server-here) did not start: command "
                             "not found: no-such-mcp-server-here; it wrote nothing to stderr")


def test_an_http_server_that_refuses_the_token(openai_fake, tmp_path):
    with MCPFake("http", require_token="tok-right-123", log=tmp_path / "calls.jsonl") as fake:
        _, _, error = run_loop("openai", "x", {"web": MCPServerSpec(url=fake.url,
                                                                   headers={"Authorization": "Bearer wrong"})})
        assert error.message == (f"{WHERE}: MCP server 'web' (http: {fake.url}) did not start: HTTP 401 Unauthorized "
                                 "(check its headers: a missing or wrong token?)")
        rounds, results, error = run_loop("openai", script([call("echo", text="in")]),
                                          {"web": MCPServerSpec(url=fake.url, headers=fake.headers)})
        assert error is None and rounds[-1].output == "final: in"
    unreachable = MCPServerSpec(url="http://127.0.0.1:9/mcp")
    _, _, error = run_loop("openai", "x", {"down": unreachable})
    assert error.transient and "MCP server 'down' (http: http://127.0.0.1:9/mcp) did not start: cannot connect" \
        in error.message


def test_a_server_that_never_answers_initialize(openai_fake, tmp_path):
    sleeper = tmp_path / "silent.py"
    sleeper.write_text("import sys, time\nprint('starting, then silence', file=sys.stderr, flush=True)\n"
                       "time.sleep(60)\n")
    agent = AgentConfig(name="a", model=MODELS["openai"], servers=["silent"])

    async def main():
        pool = MCPPool({"silent": MCPServerSpec(command=sys.executable, args=[str(sleeper)])}, start_timeout=1.0)
        try:
            await Toolbox.open(pool, agent, where=WHERE)
        finally:
            await pool.aclose()

    with pytest.raises(ToolUseError) as e:
        asyncio.run(main())
    assert "did not start: no answer to initialize within 1 s; its stderr ends with: starting, then silence" \
        in e.value.message


# ---- one session per server and run ----------------------------------------------------


def test_a_pool_opens_each_server_once_and_closing_it_ends_the_process(openai_fake, stdio_server):
    specs = {"fake": stdio_spec(stdio_server)}
    agents = [AgentConfig(name=n, model=MODELS["openai"], servers=["fake"]) for n in ("a", "b")]

    async def main():
        pool = MCPPool(specs)
        boxes = await asyncio.gather(*(Toolbox.open(pool, a, where=WHERE) for a in agents))  # at once
        again = await Toolbox.open(pool, agents[0], where=WHERE)
        for box in (*boxes, again):
            await box.call(box_call(box, "echo", {"text": "hi"}))
        await pool.aclose()
        return pool

    def box_call(box, tool, arguments):
        from agents.tools import ToolCall

        return ToolCall(id="c", name=next(t.wire for t in box.tools if t.name == tool), arguments=arguments)

    pool = asyncio.run(main())
    pids = {e["pid"] for e in stdio_server.calls}
    assert len(stdio_server.calls) == 3 and len(pids) == 1  # one process served all three
    pid = pids.pop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)
    assert pool.closed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped) is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---- the small pieces ------------------------------------------------------------------


def test_wire_names_are_what_providers_accept():
    assert wire_name("time", "get_current_time") == "time__get_current_time"
    assert wire_name("my-server", "files.read") == "my-server__files_read"
    long = wire_name("s", "x" * 100)
    assert len(long) == 64 and long.startswith("s__xxx")
    taken = ["a__b_c"]
    assert wire_name("a", "b.c", taken) != "a__b_c" and len(wire_name("a", "b.c", taken)) <= 64


def test_arguments_are_checked_against_the_tool_schema():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert arguments_problem(schema, {"a": 1}) is None
    assert arguments_problem(schema, {}) == "'a' is a required property"
    assert arguments_problem(schema, []) == "arguments must be a JSON object, got list"
    assert arguments_problem({"type": "not-a-type"}, {"a": 1}) is None  # a broken schema: the server judges


def test_commands_beside_this_python_are_found_without_an_activated_venv(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert resolve_command("orchestra") == str(Path(sys.executable).parent / "orchestra")
    assert resolve_command("/bin/sh") == "/bin/sh"
    assert resolve_command("no-such-program") == "no-such-program"


# ---- a real published server -----------------------------------------------------------


def test_the_loop_with_the_published_mcp_server_time(openai_fake):
    from tests.support.published_mcp import mcp_server_time

    found = mcp_server_time()
    if found.command is None:
        pytest.skip(found.reason)
    time_server = MCPServerSpec(command=found.command[0], args=found.command[1:])
    rounds, results, error = run_loop(
        "openai", script([call("convert_time", source_timezone="UTC", time="12:00", target_timezone="Asia/Tokyo")],
                         [call("get_current_time", timezone="Not/A_Zone")]),
        {"time": time_server}, tools=["time.convert_time", "time.get_current_time"])
    assert error is None
    assert [(r.tool, r.outcome) for r in results] == [("convert_time", "ok"), ("get_current_time", "error")]
    converted = json.loads(results[0].text)
    assert converted["time_difference"] == "+9.0h" and converted["target"]["datetime"].endswith("T21:00:00+09:00")
    assert "Not/A_Zone" in results[1].text
    assert offered(openai_fake.requests[0]) == ["time__get_current_time", "time__convert_time"]


def test_the_shared_map_is_no_agent_and_its_name_is_taken(tmp_path):
    from agents.mcp import SERVERS_FILE, load_servers
    from agents.registry import AgentFileError, agent_files, load_registry, save_agent

    assert SERVERS_FILE.is_file() and load_servers() == {}  # shipped empty, with examples in comments
    assert "mcp_servers" not in load_registry() and SERVERS_FILE not in agent_files()
    (tmp_path / "mcp_servers.yaml").write_text("fetch: {command: uvx, args: [mcp-server-fetch]}\n")
    (tmp_path / "helper.yaml").write_text("instruction: hi\nservers: [fetch]\ntools: [fetch.fetch]\n")
    assert list(load_registry(tmp_path)) == ["helper"]
    assert load_servers(tmp_path / "mcp_servers.yaml")["fetch"].args == ["mcp-server-fetch"]
    with pytest.raises(AgentFileError, match="'mcp_servers' is taken: mcp_servers.yaml holds the shared MCP servers"):
        save_agent(AgentConfig(name="mcp_servers", instruction="x"), tmp_path, overwrite=True)
    assert "fetch" in (tmp_path / "mcp_servers.yaml").read_text()  # untouched
    (tmp_path / "mcp_servers.yaml").write_text("fetch: {command: uvx, url: 'http://x/mcp'}\nbad name: {command: x}\n")
    with pytest.raises(ValueError) as e:
        load_servers(tmp_path / "mcp_servers.yaml")
    assert str(e.value) == (f"{tmp_path / 'mcp_servers.yaml'}: server 'fetch': has both a command and a url: give "
                            "one; server 'bad name': a name is 1-40 letters, digits, '_' or '-'")
