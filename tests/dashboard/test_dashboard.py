"""The Streamlit dashboard: every page through Streamlit's AppTest on a seeded ledger,
and the real app in headless Chromium (driven over the DevTools protocol)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from ledger.store import Store
from tests.dashboard.test_dashboard_data import SECRET, seed_ledger

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
PAGES = ["views/overview.py", "views/runs.py", "views/costs.py", "views/agents.py", "views/configuration.py",
         "views/tasks.py"]


def _clean_env(monkeypatch, tmp_path, db: Path) -> None:
    monkeypatch.setenv("ORCHESTRA_DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    for var in ("PREFECT_API_URL", "PREFECT_UI_URL", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "DAGGER_SESSION_PORT",
                "DAGGER_SESSION_TOKEN", "ORCHESTRA_DEFAULT_MODEL", "OPENAI_BASE_URL", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    """A seeded ledger the app reads (ORCHESTRA_DB_URL) and a copy of two agent files."""
    import streamlit as st

    db = tmp_path / "ledger.db"
    store = Store(f"sqlite:///{db}")
    seed_ledger(store)
    store.close()
    _clean_env(monkeypatch, tmp_path, db)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "reviewer.yaml").write_text(
        "# Reviews code.\ndescription: Meticulous code reviewer.\nmodel: openai:gpt-4.1-mini\n"
        "capabilities: [code-review, python]\n")
    (agents / "writer.yaml").write_text("description: Writes digests.\ncapabilities: [writing]\n")
    st.cache_data.clear()
    yield agents
    st.cache_data.clear()


@pytest.fixture
def empty(tmp_path, monkeypatch):
    import streamlit as st

    _clean_env(monkeypatch, tmp_path, tmp_path / "empty.db")
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def app(page: str | None = None, agents_dir: Path | None = None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=60)
    if agents_dir is not None:
        at.session_state["agents_dir"] = str(agents_dir)
    if page:  # the pages' url paths are their file names: no first run on the default page needed
        at.switch_page(page)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at) -> str:
    """Everything the page sends to the browser (every element's protobuf, as text)."""
    out = []

    def walk(node):
        proto = getattr(node, "proto", None)
        if proto is not None:
            out.append(str(proto))
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return "\n".join(out)


def frames(at) -> list:
    return [d.value for d in at.dataframe] + [t.value for t in at.table]


# --------------------------------------------------------------------------- AppTest


def test_every_page_renders_the_seeded_ledger(seeded):
    for page in PAGES:
        at = app(page, seeded)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert "Traceback" not in texts(at)
        assert SECRET not in texts(at) and "DashboardSecret" not in texts(at)


def test_overview_kpis_chart_and_recent_runs(seeded):
    at = app()
    assert [t.value for t in at.title] == ["Overview"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"Runs": "3", "Success rate": "50%", "Cost": "$0.0101", "Provider calls": "7",
                       "Tokens": "2.4k"}  # the cache hit is not a provider call
    captions = " ".join(c.value for c in at.caption)
    assert "All time: **4**" in captions and "All time: **67%**" in captions
    assert "All time: **8** · 1 cached" in captions
    assert len(at.get("plotly_chart")) == 1
    chart = json.loads(at.get("plotly_chart")[0].proto.spec)
    # from the first day with a call (20 days ago) to today, not a 30-day axis with empty days first
    assert len(chart["data"][0]["x"]) == 21 and chart["data"][0]["y"][0] == 0 and max(chart["data"][0]["y"]) > 0
    assert chart["layout"]["xaxis"]["dtick"] == 2 * 86_400_000  # one tick every other day: none repeated
    assert chart["layout"]["yaxis"]["tickformat"] == ",.4f" and chart["layout"]["yaxis"]["tickprefix"] == "$"
    md = " ".join(m.value for m in at.markdown)
    assert "**Latest run:** code-review" in md and "**Costliest workflow:** nightly-digest" in md
    runs = at.dataframe[0].value
    assert list(runs["flow_run_id"]) == ["run-review-live", "run-review-1", "run-digest-1", "run-review-old"]
    assert "FAILED" in set(runs["state"])


def test_empty_ledger_gives_friendly_pages(empty, tmp_path):
    for page in PAGES:
        at = app(page, tmp_path / "no-agents")
        assert not at.exception and not at.error, page
        if page in PAGES[:3]:
            assert any("ledger is empty" in i.value for i in at.info), page
    at = app("views/agents.py", tmp_path / "no-agents")
    assert any("No agent files" in i.value for i in at.info)
    assert any("No breaker" in i.value for i in at.info) and any("No health check" in i.value for i in at.info)


def test_unreachable_ledger_is_a_message_not_a_traceback(empty, monkeypatch):
    """A lost database: every page (the login gate reads the users first) says so, masked."""
    monkeypatch.setenv("ORCHESTRA_DB_URL", "postgresql://orch:pg-pass-123@127.0.0.1:1/orchestra")
    for page in PAGES:
        at = app(page)
        (error,) = [e.value for e in at.error]
        assert "could not be shown" in error and "orch:***@127.0.0.1:1/orchestra" in error, error
        assert "pg-pass-123" not in texts(at) and "Traceback" not in texts(at)


def frame_with(at, *columns: str):
    """The first dataframe on the page that has these columns."""
    return next(d.value for d in at.dataframe if set(columns) <= set(d.value.columns))


def test_runs_page_filters_and_shows_a_failed_run(seeded, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4999/api")
    at = app("views/runs.py")
    assert len(at.dataframe[0].value) == 4
    workflow = next(s for s in at.selectbox if s.label == "Workflow")
    workflow.set_value("nightly-digest").run()
    assert list(at.dataframe[0].value["flow_run_id"]) == ["run-digest-1"]
    assert any(s.startswith("nightly-digest") for s in (h.value for h in at.subheader))
    failed = at.error[0].value  # the first failure, at the top
    assert "The run failed" in failed and "write" in failed and SECRET not in failed
    steps = frame_with(at, "step", "state", "why").set_index("step")
    assert steps.loc["write", "state"] == "FAILED" and steps.loc["write", "errors"] == 2
    assert steps.loc["fetch", "cost_usd"] == pytest.approx(0.0096)
    (link,) = at.get("link_button")
    assert link.proto.url == "http://127.0.0.1:4999/runs/flow-run/run-digest-1"
    assert any("Dead letters (1)" in e.label for e in at.expander)
    assert SECRET not in texts(at)

    state = next(s for s in at.selectbox if s.label == "State")
    state.set_value("COMPLETED").run()
    assert any("No run matches" in i.value for i in at.info)


def test_runs_page_steps_attempts_cached_and_no_prefect(seeded):
    at = app("views/runs.py")
    run = next(s for s in at.selectbox if s.label == "Run")
    run.set_value("run-review-1").run()
    steps = frame_with(at, "step", "state", "why").set_index("step")
    assert steps.loc["style", "attempts"] == 2 and steps.loc["style", "errors"] == 1
    every = max((d.value for d in at.dataframe if "#" in d.value.columns), key=len)  # "Every attempt"
    assert list(every["status"]) == ["ok", "error", "ok", "cached"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Provider calls"] == "3"  # the cache hit is not a provider call
    assert any(c.value == "1 from the cache" for c in at.caption)
    assert steps.loc["style", "last_error"] == "HTTP 503 from provider"
    next(s for s in at.selectbox if s.label == "Step details").set_value("security").run()
    tools = frame_with(at, "tool", "outcome")  # the step's tool calls, shown as its own field
    assert list(tools["tool"]) == ["kb.lookup", "kb.fetch"] and list(tools["outcome"]) == ["ok", "error"]
    assert "hunter22" not in texts(at)
    assert not at.get("link_button")  # no Prefect server known: a hint instead of a dead link
    assert any("PREFECT_API_URL" in c.value for c in at.caption)


def test_costs_page_charts_and_unpriced_calls(seeded):
    at = app("views/costs.py")
    charts = at.get("plotly_chart")
    assert len(charts) == 6  # by model, agent, workflow, day; per run; per step per day
    by_model = json.loads(charts[0].proto.spec)["data"][0]
    assert by_model["y"][-1] == "anthropic:claude-sonnet-4-0"  # the most expensive bar on top
    assert set(by_model["y"]) == {"anthropic:claude-sonnet-4-0", "openai:gpt-4.1-mini", "openai:my-local-llama"}
    by_agent = json.loads(charts[1].proto.spec)["data"][0]
    assert "(no agent)" in by_agent["y"]
    (warning,) = [w.value for w in at.warning]
    assert "1 call could not be priced" in warning and "openai:my-local-llama" in warning
    assert {m.label: m.value for m in at.metric}["Unpriced calls"] == "1"
    assert any("**Top model:** `anthropic:claude-sonnet-4-0`" in m.value for m in at.markdown)
    breakdowns = [d.value for d in at.dataframe if "cached_tokens" in d.value.columns]
    assert len(breakdowns) == 4 and list(breakdowns[2]["label"]) == ["nightly-digest", "code-review"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Runs that did not complete"] == "$0.0096"  # the failed digest run
    latency = next(d.value for d in at.dataframe if "p95_ms" in d.value.columns).set_index("label")
    assert latency.loc["openai:gpt-4.1-mini", "p50_ms"] == 380 and latency.loc["openai:gpt-4.1-mini", "p95_ms"] == 410
    assert len(at.get("download_button")) >= 6  # CSV of every table
    specs = [json.loads(c.proto.spec) for c in charts]
    formats = {s["layout"].get("yaxis", {}).get("tickformat") or s["layout"].get("xaxis", {}).get("tickformat")
               for s in specs if s["layout"].get("yaxis", {}).get("tickprefix") == "$"
               or s["layout"].get("xaxis", {}).get("tickprefix") == "$"}
    assert formats and all(f.startswith(",.") and f.endswith("f") for f in formats)  # never SI ("200μ")

    at.button_group(key="costs_window").set_value("Last 7 days").run()
    assert not at.exception and not at.warning  # the unpriced call is 20 days old
    by_model = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert "openai:my-local-llama" not in by_model["y"]


def test_agents_page_registry_breakers_health(seeded):
    at = app("views/agents.py", seeded)
    registry = at.dataframe[0].value
    assert list(registry["name"]) == ["reviewer", "writer"]
    assert list(registry["model"]) == ["openai:gpt-4.1-mini", "default"]
    assert any("`fast-agent:passthrough`" in c.value for c in at.caption)  # what "default" is
    assert "Meticulous code reviewer." in set(registry["description"])
    breakers = at.dataframe[1].value
    assert list(breakers["state"]) == ["open"] and list(breakers["failures"]) == [5]
    health = at.dataframe[2].value.set_index("agent")
    assert health.loc["writer", "status"] == "ok"


def _form(at, prefix="agent_form_new"):
    return lambda field: at.text_input(key=f"{prefix}_{field}")


def test_agent_form_rejects_a_bad_model_and_writes_nothing(seeded):
    before = {p.name: p.read_text() for p in seeded.iterdir()}
    at = app("views/agents.py", seeded)
    field = _form(at)
    field("name").input("newbie")
    field("model").input("gpt-4")
    next(b for b in at.button if b.label == "Review changes").click().run()
    (error,) = [e.value for e in at.error]
    assert "**model**" in error and "invalid model 'gpt-4'" in error and "nothing was written" in error
    assert {p.name: p.read_text() for p in seeded.iterdir()} == before

    field = _form(at)
    field("model").input("anthropic:claude-sonnet-4-0")
    field("temperature").input("warm")
    field("budget").input("lots")
    next(b for b in at.button if b.label == "Review changes").click().run()
    assert "**temperature**" in at.error[0].value and "**daily_budget_usd**: 'lots' is not a number" in at.error[0].value
    assert "agent_save" not in [b.key for b in at.button]  # nothing to save
    assert {p.name: p.read_text() for p in seeded.iterdir()} == before


def test_agent_form_creates_and_edits_an_agent(seeded):
    at = app("views/agents.py", seeded)
    field = _form(at)
    field("name").input("tester")
    field("description").input("Writes tests.")
    field("model").input("openai:gpt-4.1-nano")
    field("capabilities").input("tests, python")
    at.multiselect(key="agent_form_new_fallback").select("reviewer")
    next(b for b in at.button if b.label == "Review changes").click().run()
    assert not at.error, [e.value for e in at.error]
    assert not (seeded / "tester.yaml").exists()  # nothing is written before "Save"
    assert "+model: openai:gpt-4.1-nano" in at.code[0].value
    at.button(key="agent_save").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any("Saved `tester.yaml`" in s.value for s in at.success)
    from agents.registry import load_registry

    tester = load_registry(seeded)["tester"]
    assert (tester.model, tester.capabilities, tester.fallback) == ("openai:gpt-4.1-nano", ["tests", "python"],
                                                                     ["reviewer"])
    assert "tester" in list(at.dataframe[0].value["name"])  # the registry table is re-read

    at.radio(key="agent_form_mode").set_value("Edit an agent").run()
    at.selectbox(key="agent_form_target").set_value("reviewer").run()
    field = _form(at, "agent_form_reviewer")
    assert field("description").value == "Meticulous code reviewer."
    field("model").input("anthropic:claude-sonnet-4-0")
    next(b for b in at.button if b.label == "Review changes").click().run()
    diff = at.code[0].value
    assert "-model: openai:gpt-4.1-mini" in diff and "+model: anthropic:claude-sonnet-4-0" in diff
    assert [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")] == [
        "-model: openai:gpt-4.1-mini", "+model: anthropic:claude-sonnet-4-0"]  # only what changed
    at.button(key="agent_save").click().run()
    assert not at.error, [e.value for e in at.error]
    text = (seeded / "reviewer.yaml").read_text()
    assert text == ("# Reviews code.\ndescription: Meticulous code reviewer.\nmodel: anthropic:claude-sonnet-4-0\n"
                    "capabilities: [code-review, python]\n")  # the file's own style and comment kept


def test_test_agent_button_calls_the_agent(seeded, openai_fake):
    at = app("views/agents.py", seeded)
    at.selectbox(key="test_agent_name").set_value("reviewer").run()
    at.text_area(key="test_agent_prompt").input("Say hello").run()
    at.button(key="test_agent_button").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any(m.value == "**Answer** from `openai:gpt-4.1-mini`" for m in at.markdown)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Latency"].endswith(" ms") and metrics["Tokens in / out"] != "0 / 0"
    assert at.code and at.code[0].value  # the answer


def test_test_agent_button_reports_a_missing_key(seeded):
    at = app("views/agents.py", seeded)
    at.selectbox(key="test_agent_name").set_value("reviewer").run()
    at.button(key="test_agent_button").click().run()
    (error,) = [e.value for e in at.error]
    assert "The call failed" in error and "OPENAI_API_KEY" in error


def test_configuration_shows_settings_but_never_secrets(seeded, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://proxy.example/anthropic")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://bob:hunter22@llm.local:8000/v1")
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "dagger-session-token-xyz")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_prefectkey0123456789")
    at = app("views/configuration.py")
    assert [s.value for s in at.subheader][:1] == ["Providers"]
    providers = at.table[0].value.set_index("Provider")
    assert providers.loc["openai", "API key"] == "set" and providers.loc["anthropic", "API key"] == "not set"
    assert providers.loc["openai", "Source"] == "environment (OPENAI_API_KEY)"
    assert providers.loc["anthropic", "Endpoint"] == "https://proxy.example/anthropic"
    everything = texts(at) + repr([f.to_dict() for f in frames(at)])
    for secret in (SECRET, "sk-proj", "hunter22", "dagger-session-token-xyz", "pnu_prefectkey", "pg-pass-123"):
        assert secret not in everything, secret
    general = at.table[1].value.set_index("Setting")
    assert general.loc["ledger", "Value"].startswith("sqlite:///") and general.loc["ledger schema", "Value"] == "0010"
    assert any("No Prefect server is running" in i.value or "No Prefect API" in i.value for i in at.info)
    blocks = at.table[-1].value
    assert set(blocks["Slug"]) >= {"orchestra-provider-credentials", "orchestra-dagger-engine"}


# --------------------------------------------------------------------------- real browser


def test_real_browser_overview_and_costs_before_any_user_exists(tmp_path):
    """No user yet, loopback: the machine's user sees the pages without a login."""
    from tests.dashboard.test_browser import serve
    from tests.support.chromium import browser, chromium_or_skip, stop

    chromium_or_skip()
    db = tmp_path / "ledger.db"
    store = Store(f"sqlite:///{db}")
    seed_ledger(store)
    store.close()
    shots = Path(os.environ.get("ORCHESTRA_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    server, base = serve(tmp_path, db)

    async def drive() -> dict[str, str]:
        async with browser(tmp_path) as tab:
            pages = {"overview": await tab.load(base + "/", ["Latest run:", "code-review", "Costliest workflow:",
                                                            "nightly-digest", "Recent runs"], charts=1)}
            await tab.screenshot(shots / "overview-local.png")
            pages["costs"] = await tab.load(base + "/costs", ["Top model:", "anthropic:claude-sonnet-4-0",
                                                              "could not be priced", "openai:my-local-llama",
                                                              "Latency"], charts=6)
            await tab.screenshot(shots / "costs.png")
            assert await tab.streamlit_errors() == 0
            return pages

    try:
        pages = asyncio.run(asyncio.wait_for(drive(), 180))
    finally:
        stop(server)
    for name, text in pages.items():
        assert "Traceback" not in text and "Error" not in text, (name, text[:2000])
        assert SECRET not in text
    assert "All time:" in pages["overview"] and "Success rate" in pages["overview"]
    assert "owner" in pages["overview"] and "User name" not in pages["overview"]
    assert "By model" in pages["costs"] and "Unpriced calls" in pages["costs"]
    assert (shots / "costs.png").stat().st_size > 20_000
