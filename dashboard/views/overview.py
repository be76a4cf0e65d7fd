"""Overview: KPIs (last 7 days and all time), cost per day, the latest runs."""

import streamlit as st

from dashboard import data as dd
from dashboard import ui

st.title("Overview")
ledger = ui.key()
k = ui.kpis(ledger)
if k["all"]["runs"] == 0 and k["all"]["calls"] == 0:
    ui.empty_ledger()
    st.stop()

recent, total = k["recent"], k["all"]
st.caption(f"Last {k['days']} days · all-time figures underneath")
cols = st.columns([0.9, 1, 1.25, 1, 0.9])  # room for a cost like "$0.000478" at 1440 px
for col, label, now_value, all_value, help_ in (
    (cols[0], "Runs", ui.count(recent["runs"]), ui.count(total["runs"]),
     "Workflow runs started (RUNNING ones included)."),
    (cols[1], "Success rate", ui.percent(recent["success_rate"]), ui.percent(total["success_rate"]),
     "COMPLETED runs out of finished runs (COMPLETED, FAILED, CRASHED, CANCELLED)."),
    (cols[2], "Cost", ui.money(recent["cost_usd"]), ui.money(total["cost_usd"]),
     "Priced provider calls; unpriced models count as $0 (see Costs)."),
    (cols[3], "Provider calls", ui.count(recent["provider_calls"]), ui.count(total["provider_calls"]),
     "Requests sent to a provider, failed attempts included; cache hits are not calls (counted apart)."),
    (cols[4], "Tokens", ui.count(recent["tokens"]), ui.count(total["tokens"]),
     "Input + output tokens."),
):
    with col:
        st.metric(label, now_value, help=help_, border=True)
        st.caption(f"All time: **{all_value}**"
                   + (f" · {ui.count(total['cache_hits'])} cached" if label == "Provider calls" and
                      total["cache_hits"] else ""))

running = total["running"]
if running:
    st.caption(f"{ui.badge('RUNNING')} {running} run{'s' if running != 1 else ''} still running.")

left, right = st.columns([3, 2], gap="large")
with left:
    days = ui.cost_per_day(ledger, 30)
    if any(d["calls"] for d in days):
        ui.chart(ui.day_bars(days, "Cost per day · last 30 days (UTC)"), key="overview_cost_per_day")
    else:
        st.subheader("Cost per day")
        st.info("No provider calls in the last 30 days.", icon=":material/bar_chart:")
with right:
    st.subheader("At a glance")
    runs = ui.recent_runs(ledger, 10)
    if runs:
        last = runs[0]
        st.markdown(
            f"**Latest run:** {last['workflow']} {ui.badge(last['state'])} · {ui.ago(last['started'])} · "
            f"{ui.money(last['cost_usd'])}"
        )
    top = ui.top_workflow(ledger)
    if top:
        st.markdown(f"**Costliest workflow:** {top['workflow']} · {ui.money(top['cost_usd'])} "
                    f"over {top['calls']} calls")
    failed = total["finished"] - total["completed"]
    st.markdown(f"**Finished runs:** {ui.count(total['finished'])} · "
                f"{ui.count(total['completed'])} completed · {ui.count(failed)} did not complete")
    st.page_link("views/costs.py", label="Cost breakdown", icon=":material/payments:")
    st.page_link("views/runs.py", label="All runs and their steps", icon=":material/list_alt:")

st.subheader("Recent runs")
ui.table(dd.with_links(runs), ["started", "workflow", "state", "duration_s", "calls", "tokens", "cost_usd", "link",
                               "error"], key="overview_runs")
