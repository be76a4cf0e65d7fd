"""Orchestra dashboard's script: ``orchestra dashboard`` serves it through ``dashboard/server.py``
(``streamlit run dashboard/server.py``: the script and the login cookie's route).

The pages in ``dashboard/views/`` are thin: they read widgets, call
``dashboard.data`` through the cached readers of ``dashboard.ui`` and
render with Streamlit and plotly.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from orchestra.runtime import configure  # noqa: E402

configure()  # Prefect's defaults, before anything imports Prefect

from dashboard import ui  # noqa: E402

st.set_page_config(page_title="Orchestra", page_icon=":material/hub:", layout="wide")
st.set_option("client.toolbarMode", "viewer")  # no "Deploy" button for the people reading it

VIEWS = Path(__file__).resolve().parent / "views"


def pages(actor) -> dict[str, list]:
    """The pages this actor may open (every write is checked again by the service layer)."""
    from orchestra.access import role_at_least

    manage = [
        st.Page(VIEWS / "tasks.py", title="Tasks", icon=":material/task_alt:", url_path="tasks"),
        st.Page(VIEWS / "agents.py", title="Agents", icon=":material/smart_toy:", url_path="agents"),
        st.Page(VIEWS / "configuration.py", title="Configuration", icon=":material/settings:",
                url_path="configuration"),
    ]
    if role_at_least(actor.role, "admin"):
        manage.append(st.Page(VIEWS / "audit.py", title="Audit log", icon=":material/policy:", url_path="audit"))
    if role_at_least(actor.role, "owner"):
        manage.append(st.Page(VIEWS / "users.py", title="Users", icon=":material/group:", url_path="users"))
    return {
        "Ledger": [
            st.Page(VIEWS / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
            st.Page(VIEWS / "runs.py", title="Runs", icon=":material/list_alt:", url_path="runs"),
            st.Page(VIEWS / "run.py", title="Run", icon=":material/account_tree:", url_path="run",
                    visibility="hidden"),
            st.Page(VIEWS / "costs.py", title="Costs", icon=":material/payments:", url_path="costs"),
        ],
        "Run": [st.Page(VIEWS / "workflows.py", title="Workflows", icon=":material/account_tree:",
                        url_path="workflows")],
        "Manage": manage,
    }


try:
    from dashboard import auth

    actor = auth.gate()  # a login form and st.stop() until someone is logged in
    page = st.navigation(pages(actor))
    ui.sidebar(actor)
    page.run()
except Exception as exc:  # st.stop()/st.rerun() are BaseExceptions and pass through
    ui.failure(exc)
