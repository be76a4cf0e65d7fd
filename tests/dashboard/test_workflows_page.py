"""The Workflows page: shipped and file workflows with their validation and DAG, the typed
input form, and a run started from it in the background on a real Prefect API."""

from __future__ import annotations

import json
import time

import pytest

from ledger import queries
from ledger.store import Store
from orchestra import users
from orchestra.access import Actor
from tests.dashboard.test_dashboard import APP, _clean_env, texts

OWNER = Actor("olga", "owner", via="cli")


@pytest.fixture
def team(tmp_path, monkeypatch):
    import streamlit as st

    db = tmp_path / "ledger.db"
    _clean_env(monkeypatch, tmp_path, db)
    store = Store(f"sqlite:///{db}")
    for name, role in (("vic", "viewer"), ("mia", "member")):
        users.add(OWNER, name, role, "correct horse battery", store=store)
    st.cache_data.clear()
    yield store
    store.close()


def page(name: str, role: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["actor"] = Actor(name, role)
    at.switch_page("views/workflows.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick(at, name: str):
    box = at.selectbox(key="workflow_pick")
    box.set_value(next(i for i, label in enumerate(box.options) if label.startswith(name))).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_shipped_workflows_with_validation_and_a_dag_preview(team, tmp_path):
    at = page("vic", "viewer")
    table = at.dataframe[0].value
    assert {"hello", "code-review", "fan-out", "research"} <= set(table["workflow"])
    assert set(table["valid"]) == {"yes"}
    pick(at, "code-review")
    dag = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert sorted(n for t in dag["data"] for n in t["text"]) == ["correctness", "security", "style", "summary"]
    assert len(dag["layout"]["annotations"]) == 3  # security, correctness, style -> summary
    assert not [b for b in at.button if b.label == "Run"]  # a viewer starts nothing
    assert any("needs the member role" in c.value for c in at.caption)

    broken = tmp_path / "broken.yaml"
    broken.write_text("name: broken\nsteps:\n  - id: a\n    prompt: '{{ steps.nope.output }}'\n    depends_on: [ghost]\n")
    at.text_input(key="workflow_file_path").input(str(broken))
    at.button(key="workflow_file_open").click().run()
    pick(at, "broken")
    (error,) = [e.value for e in at.error]
    assert "is not valid" in error and "ghost" in error and "Traceback" not in texts(at)


def test_an_input_of_the_wrong_type_is_a_message_and_nothing_starts(team):
    at = page("mia", "member")
    pick(at, "fan-out")
    at.text_area(key="input_fan-out_topics").input('["retries", "caching"')  # not JSON
    next(b for b in at.button if b.label == "Run").click().run()
    (error,) = [e.value for e in at.error]
    assert "Not started" in error and "input 'topics': expected array" in error
    at.text_area(key="input_fan-out_topics").input('["a"]')
    at.text_input(key="budget_fan-out").input("lots")
    next(b for b in at.button if b.label == "Run").click().run()
    assert "budget: 'lots' is not a number" in at.error[0].value
    assert queries.runs(team) == [] and queries.audit(team, action="run.start") == []


def test_a_member_starts_a_run_and_lands_on_its_page(team, prefect_api, monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    at = page("mia", "member")
    pick(at, "hello")
    at.text_input(key="input_hello_name").input("Ada")
    next(b for b in at.button if b.label == "Run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (started,) = queries.audit(team, action="run.start")
    assert (started["actor"], started["outcome"], started["after"]["inputs"]) == ("mia", "ok", {"name": "Ada"})
    run_id = started["after"]["flow_run_id"]
    assert [t.value for t in at.title] == ["Run"] and at.query_params["id"] == run_id
    deadline = time.monotonic() + 150  # the background process finishes before the test does
    while time.monotonic() < deadline:
        found = queries.run(team, run_id)
        if found and found["state"] != "RUNNING":
            break
        time.sleep(0.5)
    assert found and found["state"] == "COMPLETED", found
    from streamlit.testing.v1 import AppTest

    run_page = AppTest.from_file(str(APP), default_timeout=60)
    run_page.session_state["actor"] = Actor("mia", "member")
    run_page.query_params["id"] = run_id
    run_page.switch_page("views/run.py")
    run_page.run()
    assert "hello" in run_page.subheader[0].value and "COMPLETED" in run_page.subheader[0].value
    assert any("Say hello to Ada" in c.value for c in run_page.code)  # the rendered prompt
