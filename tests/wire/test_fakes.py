"""The wire fakes, driven by the real openai and anthropic SDKs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import anthropic
import openai
import pytest

from tests.fakes import AnthropicFake, OpenAIFake

REPO = Path(__file__).resolve().parents[2]
MSGS = [{"role": "user", "content": "please review this tiny function"}]


@pytest.fixture
def oai():
    with OpenAIFake() as fake:
        yield fake


@pytest.fixture
def ant():
    with AnthropicFake() as fake:
        yield fake


def oa_client(fake, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=kw.pop("api_key", "test"), max_retries=0, **kw)


def an_client(fake, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fake.base_url, api_key=kw.pop("api_key", "test"), max_retries=0, **kw)


def oa_call(client, **kw):
    return client.chat.completions.create(model="gpt-4.1-mini", messages=MSGS, **kw)


def an_call(client, **kw):
    return client.messages.create(model="claude-haiku-4-5", max_tokens=64, messages=MSGS, **kw)


def http(method: str, url: str, data: dict | None = None, headers: dict | None = None):
    req = urllib.request.Request(url, method=method, headers={"content-type": "application/json", **(headers or {})},
                                 data=None if data is None else json.dumps(data).encode())
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


# ---- OpenAI -----------------------------------------------------------------------


def test_openai_urls(oai):
    assert oai.url.startswith("http://127.0.0.1:") and oai.port > 0
    assert oai.base_url == oai.url + "/v1"
    assert [m.id for m in oa_client(oai).models.list()][0] == "gpt-4.1"


def test_openai_non_streaming(oai):
    messages = [{"role": "system", "content": "You are terse."}, *MSGS]
    r = oa_client(oai).chat.completions.create(model="gpt-4.1-mini", messages=messages)
    assert r.object == "chat.completion" and r.id.startswith("chatcmpl-") and r.model == "gpt-4.1-mini"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == "echo: please review this tiny function"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (8, 6, 14)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    [log] = oai.requests
    assert log["path"] == "/v1/chat/completions" and log["status"] == 200
    assert log["body"]["messages"] == messages
    assert log["usage"] == {"input_tokens": 8, "output_tokens": 6}
    assert isinstance(log["t"], float) and oai.request_count == 1


def test_openai_streaming_with_usage(oai):
    oai.configure(reply="one two three four five six seven eight nine ten")
    chunks = list(oa_call(oa_client(oai), stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4.1-mini" for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five six seven eight nine ten"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # really streamed in pieces
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    last = chunks[-1]
    assert last.choices == [] and (last.usage.prompt_tokens, last.usage.completion_tokens) == (5, 10)
    assert oai.requests[0]["usage"] == {"input_tokens": 5, "output_tokens": 10}


def test_openai_streaming_without_usage_reports_none(oai):
    chunks = list(oa_call(oa_client(oai), stream=True))
    assert all(c.usage is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "echo: please review this tiny function"
    assert oai.requests[0]["status"] == 200 and oai.requests[0]["usage"] is None


def test_openai_scripted_replies_ignore_response_format(oai):
    client = oa_client(oai)
    oai.configure(reply=["first", '{"a": 1}'])
    got = [oa_call(client, response_format={"type": "json_object"}).choices[0].message.content for _ in range(3)]
    assert got == ["first", '{"a": 1}', '{"a": 1}']
    oai.configure(reply=lambda body: body["model"].upper())
    assert oa_call(client).choices[0].message.content == "GPT-4.1-MINI"
    oai.configure(reply="fixed text")
    assert oa_call(client).choices[0].message.content == "fixed text"


def test_openai_429_then_success(oai):
    client = oa_client(oai)
    oai.configure(faults=[429, None])
    with pytest.raises(openai.RateLimitError) as ei:
        oa_call(client)
    assert ei.value.response.headers["retry-after"] == "0"
    assert ei.value.body["code"] == "rate_limit_exceeded" and ei.value.body["message"]
    assert oa_call(client).choices[0].message.content.startswith("echo: ")
    assert [r["status"] for r in oai.requests] == [429, 200]
    assert [r["usage"] for r in oai.requests][0] is None


@pytest.mark.parametrize("status,exc,kind", [
    (500, openai.InternalServerError, "server_error"),
    (400, openai.BadRequestError, "invalid_request_error"),
    (401, openai.AuthenticationError, "invalid_request_error"),
])
def test_openai_error_statuses(oai, status, exc, kind):
    oai.configure(faults=[status])
    with pytest.raises(exc) as ei:
        oa_call(oa_client(oai))
    assert ei.value.status_code == status and ei.value.body["type"] == kind


def test_openai_required_key(oai):
    oai.configure(require_key="sk-x")
    with pytest.raises(openai.AuthenticationError):
        oa_call(oa_client(oai, api_key="sk-wrong"))
    assert oa_call(oa_client(oai, api_key="sk-x")).choices[0].message.content
    status, body = http("POST", oai.base_url + "/chat/completions", {"model": "m", "messages": MSGS})  # no key
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    assert [r["status"] for r in oai.requests] == [401, 200, 401]


def test_openai_drop(oai):
    oai.configure(faults=["drop"])
    with pytest.raises(openai.APIConnectionError) as ei:
        oa_call(oa_client(oai))
    assert not isinstance(ei.value, openai.APITimeoutError)
    assert oai.requests[0]["status"] == "drop"
    assert oa_call(oa_client(oai)).choices[0].message.content  # the server is still fine


def test_openai_timeout(oai):
    oai.configure(faults=["timeout"])
    t0 = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        oa_call(oa_client(oai, timeout=0.5))
    assert 0.4 < time.monotonic() - t0 < 3
    assert oai.requests[0]["status"] == "timeout"


def test_openai_latency_overlaps():
    async def main(fake):
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        t0 = time.monotonic()
        rs = await asyncio.gather(*(client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"n{i}"}]) for i in range(20)))
        return time.monotonic() - t0, rs

    with OpenAIFake(latency_ms=200) as fake:
        elapsed, rs = asyncio.run(main(fake))
    assert sorted(r.choices[0].message.content for r in rs) == sorted(f"echo: n{i}" for i in range(20))
    assert 0.2 <= elapsed < 1.5


def test_fault_rate_is_seeded_and_reset_clears(oai):
    def statuses(seed):
        oai.reset()
        oai.configure(fault_rate=0.5, fault_kinds=[429, 500], seed=seed)
        client = oa_client(oai)
        for _ in range(20):
            try:
                oa_call(client)
            except openai.APIStatusError:
                pass
        return [r["status"] for r in oai.requests]

    a, b = statuses(7), statuses(7)
    assert a == b and {200, 429, 500} <= set(a)
    oai.reset()
    assert oai.requests == [] and oai.request_count == 0
    assert oa_call(oa_client(oai)).choices[0].message.content  # faults are gone too
    with pytest.raises(ValueError):
        oai.configure(faults=["boom"])
    with pytest.raises(TypeError):
        oai.configure(latency=3)


def test_exit_is_fast_with_requests_in_flight():
    fake = OpenAIFake(slow_seconds=30, faults=["timeout", "timeout"]).start()

    async def fire():
        client = openai.AsyncOpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=10)
        calls = [client.chat.completions.create(model="m", messages=MSGS) for _ in range(2)]
        return await asyncio.gather(*calls, return_exceptions=True)

    result = {}
    th = threading.Thread(target=lambda: result.setdefault("r", asyncio.run(fire())))
    th.start()
    deadline = time.monotonic() + 5
    while fake.request_count < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert fake.request_count == 2
    t0 = time.monotonic()
    fake.stop()
    assert time.monotonic() - t0 < 1.0
    th.join(5)
    assert not th.is_alive() and len(result["r"]) == 2


# ---- Anthropic --------------------------------------------------------------------


def test_anthropic_non_streaming(ant):
    assert ant.base_url == ant.url
    r = an_call(an_client(ant), system="You are terse.")
    assert r.id.startswith("msg_") and r.type == "message" and r.role == "assistant"
    assert r.model == "claude-haiku-4-5" and r.stop_reason == "end_turn"
    assert [(b.type, b.text) for b in r.content] == [("text", "echo: please review this tiny function")]
    assert (r.usage.input_tokens, r.usage.output_tokens) == (8, 6)
    assert r.usage.cache_read_input_tokens == 0 and r.usage.cache_creation_input_tokens == 0
    [log] = ant.requests
    assert log["path"] == "/v1/messages" and log["status"] == 200
    assert log["usage"] == {"input_tokens": 8, "output_tokens": 6}
    assert log["body"]["system"] == "You are terse."


def test_anthropic_streaming(ant):
    ant.configure(reply="alpha beta gamma delta epsilon")
    client = an_client(ant)
    with client.messages.stream(model="claude-haiku-4-5", max_tokens=64, messages=MSGS) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "alpha beta gamma delta epsilon" and len(pieces) > 1
    assert final.content[0].text == "alpha beta gamma delta epsilon" and final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 5)
    # the raw event sequence
    events = [e.type for e in an_call(client, stream=True)]
    assert events[:2] == ["message_start", "content_block_start"]
    assert events[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert "content_block_delta" in events
    assert [r["usage"] for r in ant.requests] == [{"input_tokens": 5, "output_tokens": 5}] * 2


def test_anthropic_async_streaming_with_blocks(ant):
    async def main():
        client = anthropic.AsyncAnthropic(base_url=ant.base_url, api_key="test", max_retries=0)
        async with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=64,
            system=[{"type": "text", "text": "sys prompt"}],
            messages=[{"role": "user", "content": [{"type": "text", "text": "block text here"}]}],
        ) as stream:
            return await stream.get_final_message()

    final = asyncio.run(main())
    assert final.content[0].text == "echo: block text here"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (5, 4)


def test_anthropic_429_then_success(ant):
    client = an_client(ant)
    ant.configure(faults=[429, None])
    with pytest.raises(anthropic.RateLimitError) as ei:
        an_call(client)
    assert ei.value.response.headers["retry-after"] == "0"
    assert ei.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": ei.value.body["error"]["message"]}}
    assert an_call(client).content[0].text.startswith("echo: ")
    assert [r["status"] for r in ant.requests] == [429, 200]


@pytest.mark.parametrize("status,exc,kind", [
    (500, anthropic.InternalServerError, "api_error"),
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
])
def test_anthropic_error_statuses(ant, status, exc, kind):
    ant.configure(faults=[status])
    with pytest.raises(exc) as ei:
        an_call(an_client(ant))
    assert ei.value.status_code == status and ei.value.body["error"]["type"] == kind


def test_anthropic_required_key(ant):
    ant.configure(require_key="sk-x")
    with pytest.raises(anthropic.AuthenticationError):
        an_call(an_client(ant, api_key="sk-wrong"))
    assert an_call(an_client(ant, api_key="sk-x")).content[0].text


def test_anthropic_drop_and_timeout(ant):
    ant.configure(faults=["drop", "timeout"])
    with pytest.raises(anthropic.APIConnectionError) as ei:
        an_call(an_client(ant))
    assert not isinstance(ei.value, anthropic.APITimeoutError)
    with pytest.raises(anthropic.APITimeoutError):
        an_call(an_client(ant, timeout=0.5))
    assert [r["status"] for r in ant.requests] == ["drop", "timeout"]


def test_anthropic_latency_overlaps():
    async def main(fake):
        client = anthropic.AsyncAnthropic(base_url=fake.base_url, api_key="test", max_retries=0)
        t0 = time.monotonic()
        rs = await asyncio.gather(*(client.messages.create(
            model="claude-haiku-4-5", max_tokens=16, messages=[{"role": "user", "content": f"n{i}"}])
            for i in range(20)))
        return time.monotonic() - t0, rs

    with AnthropicFake(latency_ms=200) as fake:
        elapsed, rs = asyncio.run(main(fake))
    assert sorted(r.content[0].text for r in rs) == sorted(f"echo: n{i}" for i in range(20))
    assert 0.2 <= elapsed < 1.5


# ---- subprocess mode + control endpoints ------------------------------------------


@pytest.mark.parametrize("module", ["openai_server", "anthropic_server"])
def test_subprocess_mode(module):
    proc = subprocess.Popen([sys.executable, "-m", f"tests.fakes.{module}", "--port", "0", "--latency-ms", "20"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY http://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        url = line.split()[1]
        assert http("POST", url + "/_fake/config", {"faults": [429], "reply": ["scripted"]}) == (200, {"ok": True})
        assert http("POST", url + "/_fake/config", {"faults": ["nope"]})[0] == 400
        if module == "openai_server":
            client = openai.OpenAI(base_url=url + "/v1", api_key="test", max_retries=0)
            with pytest.raises(openai.RateLimitError):
                oa_call(client)
            assert oa_call(client).choices[0].message.content == "scripted"
        else:
            client = anthropic.Anthropic(base_url=url, api_key="test", max_retries=0)
            with pytest.raises(anthropic.RateLimitError):
                an_call(client)
            assert an_call(client).content[0].text == "scripted"
        status, log = http("GET", url + "/_fake/requests")
        assert status == 200 and [r["status"] for r in log] == [429, 200]
        assert log[1]["usage"] == {"input_tokens": 5, "output_tokens": 1} and log[0]["body"]["messages"] == MSGS
        assert http("POST", url + "/_fake/reset") == (200, {"ok": True})
        assert http("GET", url + "/_fake/requests") == (200, [])
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(5)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert rc == 0 and err == ""
