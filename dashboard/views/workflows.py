"""Workflows: the shipped ones (deployments/workflows) and any workflow file, each with its
validation result and a DAG preview; a form built from the workflow's typed inputs starts
a run in the background (members and above, through orchestra.actions: audited) and opens
its run page, which follows it."""

import streamlit as st

from dashboard import auth, ui
from dashboard import data as dd
from orchestra import access

st.title("Workflows")
actor = auth.actor()
extra = st.session_state.setdefault("workflow_files", [])
entries = dd.workflow_entries(extra)
valid = sum(e["ok"] for e in entries)
st.caption(f"{len(entries)} workflow{'s' if len(entries) != 1 else ''} · {valid} valid · shipped ones live in "
           "`deployments/workflows/`; `orchestra validate FILE` checks a file the same way.")

with st.expander("Open another workflow file"):
    c = st.columns([4, 1], vertical_alignment="bottom")
    path = c[0].text_input("Path of a workflow file on the dashboard's machine", key="workflow_file_path",
                           placeholder="/path/to/workflow.yaml")
    if c[1].button("Open", key="workflow_file_open") and path.strip() and path.strip() not in extra:
        extra.append(path.strip())
        st.rerun()

names = [f"{e['name']} ({e['source']})" if e["source"] == "file" else e["name"] for e in entries]
if not entries:
    st.info("No workflow file yet.", icon=":material/account_tree:")
    st.stop()
ui.table([{"workflow": n, "type": e["type"] or "—", "steps": len(e["steps"]), "inputs": ", ".join(e["inputs"]),
           "valid": "yes" if e["ok"] else f"no: {len(e['problems'])} problem(s)", "description": e["description"]}
          for n, e in zip(names, entries)], ["workflow", "type", "steps", "inputs", "valid", "description"],
         key="workflows_table",
         column_config={"type": st.column_config.TextColumn("Type"), "steps": st.column_config.NumberColumn("Steps"),
                        "inputs": st.column_config.TextColumn("Inputs"), "valid": st.column_config.TextColumn("Valid"),
                        "description": st.column_config.TextColumn("Description", width="large")})

choice = st.selectbox("Workflow", range(len(entries)), format_func=lambda i: names[i], key="workflow_pick")
wf = entries[choice]
st.subheader(wf["name"])
if wf["description"]:
    st.caption(wf["description"])
if not wf["ok"]:
    st.error(f"**`{wf['file']}` is not valid:**\n\n" + "\n".join(f"- {p}" for p in wf["problems"]),
             icon=":material/error:")
    st.stop()
st.success(f"Valid: {len(wf['steps'])} step{'s' if len(wf['steps']) != 1 else ''}, type {wf['type']}.",
           icon=":material/check_circle:")
left, right = st.columns([3, 2], gap="large")
with left:
    ui.chart(ui.dag(wf["steps"]), key="workflow_dag")
with right:
    st.markdown("##### Run it")
    if not access.allowed(actor, "run.start"):
        st.caption(f"You are a {actor.role if actor else 'visitor'}: starting runs needs the member role.")
        st.stop()
    with st.form(f"run_{wf['name']}", border=True):
        values = {}
        for name, spec in wf["inputs"].items():
            label = f"{name} ({spec['type']})" + (" *" if spec["required"] else "")
            help_ = spec["description"] or None
            key = f"input_{wf['name']}_{name}"
            if spec["type"] == "boolean":
                values[name] = st.checkbox(label, value=bool(spec["default"]), key=key, help=help_)
            elif spec["type"] in ("object", "array"):
                values[name] = st.text_area(label, dd.input_text(spec["default"]), key=key, help=help_,
                                            placeholder="JSON, e.g. [\"a\", \"b\"]" if spec["type"] == "array"
                                            else "JSON, e.g. {\"k\": 1}", height=80)
            else:  # string, number, integer: typed text, coerced as `orchestra run -i name=value` is
                values[name] = st.text_input(label, dd.input_text(spec["default"]), key=key, help=help_)
        if not wf["inputs"]:
            st.caption("This workflow has no inputs.")
        model = st.text_input("Model for every agent (optional)", key=f"model_{wf['name']}",
                              placeholder="e.g. openai:gpt-4.1-mini; empty: each agent's own")
        budget = st.text_input("Budget (USD, optional)", key=f"budget_{wf['name']}", placeholder="no budget")
        go = st.form_submit_button("Run", type="primary", icon=":material/play_arrow:")
    if go:
        from flows.spec import WorkflowError
        from orchestra import actions, runs

        given = {k: v for k, v in values.items() if not (isinstance(v, str) and v == "" and
                                                         not wf["inputs"][k]["required"])}
        given = {k: ("true" if v else "false") if isinstance(v, bool) else v for k, v in given.items()}
        try:
            budget_usd = dd.parse_budget(budget)
            request = runs.prepare(wf["file"], given, model=model.strip() or None, budget=budget_usd)
        except (WorkflowError, ValueError) as exc:
            st.error(f"**Not started** — fix the form:\n\n{exc}", icon=":material/error:")
            st.stop()
        try:
            with st.spinner("Starting the run (the first one starts the local Prefect server: ~20 s) …"):
                runs.ensure_prefect()
                flow_run_id = actions.start_run(actor, request)
        except access.Forbidden as exc:
            st.error(f"**Not started:** {exc}.", icon=":material/block:")
            st.stop()
        except (RuntimeError, ValueError, OSError) as exc:
            st.error(f"**Not started:** {exc}", icon=":material/error:")
            st.stop()
        st.switch_page("views/run.py", query_params={"id": flow_run_id})
