"""Runs: filter by workflow and state; one run's steps and every provider attempt."""

import streamlit as st

from dashboard import ui
from dashboard import data as dd

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
picked = ui.table(rows, ["started", "workflow", "state", "duration_s", "calls", "tokens", "cost_usd", "error",
                         "flow_run_id"], on_select="rerun", selection_mode="single-row", key="runs_table")
selected_rows = picked.selection.rows if picked is not None and hasattr(picked, "selection") else []
ids = [r["flow_run_id"] for r in rows]
by_id = {r["flow_run_id"]: r for r in rows}

# The table selection picks the run; the select box does too (and works without a mouse).
run_id = st.selectbox(
    "Run", ids, index=selected_rows[0] if selected_rows and selected_rows[0] < len(ids) else 0,
    format_func=lambda i: f"{by_id[i]['workflow']} · {by_id[i]['state']} · "
                          f"{by_id[i]['started']:%Y-%m-%d %H:%M:%S} UTC · {i}",
)

detail = ui.run_detail(ledger, run_id)
if detail is None:
    st.warning(f"Run {run_id} is no longer in the ledger.")
    st.stop()

run = detail["run"]
st.divider()
head, link = st.columns([4, 1], vertical_alignment="center")
head.subheader(f"{run['workflow']} {ui.badge(run['state'])}")
ui_url = ui.prefect_ui_url()
url = dd.flow_run_url(run["flow_run_id"], ui_url)
if url:
    link.link_button("Open in Prefect UI", url, icon=":material/open_in_new:", width="stretch")
else:
    link.caption("Prefect UI link: set PREFECT_API_URL or start the local server (`orchestra server start`).")
st.caption(
    f"Flow run `{run['flow_run_id']}` · started {run['started']:%Y-%m-%d %H:%M:%S} UTC"
    + (f" · ended {run['ended']:%Y-%m-%d %H:%M:%S} UTC" if run["ended"] else " · still running")
    + (f" · model override `{run['model_override']}`" if run.get("model_override") else "")
)
m = st.columns(5)
m[0].metric("Duration", ui.seconds(run["duration_s"]), border=True)
m[1].metric("Calls", ui.count(run["n_calls"]), border=True)
m[2].metric("Input tokens", ui.count(run["input_tokens"]), border=True)
m[3].metric("Output tokens", ui.count(run["output_tokens"]), border=True)
m[4].metric("Cost", ui.money(run["cost_usd"]), border=True,
            help=f"Budget {ui.money(run['budget_usd'])}" if run.get("budget_usd") else None)
if run["error"]:
    st.error(f"**The run failed:** {run['error']}", icon=":material/error:")

st.markdown("##### Steps")
if detail["steps"]:
    ui.table(detail["steps"], ["step", "kind", "status", "agent", "model", "image", "exit_code", "attempts", "errors",
                               "input_tokens", "output_tokens", "cost_usd", "latency_ms", "last_error"],
             column_config={"status": st.column_config.TextColumn("Last attempt"),
                            "exit_code": st.column_config.NumberColumn("Exit code", format="%d")})
    st.caption("Attempts count provider calls and container/command runs (cache hits excluded); latency is "
               "summed over a step's attempts (a container's or command's duration).")
else:
    st.info("This run made no provider call (yet).", icon=":material/hourglass_empty:")

if detail["calls"]:
    with st.expander(f"Every attempt ({len(detail['calls'])})"):
        ui.table(detail["calls"], ["#", "created", "step", "kind", "attempt", "status", "agent", "model", "image",
                                   "exit_code", "input_tokens", "output_tokens", "cached_tokens", "cost_usd", "priced",
                                   "latency_ms", "error"])
if detail["tool_calls"]:  # the tool calls of the run's agents (MCP servers), one row each
    tools = detail["tool_calls"]
    failed = sum(t["outcome"] != "ok" for t in tools)
    with st.expander(f"Tool calls ({len(tools)}{f', {failed} failed' if failed else ''})"):
        ui.table(tools, ["created", "step", "attempt", "tool", "outcome", "duration_s", "arguments", "error"])
if detail["dead_letters"]:
    with st.expander(f"Dead letters ({len(detail['dead_letters'])}): steps that failed for good", expanded=True):
        ui.table(detail["dead_letters"], ["created", "step", "agent", "model", "attempts", "error"])
        st.caption("Re-run the failed steps with `orchestra rerun " + run["flow_run_id"] + "`.")
if detail["inputs"]:
    with st.expander("Inputs"):
        ui.table(detail["inputs"], ["input", "value"])
