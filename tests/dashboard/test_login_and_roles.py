"""The login gate and the roles, page by page, through Streamlit's AppTest on a seeded ledger."""

from __future__ import annotations

import pytest

from ledger import queries
from ledger.store import Store
from orchestra import users
from orchestra.access import Actor
from tests.dashboard.test_dashboard import APP, _clean_env, texts
from tests.dashboard.test_dashboard_data import seed_ledger

OWNER = Actor("olga", "owner", via="cli")
PASSWORD = "correct horse battery"
ROLE_USERS = {"vic": "viewer", "mia": "member", "ada": "admin", "oz": "owner"}
EVERY_PAGE = ["views/overview.py", "views/runs.py", "views/costs.py", "views/agents.py", "views/configuration.py"]


@pytest.fixture
def team(tmp_path, monkeypatch):
    """A seeded ledger with one user per role; returns (store, agents folder)."""
    import streamlit as st

    db = tmp_path / "ledger.db"
    _clean_env(monkeypatch, tmp_path, db)
    store = Store(f"sqlite:///{db}")
    seed_ledger(store)
    for name, role in ROLE_USERS.items():
        users.add(OWNER, name, role, PASSWORD, store=store)
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "reviewer.yaml").write_text("# Reviews code.\ndescription: Reviewer.\nmodel: openai:gpt-4.1-mini\n")
    st.cache_data.clear()
    yield store, agents
    st.cache_data.clear()
    store.close()


def fresh(page: str | None = None, agents=None):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=60)
    if agents is not None:
        at.session_state["agents_dir"] = str(agents)
    if page:
        at.switch_page(page)
    return at


def log_in(name: str, password: str = PASSWORD):
    """A new session logged in through the login form."""
    at = fresh()
    at.run()
    at.text_input(key="login_name").input(name)
    at.text_input(key="login_password").input(password)
    next(b for b in at.button if b.label == "Log in").click().run()
    return at


def as_user(name: str, page: str | None = None, agents=None):
    """A session already logged in as ``name`` (the gate re-reads the role from the ledger)."""
    at = fresh(page, agents)
    at.session_state["actor"] = Actor(name, ROLE_USERS[name], via="password")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_with_users_every_page_asks_for_a_login_first(team):
    for page in EVERY_PAGE:
        at = fresh(page)
        at.run()
        assert not at.exception
        assert [t.value for t in at.title] == ["Orchestra"], page
        assert at.text_input(key="login_password") is not None
        assert "Recent runs" not in texts(at) and "run-review-1" not in texts(at)


def test_a_wrong_password_is_a_message_audited_and_never_says_which_part(team):
    store, _ = team
    at = fresh()
    at.run()
    messages = []
    for name, password in (("ada", "not the password"), ("nobody", PASSWORD)):
        at.text_input(key="login_name").input(name)
        at.text_input(key="login_password").input(password)
        next(b for b in at.button if b.label == "Log in").click().run()
        assert not at.exception
        (error,) = [e.value for e in at.error]
        messages.append(error)
        assert [t.value for t in at.title] == ["Orchestra"]
    assert messages[0] == messages[1] == "**Not logged in:** wrong user name or password."
    refused = queries.audit(store, action="login", outcome="refused")
    assert [r["target"] for r in refused] == ["nobody", "ada"]
    assert "Traceback" not in texts(at) and PASSWORD not in texts(at)


def test_the_right_password_opens_the_overview_with_the_role_in_the_sidebar(team):
    store, _ = team
    at = log_in("mia")
    assert not at.exception and not at.error
    assert [t.value for t in at.title] == ["Overview"]
    assert any("**mia** · member" in m.value for m in at.sidebar.markdown)
    assert queries.audit(store, action="login", outcome="ok")[0]["actor"] == "mia"
    users.set_role(OWNER, "mia", "viewer", store=store)  # takes effect on the next rerun
    at.run()
    assert any("**mia** · viewer" in m.value for m in at.sidebar.markdown)
    users.remove(OWNER, "mia", store=store)
    at.run()
    assert [t.value for t in at.title] == ["Orchestra"]  # logged out: the login form again


def test_every_page_renders_for_every_role(team):
    _, agents = team
    for name in ROLE_USERS:
        for page in EVERY_PAGE:
            at = as_user(name, page, agents)
            assert not at.error, (name, page, [e.value for e in at.error])
            assert at.title[0].value != "Orchestra", (name, page)


def test_the_audit_page_is_for_admins_and_owners(team):
    store, agents = team
    at = as_user("ada", "views/audit.py", agents)
    assert [t.value for t in at.title] == ["Audit log"]
    table = at.dataframe[0].value
    assert set(table["action"]) == {"user.add"} and set(table["actor"]) == {"olga"}
    assert at.get("download_button")  # CSV export
    at.selectbox(key="audit_outcome").set_value("refused").run()
    assert at.dataframe[0].value.empty and "0 of 4 entries" in " ".join(c.value for c in at.caption)

    viewer = as_user("vic", "views/audit.py", agents)  # not in a viewer's navigation: the default page instead
    assert [t.value for t in viewer.title] != ["Audit log"]


def test_no_user_on_loopback_is_the_machine_user_and_elsewhere_a_refusal(tmp_path, monkeypatch):
    import streamlit as st
    from streamlit import config

    db = tmp_path / "ledger.db"
    _clean_env(monkeypatch, tmp_path, db)
    st.cache_data.clear()
    at = fresh()
    at.run()
    assert not at.exception and [t.value for t in at.title] == ["Overview"]
    assert any("owner" in m.value for m in at.sidebar.markdown)
    config.set_option("server.address", "0.0.0.0")
    at = fresh()
    at.run()
    (error,) = [e.value for e in at.error]
    assert "No dashboard user exists yet" in error and "orchestra users add" in error
    assert not at.title


EDIT_CONTROLS = {"Review changes", "Delete agent", "Set limits"}


def test_a_viewer_sees_no_edit_control_and_the_service_refuses_and_audits(team):
    store, agents = team
    at = as_user("vic", "views/agents.py", agents)
    labels = {b.label for b in at.button}
    assert not labels & EDIT_CONTROLS and not any(b.label.startswith("Restore") for b in at.button)
    assert any("read-only for you" in c.value for c in at.caption)
    member = as_user("mia", "views/agents.py", agents)
    assert not {b.label for b in member.button} & EDIT_CONTROLS
    admin = as_user("ada", "views/agents.py", agents)
    assert {"Review changes", "Set limits"} <= {b.label for b in admin.button}

    from dashboard import data as dd
    from orchestra.access import Forbidden

    with pytest.raises(Forbidden):  # what a crafted request would reach: the service says no
        dd.save_agent({"name": "reviewer", "model": "openai:gpt-4.1"}, agents, overwrite=True,
                      actor=Actor("vic", "viewer"))
    assert "gpt-4.1-mini" in (agents / "reviewer.yaml").read_text()
    (refused,) = queries.audit(store, outcome="refused")
    assert (refused["actor"], refused["action"], refused["target"]) == ("vic", "agent.edit", "reviewer")


def test_an_admin_deletes_with_confirmation_and_restores(team):
    store, agents = team
    at = as_user("ada", "views/agents.py", agents)
    assert at.button(key="delete_button").disabled  # until the name is typed
    at.text_input(key="delete_confirm").input("reviewer").run()
    at.button(key="delete_button").click().run()
    assert not at.error and not (agents / "reviewer.yaml").exists()
    assert any("reviewer deleted" in s.value for s in at.success)
    at.selectbox(key="versions_agent").set_value("reviewer").run()
    at.button(key="restore_button").click().run()
    assert not at.error, [e.value for e in at.error]
    assert (agents / "reviewer.yaml").read_text().startswith("# Reviews code.")
    assert [r["action"] for r in queries.audit(store, action="agent.")] == ["agent.restore", "agent.delete"]


def test_limits_that_are_not_numbers_are_a_message_and_nothing_is_saved(team):
    store, agents = team
    at = as_user("ada", "views/agents.py", agents)
    at.text_input(key="limits_rpm").input("fast")
    next(b for b in at.button if b.label == "Set limits").click().run()
    (error,) = [e.value for e in at.error]
    assert "Requests per minute: 'fast' is not a whole number" in error
    assert queries.limits(store) == [] and queries.audit(store, action="limits.set") == []
    at.text_input(key="limits_rpm").input("120")
    next(b for b in at.button if b.label == "Set limits").click().run()
    assert [(r["provider"], r["rpm"]) for r in queries.limits(store)] == [("openai", 120)]
    assert queries.audit(store, action="limits.set")[0]["actor"] == "ada"
