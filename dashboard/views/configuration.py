"""Configuration across systems: providers, models, ledger, Prefect, fast-agent, Dagger,
Orchestra's Prefect blocks. Keys are shown as "set"/"not set" with their source, never
their value; URLs with their passwords masked."""

import streamlit as st

from dashboard import ui

st.title("Configuration")
st.caption("What this dashboard's process sees. Secrets are never shown: only whether they are set and where "
           "they come from.")
cfg = ui.configuration(ui.key())


def settings_table(rows):
    st.table([{k[:1].upper() + k[1:]: v for k, v in r.items()} for r in rows], border="horizontal",
             hide_index=True)


st.subheader("Providers")
settings_table(cfg["providers"])

left, right = st.columns(2, gap="large")
with left:
    st.subheader("Models and ledger")
    settings_table(cfg["general"])
with right:
    st.subheader("Prefect")
    p = cfg["prefect"]
    rows = [
        {"setting": "API", "value": p["api_url"] or "none (ephemeral mode)", "source": p["source"]},
        {"setting": "UI", "value": p["ui_url"] or "—", "source": "PREFECT_UI_URL or derived from the API"},
        {"setting": "server mode", "value": p["mode"], "source": "ORCHESTRA_PREFECT"},
    ]
    if p["local"]:
        rows.append({"setting": "local server", "value": f"running, pid {p['local']['pid']}",
                     "source": "orchestra server start"})
    settings_table(rows)
    show = {True: st.success, False: st.warning, None: st.info}[p["reachable"]]
    show(p["summary"], icon=":material/hub:")
    if p["ui_url"]:
        st.link_button("Open the Prefect UI", p["ui_url"], icon=":material/open_in_new:")

left, right = st.columns(2, gap="large")
with left:
    st.subheader("fast-agent")
    settings_table(cfg["fast_agent"])
with right:
    st.subheader("Dagger engine")
    settings_table(cfg["dagger"])

st.subheader("Orchestra blocks on the Prefect server")
blocks = cfg["blocks"]
if blocks["ok"]:
    st.caption(blocks["message"])
    if any(t["registered"] == "no" for t in blocks["types"]):
        st.info("Register the missing types with `prefect block register -m blocks`.", icon=":material/extension:")
else:
    st.info(blocks["message"], icon=":material/extension:")
st.table([{"Block type": t["type"], "Slug": t["slug"], "Holds": t["holds"], "Registered": t["registered"],
           "Saved blocks": t["documents"]} for t in blocks["types"]], border="horizontal", hide_index=True)
if blocks["documents"]:
    st.table([{"Name": d["name"], "Type": d["type"], "Details": d["details"] or "—",
               "Updated (UTC)": f"{d['updated']:%Y-%m-%d %H:%M}" if d["updated"] else "—"}
              for d in blocks["documents"]], border="horizontal", hide_index=True)
