"""Costs: spend by model, agent, workflow and day; calls that could not be priced."""

import streamlit as st

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
m = st.columns(4)
m[0].metric("Cost", ui.money(total_cost), border=True)
m[1].metric("Calls", ui.count(total_calls), border=True)
m[2].metric("Tokens", ui.count(total_tokens), border=True, help="Input + output tokens.")
m[3].metric("Unpriced calls", ui.count(gaps["calls"]), border=True,
            help="Successful calls to models genai-prices has no price for; they count as $0.")

if gaps["calls"]:
    listed = ", ".join(f"`{g['model']}` ({g['calls']} call{'s' if g['calls'] != 1 else ''}, "
                       f"{ui.count(g['input_tokens'] + g['output_tokens'])} tokens)" for g in gaps["models"][:8])
    more = f" and {len(gaps['models']) - 8} more" if len(gaps["models"]) > 8 else ""
    st.warning(
        f"**{gaps['calls']} call{'s' if gaps['calls'] != 1 else ''} could not be priced** and count as $0 "
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

st.subheader("Breakdown")
columns = ["label", "calls", "input_tokens", "output_tokens", "cached_tokens", "cost_usd"]
tabs = st.tabs(["Models", "Agents", "Workflows", "Days"])
for tab, (name, rows) in zip(tabs, (*groups.items(), ("day", ui.cost_rows(ledger, "day", days)))):
    with tab:
        ui.table(rows, columns, column_config={"label": st.column_config.TextColumn(name.capitalize())})
