"""Agents: the registry (agents/*.yaml), breakers and health checks; for admins a form to
create or edit an agent file (validated as agents.base.AgentConfig, a diff to review
before it is saved through orchestra.agent_files: role checked, audited, a version
kept), each agent's versions with restore, delete with confirmation, provider limits;
and a button that calls an agent once.

``st.session_state["agents_dir"]`` names another folder of agent files (tests use it);
by default the page manages the registry the engine reads, ``agents/``.
"""

import streamlit as st

from agents.base import default_model as current_default_model
from dashboard import auth, ui
from dashboard import data as dd
from orchestra import access, actions, agent_files

NEW, EDIT = "Create a new agent", "Edit an agent"

st.title("Agents")
folder = dd.agents_dir(st.session_state.get("agents_dir"))
ledger = ui.key()
agents, problems = ui.agent_rows(str(folder))
names = [a["name"] for a in agents]
try:
    shown_folder = folder.relative_to(dd.agents_dir().parent)
except ValueError:
    shown_folder = folder
st.caption(f"{len(agents)} agent{'s' if len(agents) != 1 else ''} in `{shown_folder}/` · a workflow step names "
           f"one with `agent:`; an agent without a model (\"default\") uses the default model, "
           f"`{current_default_model()}`.")

for problem in problems:
    st.error(f"**Agent file not loaded:** {problem}", icon=":material/error:")

if agents:
    optional = [c for c in ("fallback", "credentials", "daily_budget_usd") if any(a[c] for a in agents)]
    if any(a["file"] not in (f"{a['name']}.yaml", f"{a['name']}.yml") for a in agents):
        optional.append("file")
    shown = [{**a, "model": "default" if a["model"].startswith("default (") else a["model"]} for a in agents]
    ui.table(shown, ["name", "description", "model", "capabilities", *optional],
             column_config={"name": st.column_config.TextColumn("Agent"),
                            "description": st.column_config.TextColumn("Description", width="medium"),
                            "capabilities": st.column_config.TextColumn("Capabilities", width="medium"),
                            "fallback": st.column_config.TextColumn("Falls back to"),
                            "credentials": st.column_config.TextColumn("Credentials block"),
                            "file": st.column_config.TextColumn("File")})
else:
    st.info(f"No agent files in `{shown_folder}/` yet: create one below.", icon=":material/smart_toy:")

st.subheader("Circuit breakers")
breakers = ui.breaker_rows(ledger)
if breakers:
    ui.table(breakers, ["model", "endpoint", "state", "failures", "opened", "retry_at", "updated"])
    n_open = sum(b["state"] != "closed" for b in breakers)
    if n_open:
        st.caption(f"{n_open} endpoint{'s are' if n_open != 1 else ' is'} not closed: calls to "
                   f"{'them' if n_open != 1 else 'it'} fail fast or go to fallback agents until the retry time.")
else:
    st.info("No breaker has recorded a failure: every provider endpoint is closed (healthy).",
            icon=":material/check_circle:")

st.subheader("Last health checks")
health = ui.health_rows(ledger)
if health:
    ui.table(health, ["agent", "status", "model", "latency_ms", "checked", "error"])
    st.caption("The latest check of each agent; `orchestra agents health` runs new ones.")
else:
    st.info("No health check yet: `orchestra agents health` probes every agent.",
            icon=":material/monitor_heart:")

# --------------------------------------------------------------------------- create / edit
actor = auth.actor()
can_edit = access.allowed(actor, "agent.edit")
st.subheader("Create or edit an agent")
if not can_edit:
    st.caption(f"You are a {actor.role if actor else 'visitor'}: agents are read-only for you (editing needs the "
               "admin role).")
mode = NEW
if can_edit:
    mode = st.radio("Action", [NEW, EDIT] if names else [NEW], horizontal=True, key="agent_form_mode",
                    label_visibility="collapsed")
target = st.selectbox("Agent to edit", names, key="agent_form_target") if can_edit and mode == EDIT else None
values = dd.agent_form_values(target, folder)
prefix = f"agent_form_{target or 'new'}"
default_model = current_default_model()

if can_edit:
    with st.form(prefix, border=True):
        c = st.columns([1, 2])
        name = c[0].text_input("Name", values["name"], key=f"{prefix}_name", disabled=mode == EDIT,
                               placeholder="e.g. reviewer", help="Letters, digits, '-', '_'; the file is <name>.yaml.")
        description = c[1].text_input("Description", values["description"], key=f"{prefix}_description",
                                      placeholder="What the agent is for (shown in lists and used by routing)")
        model = st.text_input("Model", values["model"], key=f"{prefix}_model",
                              placeholder=f"empty: the default model ({default_model})",
                              help="provider:model with provider openai, anthropic or fast-agent, "
                                   "e.g. openai:gpt-4.1-mini, anthropic:claude-sonnet-4-0, fast-agent:passthrough.")
        instruction = st.text_area("Instruction", values["instruction"], key=f"{prefix}_instruction", height=120,
                                   placeholder="The system prompt")
        c = st.columns(3)
        temperature = c[0].text_input("Temperature", values["temperature"], key=f"{prefix}_temperature",
                                      placeholder="provider default")
        max_tokens = c[1].text_input("Max tokens", values["max_tokens"], key=f"{prefix}_max_tokens",
                                     placeholder="provider default")
        budget = c[2].text_input("Daily budget (USD)", values["daily_budget_usd"], key=f"{prefix}_budget",
                                 placeholder="no budget")
        capabilities = st.text_input("Capabilities", values["capabilities"], key=f"{prefix}_capabilities",
                                     placeholder="comma-separated, e.g. python, code-review")
        c = st.columns(3)
        fallback_options = sorted((set(names) - {target}) | set(values["fallback"]))
        fallback = c[0].multiselect("Fallback agents", fallback_options, default=values["fallback"],
                                    key=f"{prefix}_fallback", help="Tried in order when this agent's provider fails.")
        servers = c[1].text_input("MCP servers", values["servers"], key=f"{prefix}_servers",
                                  placeholder="fast-agent server names, comma-separated")
        credentials = c[2].text_input("Credentials block", values["credentials"], key=f"{prefix}_credentials",
                                      placeholder="empty: environment variables",
                                      help="Name of a ProviderCredentials Prefect block (a name, never a key).")
        reviewed = st.form_submit_button("Review changes", type="primary", icon=":material/difference:")

    if reviewed:
        form = {"name": name, "description": description, "model": model, "instruction": instruction,
                "temperature": temperature, "max_tokens": max_tokens, "daily_budget_usd": budget,
                "capabilities": capabilities, "fallback": fallback, "servers": servers, "credentials": credentials}
        st.session_state.pop("agent_plan", None)
        try:
            plan = dd.preview_agent(form, folder, overwrite=mode == EDIT)
        except dd.AgentFormError as exc:
            st.error("**Not saved** — nothing was written. Fix:\n\n"
                     + "\n".join(f"- **{field}**: {message}" for field, message in exc.errors),
                     icon=":material/error:")
        else:
            st.session_state["agent_plan"] = {"form": form, "mode": mode, "old": plan.old, "diff": plan.diff,
                                              "file": plan.file.name, "changed": plan.changed}

    plan = st.session_state.get("agent_plan")
    if plan and plan["mode"] == mode and (mode == NEW or plan["form"]["name"] == target):
        with st.container(border=True):
            if not plan["changed"]:
                st.info(f"`{plan['file']}` would not change.", icon=":material/check:")
            else:
                st.markdown(f"**Changes to `{plan['file']}`** — review them, then save:"
                            if plan["old"] is not None else f"**New file `{plan['file']}`:**")
                st.code(plan["diff"], language="diff")
                c = st.columns([1, 1, 4])
                if c[0].button("Save", type="primary", icon=":material/save:", key="agent_save"):
                    try:
                        path = dd.save_agent(plan["form"], folder, overwrite=plan["mode"] == EDIT, actor=actor,
                                             expected=plan["old"])
                    except dd.AgentFormError as exc:
                        st.error("**Not saved** — nothing was written: "
                                 + "; ".join(f"**{f}**: {m}" for f, m in exc.errors), icon=":material/error:")
                    except access.Forbidden as exc:
                        st.error(f"**Not saved:** {exc}.", icon=":material/block:")
                    except OSError as exc:
                        st.error(f"**Not saved:** cannot write to `{shown_folder}/`: {exc.strerror or exc}",
                                 icon=":material/error:")
                    else:
                        ui.agent_rows.clear()
                        st.session_state.pop("agent_plan", None)
                        st.session_state["agent_saved"] = path.name
                        if plan["mode"] == NEW:  # an empty form for the next agent
                            for k in [k for k in st.session_state if str(k).startswith(f"{prefix}_")]:
                                del st.session_state[k]
                        st.rerun()  # the registry table above shows the new file
                if c[1].button("Discard", key="agent_discard"):
                    st.session_state.pop("agent_plan", None)
                    st.rerun()
saved = st.session_state.pop("agent_saved", None)
if saved:
    st.success(f"Saved `{saved}`: the registry above and `orchestra agents list` now show it.",
               icon=":material/check:")

# --------------------------------------------------------------------------- versions, restore, delete
st.subheader("Versions")
known = sorted(set(names) | set(dd.versioned_agents(dd.store_for())))
if not known:
    st.info("No agent yet.")
else:
    c = st.columns([1, 3])
    which = c[0].selectbox("Agent", known, key="versions_agent")
    versions = agent_files.history(which)
    if not versions:
        c[1].caption(f"`{which}` has not been saved through Orchestra yet: its first save keeps the file as it is "
                     "now as version 1.")
    else:
        with c[1]:
            ui.table(versions, ["version", "action", "actor", "created", "file"], key="versions_table",
                     column_config={"version": st.column_config.NumberColumn("Version"),
                                    "action": st.column_config.TextColumn("Saved by"),
                                    "actor": st.column_config.TextColumn("Person")})
        if access.allowed(actor, "agent.restore"):
            number = st.selectbox("Version to restore", [v["version"] for v in versions], key="restore_version")
            current = dd.agent_file_text(which, folder)
            text = agent_files.version_text(which, number)
            change = agent_files.diff(current, text, which)
            if change:
                with st.expander(f"What restoring version {number} changes", expanded=False):
                    st.code(change, language="diff")
                if st.button(f"Restore version {number}", key="restore_button", icon=":material/history:"):
                    try:
                        agent_files.restore(actor, which, number, folder)
                    except (ValueError, OSError, access.Forbidden) as exc:
                        st.error(f"**Not restored:** {exc}", icon=":material/error:")
                    else:
                        ui.agent_rows.clear()
                        st.session_state["agent_saved"] = f"{which} (version {number} restored)"
                        st.rerun()
            else:
                st.caption(f"Version {number} is what the file holds now.")
    if access.allowed(actor, "agent.delete") and which in names:
        with st.expander(f"Delete {which}"):
            st.warning(f"This removes `{which}`'s file; workflows that name it stop validating. Its text stays "
                       "in the versions above and can be restored.", icon=":material/warning:")
            confirm = st.text_input(f"Type {which} to confirm", key="delete_confirm")
            if st.button("Delete agent", key="delete_button", type="primary", disabled=confirm != which,
                         icon=":material/delete:"):
                try:
                    agent_files.delete(actor, which, folder)
                except (ValueError, OSError, access.Forbidden) as exc:
                    st.error(f"**Not deleted:** {exc}", icon=":material/error:")
                else:
                    ui.agent_rows.clear()
                    st.session_state.pop("delete_confirm", None)
                    st.session_state["agent_saved"] = f"{which} deleted"
                    st.rerun()

# --------------------------------------------------------------------------- provider limits
st.subheader("Provider limits")
limit_rows = dd.limit_rows(dd.store_for())
if limit_rows:
    ui.table(limit_rows, ["provider", "concurrency", "rpm", "updated"], key="limits_table",
             column_config={"provider": st.column_config.TextColumn("Provider"),
                            "concurrency": st.column_config.NumberColumn("Calls in flight"),
                            "rpm": st.column_config.NumberColumn("Requests / minute")})
else:
    st.caption("No provider has a limit.")
if access.allowed(actor, "limits.set"):
    with st.form("limits_form", border=True):
        c = st.columns(3)
        provider = c[0].selectbox("Provider", dd.provider_names(), key="limits_provider")
        concurrency_text = c[1].text_input("Calls in flight", key="limits_concurrency", placeholder="no limit")
        rpm_text = c[2].text_input("Requests per minute", key="limits_rpm", placeholder="no limit")
        if st.form_submit_button("Set limits", icon=":material/speed:"):
            try:
                parsed = dd.parse_limits(concurrency_text, rpm_text)
                actions.set_limit(actor, provider, **parsed)
            except (ValueError, access.Forbidden) as exc:
                st.error(f"**Limits not changed:** {exc}", icon=":material/error:")
            else:
                st.success(f"{provider}: limits saved (workers pick them up on their next run; "
                           "`orchestra limits set` also mirrors them to Prefect).", icon=":material/check:")

# --------------------------------------------------------------------------- test
st.subheader("Test an agent")
if not names:
    st.info("Create an agent first.")
    st.stop()
c = st.columns([1, 3])
test_name = c[0].selectbox("Agent", names, key="test_agent_name")
prompt = c[1].text_area("Prompt", "Say hello in one short sentence.", key="test_agent_prompt", height=80)
if st.button("Test agent", key="test_agent_button", icon=":material/play_arrow:"):
    chosen = next(a for a in agents if a["name"] == test_name)
    with st.spinner(f"Calling {test_name} ({chosen['model']}); the first fast-agent call loads fast-agent "
                    "and takes a few seconds …"):
        st.session_state["test_agent_result"] = (test_name, dd.try_agent(test_name, prompt, folder=folder))

result = st.session_state.get("test_agent_result")
if result and result[0] == test_name:
    out = result[1]
    if out["ok"]:
        st.markdown(f"**Answer** from `{out['model']}`")
        m = st.columns(3)
        m[0].metric("Latency", f"{out['latency_ms']:,.0f} ms", border=True)
        m[1].metric("Tokens in / out", f"{out['input_tokens']:,} / {out['output_tokens']:,}", border=True)
        m[2].metric("Cost", ui.money(out["cost_usd"]) + ("" if out["priced"] else " (unpriced)"), border=True)
        st.code(out["output"], language=None, wrap_lines=True)
        st.caption("Test calls are not recorded in the ledger.")
    else:
        st.error(f"**The call failed:** {out['error']}", icon=":material/error:")
