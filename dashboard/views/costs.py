"""Costs: spend by model, agent, workflow and day, per run and per step over time, money
spent on what failed, budgets and how much of them is used, p50/p95 latency per model
and agent, calls that could not be priced; every table exports to CSV."""

import streamlit as st

from dashboard import data as dd
from dashboard import ui

WINDOWS = {"All time": None, "Last 30 days": 30, "Last 7 days": 7}

st.title("Costs")
ledger = ui.key()
if ui.kpis(ledger)["all"]["calls"] == 0:
    ui.empty_ledger()
    st.stop()

window = st.segmented_control("Period", list(WINDOWS), default="All time", required=True, key="costs_window") or "All time"
days = WINDOWS[window]
by_model = ui.cost_rows(ledger, "model", days)
if not by_model:
    st.info(f"No provider calls in this period ({window.lower()}).", icon=":material/event_busy:")
    st.stop()

total_cost = sum(r["cost_usd"] for r in by_model)
total_calls = sum(r["calls"] for r in by_model)
total_tokens = sum(r["tokens"] for r in by_model)
gaps = ui.unpriced(ledger, days)
failures = ui.failure_costs(ledger, days)
m = st.columns(5)
m[0].metric("Cost", ui.money(total_cost), border=True)
m[1].metric("Calls", ui.count(total_calls), border=True, help="Ledger rows: provider attempts and cache hits.")
m[2].metric("Tokens", ui.count(total_tokens), border=True, help="Input + output tokens.")
m[3].metric("Unpriced calls", ui.count(gaps["calls"]), border=True,
            help="Successful calls to models genai-prices has no price for; they count as $0.")
wasted = failures["failed_attempts"]["cost_usd"] + failures["failed_steps"]["cost_usd"]
m[4].metric("Spent on failures", ui.money(wasted), border=True,
            help="Failed attempts, plus successful calls of steps that failed anyway.")

if gaps["calls"]:
    listed = ", ".join(f"`{g['model']}` ({g['calls']:,} call{'s' if g['calls'] != 1 else ''}, "
                       f"{ui.count(g['input_tokens'] + g['output_tokens'])} tokens)" for g in gaps["models"][:8])
    more = f" and {len(gaps['models']) - 8} more" if len(gaps["models"]) > 8 else ""
    st.warning(
        f"**{gaps['calls']:,} call{'s' if gaps['calls'] != 1 else ''} could not be priced** and count as $0 "
        f"in every total here: {listed}{more}. The costs shown are a lower bound.",
        icon=":material/price_check:",
    )

top = by_model[0]
st.markdown(f"**Top model:** `{top['label']}` · {ui.money(top['cost_usd'])} · "
            f"{top['calls']} calls · {ui.money(top['cost_usd'] / top['calls'] if top['calls'] else 0)} per call")

groups = {"model": by_model, "agent": ui.cost_rows(ledger, "agent", days),
          "workflow": ui.cost_rows(ledger, "workflow", days)}
day_rows = ui.cost_per_day(ledger, days)

unpriced_notes = {g["model"]: "unpriced" for g in gaps["models"]}
HEIGHT = 340
row1 = st.columns(2, gap="large")
with row1[0]:
    ui.chart(ui.ranked_bars(groups["model"], "By model", height=HEIGHT, notes=unpriced_notes), key="costs_by_model")
with row1[1]:
    ui.chart(ui.ranked_bars(groups["agent"], "By agent", height=HEIGHT), key="costs_by_agent")
row2 = st.columns(2, gap="large")
with row2[0]:
    ui.chart(ui.ranked_bars(groups["workflow"], "By workflow", height=HEIGHT), key="costs_by_workflow")
with row2[1]:
    ui.chart(ui.day_bars(day_rows, "By day (UTC)", height=HEIGHT), key="costs_by_day")
st.caption("The charts show the 10 most expensive entries of each group; the tables below list them all.")

row3 = st.columns(2, gap="large")
with row3[0]:
    per_run = ui.run_costs(ledger, days)
    shown = f"the newest {len(per_run):,} runs" if len(per_run) >= dd.RUN_POINTS else f"{len(per_run):,} runs"
    ui.chart(ui.run_scatter(per_run, f"Cost per run ({shown})", height=HEIGHT), key="costs_per_run")
with row3[1]:
    per_step = ui.step_cost_per_day(ledger, days)
    if per_step:
        ui.chart(ui.step_day_bars(per_step, height=HEIGHT), key="costs_per_step")

st.subheader("Failures")
f = st.columns(3)
f[0].metric("Failed attempts", ui.money(failures["failed_attempts"]["cost_usd"]), border=True,
            help="What the provider attempts that failed cost (a 429 or a timeout usually costs nothing).")
f[0].caption(f"{ui.count(failures['failed_attempts']['calls'])} failed attempts")
f[1].metric("Steps that failed anyway", ui.money(failures["failed_steps"]["cost_usd"]), border=True,
            help="Successful calls of steps that ended FAILED: an output that failed its schema, a later item.")
f[1].caption(f"{ui.count(failures['failed_steps']['calls'])} calls")
f[2].metric("Runs that did not complete", ui.money(failures["failed_runs"]["cost_usd"]), border=True,
            help="Everything FAILED, CRASHED and CANCELLED runs cost.")
f[2].caption(f"{ui.count(failures['failed_runs']['runs'])} runs")

st.subheader("Budgets")
budgets = ui.budget_rows(ledger, str(st.session_state.get("agents_dir") or ""))
b = st.columns(2, gap="large")
with b[0]:
    st.markdown("**Agents' daily budgets** (since midnight UTC)")
    if budgets["agents"]:
        ui.table(budgets["agents"], ["agent", "budget_usd", "spent_usd", "used"], key="budget_agents",
                 csv="agent-budgets.csv", column_config={"budget_usd": st.column_config.NumberColumn(
                     "Daily budget", format="$%.2f")})
    else:
        st.caption("No agent has a `daily_budget_usd`.")
with b[1]:
    st.markdown("**Runs with a budget** (newest)")
    if budgets["runs"]:
        ui.table(budgets["runs"], ["started", "workflow", "budget_usd", "cost_usd", "used"],
                 key="budget_runs", csv="run-budgets.csv")
    else:
        st.caption("No run had a budget (`budget_usd:` or `orchestra run --budget`).")

st.subheader("Latency")
lat = st.columns(2, gap="large")
for col, by in zip(lat, ("model", "agent")):
    with col:
        rows = ui.latency_rows(ledger, by, days)
        st.markdown(f"**By {by}** (successful provider calls)")
        ui.table(rows, ["label", "calls", "p50_ms", "p95_ms", "mean_ms"], key=f"latency_{by}",
                 csv=f"latency-by-{by}.csv", column_config={"label": st.column_config.TextColumn(by.capitalize())})

st.subheader("Breakdown")
columns = ["label", "calls", "input_tokens", "output_tokens", "cached_tokens", "cost_usd"]
tabs = st.tabs(["Models", "Agents", "Workflows", "Days"])
for tab, (name, rows) in zip(tabs, (*groups.items(), ("day", ui.cost_rows(ledger, "day", days)))):
    with tab:
        ui.table(rows, columns, column_config={"label": st.column_config.TextColumn(name.capitalize())},
                 key=f"breakdown_{name}", csv=f"costs-by-{name}.csv")
