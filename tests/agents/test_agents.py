"""agents/: the real SDKs and fast-agent against the wire fakes (no network, no mocks)."""

from __future__ import annotations

import asyncio
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price

from agents import AgentCallError, AgentConfig, call_agent, default_model, load_registry, parse_model
from agents import _sdk
from agents.base import redact
from agents.pricing import price, worst_case_cost
from tests.fakes import AnthropicFake, OpenAIFake

REPO = Path(__file__).resolve().parents[2]
KEY = "sk-test-Sup3rSecretKeyValue0123"
AGENT = AgentConfig(name="reviewer", instruction="You review code.")
PROMPT = "please review this tiny function"


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def oai(monkeypatch):
    with OpenAIFake() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        yield fake


@pytest.fixture
def ant(monkeypatch):
    with AnthropicFake() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        yield fake


def genai_cost(provider: str, model: str, input_tokens: int, output_tokens: int) -> float:
    usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
    return float(calc_price(usage, model, provider_id=provider).total_price)


# ---- base ---------------------------------------------------------------------------


def test_import_is_light():
    code = (
        "import sys, agents; "
        "print(sorted(m for m in ('openai', 'anthropic', 'mcp_agent', 'prefect', 'streamlit', 'sqlalchemy') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "model, expected",
    [
        ("openai:gpt-4.1-mini", ("openai", "gpt-4.1-mini")),
        ("anthropic:claude-sonnet-4-0", ("anthropic", "claude-sonnet-4-0")),
        ("fast-agent:openai.gpt-4.1-mini", ("fast-agent", "openai.gpt-4.1-mini")),
        ("fast-agent:passthrough", ("fast-agent", "passthrough")),
    ],
)
def test_parse_model(model, expected):
    assert parse_model(model) == expected


@pytest.mark.parametrize("model", ["gpt-4.1", "mistral:large", "openai:", ":gpt-4.1", ""])
def test_parse_model_rejects(model):
    with pytest.raises(ValueError) as info:
        parse_model(model)
    message = str(info.value)
    assert repr(model) in message
    assert "openai, anthropic, fast-agent" in message


def test_default_model(monkeypatch):
    monkeypatch.delenv("ORCHESTRA_DEFAULT_MODEL", raising=False)
    assert default_model() == "fast-agent:passthrough"
    monkeypatch.setenv("ORCHESTRA_DEFAULT_MODEL", "openai:gpt-4.1-mini")
    assert default_model() == "openai:gpt-4.1-mini"


def test_agent_config_rejects_unknown_fields_and_bad_models():
    with pytest.raises(ValueError, match="temprature"):
        AgentConfig(name="x", temprature=0.2)
    with pytest.raises(ValueError, match="invalid model 'gpt-4.1'"):
        AgentConfig(name="x", model="gpt-4.1")


def test_call_error_is_picklable_and_redacted(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    error = AgentCallError(f"rejected {KEY}", provider="openai", model="openai:gpt-4.1", transient=False,
                           status_code=401)
    assert KEY not in str(error)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.provider, copy.model, copy.transient, copy.status_code) == (
        error.message, "openai", "openai:gpt-4.1", False, 401)


def test_redact():
    text = redact("Incorrect API key provided: sk-proj-abcDEF123456. "
                  "Authorization: Bearer abcdefghijklmnop; api_key=s3cr3tvalue")
    assert "abcDEF123456" not in text and "abcdefghijklmnop" not in text and "s3cr3tvalue" not in text
    assert redact("task-runner needs OPENAI_API_KEY") == "task-runner needs OPENAI_API_KEY"


def test_invalid_model_at_call_time_is_a_call_error():
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="gpt-4.1"))
    assert not info.value.transient
    assert "'gpt-4.1'" in info.value.message


# ---- pricing ------------------------------------------------------------------------


def test_price_known_unknown_and_free():
    cost, priced = price("openai", "gpt-4.1-mini", 1000, 200)
    assert priced and cost == genai_cost("openai", "gpt-4.1-mini", 1000, 200) > 0
    assert price("openai", "my-local-llama", 1000, 200) == (0.0, False)
    assert price("mistral", "large", 1000, 200) == (0.0, False)
    assert price("fast-agent", "passthrough", 1000, 200) == (0.0, True)
    assert price("fast-agent", "playback", 1000, 200) == (0.0, True)
    assert price("fast-agent", "openai.gpt-4.1-mini", 1000, 200) == (cost, True)
    assert price("fast-agent", "generic.llama3.2", 1000, 200) == (0.0, False)
    assert worst_case_cost("openai", "gpt-4.1-mini", 1000, 4000) > cost
    assert worst_case_cost("openai", "nope", 1000, 4000) == 0.0


def test_cached_tokens_are_cheaper():
    full, _ = price("openai", "gpt-4.1-mini", 1000, 100)
    cached, _ = price("openai", "gpt-4.1-mini", 1000, 100, cached_tokens=800)
    assert 0 < cached < full


# ---- one client per loop ------------------------------------------------------------


class _Client:
    closed = 0

    async def close(self):
        _Client.closed += 1


def test_client_cache_per_loop_and_closed_at_loop_shutdown():
    async def two_gets():
        a = await _sdk.cached_client(("t", "u", "k"), _Client)
        b = await _sdk.cached_client(("t", "u", "k"), _Client)
        c = await _sdk.cached_client(("t", "u", "other-key"), _Client)
        return a, b, c

    _Client.closed = 0
    a, b, c = run(two_gets())
    assert a is b and a is not c
    assert _Client.closed == 2  # both clients closed when asyncio.run shut the loop down
    d, _, _ = run(two_gets())
    assert d is not a


# ---- openai -------------------------------------------------------------------------


def test_openai_usage_and_cost(oai):
    result = run(call_agent(AGENT, PROMPT, model="openai:gpt-4.1-mini"))
    [request] = oai.requests
    usage = request["usage"]
    assert result.output == f"echo: {PROMPT}"
    assert (result.provider, result.model, result.agent) == ("openai", "openai:gpt-4.1-mini", "reviewer")
    assert (result.input_tokens, result.output_tokens, result.cached_tokens) == (
        usage["input_tokens"], usage["output_tokens"], 0)
    assert result.priced and result.cost_usd > 0
    assert result.cost_usd == genai_cost("openai", "gpt-4.1-mini", usage["input_tokens"], usage["output_tokens"])
    assert result.latency_ms > 0
    body = request["body"]
    assert body["model"] == "gpt-4.1-mini" and not body.get("stream")
    assert body["messages"] == [{"role": "system", "content": "You review code."}, {"role": "user", "content": PROMPT}]


def test_openai_request_options(oai):
    agent = AgentConfig(name="json", temperature=0.2, max_tokens=50)
    oai.configure(reply='{"ok": true}')
    result = run(call_agent(agent, "answer in json", model="openai:gpt-4.1-mini", json_mode=True))
    body = oai.requests[-1]["body"]
    assert result.output == '{"ok": true}'
    assert body["response_format"] == {"type": "json_object"}
    assert body["temperature"] == 0.2 and body["max_completion_tokens"] == 50
    assert body["messages"] == [{"role": "user", "content": "answer in json"}]


def test_openai_unknown_model_is_unpriced(oai):
    result = run(call_agent(AGENT, PROMPT, model="openai:my-local-llama"))
    assert result.output and result.input_tokens > 0
    assert (result.cost_usd, result.priced) == (0.0, False)


@pytest.mark.parametrize(
    "fault, transient, status",
    [(429, True, 429), (500, True, 500), (401, False, 401), (400, False, 400),
     ("timeout", True, None), ("drop", True, None)],
)
def test_openai_errors(oai, fault, transient, status):
    oai.configure(faults=[fault], slow_seconds=5)
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="openai:gpt-4.1-mini", timeout=0.5))
    error = info.value
    assert (error.transient, error.status_code) == (transient, status)
    assert (error.provider, error.model) == ("openai", "openai:gpt-4.1-mini")
    assert KEY not in error.message
    assert oai.request_count == 1  # max_retries=0: Orchestra decides every retry
    if fault == 401:
        assert "OPENAI_API_KEY" in error.message
    if fault == "timeout":
        assert "timed out" in error.message


def test_openai_missing_key(oai, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="openai:gpt-4.1-mini"))
    assert not info.value.transient
    assert "OPENAI_API_KEY" in info.value.message and "Prefect Secret" in info.value.message
    assert oai.request_count == 0


def test_openai_key_never_in_messages(oai):
    oai.configure(require_key="sk-another-key-0000")  # the fake rejects ours: 401
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="openai:gpt-4.1-mini"))
    assert info.value.status_code == 401
    assert KEY not in str(info.value) and KEY not in repr(info.value)


def test_openai_concurrent_calls_share_one_client(oai):
    async def many():
        return await asyncio.gather(*(call_agent(AGENT, f"prompt {i}", model="openai:gpt-4.1-mini") for i in range(64)))

    results = run(many())
    assert sorted(r.output for r in results) == sorted(f"echo: prompt {i}" for i in range(64))
    assert oai.request_count == 64


def test_openai_clients_follow_the_environment(monkeypatch):
    with OpenAIFake() as first, OpenAIFake() as second:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)

        async def call_both():
            monkeypatch.setenv("OPENAI_BASE_URL", first.base_url)
            await call_agent(AGENT, PROMPT, model="openai:gpt-4.1-mini")
            monkeypatch.setenv("OPENAI_BASE_URL", second.base_url)
            await call_agent(AGENT, PROMPT, model="openai:gpt-4.1-mini")

        run(call_both())
        assert (first.request_count, second.request_count) == (1, 1)


# ---- anthropic ----------------------------------------------------------------------


def test_anthropic_usage_and_cost(ant):
    result = run(call_agent(AGENT, PROMPT, model="anthropic:claude-haiku-4-5"))
    [request] = ant.requests
    usage = request["usage"]
    assert result.output == f"echo: {PROMPT}"
    assert (result.provider, result.model) == ("anthropic", "anthropic:claude-haiku-4-5")
    assert (result.input_tokens, result.output_tokens, result.cached_tokens) == (
        usage["input_tokens"], usage["output_tokens"], 0)
    assert result.priced
    expected = genai_cost("anthropic", "claude-haiku-4-5", usage["input_tokens"], usage["output_tokens"])
    assert result.cost_usd == expected > 0
    body = request["body"]
    assert body["system"] == "You review code."
    assert body["max_tokens"] == 1024
    assert body["messages"] == [{"role": "user", "content": PROMPT}]


@pytest.mark.parametrize("fault, transient", [(429, True), (529, True), (401, False), ("drop", True)])
def test_anthropic_errors(ant, fault, transient):
    ant.configure(faults=[fault])
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="anthropic:claude-haiku-4-5"))
    assert info.value.transient is transient
    assert ant.request_count == 1
    assert KEY not in info.value.message


def test_anthropic_missing_key(ant, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("ANTHROPIC_CONFIG_DIR", str(REPO / "no-such-dir"))  # no profile on disk either
    monkeypatch.delenv("ANTHROPIC_PROFILE", raising=False)
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="anthropic:claude-haiku-4-5"))
    assert not info.value.transient and "ANTHROPIC_API_KEY" in info.value.message
    assert ant.request_count == 0


# ---- fast-agent ---------------------------------------------------------------------


def test_fast_agent_passthrough_offline(monkeypatch, capfd):
    for var in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    result = run(call_agent(AGENT, PROMPT, model="fast-agent:passthrough"))
    assert result.output == PROMPT
    assert (result.provider, result.model, result.agent) == ("fast-agent", "fast-agent:passthrough", "reviewer")
    assert (result.cost_usd, result.priced) == (0.0, True)
    assert (result.input_tokens, result.output_tokens) == (0, 0)
    # a second loop, and the default model when the agent names none
    monkeypatch.delenv("ORCHESTRA_DEFAULT_MODEL", raising=False)
    again = run(call_agent(AgentConfig(name="assistant"), "second"))
    assert (again.output, again.model) == ("second", "fast-agent:passthrough")
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # fast-agent prints nothing


def test_fast_agent_configure_keeps_the_working_directory_clean(tmp_path, monkeypatch, capfd):
    from agents import fastagent_adapter

    monkeypatch.chdir(tmp_path)
    (tmp_path / "fastagent.config.yaml").write_text("logger:\n  type: file\n  show_chat: true\n")  # ignored
    try:
        fastagent_adapter.configure({"logger": {"level": "warning"}})
        assert run(call_agent(AGENT, "configured", model="fast-agent:passthrough")).output == "configured"
    finally:
        fastagent_adapter.configure()
    assert [p.name for p in tmp_path.iterdir()] == ["fastagent.config.yaml"]
    assert capfd.readouterr() == ("", "")


def test_fast_agent_bad_model_is_a_call_error():
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="fast-agent:no-such-model"))
    assert not info.value.transient
    assert "no-such-model" in info.value.message


def test_fast_agent_system_exit_never_escapes(monkeypatch):
    from mcp_agent.llm.model_factory import ModelFactory

    def exits(cls, model_string):
        raise SystemExit(2)  # what fast-agent does on some configuration errors

    monkeypatch.setattr(ModelFactory, "parse_model_string", classmethod(exits))
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="fast-agent:exits.on-config"))
    assert not info.value.transient and "exited" in info.value.message
    monkeypatch.undo()
    assert run(call_agent(AGENT, "still alive", model="fast-agent:passthrough")).output == "still alive"


def test_fast_agent_unknown_mcp_server():
    agent = AgentConfig(name="tools", servers=["no-such-server"])
    with pytest.raises(AgentCallError) as info:
        run(call_agent(agent, PROMPT, model="fast-agent:passthrough"))
    assert not info.value.transient and "no-such-server" in info.value.message


def test_fast_agent_from_many_loops_at_once():
    def in_thread(i: int, results: list) -> None:
        results.append(run(call_agent(AGENT, f"thread {i}", model="fast-agent:passthrough")).output)

    results: list[str] = []
    threads = [threading.Thread(target=in_thread, args=(i, results)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [f"thread {i}" for i in range(4)]


def test_fast_agent_missing_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="fast-agent:openai.gpt-4.1-mini"))
    assert not info.value.transient and "OPENAI_API_KEY" in info.value.message


def test_fast_agent_timeout():
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="fast-agent:slow", timeout=0.2))
    assert info.value.transient and "timed out" in info.value.message


def test_fast_agent_openai_through_the_fake(oai):
    oai.configure(reply="fast-agent says hi")
    result = run(call_agent(AGENT, PROMPT, model="fast-agent:openai.gpt-4.1-mini"))
    [request] = oai.requests
    assert result.output == "fast-agent says hi"
    assert request["body"]["stream"] is True
    assert request["body"]["stream_options"] == {"include_usage": True}
    usage = request["usage"]
    assert (result.input_tokens, result.output_tokens) == (usage["input_tokens"], usage["output_tokens"])
    assert result.priced
    assert result.cost_usd == genai_cost("openai", "gpt-4.1-mini", usage["input_tokens"], usage["output_tokens"]) > 0


def test_fast_agent_provider_errors_are_mapped_once(oai):
    oai.configure(faults=[429])
    with pytest.raises(AgentCallError) as info:
        run(call_agent(AGENT, PROMPT, model="fast-agent:openai.gpt-4.1-mini"))
    assert info.value.transient and info.value.status_code == 429
    assert oai.request_count == 1  # fast-agent's SDK clients do not retry either


# ---- registry -----------------------------------------------------------------------

SHIPPED = {"assistant", "reviewer", "writer", "researcher", "frontend", "backend", "qa", "debugger", "coordinator"}


def test_registry_loads_shipped_agents():
    registry = load_registry()
    assert SHIPPED <= set(registry)
    for name in SHIPPED:
        agent = registry[name]
        assert agent.name == name
        assert agent.description and agent.instruction and agent.capabilities
        assert agent.model is None  # the default model: offline unless configured
    assert "code-review" in registry["reviewer"].capabilities


def test_registry_name_field_and_folders(tmp_path):
    (tmp_path / "one.yaml").write_text("name: custom\ninstruction: hi\ncapabilities: [x]\n")
    (tmp_path / "two.yml").write_text("model: openai:gpt-4.1-mini\n")
    (tmp_path / "notes.txt").write_text("not an agent")
    registry = load_registry([tmp_path])
    assert set(registry) == {"custom", "two"}
    assert registry["two"].model == "openai:gpt-4.1-mini"


@pytest.mark.parametrize(
    "text, words",
    [
        ("instruction: hi\ntemprature: 0.2\n", ["temprature", "unknown field"]),
        ("temperature: hot\n", ["temperature"]),
        ("model: gpt-4.1\n", ["model", "gpt-4.1"]),
        ("instruction: [unclosed\n", ["invalid YAML", "line"]),
        ("- just\n- a list\n", ["mapping"]),
    ],
)
def test_registry_rejects_broken_files(tmp_path, text, words):
    (tmp_path / "good.yaml").write_text("instruction: fine\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    with pytest.raises(ValueError) as info:
        load_registry(tmp_path)
    message = str(info.value)
    assert str(broken) in message
    for word in words:
        assert word in message


def test_registry_rejects_duplicate_names(tmp_path):
    (tmp_path / "a.yaml").write_text("name: same\n")
    (tmp_path / "b.yaml").write_text("name: same\n")
    with pytest.raises(ValueError, match="already defined"):
        load_registry(tmp_path)
