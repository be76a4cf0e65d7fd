"""Tool calls at the wire: the TOOL_SCRIPT directive of the OpenAI and Anthropic fakes,
driven by the real async SDKs; the MCP fake, driven by the real ``mcp`` client over
stdio and streamable HTTP; and one real published MCP server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import anthropic
import anyio
import httpx
import openai
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamablehttp_client
from mcp.shared.exceptions import McpError

from tests.fakes import AnthropicFake, OpenAIFake
from tests.fakes.mcp_server import CRASH_EXIT, CRASH_MESSAGE, LOOKUP, TOOLS, MCPFake, read_log

REPO = Path(__file__).resolve().parents[2]
OA_MODEL, AN_MODEL = "gpt-4.1-mini", "claude-haiku-4-5"


def script(*rounds) -> str:
    return "TOOL_SCRIPT: " + json.dumps(list(rounds))


def call(tool: str, **arguments) -> dict:
    return {"tool": tool, "arguments": arguments}


def words(text: str) -> int:
    return len(text.split())


def call_words(name: str, arguments: dict) -> int:
    """What the fakes count for one tool call (see tests/fakes/base.py)."""
    return words(name) + words(json.dumps(arguments))


SCHEMAS = {
    "add": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]},
    "echo": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    "lookup": {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
}
LOCAL = {  # what the test "runs" for a tool when no MCP server is involved
    "add": lambda a, b: str(a + b),
    "echo": lambda text: text,
    "lookup": lambda key: LOOKUP[key],
}


def local(name: str, arguments: dict) -> str:
    return LOCAL[name.rsplit("__", 1)[-1]](**arguments)


def oa_tools(*names: str) -> list[dict]:
    return [{"type": "function", "function": {"name": n, "description": f"tool {n}",
                                              "parameters": SCHEMAS[n.rsplit("__", 1)[-1]]}} for n in names]


def an_tools(*names: str) -> list[dict]:
    return [{"name": n, "description": f"tool {n}", "input_schema": SCHEMAS[n.rsplit("__", 1)[-1]]} for n in names]


def oa(fake) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)


def an(fake) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test", max_retries=0)


@pytest.fixture
def oai():
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def ant():
    with AnthropicFake() as fake:
        yield fake


def run(coro):
    return asyncio.run(coro)


# ---- OpenAI: the steps of a loop, spelled out -------------------------------------------


def oa_assistant(message) -> dict:
    """The assistant message to send back, as a tool loop would."""
    return message.model_dump(include={"role", "content", "tool_calls"}, exclude_none=True)


def test_openai_single_round(oai):
    prompt = "Add two and three.\n" + script([call("add", a=2, b=3)])

    async def main():
        client = oa(oai)
        messages = [{"role": "user", "content": prompt}]
        r1 = await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=oa_tools("math__add"))
        msg = r1.choices[0].message
        messages += [oa_assistant(msg), *({"role": "tool", "tool_call_id": tc.id, "content": "5"}
                                         for tc in msg.tool_calls)]
        r2 = await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=oa_tools("math__add"))
        return r1, r2

    r1, r2 = run(main())
    choice = r1.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [tc] = choice.message.tool_calls
    assert tc.type == "function" and tc.id.startswith("call_")
    assert tc.function.name == "math__add"  # the script said "add": found after the last "__"
    assert json.loads(tc.function.arguments) == {"a": 2, "b": 3}
    assert r1.usage.prompt_tokens == words(prompt)
    assert r1.usage.completion_tokens == call_words("math__add", {"a": 2, "b": 3})
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.tool_calls is None
    assert r2.choices[0].message.content == "final: 5"
    # next input = last input + last output + the new result ("5")
    assert r2.usage.prompt_tokens == r1.usage.prompt_tokens + r1.usage.completion_tokens + 1
    assert r2.usage.completion_tokens == 2

    log = oai.requests
    assert [r["status"] for r in log] == [200, 200] and [r["round"] for r in log] == [0, 1]
    assert [len(r["tool_calls"]) for r in log] == [1, 0]
    assert log[0]["tool_calls"] == [{"id": tc.id, "name": "math__add", "arguments": {"a": 2, "b": 3}}]
    assert log[0]["tool_results"] == [] and log[1]["tool_results"] == [{"id": tc.id, "text": "5", "is_error": False}]
    assert [r["usage"]["output_tokens"] for r in log] == [r1.usage.completion_tokens, 2]


async def oa_stream_round(client, messages, tools):
    """One streamed round, tool calls put together from their fragments by ``index``."""
    stream = await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=tools, stream=True,
                                                  stream_options={"include_usage": True})
    calls: dict[int, dict] = {}
    fragments: dict[int, int] = {}
    text, finish, usage = "", None, None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            text += choice.delta.content or ""
            for d in choice.delta.tool_calls or []:
                if d.id:  # the first fragment of a call: id, type and name
                    assert d.index not in calls and d.type == "function" and d.function.name
                    calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
                else:
                    assert d.function.name is None
                calls[d.index]["arguments"] += d.function.arguments or ""
                fragments[d.index] = fragments.get(d.index, 0) + 1
    assert chunk.choices == [] and usage is not None  # the usage chunk comes last
    return text, finish, [calls[i] for i in sorted(calls)], fragments, usage


def test_openai_parallel_then_chained_streaming(oai):
    prompt = "Do it.\n" + script([call("echo", text="hi there"), call("lookup", key="alpha")],
                                 [call("add", a=1, b=2)])
    tools = oa_tools("fake__echo", "fake__lookup", "fake__add")

    async def main():
        client, messages, rounds = oa(oai), [{"role": "user", "content": prompt}], []
        while True:
            text, finish, calls, fragments, usage = await oa_stream_round(client, messages, tools)
            rounds.append((text, finish, calls, fragments, usage))
            if finish != "tool_calls":
                return rounds
            messages.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
                for c in calls]})
            messages += [{"role": "tool", "tool_call_id": c["id"], "content": local(c["name"], json.loads(c["arguments"]))}
                         for c in calls]

    rounds = run(main())
    assert [finish for _, finish, *_ in rounds] == ["tool_calls", "tool_calls", "stop"]
    (t1, _, calls1, frags1, u1), (_, _, calls2, _, u2), (final, _, calls3, _, u3) = rounds
    assert t1 == "" and [(c["name"], json.loads(c["arguments"])) for c in calls1] == [
        ("fake__echo", {"text": "hi there"}), ("fake__lookup", {"key": "alpha"})]
    assert all(n > 1 for n in frags1.values())  # the arguments really came in pieces
    assert len({c["id"] for c in calls1 + calls2}) == 3
    assert [(c["name"], json.loads(c["arguments"])) for c in calls2] == [("fake__add", {"a": 1, "b": 2})]
    assert calls3 == [] and final == "final: hi there | first letter | 3"
    assert u1.completion_tokens == call_words("fake__echo", {"text": "hi there"}) + call_words(
        "fake__lookup", {"key": "alpha"})
    assert u2.prompt_tokens == u1.prompt_tokens + u1.completion_tokens + words("hi there first letter")
    assert u3.prompt_tokens == u2.prompt_tokens + u2.completion_tokens + 1
    log = oai.requests
    assert [len(r["tool_calls"]) for r in log] == [2, 1, 0]
    assert [[t["text"] for t in r["tool_results"]] for r in log] == [[], ["hi there", "first letter"], ["3"]]
    assert [r["usage"] for r in log] == [{"input_tokens": u.prompt_tokens, "output_tokens": u.completion_tokens}
                                         for u in (u1, u2, u3)]


def test_openai_sdk_stream_helper_assembles_tool_calls(oai):
    prompt = script({"text": "Let me look.", "calls": [call("lookup", key="beta"), call("add", a=40, b=2)]})

    async def main():
        async with oa(oai).chat.completions.stream(model=OA_MODEL, messages=[{"role": "user", "content": prompt}],
                                                   tools=oa_tools("lookup", "add")) as stream:
            return await stream.get_final_completion()

    completion = run(main())
    msg = completion.choices[0].message
    assert completion.choices[0].finish_reason == "tool_calls" and msg.content == "Let me look."
    assert [(tc.function.name, json.loads(tc.function.arguments)) for tc in msg.tool_calls] == [
        ("lookup", {"key": "beta"}), ("add", {"a": 40, "b": 2})]
    assert completion.usage is None and oai.requests[0]["usage"] is None  # no include_usage, no usage


def test_openai_refuses_a_tool_it_was_not_offered(oai):
    prompt = script([call("lookup", key="alpha")])

    async def main():
        client, errors = oa(oai), []
        for kw in ({"tools": oa_tools("echo")}, {}, {"tools": []}, {"tools": oa_tools("a__lookup", "b__lookup")}):
            with pytest.raises(openai.BadRequestError) as ei:
                await client.chat.completions.create(model=OA_MODEL, messages=[{"role": "user", "content": prompt}],
                                                     **kw)
            errors.append(ei.value)
        return errors

    offered_other, none, empty, twice = run(main())
    for e in (offered_other, none):
        assert e.status_code == 400 and e.body["type"] == "invalid_request_error" and e.body["param"] == "tools"
        assert "'lookup'" in e.body["message"]
    assert "offered: echo" in offered_other.body["message"] and "offered: none" in none.body["message"]
    assert "empty array" in empty.body["message"]  # as the real API: tools=[] is refused
    assert "a__lookup, b__lookup" in twice.body["message"]
    assert [(r["status"], r["tool_calls"]) for r in oai.requests] == [(400, [])] * 4


def test_openai_forever_until_max_tool_calls(oai):
    prompt = "Loop.\n" + script([call("echo", text="again")], "forever")
    max_tool_calls = 4

    async def main():
        client, messages, done, asked = oa(oai), [{"role": "user", "content": prompt}], 0, []
        while True:
            r = await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=oa_tools("echo"),
                                                     **({"tool_choice": "none"} if done >= max_tool_calls else {}))
            msg = r.choices[0].message
            asked.append(r.choices[0].finish_reason)
            if not msg.tool_calls:
                return msg.content, asked
            messages.append(oa_assistant(msg))
            for tc in msg.tool_calls:
                done += 1
                messages.append({"role": "tool", "tool_call_id": tc.id, "content": f"again {done}"})

    final, asked = run(main())
    assert asked == ["tool_calls"] * max_tool_calls + ["stop"]  # it never stops by itself
    assert final == "final: again 1 | again 2 | again 3 | again 4"
    assert [r["round"] for r in oai.requests] == [0, 1, 2, 3, 4]
    assert [len(r["tool_calls"]) for r in oai.requests] == [1, 1, 1, 1, 0]


def test_openai_checks_tool_results_like_the_api(oai):
    prompt = script([call("echo", text="x")])

    async def main():
        client = oa(oai)
        r = await client.chat.completions.create(model=OA_MODEL, messages=[{"role": "user", "content": prompt}],
                                                 tools=oa_tools("echo"))
        assistant = oa_assistant(r.choices[0].message)
        call_id = r.choices[0].message.tool_calls[0].id
        errors = []
        for messages in ([{"role": "user", "content": prompt}, assistant],  # the result is missing
                         [{"role": "user", "content": prompt}, assistant, {"role": "user", "content": "and?"}],
                         [{"role": "user", "content": prompt}, {"role": "tool", "tool_call_id": "call_x", "content": "?"}]):
            with pytest.raises(openai.BadRequestError) as ei:
                await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=oa_tools("echo"))
            errors.append(ei.value.body["message"])
        return call_id, errors

    call_id, (missing, interrupted, orphan) = run(main())
    assert call_id in missing and "did not have response messages" in missing
    assert call_id in interrupted
    assert "must be a response to a preceeding message with 'tool_calls'" in orphan


def test_openai_faults_and_latency_on_tool_rounds(oai):
    prompt = script([call("add", a=1, b=1)], [call("add", a=2, b=2)])
    oai.configure(latency_ms=5)

    async def main():
        client, messages, finals = oa(oai), [{"role": "user", "content": prompt}], []
        r = await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=oa_tools("add"))
        messages += [oa_assistant(r.choices[0].message),
                     {"role": "tool", "tool_call_id": r.choices[0].message.tool_calls[0].id, "content": "2"}]
        oai.configure(faults=[429, 500, "drop"])
        for exc in (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError):
            with pytest.raises(exc):
                await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=oa_tools("add"))
        r = await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=oa_tools("add"))
        finals.append(json.loads(r.choices[0].message.tool_calls[0].function.arguments))
        return finals

    assert run(main()) == [{"a": 2, "b": 2}]  # after the faults, the same round is asked again
    log = oai.requests
    assert [r["status"] for r in log] == [200, 429, 500, "drop", 200]
    assert [len(r["tool_calls"]) for r in log] == [1, 0, 0, 0, 1]
    assert [r["round"] for r in log] == [0, 1, 1, 1, 1]
    assert all(r["tool_results"] == [{"id": log[0]["tool_calls"][0]["id"], "text": "2", "is_error": False}]
               for r in log[1:])  # what each faulted request brought is logged too
    assert [r["usage"] is not None for r in log] == [True, False, False, False, True]


def test_openai_bad_script_and_no_script(oai):
    async def main():
        client = oa(oai)
        errors = []
        for bad in ("TOOL_SCRIPT: [[{", 'TOOL_SCRIPT: ["forever"]', 'TOOL_SCRIPT: [[{"tool": "echo", "args": {}}]]',
                    'TOOL_SCRIPT: [[]]', 'TOOL_SCRIPT: ["forever", [{"tool": "echo"}]]'):
            with pytest.raises(openai.BadRequestError) as ei:
                await client.chat.completions.create(model=OA_MODEL, messages=[{"role": "user", "content": bad}],
                                                     tools=oa_tools("echo"))
            errors.append(ei.value.body["message"])
        plain = await client.chat.completions.create(model=OA_MODEL, tools=oa_tools("echo"),
                                                     messages=[{"role": "user", "content": "just talk"}])
        return errors, plain

    errors, plain = run(main())
    assert all(e.startswith("Bad TOOL_SCRIPT (fake)") for e in errors)
    assert plain.choices[0].finish_reason == "stop" and plain.choices[0].message.content == "echo: just talk"


# ---- Anthropic ---------------------------------------------------------------------


def test_anthropic_single_round_with_text_block(ant):
    prompt = "What is alpha?\n" + script({"text": "Let me look that up.", "calls": [call("lookup", key="alpha")]})

    async def main():
        client = an(ant)
        messages = [{"role": "user", "content": prompt}]
        r1 = await client.messages.create(model=AN_MODEL, max_tokens=256, messages=messages,
                                          tools=an_tools("kb__lookup"))
        use = r1.content[1]
        messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r1.content]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                                   "content": "first letter"}]}]
        r2 = await client.messages.create(model=AN_MODEL, max_tokens=256, messages=messages,
                                          tools=an_tools("kb__lookup"))
        return r1, r2

    r1, r2 = run(main())
    assert r1.stop_reason == "tool_use"
    assert [b.type for b in r1.content] == ["text", "tool_use"] and r1.content[0].text == "Let me look that up."
    use = r1.content[1]
    assert use.id.startswith("toolu_") and use.name == "kb__lookup" and use.input == {"key": "alpha"}
    assert r1.usage.input_tokens == words(prompt)
    assert r1.usage.output_tokens == words("Let me look that up.") + call_words("kb__lookup", {"key": "alpha"})
    assert r2.stop_reason == "end_turn" and [(b.type, b.text) for b in r2.content] == [("text", "final: first letter")]
    assert r2.usage.input_tokens == r1.usage.input_tokens + r1.usage.output_tokens + 2
    log = ant.requests
    assert [len(r["tool_calls"]) for r in log] == [1, 0] and [r["round"] for r in log] == [0, 1]
    assert log[1]["tool_results"] == [{"id": use.id, "text": "first letter", "is_error": False}]
    assert [r["usage"] for r in log] == [{"input_tokens": r.usage.input_tokens, "output_tokens": r.usage.output_tokens}
                                         for r in (r1, r2)]


def test_anthropic_parallel_then_chained_streaming(ant):
    prompt = script([call("echo", text="one two"), call("add", a=20, b=22)], [call("lookup", key="gamma")])
    tools = an_tools("fake__echo", "fake__add", "fake__lookup")

    async def main():
        client, messages, finals, raw = an(ant), [{"role": "user", "content": prompt}], [], []
        while True:
            async with client.messages.stream(model=AN_MODEL, max_tokens=256, messages=messages,
                                              tools=tools) as stream:
                events = [e async for e in stream]
                final = await stream.get_final_message()
            raw.append(events)
            finals.append(final)
            if final.stop_reason != "tool_use":
                return finals, raw
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in final.content]})
            results = []
            for b in final.content:
                if b.type == "tool_use":  # results as a list of text blocks; the add one marked as an error
                    results.append({"type": "tool_result", "tool_use_id": b.id, "is_error": b.name.endswith("add"),
                                    "content": [{"type": "text", "text": local(b.name, b.input)}]})
            messages.append({"role": "user", "content": results})

    finals, raw = run(main())
    assert [f.stop_reason for f in finals] == ["tool_use", "tool_use", "end_turn"]
    assert [(b.name, b.input) for b in finals[0].content] == [("fake__echo", {"text": "one two"}),
                                                             ("fake__add", {"a": 20, "b": 22})]
    assert [(b.name, b.input) for b in finals[1].content] == [("fake__lookup", {"key": "gamma"})]
    assert finals[2].content[0].text == "final: one two | 42 | third letter"
    starts = [e.content_block for e in raw[0] if e.type == "content_block_start"]
    assert [(b.type, b.input) for b in starts] == [("tool_use", {}), ("tool_use", {})]
    deltas = [e.delta for e in raw[0] if e.type == "content_block_delta"]
    assert {d.type for d in deltas} == {"input_json_delta"} and len(deltas) > 2  # pieces of both inputs
    assert [e.delta.stop_reason for e in raw[0] if e.type == "message_delta"] == ["tool_use"]
    u = [f.usage for f in finals]
    assert u[0].output_tokens == call_words("fake__echo", {"text": "one two"}) + call_words("fake__add",
                                                                                          {"a": 20, "b": 22})
    assert u[1].input_tokens == u[0].input_tokens + u[0].output_tokens + words("one two 42")
    log = ant.requests
    assert [len(r["tool_calls"]) for r in log] == [2, 1, 0]
    assert [[(t["text"], t["is_error"]) for t in r["tool_results"]] for r in log] == [
        [], [("one two", False), ("42", True)], [("third letter", False)]]
    assert [r["usage"]["output_tokens"] for r in log] == [x.output_tokens for x in u]


def test_anthropic_refuses_unknown_tool_and_unanswered_use(ant):
    prompt = script([call("secret_echo", token="t")])

    async def main():
        client, errors = an(ant), []
        for tools in (an_tools("echo"), None):
            with pytest.raises(anthropic.BadRequestError) as ei:
                await client.messages.create(model=AN_MODEL, max_tokens=64, messages=[{"role": "user", "content": prompt}],
                                             **({"tools": tools} if tools else {}))
            errors.append(ei.value)
        r = await client.messages.create(model=AN_MODEL, max_tokens=64, tools=an_tools("echo"),
                                         messages=[{"role": "user", "content": script([call("echo", text="x")])}])
        assistant = {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]}
        answer = {"type": "tool_result", "tool_use_id": r.content[0].id, "content": "x"}
        for follow in ({"role": "user", "content": "no result"},
                       {"role": "user", "content": [answer, {"type": "tool_result", "tool_use_id": "toolu_nope"}]}):
            with pytest.raises(anthropic.BadRequestError) as ei:
                await client.messages.create(model=AN_MODEL, max_tokens=64, tools=an_tools("echo"),
                                             messages=[{"role": "user", "content": "go"}, assistant, follow])
            errors.append(ei.value)
        return r.content[0].id, errors

    use_id, (other, none, unanswered, unexpected) = run(main())
    for e in (other, none):
        assert e.status_code == 400 and e.body["type"] == "error"
        assert e.body["error"]["type"] == "invalid_request_error" and "'secret_echo'" in e.body["error"]["message"]
    assert use_id in unanswered.body["error"]["message"] and "`tool_result` blocks" in unanswered.body["error"]["message"]
    assert "unexpected `tool_use_id`" in unexpected.body["error"]["message"]
    assert [r["status"] for r in ant.requests] == [400, 400, 200, 400, 400]


def test_anthropic_forever_and_tool_choice_none(ant):
    prompt = script([call("add", a=1, b=1)], [call("echo", text="again")], "forever")

    async def main():
        client, messages, stops = an(ant), [{"role": "user", "content": prompt}], []
        for n in range(5):
            choice = {"tool_choice": {"type": "none"}} if n == 4 else {}
            r = await client.messages.create(model=AN_MODEL, max_tokens=64, messages=messages,
                                             tools=an_tools("add", "echo"), **choice)
            stops.append((r.stop_reason, [b.name for b in r.content if b.type == "tool_use"]))
            if r.stop_reason != "tool_use":
                return stops, r.content[0].text
            messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": b.id, "content": f"r{n}"}
                                                      for b in r.content]}]

    stops, final = run(main())
    assert stops == [("tool_use", ["add"])] + [("tool_use", ["echo"])] * 3 + [("end_turn", [])]
    assert final == "final: r0 | r1 | r2 | r3"


def test_subprocess_fake_serves_tool_scripts():
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.anthropic_server", "--port", "0"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        url = proc.stdout.readline().split()[1]

        async def main():
            client = anthropic.AsyncAnthropic(base_url=url, api_key="test", max_retries=0)
            return await client.messages.create(model=AN_MODEL, max_tokens=64, tools=an_tools("echo"),
                                                messages=[{"role": "user", "content": script([call("echo", text="x")])}])

        r = run(main())
        assert r.stop_reason == "tool_use" and r.content[0].input == {"text": "x"}
        log = httpx.get(url + "/_fake/requests", timeout=10).json()
        assert [len(e["tool_calls"]) for e in log] == [1] and log[0]["round"] == 0
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


# ---- MCP fake ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def mcp_session(fake: MCPFake, errlog=None, headers=None):
    if fake.transport == "stdio":
        async with stdio_client(fake.params, errlog=errlog or sys.stderr) as (r, w):
            async with ClientSession(r, w) as session:
                await session.initialize()
                yield session
    else:
        async with streamablehttp_client(fake.url, headers=fake.headers if headers is None else headers) as (r, w, _):
            async with ClientSession(r, w) as session:
                await session.initialize()
                yield session


@pytest.fixture(params=["stdio", "http"])
def mcp_fake(request, tmp_path):
    with MCPFake(request.param, log=tmp_path / "calls.jsonl", name="fake") as fake:
        yield fake


@pytest.fixture
def errlog(tmp_path):
    """Where a stdio server's stderr goes."""
    with open(tmp_path / "stderr.txt", "w+") as f:
        yield f


def test_mcp_lists_tools_with_schemas(mcp_fake, errlog):
    async def main():
        async with mcp_session(mcp_fake, errlog) as s:
            return (await s.list_tools()).tools

    tools = {t.name: t for t in run(main())}
    assert tuple(tools) == TOOLS
    schema = {name: (t.inputSchema["type"], t.inputSchema["required"],
                     {k: v["type"] for k, v in t.inputSchema["properties"].items()}) for name, t in tools.items()}
    assert schema == {
        "add": ("object", ["a", "b"], {"a": "integer", "b": "integer"}),
        "echo": ("object", ["text"], {"text": "string"}),
        "lookup": ("object", ["key"], {"key": "string"}),
        "fail": ("object", ["message"], {"message": "string"}),
        "sleep": ("object", ["seconds"], {"seconds": "number"}),
        "secret_echo": ("object", ["token"], {"token": "string"}),
    }
    assert all(t.description for t in tools.values())
    assert mcp_fake.calls == []  # listing is not a call


def test_mcp_calls_every_tool_and_logs_them(mcp_fake, errlog):
    plan = [("add", {"a": 2, "b": 3}), ("echo", {"text": "héllo wörld"}), ("lookup", {"key": "beta"}),
            ("lookup", {"key": "zeta"}), ("fail", {"message": "boom"}), ("sleep", {"seconds": 0.01}),
            ("secret_echo", {"token": "sk-secret-123"}), ("no_such_tool", {}), ("add", {"a": "x", "b": 1})]

    async def main():
        async with mcp_session(mcp_fake, errlog) as s:
            return [await s.call_tool(name, args) for name, args in plan]

    results = run(main())
    got = [(r.isError, r.content[0].text) for r in results]
    assert got[:3] == [(False, "5"), (False, "héllo wörld"), (False, "second letter")]
    assert got[3] == (True, "Error executing tool lookup: unknown key 'zeta'")
    assert got[4] == (True, "Error executing tool fail: boom")
    assert got[5:7] == [(False, "slept 0.01"), (False, "sk-secret-123")]
    assert got[7] == (True, "Unknown tool: no_such_tool")
    assert got[8][0] and "validation error" in got[8][1]
    assert results[0].structuredContent == {"result": 5}

    ledger = mcp_fake.calls
    assert ledger == read_log(mcp_fake.log)
    assert [(e["tool"], e["arguments"]) for e in ledger] == plan  # one line per call, in order
    assert [e["ok"] for e in ledger] == [not err for err, _ in got]
    assert [e["result"] if e["ok"] else e["error"] for e in ledger] == [text for _, text in got]
    assert {(e["server"], e["transport"]) for e in ledger} == {("fake", mcp_fake.transport)}
    pids = {e["pid"] for e in ledger}
    assert len(pids) == 1 and (pids == {os.getpid()}) == (mcp_fake.transport == "http")  # stdio: its own process


def test_mcp_http_subprocess_with_bearer_token(tmp_path):
    with MCPFake("http", process=True, require_token="tok-123", log=tmp_path / "calls.jsonl") as fake:
        assert fake.url.startswith("http://127.0.0.1:") and fake.url.endswith("/mcp") and fake.pid != os.getpid()
        init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                           "clientInfo": {"name": "t", "version": "0"}}}
        accept = {"accept": "application/json, text/event-stream"}
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "tok-123"}):
            r = httpx.post(fake.url, json=init, headers={**accept, **headers}, timeout=10)
            assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        assert httpx.post(fake.url, json=init, headers={**accept, **fake.headers}, timeout=10).status_code == 200

        async def refused():
            async with mcp_session(fake, headers={}):
                pass

        with pytest.raises(BaseException) as ei:  # the SDK raises the 401 out of its task group
            run(refused())
        statuses = [e.response.status_code for e in _leaves(ei.value) if isinstance(e, httpx.HTTPStatusError)]
        assert statuses == [401]

        async def allowed():
            async with mcp_session(fake) as s:
                return await s.call_tool("echo", {"text": "authorized"})

        assert run(allowed()).content[0].text == "authorized"
    assert fake.returncode == 0  # SIGTERM: a clean shutdown
    assert [(e["tool"], e["pid"]) for e in read_log(tmp_path / "calls.jsonl")] == [("echo", fake.pid)]


def _leaves(e: BaseException):
    if isinstance(e, BaseExceptionGroup):
        for sub in e.exceptions:
            yield from _leaves(sub)
    else:
        yield e


def test_mcp_crash_on_start_surfaces_stderr(tmp_path):
    done = subprocess.run([sys.executable, "-m", "tests.fakes.mcp_server", "--crash-on-start"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (done.returncode, done.stdout, done.stderr.strip()) == (CRASH_EXIT, "", CRASH_MESSAGE)

    fake = MCPFake("stdio", crash_on_start=True, log=tmp_path / "calls.jsonl")
    errlog_path = tmp_path / "stderr.txt"

    async def main():
        with open(errlog_path, "w") as errlog:
            async with mcp_session(fake, errlog):
                pass

    with pytest.raises(Exception) as ei:
        run(main())
    leaves = list(_leaves(ei.value))  # "Connection closed"; or a broken pipe if it writes to the dead process first
    assert leaves and all(isinstance(e, (McpError, anyio.BrokenResourceError, BrokenPipeError)) for e in leaves)
    assert errlog_path.read_text().strip().splitlines()[-1] == CRASH_MESSAGE
    assert read_log(tmp_path / "calls.jsonl") == []


# ---- the fakes together: an LLM fake asks, the MCP fake runs ----------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_llm_fake_drives_mcp_fake(provider, tmp_path):
    """A minimal tool loop (the shape Orchestra's will have): MCP tools named
    ``<server>__<tool>``, results back, until the final text."""
    prompt = "Work.\n" + script([call("add", a=4, b=5), call("lookup", key="gamma")], [call("fail", message="nope")])

    async def main(llm, mcp):
        with open(tmp_path / "stderr.txt", "w") as errlog:
            return await loop(llm, mcp, errlog)

    async def loop(llm, mcp, errlog):
        async with mcp_session(mcp, errlog) as s:
            listed = (await s.list_tools()).tools
            if provider == "openai":
                client = oa(llm)
                tools = [{"type": "function", "function": {"name": f"fake__{t.name}", "description": t.description,
                                                           "parameters": t.inputSchema}} for t in listed]
                messages = [{"role": "user", "content": prompt}]
                while True:
                    r = await client.chat.completions.create(model=OA_MODEL, messages=messages, tools=tools)
                    msg = r.choices[0].message
                    if not msg.tool_calls:
                        return msg.content
                    messages.append(oa_assistant(msg))
                    for tc in msg.tool_calls:
                        res = await s.call_tool(tc.function.name.split("__", 1)[1], json.loads(tc.function.arguments))
                        messages.append({"role": "tool", "tool_call_id": tc.id, "content": res.content[0].text})
            client = an(llm)
            tools = [{"name": f"fake__{t.name}", "description": t.description, "input_schema": t.inputSchema}
                     for t in listed]
            messages = [{"role": "user", "content": prompt}]
            while True:
                r = await client.messages.create(model=AN_MODEL, max_tokens=256, messages=messages, tools=tools)
                uses = [b for b in r.content if b.type == "tool_use"]
                if not uses:
                    return r.content[0].text
                messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in r.content]})
                results = []
                for b in uses:
                    res = await s.call_tool(b.name.split("__", 1)[1], b.input)
                    results.append({"type": "tool_result", "tool_use_id": b.id, "is_error": res.isError,
                                    "content": [{"type": "text", "text": c.text} for c in res.content]})
                messages.append({"role": "user", "content": results})

    with (OpenAIFake() if provider == "openai" else AnthropicFake()) as llm, \
            MCPFake("stdio", log=tmp_path / "calls.jsonl") as mcp:
        final = run(main(llm, mcp))
        asked = [(c["name"], c["arguments"]) for r in llm.requests for c in r["tool_calls"]]
    assert final == "final: 9 | third letter | Error executing tool fail: nope"
    ledger = mcp.calls
    assert [("fake__" + e["tool"], e["arguments"]) for e in ledger] == asked  # every call asked was run, once
    assert [e["ok"] for e in ledger] == [True, True, False]
    if provider == "anthropic":
        assert [t["is_error"] for r in llm.requests for t in r["tool_results"]] == [False, False, True]


# ---- a real published MCP server ------------------------------------------------------


def test_published_mcp_server_time(tmp_path):
    from tests.support.published_mcp import mcp_server_time

    found = mcp_server_time()
    if found.command is None:
        pytest.skip(found.reason)
    params = StdioServerParameters(command=found.command[0], args=found.command[1:])

    async def main():
        with open(tmp_path / "stderr.txt", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (r, w):
                async with ClientSession(r, w) as s:
                    init = await s.initialize()
                    tools = {t.name: t for t in (await s.list_tools()).tools}
                    res = await s.call_tool("convert_time", {"source_timezone": "UTC", "time": "12:00",
                                                             "target_timezone": "Asia/Tokyo"})
                    bad = await s.call_tool("get_current_time", {"timezone": "Not/A_Zone"})
                    return init, tools, res, bad

    init, tools, res, bad = run(main())
    assert init.serverInfo.name == "mcp-time"
    assert {"get_current_time", "convert_time"} <= set(tools)
    assert tools["convert_time"].inputSchema["required"] == ["source_timezone", "time", "target_timezone"]
    assert not res.isError
    body = json.loads(res.content[0].text)
    assert body["time_difference"] == "+9.0h" and body["target"]["datetime"].endswith("T21:00:00+09:00")
    assert bad.isError and "Not/A_Zone" in bad.content[0].text
