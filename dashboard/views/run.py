"""One run's page (``/run?id=<flow run id>``): the DAG, the timeline, every step's prompt,
output and attempts; it follows a RUNNING run until it is final (dashboard.run_view)."""

import streamlit as st

from dashboard import run_view

run_id = st.query_params.get("id", "")
st.title("Run")
if not run_id:
    st.info("Open a run from the Runs page (or `/run?id=<flow run id>`).", icon=":material/list_alt:")
    st.page_link("views/runs.py", label="All runs", icon=":material/list_alt:")
    st.stop()
run_view.render(run_id)
