"""One run, as the run page (``views/run.py?id=...``) and the Runs page show it: the first
failure at the top, the figures, the DAG of every step coloured by state, a timeline of
the steps and their calls, then each step's prompt, output, attempts, errors and
whatever fields its kind adds. While the run is RUNNING the body is a fragment that
re-reads the ledger every ``FOLLOW_S`` seconds; once the run is final the page reruns
once and stops following."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from dashboard import auth, ui
from dashboard import data as dd

FOLLOW_S = 2.0


def render(flow_run_id: str, key: str = "run") -> None:
    detail = dd.run_detail(dd.store_for(), flow_run_id)  # not cached: a live run changes every second
    if detail is None:
        st.warning(f"Run `{flow_run_id}` is not in the ledger (yet): a run that was just started appears once its "
                   "flow run begins.", icon=":material/hourglass_empty:")
        return
    following = not detail["final"]

    @st.fragment(run_every=FOLLOW_S if following else None)
    def body() -> None:
        fresh = dd.run_detail(dd.store_for(), flow_run_id) or detail
        if following and fresh["final"]:
            st.rerun()  # the whole page once more, without the timer
        _draw(fresh, key, following)

    body()


def _draw(detail: dict[str, Any], key: str, following: bool) -> None:
    run, steps = detail["run"], detail["steps"]
    head, link = st.columns([4, 1], vertical_alignment="center")
    head.subheader(f"{run['workflow']} {ui.badge(run['state'])}")
    url = dd.flow_run_url(run["flow_run_id"], ui.prefect_ui_url())
    if url:
        link.link_button("Open in Prefect UI", url, icon=":material/open_in_new:", width="stretch")
    else:
        link.caption("Prefect UI link: set PREFECT_API_URL or start the local server (`orchestra server start`).")
    done = sum(s["state"] in ("COMPLETED", "FAILED", "SKIPPED", "NOT_READY", "CANCELLED") for s in steps)
    st.caption(
        f"Flow run `{run['flow_run_id']}` · started {run['started']:%Y-%m-%d %H:%M:%S} UTC"
        + (f" · ended {run['ended']:%Y-%m-%d %H:%M:%S} UTC" if run["ended"] else " · still running")
        + (f" · model override `{run['model_override']}`" if run.get("model_override") else "")
        + (f" · {done} of {len(steps)} steps finished" if steps else "")
        + (f" · following live (every {FOLLOW_S:g} s)" if following else "")
    )
    if following and steps:
        st.progress(done / len(steps))
    first = detail["first_failure"]
    if first:
        where = f"step **{first['step']}**: " if first["step"] else ""
        st.error(f"**The run failed** — {where}{first['error'] or 'no message'}", icon=":material/error:")
    m = st.columns([1, 1, 1.15, 1.3, 0.8])  # room for "$0.000897" and "12.3k / 4.5k" at 1440 px
    m[0].metric("Duration", ui.seconds(run["duration_s"]) if run["duration_s"] is not None else "running",
                border=True)
    m[1].metric("Provider calls", ui.count(run["provider_calls"]), border=True,
                help="Requests sent to a provider (retries included); cache hits are counted apart.")
    m[1].caption(f"{run['cache_hits']} from the cache" if run["cache_hits"] else "none from the cache")
    m[2].metric("Tokens in / out", f"{ui.count(run['input_tokens'])} / {ui.count(run['output_tokens'])}",
                border=True)
    m[3].metric("Cost", ui.money(run["cost_usd"]), border=True,
                help=f"Budget {ui.money(run['budget_usd'])}" if run.get("budget_usd") else None)
    if run.get("budget_usd"):
        m[3].caption(f"{run['cost_usd'] / run['budget_usd']:.0%} of the {ui.money(run['budget_usd'])} budget")
    m[4].metric("Steps", f"{done} / {len(steps)}" if steps else "—", border=True)
    _controls(detail, key)

    if steps:
        left, right = st.columns([1, 1], gap="large")
        with left:
            ui.chart(ui.dag(steps), key=f"{key}_dag")
        with right:
            fig = ui.timeline(steps)
            if fig is None:
                st.info("No step has started yet.", icon=":material/hourglass_empty:")
            else:
                ui.chart(fig, key=f"{key}_timeline")
        st.markdown("##### Steps")
        kinds = {s.get("kind") for s in steps}
        ui.table(steps, ["step", "state", *(["kind"] if len(kinds) > 1 else []), "agent", "model", "attempts",
                         "errors", "input_tokens", "output_tokens", "cost_usd", "duration_s", "why"],
                 key=f"{key}_steps",
                 column_config={"kind": st.column_config.TextColumn("Kind"),
                                "why": st.column_config.TextColumn("Why it did not complete", width="medium")},
                 csv=f"{run['flow_run_id']}-steps.csv")
        # one step's details at a time (the first failure first): a page of many steps stays light
        names = [s["step"] for s in steps]
        first = detail["first_failure"]
        default = names.index(first["step"]) if first and first["step"] in names else 0
        picked = st.selectbox("Step details", names, index=default, key=f"{key}_step",
                              format_func=lambda n: f"{n} · {next(s['state'] for s in steps if s['step'] == n)}")
        _step_details(next(s for s in steps if s["step"] == picked), key)
    else:
        st.info("This run has no recorded step yet.", icon=":material/hourglass_empty:")

    if detail["calls"]:
        with st.expander(f"Every attempt ({len(detail['calls'])})"):
            ui.table(detail["calls"], ["#", "created", "step", "kind", "attempt", "status", "agent", "model", "image",
                                       "exit_code", "input_tokens", "output_tokens", "cached_tokens", "cost_usd",
                                       "priced", "latency_ms", "error"],
                     key=f"{key}_calls", csv=f"{run['flow_run_id']}-calls.csv")
    if detail["dead_letters"]:
        with st.expander(f"Dead letters ({len(detail['dead_letters'])}): steps that failed for good", expanded=True):
            ui.table(detail["dead_letters"], ["created", "step", "agent", "model", "attempts", "error"],
                     key=f"{key}_dead")
            st.caption("Re-run the failed steps with `orchestra rerun " + run["flow_run_id"] + "`.")
    if detail["inputs"]:
        with st.expander("Inputs"):
            ui.table(detail["inputs"], ["input", "value"], key=f"{key}_inputs")


def _step_details(s: dict[str, Any], key: str) -> None:
    icon = {"COMPLETED": ":material/check_circle:", "FAILED": ":material/error:", "RUNNING": ":material/sync:",
            "SKIPPED": ":material/redo:", "NOT_READY": ":material/block:", "PAUSED": ":material/pause_circle:"}
    label = f"{s['step']} · {s['state']}" + (f" · {s['kind']}" if s.get("kind") else "")
    with st.container(border=True):
        st.markdown(f"{icon.get(s['state'], ':material/radio_button_unchecked:')} **{label}**")
        if s.get("why"):
            (st.error if s["state"] == "FAILED" else st.info)(s["why"])
        facts = [f"{k}: `{s[k]}`" for k in ("agent", "model") if s.get(k)]
        if s.get("items"):
            facts.append(f"for_each: {s['items']} items")
        if s.get("duration_s") is not None:
            facts.append(f"{s['duration_s']:.1f} s")
        if s.get("attempts"):
            facts.append(f"{s['attempts']} attempt{'s' if s['attempts'] != 1 else ''}")
        if facts:
            st.caption(" · ".join(facts))
        if s.get("prompt"):
            st.markdown("**Prompt**")
            st.code(s["prompt"], language=None, wrap_lines=True)
        if s.get("output") is not None:
            st.markdown("**Output**")
            out = s["output"]
            if isinstance(out, (dict, list)):
                st.json(out, expanded=1)
            else:
                st.code(str(out), language=None, wrap_lines=True)
        extras = dd.step_extras(s)
        for name, value in extras.items():  # a kind's own fields (tool calls, image, exit code, ...)
            st.markdown(f"**{name.replace('_', ' ').capitalize()}**")
            if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
                ui.table(value, key=f"{key}_{s['step']}_{name}")
            elif isinstance(value, (dict, list)):
                st.json(value, expanded=1)
            else:
                st.code(value if isinstance(value, str) else json.dumps(value), language=None, wrap_lines=True)
        if s.get("calls"):
            st.markdown("**Attempts**")
            ui.table(s["calls"], ["created", "attempt", "status", "agent", "model", "input_tokens", "output_tokens",
                                  "cost_usd", "latency_ms", "error"], key=f"{key}_{s['step']}_calls")


def _controls(detail: dict[str, Any], key: str) -> None:
    """Approve / reject a paused run, cancel a running one (members and above)."""
    from orchestra import access, actions

    who = auth.actor()
    run = detail["run"]
    if run["state"] != "RUNNING" or who is None:
        return
    paused = [s for s in detail["steps"] if s["state"] == "PAUSED"]
    can_approve = access.allowed(who, "run.approve")
    can_cancel = access.allowed(who, "run.cancel")
    if not (can_approve and paused) and not can_cancel:
        return
    c = st.columns([1, 1, 1, 3])
    try:
        if can_approve and paused:
            reason = c[3].text_input("Reason (for a rejection)", key=f"{key}_reason", label_visibility="collapsed",
                                     placeholder="Reason for a rejection (optional)")
            if c[0].button("Approve", key=f"{key}_approve", type="primary", icon=":material/check:"):
                actions.answer_approval(who, run["flow_run_id"], approved=True)
                st.toast(f"Approved {paused[0]['step']}")
            if c[1].button("Reject", key=f"{key}_reject", icon=":material/close:"):
                actions.answer_approval(who, run["flow_run_id"], approved=False, reason=reason)
                st.toast(f"Rejected {paused[0]['step']}")
        if can_cancel and c[2].button("Cancel run", key=f"{key}_cancel", icon=":material/stop_circle:"):
            actions.cancel_run(who, run["flow_run_id"])
            st.toast("Cancellation requested")
    except (ValueError, RuntimeError, access.Forbidden) as exc:
        st.error(f"**Not done:** {exc}", icon=":material/error:")
