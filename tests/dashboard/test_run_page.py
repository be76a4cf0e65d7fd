"""The run page on a run whose steps were recorded through the ledger's own write path
(Store.record_step, as the engine writes them): every step in the DAG, the ones that never
ran with why, for_each calls in the timeline, a kind's extra fields, and a RUNNING run
followed until it is final."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from core.calls import CallRecord
from core.steps import StepState
from ledger.store import Store
from tests.dashboard.test_dashboard import _clean_env, texts

UTC = timezone.utc
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
RUN = "7f1c2a9e-0000-4000-8000-000000000001"
SECRET = "sk-proj-RunPageSecret0123456789"


def seed(store: Store, state: str = "FAILED") -> None:
    store.start_run(flow_run_id=RUN, workflow="fan-review", inputs={"topics": ["a", "b", "c"]}, started=T0)
    plan = [("fetch", ()), ("fan", ("fetch",)), ("check", ("fetch",)), ("summary", ("fan", "check")),
            ("ship", ("summary",))]
    for i, (name, deps) in enumerate(plan):
        store.record_step(StepState(RUN, name, "PENDING", depends_on=deps, position=i, at=T0))
    store.record_step(StepState(RUN, "fetch", "RUNNING", agent="reader", model="openai:gpt-4.1-mini", at=T0))
    store.record_call(CallRecord(flow_run_id=RUN, step="fetch", model="openai:gpt-4.1-mini", agent="reader",
                                 input_tokens=100, output_tokens=20, cost_usd=0.0001, priced=True, latency_ms=900,
                                 created=T0 + timedelta(seconds=1)))
    store.record_step(StepState(RUN, "fetch", "COMPLETED", prompt="Fetch the topics", output={"topics": 3},
                                at=T0 + timedelta(seconds=1)))
    store.record_step(StepState(RUN, "fan", "RUNNING", agent="writer", model="openai:gpt-4.1-mini", items=3,
                                at=T0 + timedelta(seconds=1)))
    for i in range(3):
        store.record_call(CallRecord(flow_run_id=RUN, step="fan", model="openai:gpt-4.1-mini", agent="writer",
                                     input_tokens=50, output_tokens=10, cost_usd=0.00005, priced=True,
                                     latency_ms=400 + 100 * i, created=T0 + timedelta(seconds=2 + i * 0.1)))
    store.record_step(StepState(RUN, "check", "SKIPPED", at=T0 + timedelta(seconds=1)))
    if state == "RUNNING":
        store.flush()
        return
    store.record_call(CallRecord(flow_run_id=RUN, step="fan", model="openai:gpt-4.1-mini", agent="writer",
                                 status="error", error=f"HTTP 500 api_key={SECRET}", latency_ms=30,
                                 created=T0 + timedelta(seconds=3)))
    store.record_step(StepState(RUN, "fan", "FAILED", error=f"step 'fan[1]': HTTP 500 api_key={SECRET}",
                                prompt="--- fan[0]\nWrite about a\n\n--- fan[1]\nWrite about b",
                                at=T0 + timedelta(seconds=3)))
    store.record_step(StepState(RUN, "summary", "NOT_READY", error="upstream step 'fan' did not complete",
                                at=T0 + timedelta(seconds=3)))
    store.record_step(StepState(RUN, "ship", "NOT_READY", error="upstream step 'summary' did not complete",
                                at=T0 + timedelta(seconds=3)))
    store.finish_run(flow_run_id=RUN, state="FAILED", ended=T0 + timedelta(seconds=4),
                     error=f"step 'fan' failed: HTTP 500 api_key={SECRET}")


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    import streamlit as st

    db = tmp_path / "ledger.db"
    _clean_env(monkeypatch, tmp_path, db)
    store = Store(f"sqlite:///{db}")
    st.cache_data.clear()
    yield store
    store.close()
    st.cache_data.clear()


def run_page():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(__import__("tests.dashboard.test_dashboard", fromlist=["APP"]).APP),
                           default_timeout=60)
    at.query_params["id"] = RUN
    at.switch_page("views/run.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def charts(at) -> dict[str, dict]:
    out = {}
    for c in at.get("plotly_chart"):
        spec = json.loads(c.proto.spec)
        out[spec["layout"]["title"]["text"]] = spec
    return out


def test_the_dag_has_every_step_coloured_by_state_and_the_first_failure_is_on_top(ledger):
    seed(ledger)
    at = run_page()
    assert at.error[0].value.startswith("**The run failed** — step **fan**: step 'fan[1]': HTTP 500")
    dag = charts(at)["DAG"]
    nodes = {name: trace["name"] for trace in dag["data"] for name in trace["text"]}
    assert nodes == {"fetch": "COMPLETED", "fan": "FAILED", "check": "SKIPPED", "summary": "NOT_READY",
                     "ship": "NOT_READY"}
    colours = {trace["name"]: trace["marker"]["color"] for trace in dag["data"]}
    assert colours["FAILED"] != colours["COMPLETED"] != colours["NOT_READY"]
    edges = {(a["ax"], a["ay"], a["x"], a["y"]) for a in dag["layout"]["annotations"]}
    assert len(edges) == 5  # fetch->fan, fetch->check, fan->summary, check->summary, summary->ship
    hover = {n: d[3] for t in dag["data"] for n, d in zip(t["text"], t["customdata"])}
    assert hover["summary"] == "upstream step 'fan' did not complete" and "when" in hover["check"]

    steps = next(d.value for d in at.dataframe if "why" in d.value.columns).set_index("step")
    assert list(steps.index) == ["fetch", "fan", "check", "summary", "ship"]
    assert steps.loc["fan", "attempts"] == 4 and steps.loc["fan", "errors"] == 1
    timeline = charts(at)["Timeline (UTC)"]["data"][0]
    assert [y.strip() for y in timeline["y"]] == ["fetch", "fan", "fan · call 1", "fan · call 2", "fan · call 3",
                                                  "fan · call 4"]
    assert at.selectbox(key="run_step").value == "fan"  # the first failure's details first
    assert any("**fan · FAILED · agent**" in m.value for m in at.markdown), [m.value for m in at.markdown]
    assert any("Write about b" in c.value for c in at.code)  # the rendered prompt
    at.selectbox(key="run_step").set_value("fetch").run()
    assert any("topics" in str(j.proto) for j in at.json)  # another step's output
    assert SECRET not in texts(at)


def test_a_kinds_own_fields_show_without_a_page_change(ledger, monkeypatch):
    """Issue 8/13 add fields to a step row (tool calls, image, exit code): shown as they are."""
    from dashboard import data as dd

    seed(ledger)
    real = dd.run_detail

    def with_extras(store, flow_run_id):
        detail = real(store, flow_run_id)
        detail["steps"][0]["tool_calls"] = [{"tool": "lookup", "arguments": '{"q": "x"}', "status": "ok"}]
        detail["steps"][0]["exit_code"] = 3
        return detail

    monkeypatch.setattr(dd, "run_detail", with_extras)
    at = run_page()
    at.selectbox(key="run_step").set_value("fetch").run()
    assert any(m.value == "**Tool calls**" for m in at.markdown) and any(m.value == "**Exit code**" for m in at.markdown)
    assert any("lookup" in set(d.value.get("tool", [])) for d in at.dataframe if "tool" in d.value.columns)


def test_a_running_run_is_followed_until_it_is_final(ledger):
    seed(ledger, state="RUNNING")
    at = run_page()
    assert "RUNNING" in at.subheader[0].value
    assert any("following live" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Steps"] == "2 / 5"  # fetch done, check skipped
    ledger.record_step(StepState(RUN, "fan", "COMPLETED", at=T0 + timedelta(seconds=4)))
    for name in ("summary", "ship"):
        ledger.record_step(StepState(RUN, name, "COMPLETED", at=T0 + timedelta(seconds=5)))
    ledger.finish_run(flow_run_id=RUN, state="COMPLETED", ended=T0 + timedelta(seconds=6))
    at.run()  # what the fragment's timer does: re-read, and once final the page stops following
    assert "COMPLETED" in at.subheader[0].value and not at.error
    assert not any("following live" in c.value for c in at.caption)
    assert {m.label: m.value for m in at.metric}["Steps"] == "5 / 5"


def test_an_unknown_run_is_a_message(ledger):
    at = run_page()
    assert any("is not in the ledger" in w.value for w in at.warning)
