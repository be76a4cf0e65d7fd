"""Runs: filter by workflow and state; the selected run as its run page shows it
(dashboard.run_view: DAG, timeline, steps, attempts; live while it runs)."""

import streamlit as st

from dashboard import data as dd
from dashboard import run_view, ui

ALL_WORKFLOWS, ALL_STATES = "All workflows", "All states"

st.title("Runs")
ledger = ui.key()
filters = ui.run_filters(ledger)
if not filters["workflows"]:
    ui.empty_ledger()
    st.stop()

c1, c2, c3 = st.columns([3, 2, 1])
workflow = c1.selectbox("Workflow", [ALL_WORKFLOWS, *filters["workflows"]])
state = c2.selectbox("State", [ALL_STATES, *filters["states"]])
limit = c3.number_input("Show at most", min_value=10, max_value=5000, value=200, step=50)

rows = ui.runs(ledger, None if workflow == ALL_WORKFLOWS else workflow,
               None if state == ALL_STATES else state, int(limit))
if not rows:
    st.info("No run matches these filters.", icon=":material/filter_alt_off:")
    st.stop()

st.caption(f"{len(rows)} run{'s' if len(rows) != 1 else ''}, newest first. Select a row to see its steps.")
picked = ui.table(dd.with_links(rows), ["started", "workflow", "state", "duration_s", "calls", "tokens", "cost_usd",
                                        "link", "error"], on_select="rerun", selection_mode="single-row", key="runs_table",
                  csv="runs.csv")
selected_rows = picked.selection.rows if picked is not None and hasattr(picked, "selection") else []
ids = [r["flow_run_id"] for r in rows]
by_id = {r["flow_run_id"]: r for r in rows}

# The table selection picks the run; the select box does too (and works without a mouse).
run_id = st.selectbox(
    "Run", ids, index=selected_rows[0] if selected_rows and selected_rows[0] < len(ids) else 0,
    format_func=lambda i: f"{by_id[i]['workflow']} · {by_id[i]['state']} · "
                          f"{by_id[i]['started']:%Y-%m-%d %H:%M:%S} UTC · {i}",
)

st.page_link("views/run.py", label="Open this run's own page (shareable link)", icon=":material/link:",
             query_params={"id": run_id})
st.divider()
run_view.render(run_id, key="runs")
