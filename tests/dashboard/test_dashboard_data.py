"""dashboard/data.py over a seeded SQLite ledger (no Streamlit, no Prefect)."""

from __future__ import annotations

import os
import socket
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from ledger import queries
import yaml

from dashboard import data as dd
from core.calls import ToolCallRecord
from orchestra.access import Actor
from ledger.store import CallRecord, Store

UTC = timezone.utc
NOW = datetime.now(UTC).replace(microsecond=0)
SECRET = "sk-proj-DashboardSecret0123456789"

SEED_RUNS = {
    "run-review-1": "code-review",
    "run-digest-1": "nightly-digest",
    "run-review-old": "code-review",
    "run-review-live": "code-review",
}


def seed_ledger(store: Store, now: datetime = NOW) -> dict[str, str]:
    """Four runs over three weeks: a completed run with a retried step and a cache hit,
    a failed run with a dead letter, an old run on an unpriced model, and a running run.
    Also one breaker and two health checks. Returns {flow_run_id: workflow}."""

    def call(run: str, step: str, model: str, when: datetime, **kw) -> None:
        store.record_call(CallRecord(flow_run_id=run, step=step, model=model, created=when, **kw))

    t = now - timedelta(hours=1)
    store.start_run(flow_run_id="run-review-1", workflow="code-review",
                    inputs={"code": "def add(a, b): return a - b", "strict": True}, started=t)
    call("run-review-1", "security", "openai:gpt-4.1-mini", t, agent="reviewer", input_tokens=270,
         output_tokens=80, cost_usd=0.00024, priced=True, latency_ms=410.0)
    call("run-review-1", "style", "openai:gpt-4.1-mini", t, agent="reviewer", latency_ms=30.0,
         status="error", error="HTTP 503 from provider")
    call("run-review-1", "style", "openai:gpt-4.1-mini", t, agent="reviewer", attempt=2, input_tokens=260,
         output_tokens=90, cost_usd=0.00025, priced=True, latency_ms=380.0)
    call("run-review-1", "summary", "openai:gpt-4.1-mini", t, agent="reviewer", attempt=0, cached=True,
         priced=True)
    for tool, outcome, arguments, error in (
            ("lookup", "ok", {"key": "alpha"}, None),
            ("fetch", "error", {"url": "https://x.example", "token": "hunter22"}, f"HTTP 401: api_key={SECRET}")):
        store.record_tool_call(ToolCallRecord(flow_run_id="run-review-1", step="security", attempt=1, agent="reviewer",
                                              server="kb", tool=tool, outcome=outcome, duration_s=0.25,
                                              arguments=arguments, error=error, created=t))
    store.finish_run(flow_run_id="run-review-1", state="COMPLETED", ended=t + timedelta(seconds=12))

    t = now - timedelta(days=2)
    store.start_run(flow_run_id="run-digest-1", workflow="nightly-digest", started=t)
    call("run-digest-1", "fetch", "anthropic:claude-sonnet-4-0", t, agent="writer", input_tokens=1200,
         output_tokens=400, cost_usd=0.0096, priced=True, latency_ms=2100.0)
    for attempt in (1, 2):
        call("run-digest-1", "write", "anthropic:claude-sonnet-4-0", t, agent="writer", attempt=attempt,
             status="error", error=f"401 invalid api_key={SECRET}", latency_ms=50.0)
    store.add_dead_letter(flow_run_id="run-digest-1", workflow="nightly-digest", step="write",
                          error=f"401 invalid api_key={SECRET}", agent="writer",
                          model="anthropic:claude-sonnet-4-0", prompt="Write the digest", attempts=2, created=t)
    store.finish_run(flow_run_id="run-digest-1", state="FAILED", ended=t + timedelta(seconds=3),
                     error=f"step 'write' failed: 401 invalid api_key={SECRET}")

    t = now - timedelta(days=20)
    store.start_run(flow_run_id="run-review-old", workflow="code-review", started=t)
    call("run-review-old", "security", "openai:my-local-llama", t, input_tokens=500, output_tokens=100,
         priced=False, latency_ms=900.0)
    store.finish_run(flow_run_id="run-review-old", state="COMPLETED", ended=t + timedelta(seconds=2))

    t = now - timedelta(minutes=5)
    store.start_run(flow_run_id="run-review-live", workflow="code-review", started=t)
    call("run-review-live", "security", "openai:gpt-4.1-mini", t, agent="reviewer", input_tokens=100,
         output_tokens=10, cost_usd=0.00005, priced=True, latency_ms=200.0)
    store.flush()

    store.swap_breaker("anthropic:claude-sonnet-4-0 @ https://api.anthropic.com", 0, {
        "provider": "anthropic", "base_url": "https://api.anthropic.com", "model": "anthropic:claude-sonnet-4-0",
        "state": "open", "failures": 5, "retry_at": (now + timedelta(seconds=30)).timestamp(),
        "opened_at": now.timestamp(), "version": 1,
    }, event={"from_state": "closed", "to_state": "open", "reason": "5 failures"})
    store.record_health([
        {"agent": "writer", "model": "anthropic:claude-sonnet-4-0", "status": "error", "latency_ms": 12.0,
         "error": "401 unauthorized", "created": now - timedelta(hours=3)},
        {"agent": "writer", "model": "anthropic:claude-sonnet-4-0", "status": "ok", "latency_ms": 300.0,
         "created": now - timedelta(hours=1)},
        {"agent": "reviewer", "model": "openai:gpt-4.1-mini", "status": "ok", "latency_ms": 250.0,
         "created": now - timedelta(hours=1)},
    ])
    return dict(SEED_RUNS)


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    seed_ledger(s)
    yield s
    s.close()


@pytest.fixture
def empty_store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    yield s
    s.close()


# --------------------------------------------------------------------------- overview


def test_kpis_last_7_days_vs_all(store):
    k = dd.kpis(store, now=NOW)
    assert k["days"] == 7
    assert k["all"]["runs"] == 4 and k["recent"]["runs"] == 3
    assert k["all"]["running"] == 1
    # success rate over finished runs only: 2 of 3 all time, 1 of 2 in the last week
    assert k["all"]["success_rate"] == pytest.approx(2 / 3)
    assert k["recent"]["success_rate"] == pytest.approx(1 / 2)
    assert k["all"]["calls"] == 9 and k["recent"]["calls"] == 8
    assert k["all"]["tokens"] == 270 + 80 + 260 + 90 + 1200 + 400 + 500 + 100 + 100 + 10
    assert k["all"]["cost_usd"] == pytest.approx(0.00024 + 0.00025 + 0.0096 + 0.00005)
    assert k["recent"]["cost_usd"] == pytest.approx(k["all"]["cost_usd"])  # the old run cost $0


def test_empty_ledger_gives_zeros_and_empty_lists(empty_store):
    k = dd.kpis(empty_store)
    assert k["all"]["runs"] == 0 and k["all"]["success_rate"] is None and k["all"]["cost_usd"] == 0
    assert dd.recent_runs(empty_store) == []
    assert dd.cost_per_day(empty_store, days=None) == []
    days = dd.cost_per_day(empty_store, days=7)
    assert len(days) == 7 and all(d["calls"] == 0 for d in days)
    assert dd.unpriced(empty_store) == {"calls": 0, "models": []}
    assert dd.run_filters(empty_store)["workflows"] == []
    assert dd.top_workflow(empty_store) is None
    assert dd.breaker_rows(empty_store) == [] and dd.health_rows(empty_store) == []
    assert dd.run_detail(empty_store, "nope") is None
    for by in dd.COST_GROUPS:
        assert dd.cost_rows(empty_store, by) == []


def test_cost_per_day_fills_gaps(store):
    days = dd.cost_per_day(store, days=30, now=NOW)
    assert len(days) == 30 and days[-1]["day"] == NOW.date()
    assert [d["day"] for d in days] == sorted(d["day"] for d in days)
    by_day = {d["day"]: d for d in days}
    two_days_ago = (NOW - timedelta(days=2)).date()
    assert by_day[two_days_ago]["cost_usd"] == pytest.approx(0.0096)
    assert by_day[two_days_ago]["calls"] == 3
    assert sum(d["calls"] for d in days) == 9
    # all time: from the first day with a call to today, every day present
    full = dd.cost_per_day(store, days=None, now=NOW)
    assert full[0]["day"] == (NOW - timedelta(days=20)).date() and len(full) == 21


def test_recent_runs_rows_are_display_ready(store):
    rows = dd.recent_runs(store, limit=10)
    assert [r["flow_run_id"] for r in rows] == ["run-review-live", "run-review-1", "run-digest-1",
                                                "run-review-old"]
    live, done, failed = rows[0], rows[1], rows[2]
    assert live["state"] == "RUNNING" and live["calls"] == 1  # live totals of a running run
    assert done["state"] == "COMPLETED" and done["tokens"] == 700 and done["duration_s"] == 12
    assert isinstance(done["started"], datetime)
    assert failed["state"] == "FAILED"
    assert SECRET not in failed["error"] and "write" in failed["error"]
    assert dd.top_workflow(store)["workflow"] == "nightly-digest"


# --------------------------------------------------------------------------- runs


def test_run_filters_and_filtered_runs(store):
    f = dd.run_filters(store)
    assert f["workflows"] == ["code-review", "nightly-digest"]
    assert "COMPLETED" in f["states"] and "FAILED" in f["states"]
    assert {r["flow_run_id"] for r in dd.list_runs(store, workflow="code-review")} == {
        "run-review-1", "run-review-old", "run-review-live"}
    assert [r["flow_run_id"] for r in dd.list_runs(store, state="FAILED")] == ["run-digest-1"]
    assert dd.list_runs(store, workflow="code-review", state="FAILED") == []


def test_run_detail_steps_and_calls(store):
    d = dd.run_detail(store, "run-review-1")
    assert d["run"]["workflow"] == "code-review" and d["run"]["state"] == "COMPLETED"
    assert d["run"]["n_calls"] == 4
    assert {i["input"]: i["value"] for i in d["inputs"]} == {"code": "def add(a, b): return a - b",
                                                            "strict": "true"}
    steps = {s["step"]: s for s in d["steps"]}
    assert list(steps) == ["security", "style", "summary"]
    assert steps["style"]["attempts"] == 2 and steps["style"]["errors"] == 1
    assert steps["style"]["status"] == "ok" and steps["style"]["last_error"] == "HTTP 503 from provider"
    assert steps["style"]["latency_ms"] == pytest.approx(410.0)
    assert steps["summary"]["status"] == "cached" and steps["summary"]["cached"] and steps["summary"]["attempts"] == 0
    assert steps["security"]["cost_usd"] == pytest.approx(0.00024)
    assert [c["status"] for c in d["calls"]] == ["ok", "error", "ok", "cached"]
    assert d["dead_letters"] == []


def test_run_detail_lists_the_tool_calls_redacted(store):
    d = dd.run_detail(store, "run-review-1")
    assert [(t["step"], t["tool"], t["outcome"], t["duration_s"]) for t in d["tool_calls"]] == [
        ("security", "kb.lookup", "ok", 0.25), ("security", "kb.fetch", "error", 0.25)]
    assert d["tool_calls"][0]["arguments"] == '{"key": "alpha"}'
    assert d["tool_calls"][1]["arguments"] == '{"url": "https://x.example", "token": "***"}'
    assert d["tool_calls"][1]["error"] == "HTTP 401: api_key=***"
    assert SECRET not in repr(d) and "hunter22" not in repr(d)
    assert dd.run_detail(store, "run-digest-1")["tool_calls"] == []


def test_run_detail_of_failed_run_is_redacted(store):
    d = dd.run_detail(store, "run-digest-1")
    steps = {s["step"]: s for s in d["steps"]}
    assert steps["write"]["status"] == "error" and steps["write"]["errors"] == 2
    assert d["dead_letters"][0]["step"] == "write" and d["dead_letters"][0]["attempts"] == 2
    text = repr(d)
    assert SECRET not in text and "DashboardSecret" not in text


def test_prefect_links(monkeypatch):
    for var in ("PREFECT_UI_URL", "PREFECT_API_URL"):
        monkeypatch.delenv(var, raising=False)
    assert dd.prefect_ui_url(local=False) is None
    assert dd.flow_run_url("abc", None) is None
    assert dd.prefect_ui_url(local={"url": "http://127.0.0.1:4300/api", "ui": "http://127.0.0.1:4300"}) == \
        "http://127.0.0.1:4300"
    monkeypatch.setenv("PREFECT_API_URL", "http://user:pw@prefect.internal:4200/api/")
    assert dd.prefect_ui_url(local=False) == "http://prefect.internal:4200"
    assert dd.flow_run_url("abc", "http://prefect.internal:4200") == \
        "http://prefect.internal:4200/runs/flow-run/abc"
    assert dd.prefect_api_url(local=False) == ("http://user:pw@prefect.internal:4200/api/", "PREFECT_API_URL")
    monkeypatch.setenv("PREFECT_API_URL", "https://api.prefect.cloud/api/accounts/a1/workspaces/w2")
    assert dd.prefect_ui_url(local=False) == "https://app.prefect.cloud/account/a1/workspace/w2"
    monkeypatch.setenv("PREFECT_UI_URL", "https://ui.example/")
    assert dd.prefect_ui_url(local=False) == "https://ui.example"


# --------------------------------------------------------------------------- costs


def test_cost_rows_by_each_group(store):
    by_model = dd.cost_rows(store, "model")
    assert by_model[0]["label"] == "anthropic:claude-sonnet-4-0" and by_model[0]["calls"] == 3
    assert {r["label"] for r in by_model} == {"anthropic:claude-sonnet-4-0", "openai:gpt-4.1-mini",
                                              "openai:my-local-llama"}
    by_agent = {r["label"]: r for r in dd.cost_rows(store, "agent")}
    assert by_agent[dd.NO_AGENT]["calls"] == 1 and by_agent["reviewer"]["tokens"] == 810
    by_wf = {r["label"]: r["cost_usd"] for r in dd.cost_rows(store, "workflow")}
    assert by_wf["code-review"] == pytest.approx(0.00054)
    by_day = dd.cost_rows(store, "day")
    assert [r["label"] for r in by_day] == sorted(r["label"] for r in by_day)
    recent = dd.cost_rows(store, "model", since=NOW - timedelta(days=7))
    assert "openai:my-local-llama" not in {r["label"] for r in recent}
    with pytest.raises(ValueError, match="valid values"):
        dd.cost_rows(store, "colour")


def test_unpriced_calls_are_called_out(store):
    u = dd.unpriced(store)
    # cache hits and failed attempts are not "unpriced"; the local model is
    assert u == {"calls": 1, "models": [{"model": "openai:my-local-llama", "calls": 1, "input_tokens": 500,
                                         "output_tokens": 100}]}
    assert dd.unpriced(store, since=NOW - timedelta(days=7))["calls"] == 0


# --------------------------------------------------------------------------- agents


@pytest.fixture
def agents_folder(tmp_path):
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "helper.yaml").write_text(
        "# The helper: keep this comment.\ndescription: Helps.\ncapabilities: [general]\n")
    (folder / "coder.yaml").write_text(
        "description: Writes code.\nmodel: openai:gpt-4.1-mini\ncapabilities: [python, code-review]\n"
        "fallback: [helper]\n")
    return folder


def test_agent_rows_and_broken_files(agents_folder, monkeypatch):
    monkeypatch.delenv("ORCHESTRA_DEFAULT_MODEL", raising=False)
    (agents_folder / "broken.yaml").write_text("model: gpt-4\n")
    rows, problems = dd.agent_rows(agents_folder)
    assert [r["name"] for r in rows] == ["coder", "helper"]
    coder, helper = rows
    assert coder["model"] == "openai:gpt-4.1-mini" and coder["capabilities"] == "python, code-review"
    assert coder["fallback"] == "helper"
    assert helper["model"] == "default (fast-agent:passthrough)"
    assert len(problems) == 1 and "broken.yaml" in problems[0] and "model" in problems[0]


def test_shipped_registry_loads():
    rows, problems = dd.agent_rows()
    assert problems == []
    assert {"assistant", "backend", "frontend", "qa", "debugger", "coordinator"} <= {r["name"] for r in rows}


def test_breakers_and_latest_health(store):
    (b,) = dd.breaker_rows(store)
    assert b["state"] == "open" and b["failures"] == 5 and b["model"] == "anthropic:claude-sonnet-4-0"
    assert isinstance(b["retry_at"], datetime)
    health = {h["agent"]: h for h in dd.health_rows(store)}
    assert list(health) == ["reviewer", "writer"]
    assert health["writer"]["status"] == "ok"  # the latest check wins


ADMIN = Actor("ada", "admin")


def test_save_agent_creates_a_valid_file(agents_folder):
    path = dd.save_agent({
        "name": "tester", "description": "Writes tests.", "model": "anthropic:claude-sonnet-4-0",
        "instruction": "You write tests.\nSmall ones.", "temperature": "0.2", "max_tokens": "800",
        "capabilities": "tests, python", "fallback": ["helper"], "servers": "", "credentials": "",
        "daily_budget_usd": "",
    }, agents_folder, actor=ADMIN)
    assert path == agents_folder / "tester.yaml"
    data = yaml.safe_load(path.read_text())
    assert data == {"description": "Writes tests.", "model": "anthropic:claude-sonnet-4-0",
                    "instruction": "You write tests.\nSmall ones.\n", "temperature": 0.2, "max_tokens": 800,
                    "capabilities": ["tests", "python"], "fallback": ["helper"]}
    from agents.registry import load_registry

    assert load_registry(agents_folder)["tester"].max_tokens == 800
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert not [p for p in agents_folder.iterdir() if p.name.startswith(".")]  # no temp file left


@pytest.mark.parametrize("values, field", [
    ({"name": "bad", "model": "gpt-4"}, "model"),
    ({"name": "bad", "model": "mistral:large"}, "model"),
    ({"name": "bad", "temperature": "hot"}, "temperature"),
    ({"name": "bad", "temperature": "-1"}, "temperature"),
    ({"name": "bad", "max_tokens": "1.5"}, "max_tokens"),
    ({"name": "bad", "fallback": ["openai:gpt-4.1"]}, "fallback"),
    ({"name": "bad", "fallback": ["bad"]}, "agent"),
    ({"name": "../escape"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "bad", "credentials": SECRET}, "credentials"),
    ({"name": "bad", "instruction": f"Use api_key={SECRET} when asked"}, "instruction"),
])
def test_save_agent_rejects_bad_values_naming_the_field(agents_folder, values, field):
    before = sorted(p.name for p in agents_folder.iterdir())
    with pytest.raises(dd.AgentFormError) as e:
        dd.save_agent(values, agents_folder, actor=ADMIN)
    assert field in [f for f, _ in e.value.errors], e.value.errors
    assert str(e.value).startswith(field) or f"; {field}:" in str(e.value)
    assert sorted(p.name for p in agents_folder.iterdir()) == before  # nothing written
    assert not (agents_folder.parent / "escape.yaml").exists()
    assert SECRET not in str(e.value)


def test_save_agent_edit_keeps_header_and_refuses_accidental_overwrite(agents_folder):
    with pytest.raises(dd.AgentFormError, match="already exists"):
        dd.save_agent({"name": "helper", "description": "New"}, agents_folder, actor=ADMIN)
    values = dd.agent_form_values("helper", agents_folder)
    assert values["description"] == "Helps." and values["capabilities"] == "general"
    values["model"] = "openai:gpt-4.1-nano"
    path = dd.save_agent(values, agents_folder, overwrite=True, actor=ADMIN)
    text = path.read_text()
    assert text.startswith("# The helper: keep this comment.\n")
    assert yaml.safe_load(text) == {"description": "Helps.", "model": "openai:gpt-4.1-nano",
                                    "capabilities": ["general"]}
    assert dd.agent_form_values("nobody", agents_folder)["description"] == ""


def test_save_agent_failed_write_leaves_the_old_file(agents_folder, monkeypatch):
    original = (agents_folder / "helper.yaml").read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        dd.save_agent({"name": "helper", "description": "Changed"}, agents_folder, overwrite=True, actor=ADMIN)
    assert (agents_folder / "helper.yaml").read_text() == original
    assert sorted(p.name for p in agents_folder.iterdir()) == ["coder.yaml", "helper.yaml"]


def test_try_agent_offline_default_and_errors(agents_folder, monkeypatch):
    from agents import AgentConfig

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    out = dd.try_agent("nobody", "hi", folder=agents_folder)
    assert out["ok"] is False and "nobody" in out["error"]
    # an openai agent without any key: a clear message naming the variable, no traceback
    out = dd.try_agent(AgentConfig(name="x", model="openai:gpt-4.1-mini"), "hi")
    assert out["ok"] is False and "OPENAI_API_KEY" in out["error"]


def test_try_agent_calls_the_provider(openai_fake, agents_folder):
    out = dd.try_agent("coder", "Say hello", folder=agents_folder)
    assert out["ok"] is True, out
    assert out["model"] == "openai:gpt-4.1-mini" and out["output"]
    assert out["input_tokens"] > 0 and out["latency_ms"] > 0


# --------------------------------------------------------------------------- configuration


def test_provider_rows_never_show_a_secret(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://bob:hunter22@llm.local:8000/v1?api_key=" + SECRET)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    rows = {r["provider"]: r for r in dd.provider_rows()}
    assert rows["openai"]["API key"] == "set" and rows["openai"]["source"] == "environment (OPENAI_API_KEY)"
    assert rows["anthropic"]["API key"] == "not set"
    assert rows["openai"]["endpoint"].startswith("http://bob:***@llm.local:8000/v1")
    text = repr(rows)
    assert SECRET not in text and "sk-proj" not in text and "hunter22" not in text
    assert "api.anthropic.com" in rows["anthropic"]["endpoint"]


def test_general_settings_masks_the_ledger_password(monkeypatch, store):
    monkeypatch.setenv("ORCHESTRA_DEFAULT_MODEL", "openai:gpt-4.1-mini")
    settings = {r["setting"]: r for r in dd.general_settings(store)}
    assert settings["default model"] == {"setting": "default model", "value": "openai:gpt-4.1-mini",
                                         "source": "ORCHESTRA_DEFAULT_MODEL"}
    assert settings["ledger"]["value"].startswith("sqlite:///") and settings["ledger backend"]["value"] == "sqlite"
    assert settings["ledger schema"]["value"] != "not migrated yet"
    pg = Store("postgresql://orch:s3cretpw@db.internal/orchestra", auto_migrate=False)
    try:
        shown = repr(dd.general_settings(pg))
    finally:
        pg.engine.dispose()
    assert "s3cretpw" not in shown and "orch:***@db.internal" in shown


def test_dagger_and_fast_agent_status(monkeypatch):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        monkeypatch.setenv("DAGGER_SESSION_PORT", str(port))
        monkeypatch.setenv("DAGGER_SESSION_TOKEN", "dagger-token-secret-value")
        rows = {r["setting"]: r["value"] for r in dd.dagger_status()}
    assert "answers" in rows["session (DAGGER_SESSION_PORT)"] and "nothing" not in rows["session (DAGGER_SESSION_PORT)"]
    assert rows["session token (DAGGER_SESSION_TOKEN)"] == "set"
    assert "dagger-token-secret-value" not in repr(rows)
    monkeypatch.delenv("DAGGER_SESSION_PORT")
    rows = {r["setting"]: r["value"] for r in dd.dagger_status()}
    assert rows["session (DAGGER_SESSION_PORT)"].startswith("not set")
    fa = {r["setting"]: r["value"] for r in dd.fast_agent_status()}
    assert fa["fast-agent"].startswith("installed")


class _FakePrefect(BaseHTTPRequestHandler):
    """Answers /health and the two block queries like a Prefect server (secret fields obfuscated)."""

    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path.endswith("/health") else 404)
        self.send_header("content-length", "4")
        self.end_headers()
        self.wfile.write(b"true")

    def do_POST(self):  # noqa: N802
        import json

        self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.path.endswith("/block_types/filter"):
            body = [{"slug": "orchestra-provider-credentials"}, {"slug": "orchestra-dagger-engine"}]
        elif self.path.endswith("/block_documents/filter"):
            body = [{"name": "openai-default", "updated": "2025-01-01T00:00:00+00:00",
                     "block_type": {"slug": "orchestra-provider-credentials"},
                     "data": {"provider": "openai", "api_key": "********", "base_url": None}}]
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_orchestra_blocks_from_the_prefect_api_and_fail_soft():
    out = dd.orchestra_blocks(None)
    assert out["ok"] is False and "PREFECT_API_URL" in out["message"]
    assert {t["slug"] for t in out["types"]} == set(dd.ORCHESTRA_BLOCK_TYPES)

    server = HTTPServer(("127.0.0.1", 0), _FakePrefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = dd.orchestra_blocks(f"http://127.0.0.1:{server.server_port}/api")
    finally:
        server.shutdown()
        server.server_close()
    assert out["ok"] is True, out
    types = {t["slug"]: t for t in out["types"]}
    assert types["orchestra-provider-credentials"]["registered"] == "yes"
    assert types["orchestra-provider-credentials"]["documents"] == 1
    assert types["orchestra-fast-agent-settings"]["registered"] == "no"
    (doc,) = out["documents"]
    assert doc["name"] == "openai-default" and doc["details"] == "provider: openai"
    assert "********" not in repr(out)

    with socket.socket() as s:  # a port nobody listens on: a message, quickly
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    out = dd.orchestra_blocks(f"http://127.0.0.1:{dead}/api", timeout=1.0)
    assert out["ok"] is False and "cannot be reached" in out["message"]


def test_block_type_slugs_match_the_block_classes():
    import blocks

    slugs = {cls.get_block_type_slug() for cls in (blocks.ProviderCredentials, blocks.FastAgentSettings,
                                                   blocks.DaggerEngine, blocks.OrchestraStore)}
    assert slugs == set(dd.ORCHESTRA_BLOCK_TYPES)


def test_example_workflow_is_a_shipped_file():
    from orchestra.runtime import REPO_ROOT

    path = dd.example_workflow()
    assert path.startswith("deployments/workflows/") and (REPO_ROOT / path).is_file()


def test_ledger_key_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCHESTRA_DB_URL", f"sqlite:///{tmp_path}/a.db")
    a = dd.ledger_key()
    monkeypatch.setenv("ORCHESTRA_DB_URL", f"sqlite:///{tmp_path}/b.db")
    assert dd.ledger_key() != a
    assert isinstance(dd.store_for(), Store) and Path(str(dd.store_for().url.database)).name == "b.db"


def test_prefect_status_says_whether_the_api_answers(monkeypatch, tmp_path):
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))  # no local server state here
    monkeypatch.delenv("PREFECT_UI_URL", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    status = dd.prefect_status()
    assert status["api_url"] is None and status["reachable"] is None and "No Prefect server" in status["summary"]

    server = HTTPServer(("127.0.0.1", 0), _FakePrefect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("PREFECT_API_URL", f"http://u:pw-secret@127.0.0.1:{server.server_port}/api")
        status = dd.prefect_status()
    finally:
        server.shutdown()
        server.server_close()
    assert status["reachable"] is True and "answers" in status["summary"]
    assert "pw-secret" not in repr(status) and status["ui_url"] == f"http://127.0.0.1:{server.server_port}"
    status = dd.prefect_status()  # the server is gone now
    assert status["reachable"] is False and "cannot be reached" in status["summary"]


def test_percent_never_rounds_failures_away():
    from dashboard.ui import money_tickformat, percent

    assert percent(17_178 / 17_200) == "99.9%" and percent(1.0) == "100%" and percent(0.5) == "50%"
    assert percent(1 / 17_200) == "0.01%" and percent(0.0) == "0%" and percent(None) == "—"
    assert money_tickformat([0.0002, 0.0001]) == ",.5f" and money_tickformat([12.0]) == ",.2f"
