"""The dashboard's Tasks page: Streamlit's AppTest on a ledger filled through the task
service (its Plan and Execute buttons call the same service, a real run included), and
the real app in headless Chromium."""

from __future__ import annotations

import asyncio
import getpass
import uuid
from pathlib import Path

import pytest

from orchestra import tasks as T
from tests.dashboard.test_dashboard import texts

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
SECRET = "sk-test-tasks-page-secret-0123456789"


def _env(monkeypatch, tmp_path) -> Path:
    db = tmp_path / "ledger.db"
    monkeypatch.setenv("ORCHESTRA_DB_URL", f"sqlite:///{db}")
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    for var in ("PREFECT_API_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL", "ORCHESTRA_PLANNER"):
        monkeypatch.delenv(var, raising=False)
    return db


@pytest.fixture
def tasks(tmp_path, monkeypatch):
    """A project with a parent and two children (one done-able, one after the other) and a
    task outside any project; {name: task}."""
    import streamlit as st

    _env(monkeypatch, tmp_path)
    T.add_project("web", "The web site", actor="seed")
    page = T.add_task("Ship the login page", project="web", assignee="ada", actor="seed",
                      description=f"no secrets here: api_key={SECRET}")
    form = T.add_task("Login form", parent=page["id"], workflow="hello", inputs={"name": uuid.uuid4().hex[:8]},
                      assignee="bob", actor="seed")
    tests = T.add_task("Login tests", parent=page["id"], depends_on=[form["id"]], actor="seed")
    loose = T.add_task("Tidy the README", actor="seed")
    st.cache_data.clear()
    yield {"page": page, "form": form, "tests": tests, "loose": loose}
    st.cache_data.clear()


def app(**session):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=90)
    for key, value in session.items():
        at.session_state[key] = value
    at.switch_page("views/tasks.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_projects_progress_tree_and_a_tasks_history(tasks):
    at = app()
    assert [t.value for t in at.title] == ["Tasks"]
    bars = [p.proto.text for p in at.get("progress")]
    assert bars[0] == "**web** · 0% · 3 todo — The web site"
    tree = at.dataframe[0].value
    assert list(tree["id"]) == [tasks["page"]["id"], tasks["form"]["id"], tasks["tests"]["id"]]
    assert list(tree["status"]) == ["todo"] * 3 and list(tree["assignee"]) == ["ada", "bob", ""]
    assert tree["task"][1].endswith("└ Login form") and tree["task"][0] == "Ship the login page"
    assert list(tree["workflow"]) == ["not planned", "hello", "not planned"]
    assert list(tree["after"]) == ["", "", str(tasks["form"]["id"])]

    at.selectbox(key="tasks_task").set_value(tasks["form"]["id"]).run()
    assert any(f"#{tasks['form']['id']} Login form" in s.value for s in at.subheader)
    history = at.dataframe[-1].value
    assert list(history["field"]) == ["created"] and list(history["by"]) == ["seed"]
    assert any("No run yet" in c.value for c in at.caption)
    assert [c.value for c in at.code][0].startswith("name: hello")  # the workflow it will run

    at.selectbox(key="tasks_project").set_value("(no project)").run()
    assert list(at.dataframe[0].value["id"]) == [tasks["loose"]["id"]]
    assert SECRET not in texts(at)


def test_the_plan_button_creates_the_workflow_and_shows_it(tasks):
    at = app()
    at.selectbox(key="tasks_task").set_value(tasks["tests"]["id"]).run()
    assert not at.code  # not planned yet
    at.button(key="tasks_plan").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [s.value for s in at.success] == [f"task {tasks['tests']['id']}: workflow task (default)"]
    assert at.code[0].value.startswith("name: task")
    assert list(at.dataframe[0].value["workflow"])[2] == "task (default)"
    history = at.dataframe[-1].value
    me = getpass.getuser()  # the dashboard on loopback with no user yet: the machine's user, the owner
    assert list(history["by"])[:2] == [me, me] and set(history["field"]) >= {"workflow", "plan"}


def test_a_plan_that_cannot_be_made_is_an_error_and_changes_nothing(tasks, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_PLANNER", "no-such-planner")
    at = app()
    at.selectbox(key="tasks_task").set_value(tasks["tests"]["id"]).run()
    at.button(key="tasks_plan").click().run()
    (error,) = [e.value for e in at.error]
    assert "ORCHESTRA_PLANNER=no-such-planner: no agent by that name" in error
    assert T.get_task(tasks["tests"]["id"])["history"][-1]["field"] == "created"


def test_the_plan_button_asks_the_planner_in_a_flow_run_of_its_own(tasks, monkeypatch, prefect_api):
    """With a planner (the OpenAI wire fake), Plan writes the workflow through a planning
    flow run on the Prefect server, whose call is in the ledger."""
    import json

    from ledger import queries
    from orchestra.runtime import ledger
    from tests.fakes import OpenAIFake

    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    reply = {"name": "readme", "steps": [{"id": "tidy", "agent": "assistant", "prompt": "Tidy the README"}]}
    with OpenAIFake() as fake:
        fake.configure(reply=json.dumps(reply))
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", SECRET)
        monkeypatch.setenv("ORCHESTRA_PLANNER", "openai:gpt-4.1-mini")
        at = app()
        at.selectbox(key="tasks_task").set_value(tasks["tests"]["id"]).run()
        at.button(key="tasks_plan").click().run()
        assert not at.error and not at.exception, [e.value for e in at.error]
        assert fake.request_count == 1
    plan = T.get_task(tasks["tests"]["id"])["plan"]
    assert plan["ok"] and plan["source"] == "planner"
    planning = queries.run(ledger(), plan["flow_run_id"])
    assert planning["workflow"] == "planner" and planning["state"] == "COMPLETED" and len(planning["calls"]) == 1
    assert SECRET not in texts(at)


def test_the_execute_button_starts_a_real_run_that_the_page_then_shows(tasks, monkeypatch, prefect_api):
    monkeypatch.setenv("PREFECT_API_URL", prefect_api)
    at = app()
    at.selectbox(key="tasks_task").set_value(tasks["form"]["id"]).run()
    at.button(key="tasks_execute").click().run()
    assert not at.error, [e.value for e in at.error]
    (started,) = [s.value for s in at.success]
    assert started.startswith(f"task {tasks['form']['id']}: flow run ") and started.endswith(" started")
    flow_run_id = started.split("flow run ")[1].split()[0]
    assert at.button(key="tasks_execute").disabled  # running: not twice
    done = asyncio.run(T.wait_for_task(tasks["form"]["id"], flow_run_id))
    assert done["status"] == "done"

    at = app(tasks_task=tasks["form"]["id"])
    runs = at.dataframe[1].value
    assert list(runs["flow_run_id"]) == [flow_run_id] and list(runs["state"]) == ["COMPLETED"]
    assert list(at.dataframe[0].value["status"])[1] == "done"
    assert at.get("progress")[0].proto.text.startswith("**web** · 50% · 2 todo, 1 done")  # the parent's: (1 + 0) / 2
    history = at.dataframe[-1].value
    assert list(history["by"])[:2] == ["orchestra", getpass.getuser()] and list(history["to"])[:2] == ["done",
                                                                                                "running"]


def test_no_tasks_yet_is_a_friendly_page(tmp_path, monkeypatch):
    import streamlit as st

    _env(monkeypatch, tmp_path)
    st.cache_data.clear()
    at = app()
    assert any("No tasks yet" in i.value for i in at.info) and not at.error


@pytest.mark.browser
def test_real_browser_tasks_page(tasks, tmp_path):
    from tests.dashboard.test_browser import serve
    from tests.support.chromium import browser, chromium_or_skip, stop

    chromium_or_skip()
    server, base = serve(tmp_path, tmp_path / "ledger.db")

    async def drive() -> str:
        async with browser(tmp_path) as tab:
            text = await tab.load(base + "/tasks", ["Projects", "web", "Ship the login page",
                                                    "History", "Plan", "Execute"], charts=0)
            await tab.screenshot(tmp_path / "tasks.png")
            assert await tab.streamlit_errors() == 0
            return text

    try:
        text = asyncio.run(asyncio.wait_for(drive(), 180))
    finally:
        stop(server)
    assert "Traceback" not in text and SECRET not in text
    assert "0% · 3 todo" in text and "ada" in text
    assert (tmp_path / "tasks.png").stat().st_size > 20_000
