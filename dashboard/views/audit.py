"""Audit log: every change made through Orchestra (agents, limits, users, runs, tasks) and
every refused one, newest first; filter by person, action and outcome (admins and owners)."""

import streamlit as st

from dashboard import data as dd
from dashboard import ui

st.title("Audit log")
st.caption("Who changed what, and when. Before and after are shown as they were recorded: secrets masked.")
ledger = ui.key()
rows = dd.audit_rows(dd.store_for(), limit=5000)
if not rows:
    st.info("Nothing has been changed through Orchestra yet: edits of agents, limits, users and runs started "
            "from the dashboard or the CLI appear here.", icon=":material/policy:")
    st.stop()

ALL = "Everyone"
c1, c2, c3 = st.columns([2, 2, 1])
who = c1.selectbox("Person", [ALL, *sorted({r["actor"] for r in rows})], key="audit_actor")
actions = sorted({r["action"] for r in rows})
picked = c2.multiselect("Actions", actions, key="audit_actions", placeholder="All actions")
outcome = c3.selectbox("Outcome", ["All", "ok", "refused", "failed"], key="audit_outcome")
shown = [r for r in rows if (who == ALL or r["actor"] == who) and (not picked or r["action"] in picked)
         and (outcome == "All" or r["outcome"] == outcome)]
refused = sum(r["outcome"] == "refused" for r in shown)
st.caption(f"{len(shown)} of {len(rows)} entries" + (f" · {refused} refused" if refused else ""))
ui.table(shown, ["at", "actor", "role", "via", "action", "target", "outcome", "before", "after", "detail"],
         key="audit_table", csv="audit.csv",
         column_config={"at": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
                        "actor": st.column_config.TextColumn("Person"),
                        "role": st.column_config.TextColumn("Role"),
                        "via": st.column_config.TextColumn("Via"),
                        "action": st.column_config.TextColumn("Action"),
                        "target": st.column_config.TextColumn("Target"),
                        "outcome": st.column_config.TextColumn("Outcome"),
                        "before": st.column_config.TextColumn("Before", width="medium"),
                        "after": st.column_config.TextColumn("After", width="medium"),
                        "detail": st.column_config.TextColumn("Detail", width="medium")})
