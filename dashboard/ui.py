"""Shared pieces of the dashboard pages: cached readers over ``dashboard.data``
(``st.cache_data(ttl=5)``, keyed by the ledger the process reads), number formats,
plotly charts, empty states and the sidebar.  No SQL, no Prefect here either."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import Any

import plotly.graph_objects as go
import streamlit as st

from dashboard import data as dd

TTL = 5
ACCENT = "#6C5CE7"
MUTED = "#B2A9F5"
ERROR = "#E17055"


# --------------------------------------------------------------------------- cached readers
# Every reader of the ledger takes `ledger` (ui.key()) first: a process pointed at
# another ledger (ORCHESTRA_DB_URL) never sees the previous one's cached answers.


def key() -> str:
    return dd.ledger_key()


def _since(days: int | None) -> datetime | None:
    """Midnight UTC ``days - 1`` days ago: the same calendar days as ``cost_per_day``."""
    if days is None:
        return None
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=days - 1)


@st.cache_data(ttl=TTL, show_spinner=False)
def kpis(ledger: str) -> dict[str, Any]:
    return dd.kpis(dd.store_for())


@st.cache_data(ttl=TTL, show_spinner=False)
def cost_per_day(ledger: str, days: int | None) -> list[dict[str, Any]]:
    return dd.cost_per_day(dd.store_for(), days=days)


@st.cache_data(ttl=TTL, show_spinner=False)
def recent_runs(ledger: str, limit: int = 10) -> list[dict[str, Any]]:
    return dd.recent_runs(dd.store_for(), limit=limit)


@st.cache_data(ttl=TTL, show_spinner=False)
def top_workflow(ledger: str) -> dict[str, Any] | None:
    return dd.top_workflow(dd.store_for())


@st.cache_data(ttl=TTL, show_spinner=False)
def run_filters(ledger: str) -> dict[str, list[str]]:
    return dd.run_filters(dd.store_for())


@st.cache_data(ttl=TTL, show_spinner=False)
def runs(ledger: str, workflow: str | None, state: str | None, limit: int) -> list[dict[str, Any]]:
    return dd.list_runs(dd.store_for(), workflow=workflow, state=state, limit=limit)


@st.cache_data(ttl=TTL, show_spinner=False)
def run_detail(ledger: str, flow_run_id: str) -> dict[str, Any] | None:
    return dd.run_detail(dd.store_for(), flow_run_id)


@st.cache_data(ttl=TTL, show_spinner=False)
def cost_rows(ledger: str, by: str, days: int | None) -> list[dict[str, Any]]:
    return dd.cost_rows(dd.store_for(), by, since=_since(days))


@st.cache_data(ttl=TTL, show_spinner=False)
def unpriced(ledger: str, days: int | None) -> dict[str, Any]:
    return dd.unpriced(dd.store_for(), since=_since(days))


@st.cache_data(ttl=TTL, show_spinner=False)
def run_costs(ledger: str, days: int | None) -> list[dict[str, Any]]:
    return dd.run_costs(dd.store_for(), since=_since(days))


@st.cache_data(ttl=TTL, show_spinner=False)
def step_cost_per_day(ledger: str, days: int | None) -> list[dict[str, Any]]:
    return dd.step_cost_per_day(dd.store_for(), since=_since(days))


@st.cache_data(ttl=TTL, show_spinner=False)
def failure_costs(ledger: str, days: int | None) -> dict[str, Any]:
    return dd.failure_costs(dd.store_for(), since=_since(days))


@st.cache_data(ttl=TTL, show_spinner=False)
def latency_rows(ledger: str, by: str, days: int | None) -> list[dict[str, Any]]:
    return dd.latency_rows(dd.store_for(), by, since=_since(days))


@st.cache_data(ttl=TTL, show_spinner=False)
def budget_rows(ledger: str, folder: str) -> dict[str, Any]:
    return dd.budget_rows(dd.store_for(), folder)


@st.cache_data(ttl=TTL, show_spinner=False)
def prefect_ui_url() -> str | None:
    return dd.prefect_ui_url()


@st.cache_data(ttl=TTL, show_spinner=False)
def agent_rows(folder: str) -> tuple[list[dict[str, Any]], list[str]]:
    return dd.agent_rows(folder)


@st.cache_data(ttl=TTL, show_spinner=False)
def breaker_rows(ledger: str) -> list[dict[str, Any]]:
    return dd.breaker_rows(dd.store_for())


@st.cache_data(ttl=TTL, show_spinner=False)
def health_rows(ledger: str) -> list[dict[str, Any]]:
    return dd.health_rows(dd.store_for())


@st.cache_data(ttl=TTL, show_spinner=False)
def configuration(ledger: str) -> dict[str, Any]:
    prefect = dd.prefect_status()
    api, _ = dd.prefect_api_url()
    return {
        "providers": dd.provider_rows(),
        "general": dd.general_settings(),
        "prefect": prefect,
        "fast_agent": dd.fast_agent_status(),
        "dagger": dd.dagger_status(),
        "blocks": dd.orchestra_blocks(api),
    }


def clear_caches() -> None:
    st.cache_data.clear()


# --------------------------------------------------------------------------- formats


def money(x: float | None) -> str:
    """$1,234.56 from a dollar up; below, three significant digits ($0.0101, $0.00005)."""
    x = float(x or 0.0)
    if x == 0:
        return "$0.00"
    if abs(x) >= 1:
        return f"${x:,.2f}"
    decimals = min(6, max(2, 2 - math.floor(math.log10(abs(x)))))
    text = f"{abs(x):.{decimals}f}".rstrip("0")
    if len(text.split(".")[1]) < 2:
        text = f"{abs(x):.2f}"
    return ("-$" if x < 0 else "$") + text


def count(n: int | float | None) -> str:
    n = float(n or 0)
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}".replace(".0" + unit, unit)
    return f"{int(n):,}"


def percent(x: float | None) -> str:
    """A share as a percentage that never rounds to 100 % (or 0 %) when it is not:
    17,178 of 17,200 is "99.9%", not "100%"."""
    if x is None:
        return "—"
    for decimals in range(0, 4):
        text = f"{x:.{decimals}%}"
        value = float(text[:-1])
        if (x < 1 and value >= 100) or (x > 0 and value == 0):
            continue
        return text
    return f"{x:.4%}"


def money_tickformat(values: list[float]) -> str:
    """One d3 format for a money axis, so every tick reads alike ($0.0002, $0.0004, never
    "$200μ" beside "$0.0002"): two decimals from a dollar up, else enough for the largest value."""
    top = max((abs(v) for v in values if v), default=0.0)
    if top >= 1 or top == 0:
        return ",.2f"
    return f",.{min(8, 1 - math.floor(math.log10(top)))}f"


def ago(ts: datetime | None) -> str:
    if ts is None:
        return "—"
    delta = datetime.now(timezone.utc) - ts
    s = delta.total_seconds()
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{int(s // 60)} min ago"
    if s < 86400:
        return f"{int(s // 3600)} h ago"
    return f"{int(s // 86400)} d ago"


def seconds(s: float | None) -> str:
    if s is None:
        return "—"
    return f"{s:.1f} s" if s < 120 else str(timedelta(seconds=int(s)))


# Column formats shared by the tables
COLUMNS = {
    "started": st.column_config.DatetimeColumn("Started (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "created": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "checked": st.column_config.DatetimeColumn("Checked (UTC)", format="YYYY-MM-DD HH:mm"),
    "updated": st.column_config.DatetimeColumn("Updated (UTC)", format="YYYY-MM-DD HH:mm"),
    "opened": st.column_config.DatetimeColumn("Opened (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "retry_at": st.column_config.DatetimeColumn("Retry at (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "workflow": st.column_config.TextColumn("Workflow"),
    "state": st.column_config.TextColumn("State"),
    "duration_s": st.column_config.NumberColumn("Duration", format="%.1f s"),
    "calls": st.column_config.NumberColumn("Calls"),
    "tokens": st.column_config.NumberColumn("Tokens", format="localized"),
    "input_tokens": st.column_config.NumberColumn("In tokens", format="localized"),
    "output_tokens": st.column_config.NumberColumn("Out tokens", format="localized"),
    "cached_tokens": st.column_config.NumberColumn("Cached tokens", format="localized"),
    "cost_usd": st.column_config.NumberColumn("Cost", format="$%.6f"),
    "latency_ms": st.column_config.NumberColumn("Latency", format="%.0f ms"),
    "error": st.column_config.TextColumn("Error", width="medium"),
    "last_error": st.column_config.TextColumn("Last error", width="large"),
    "flow_run_id": st.column_config.TextColumn("Flow run"),
    "link": st.column_config.LinkColumn("Run page", display_text="open", width="small"),
    "cached": st.column_config.CheckboxColumn("Cached"),
    "priced": st.column_config.CheckboxColumn("Priced"),
    "daily_budget_usd": st.column_config.NumberColumn("Daily budget", format="$%.2f"),
    "budget_usd": st.column_config.NumberColumn("Budget", format="$%.4f"),
    "spent_usd": st.column_config.NumberColumn("Spent today", format="$%.6f"),
    "used": st.column_config.ProgressColumn("Used", format="percent", min_value=0.0, max_value=1.0),
    "p50_ms": st.column_config.NumberColumn("p50", format="%.0f ms"),
    "p95_ms": st.column_config.NumberColumn("p95", format="%.0f ms"),
    "mean_ms": st.column_config.NumberColumn("Mean", format="%.0f ms"),
    "#": st.column_config.NumberColumn("#"),
    "step": st.column_config.TextColumn("Step"),
    "agent": st.column_config.TextColumn("Agent"),
    "model": st.column_config.TextColumn("Model"),
    "status": st.column_config.TextColumn("Status"),
    "attempt": st.column_config.NumberColumn("Attempt"),
    "attempts": st.column_config.NumberColumn("Attempts"),
    "errors": st.column_config.NumberColumn("Failed", help="Attempts that failed"),
    "failures": st.column_config.NumberColumn("Failures"),
    "endpoint": st.column_config.TextColumn("Endpoint"),
    "input": st.column_config.TextColumn("Input"),
    "value": st.column_config.TextColumn("Value", width="large"),
}


# Run states (Prefect's) and call statuses, as text colours and markdown badges
STATE_COLORS = {
    "COMPLETED": ("#1E8E3E", "green"), "ok": ("#1E8E3E", "green"),
    "RUNNING": ("#1A73E8", "blue"),
    "FAILED": ("#D93025", "red"), "error": ("#D93025", "red"),
    "CRASHED": ("#E8710A", "orange"),
    "CANCELLED": ("#80868B", "gray"),
    "cached": ("#7B61FF", "violet"),
    "open": ("#D93025", "red"), "half-open": ("#E8710A", "orange"), "half_open": ("#E8710A", "orange"),
    "closed": ("#1E8E3E", "green"),
    "refused": ("#D93025", "red"), "failed": ("#D93025", "red"),
    "PENDING": ("#80868B", "gray"), "PAUSED": ("#E8710A", "orange"), "SKIPPED": ("#80868B", "gray"),
    "NOT_READY": ("#B06000", "orange"),
}


def badge(state: str | None) -> str:
    """A coloured markdown badge for a run state or call status."""
    state = state or "UNKNOWN"
    return f":{STATE_COLORS.get(state, ('', 'gray'))[1]}-badge[{state}]"


def _colour(value: Any) -> str:
    colour = STATE_COLORS.get(str(value))
    return f"color: {colour[0]}; font-weight: 600" if colour else ""


def table(rows: list[dict[str, Any]], columns: list[str] | None = None, *, csv: str | None = None,
          **kwargs: Any) -> Any:
    """A dataframe with the shared column formats (``columns`` picks and orders them),
    states and statuses in colour, and "—" for missing values; ``csv`` names the file of
    a "Download CSV" button under it (the rows and columns shown, built on click)."""
    import pandas as pd

    config = {c: COLUMNS[c] for c in (columns or (rows[0].keys() if rows else [])) if c in COLUMNS}
    config.update(kwargs.pop("column_config", {}))
    data: Any = pd.DataFrame(rows)
    coloured = [c for c in ("state", "status", "outcome") if c in data.columns]
    if coloured and len(data):
        data = data.style.map(_colour, subset=coloured)
    shown = st.dataframe(data, hide_index=True, column_order=columns, column_config=config,
                         width="stretch", placeholder="—", **kwargs)
    if csv and rows:
        st.download_button("Download CSV", data=lambda: csv_text(rows, columns), file_name=csv, mime="text/csv",
                           key=f"csv_{csv}", icon=":material/download:", type="tertiary", on_click="ignore")
    return shown


def csv_text(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """``rows`` as CSV (``columns`` picked and ordered; their labels as headers)."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    if columns:
        frame = frame[[c for c in columns if c in frame.columns]]
    return frame.to_csv(index=False)


# --------------------------------------------------------------------------- charts


def _layout(fig: go.Figure, height: int, **kwargs: Any) -> go.Figure:
    fig.update_layout(height=height, margin=dict(l=8, r=8, t=36, b=8), showlegend=False,
                      hoverlabel=dict(bgcolor="white"), **kwargs)
    return fig


def day_bars(days: list[dict[str, Any]], title: str, height: int = 320, min_days: int = 7) -> go.Figure:
    """Cost per day; with no cost at all (free or unpriced models), calls per day. The axis
    starts at the first day with calls (at least ``min_days`` shown), one tick per day or
    per few days, so a young ledger is not one thin bar at the edge of a month."""
    first = next((i for i, d in enumerate(days) if d["calls"]), len(days))
    days = days[min(first, max(0, len(days) - min_days)):]
    priced = any(d["cost_usd"] for d in days)
    y = [d["cost_usd"] if priced else d["calls"] for d in days]
    fig = go.Figure(go.Bar(
        x=[d["day"] for d in days], y=y, marker_color=ACCENT,
        customdata=[[money(d["cost_usd"]), d["calls"], count(d["tokens"])] for d in days],
        hovertemplate="%{x|%a %d %b}<br>cost %{customdata[0]}<br>%{customdata[1]} calls"
                      "<br>%{customdata[2]} tokens<extra></extra>",
    ))
    step = max(1, math.ceil(len(days) / 12))
    fig.update_xaxes(type="date", tickformat="%d %b", showgrid=False, dtick=step * 86_400_000,
                     ticklabelmode="instant")
    if days:
        span = [datetime.combine(days[0]["day"], datetime.min.time()) - timedelta(hours=12),
                datetime.combine(days[-1]["day"], datetime.min.time()) + timedelta(hours=12)]
        fig.update_xaxes(range=span)
    fig.update_yaxes(title_text="cost (USD)" if priced else "calls", tickprefix="$" if priced else "",
                     tickformat=money_tickformat(y) if priced else ",d", rangemode="tozero")
    return _layout(fig, height, title=dict(text=title if priced else f"{title} — no priced calls, showing calls",
                                           font=dict(size=14)), bargap=0.25)


def run_scatter(rows: list[dict[str, Any]], title: str = "Cost per run", height: int = 340) -> go.Figure:
    """Each run as a dot (WebGL): when it started, what it cost; one colour per workflow,
    the runs that did not complete as red crosses on top."""
    fig = go.Figure()
    palette = ["#6C5CE7", "#00B894", "#0984E3", "#FDCB6E", "#E84393", "#636E72", "#55EFC4", "#A29BFE"]
    workflows = list(dict.fromkeys(r["workflow"] for r in rows))
    failed = [r for r in rows if r["state"] in ("FAILED", "CRASHED", "CANCELLED")]
    for i, wf in enumerate(workflows):
        group = [r for r in rows if r["workflow"] == wf and r["state"] not in ("FAILED", "CRASHED", "CANCELLED")]
        fig.add_trace(go.Scattergl(x=[r["started"] for r in group], y=[r["cost_usd"] for r in group],
                                   mode="markers", name=wf, marker=dict(size=5, color=palette[i % len(palette)]),
                                   hovertemplate=f"{wf}<br>%{{x|%d %b %H:%M}}<br>$%{{y:.6f}}<extra></extra>"))
    if failed:
        fig.add_trace(go.Scattergl(x=[r["started"] for r in failed], y=[r["cost_usd"] for r in failed],
                                   mode="markers", name="did not complete",
                                   marker=dict(size=8, color=ERROR, symbol="x"),
                                   text=[r["workflow"] for r in failed],
                                   hovertemplate="%{text} · did not complete<br>%{x|%d %b %H:%M}<br>$%{y:.6f}"
                                                 "<extra></extra>"))
    fig.update_yaxes(title_text="cost (USD)", tickprefix="$", tickformat=money_tickformat(
        [r["cost_usd"] for r in rows]), rangemode="tozero")
    fig.update_xaxes(type="date", tickformat="%d %b")
    fig = _layout(fig, height, title=dict(text=title, font=dict(size=14)))
    fig.update_layout(showlegend=len(workflows) > 1 or bool(failed), legend=dict(orientation="h", y=-0.15))
    return fig


def step_day_bars(rows: list[dict[str, Any]], title: str = "Cost per step per day (top steps)",
                  height: int = 340) -> go.Figure:
    """Stacked bars: each day's cost split by step (``workflow/step``)."""
    fig = go.Figure()
    palette = ["#6C5CE7", "#00B894", "#0984E3", "#E17055", "#FDCB6E", "#E84393", "#636E72", "#55EFC4"]
    steps = list(dict.fromkeys(r["step"] for r in sorted(rows, key=lambda r: -r["cost_usd"])))
    for i, step in enumerate(steps):
        group = [r for r in rows if r["step"] == step]
        fig.add_trace(go.Bar(x=[r["day"] for r in group], y=[r["cost_usd"] for r in group], name=step,
                             marker_color=palette[i % len(palette)],
                             customdata=[[money(r["cost_usd"]), r["calls"]] for r in group],
                             hovertemplate=f"{step}<br>%{{x|%d %b}}<br>%{{customdata[0]}} · %{{customdata[1]}} "
                                           "calls<extra></extra>"))
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["day"]] = totals.get(r["day"], 0.0) + r["cost_usd"]
    days = sorted(totals)
    span = (date.fromisoformat(days[-1]) - date.fromisoformat(days[0])).days + 1 if days else 1
    fig.update_xaxes(type="date", tickformat="%d %b", dtick=max(1, math.ceil(span / 12)) * 86_400_000)
    fig.update_yaxes(title_text="cost (USD)", tickprefix="$", tickformat=money_tickformat(list(totals.values())),
                     rangemode="tozero")
    fig = _layout(fig, height, title=dict(text=title, font=dict(size=14)), barmode="stack", bargap=0.25)
    fig.update_layout(showlegend=True, legend=dict(orientation="h", y=-0.15))
    return fig


def ranked_bars(rows: list[dict[str, Any]], title: str, top: int = 10, height: int | None = None,
                notes: dict[str, str] | None = None) -> go.Figure:
    """Horizontal bars, most expensive on top; by calls when nothing cost anything.
    ``notes`` label some bars (e.g. "unpriced") next to their value."""
    notes = notes or {}
    rows = rows[:top]
    priced = any(r["cost_usd"] for r in rows)
    rows = sorted(rows, key=lambda r: (r["cost_usd"], r["calls"]) if priced else (r["calls"],))
    values = [r["cost_usd"] if priced else r["calls"] for r in rows]
    fig = go.Figure(go.Bar(
        x=values, y=[r["label"] for r in rows], orientation="h", marker_color=ACCENT,
        text=[(money(r["cost_usd"]) if priced else f"{r['calls']} calls")
              + (f" · {notes[r['label']]}" if r["label"] in notes else "") for r in rows],
        textposition="outside", cliponaxis=False,
        customdata=[[money(r["cost_usd"]), r["calls"], count(r["tokens"])] for r in rows],
        hovertemplate="%{y}<br>cost %{customdata[0]}<br>%{customdata[1]} calls"
                      "<br>%{customdata[2]} tokens<extra></extra>",
    ))
    fig.update_xaxes(title_text="cost (USD)" if priced else "calls", tickprefix="$" if priced else "",
                     tickformat=money_tickformat(values) if priced else ",d",
                     range=[0, (max(values, default=0) or 1) * (1.5 if notes else 1.3)], showgrid=True)
    fig.update_yaxes(automargin=True, ticksuffix="  ")
    return _layout(fig, height or max(220, 60 + 34 * len(rows)),
                   title=dict(text=title if priced else f"{title} (calls; nothing was priced)",
                              font=dict(size=14)))


def dag(steps: list[dict[str, Any]], height: int | None = None) -> go.Figure:
    """A run's DAG: one node per step (every step, the ones that never ran included),
    coloured by state, an arrow per ``depends_on`` edge; hover tells why a step did not run."""
    layout = dd.dag_layout(steps)
    cols = max((c for c, _ in layout.values()), default=0) + 1
    rows = max((r for _, r in layout.values()), default=0) + 1
    fig = go.Figure()
    for s in steps:
        x1, y1 = layout[s["step"]]
        for d in s.get("depends_on") or []:
            if d in layout:
                x0, y0 = layout[d]
                fig.add_annotation(x=x1, y=-y1, ax=x0, ay=-y0, xref="x", yref="y", axref="x", ayref="y",
                                   showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#9AA0A6",
                                   standoff=16, startstandoff=16, text="")
    for state in dict.fromkeys(s["state"] for s in steps):
        group = [s for s in steps if s["state"] == state]
        colour = STATE_COLORS.get(state, ("#80868B", "gray"))[0]
        fig.add_trace(go.Scatter(
            x=[layout[s["step"]][0] for s in group], y=[-layout[s["step"]][1] for s in group],
            mode="markers+text", name=state, text=[s["step"] for s in group], textposition="bottom center",
            marker=dict(size=26, color=colour, symbol="square", line=dict(width=2, color="white")),
            customdata=[[s["state"], s.get("kind") or "", s.get("agent") or s.get("model") or "",
                         s.get("why") or ""] for s in group],
            hovertemplate="<b>%{text}</b> · %{customdata[0]}<br>%{customdata[1]} %{customdata[2]}"
                          "<br>%{customdata[3]}<extra></extra>",
        ))
    fig.update_xaxes(visible=False, range=[-0.6, cols - 0.4])
    fig.update_yaxes(visible=False, range=[-rows + 0.3, 0.7])
    fig = _layout(fig, height or max(200, 60 + 90 * rows), title=dict(text="DAG", font=dict(size=14)))
    fig.update_layout(showlegend=True, legend=dict(orientation="h", y=1.02, x=1, xanchor="right", yanchor="bottom"))
    return fig


def timeline(steps: list[dict[str, Any]], now: datetime | None = None) -> go.Figure | None:
    """When each step ran (first RUNNING to its final state; a running one up to now), and
    under a step with several calls (``for_each`` items, retries) each call; None when
    nothing has started."""
    now = now or datetime.now(timezone.utc)
    bars: list[tuple[str, datetime, datetime, str, str]] = []
    for s in steps:
        if s.get("started"):
            end = s.get("ended") or now
            bars.append((s["step"], s["started"], end, s["state"], f"{(end - s['started']).total_seconds():.1f} s"))
        calls = [c for c in s.get("calls") or [] if c.get("created") and not c.get("cached")]
        if len(calls) > 1 or (calls and not s.get("started")):
            for i, c in enumerate(calls):
                end = c["created"]
                start = end - timedelta(milliseconds=c["latency_ms"] or 0)
                label = f"  {s['step']} · call {i + 1}"
                bars.append((label, start, end, "error" if c["status"] == "error" else "ok",
                             f"attempt {c['attempt']} · {c['latency_ms']:.0f} ms · {c['status']}"))
    if not bars:
        return None
    fig = go.Figure(go.Bar(
        y=[b[0] for b in bars], base=[b[1] for b in bars],
        x=[max((b[2] - b[1]).total_seconds() * 1000, 1.0) for b in bars], orientation="h",
        marker_color=[STATE_COLORS.get(b[3], ("#80868B",))[0] for b in bars],
        customdata=[[b[4]] for b in bars], hovertemplate="%{y}<br>%{customdata[0]}<extra></extra>",
    ))
    fig.update_xaxes(type="date", tickformat="%H:%M:%S", showgrid=True)
    fig.update_yaxes(autorange="reversed", automargin=True, type="category")
    return _layout(fig, max(160, 50 + 26 * len(bars)), title=dict(text="Timeline (UTC)", font=dict(size=14)),
                   bargap=0.3)


def chart(fig: go.Figure, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=key, config={"displayModeBar": False})


# --------------------------------------------------------------------------- layout


def failure(exc: BaseException) -> None:
    """What a reader sees when a page fails (e.g. the ledger's database is down): one
    redacted line and what to check, never a traceback.  The log gets the details."""
    import logging
    import traceback

    from core.redact import redact, redact_url

    log = logging.getLogger("orchestra.dashboard")
    log.warning("page failed: %s: %s", type(exc).__name__, redact(str(exc)).strip().splitlines()[:1])
    log.debug("%s", redact("".join(traceback.format_exception(exc))))
    try:
        where = redact_url(dd.store_for().display_url)
    except Exception:
        where = "(invalid ORCHESTRA_DB_URL)"
    lines = (redact(str(exc)) or type(exc).__name__).strip().splitlines()
    message = lines[0] if lines else type(exc).__name__
    st.error(
        f"**This page could not be shown.** {type(exc).__name__}: {message[:300]}\n\n"
        f"Ledger: `{where}` — check that its database is reachable (ORCHESTRA_DB_URL), then refresh.",
        icon=":material/cloud_off:",
    )


def empty_ledger() -> None:
    from agents.base import default_model

    st.info(
        "**The ledger is empty.** Every workflow run and provider call lands here once you run one, "
        "for example:\n\n"
        f"```\norchestra run {dd.example_workflow()}\n```\n"
        f"Agents without a model use the default model, `{default_model()}`"
        + (" (no API key needed)." if default_model() == "fast-agent:passthrough" else "."),
        icon=":material/info:",
    )


def sidebar(actor: Any = None) -> None:
    with st.sidebar:
        st.caption("Orchestra · LLM-agent workflows on Prefect")
        if actor is not None:
            how = {"local": "No login: no dashboard user exists yet, so this loopback-only dashboard is the "
                            "machine user's.", "oidc": "Signed in by single sign-on.",
                   "password": "Signed in with a password.", "cli": "Command line."}[actor.via]
            st.markdown(f":material/account_circle: **{actor.name}** · {actor.role}")
            st.caption(how)
            if actor.via != "local":
                from dashboard import auth

                st.button("Log out", icon=":material/logout:", width="stretch", on_click=auth.logout,
                          key="logout")
        if st.button("Refresh data", icon=":material/refresh:", width="stretch"):
            clear_caches()
        st.caption(f"Figures are cached for {TTL} s; a running run's page follows it live.")
