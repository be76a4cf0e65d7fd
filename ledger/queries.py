"""The ledger's public read API: what the CLI, the dashboard and the MCP server show.

Every function takes the ledger (``ledger.store.Store``; the app's is
``orchestra.runtime.ledger()``) and returns plain data (dicts, lists, numbers, ISO
timestamps or datetimes as documented). No caller outside ``ledger/`` touches a
session, a connection or a table. An empty ledger gives empty lists and zeros.

Runs:      :func:`runs`, :func:`run`, :func:`steps` (every step and its state), :func:`progress`,
           :func:`run_steps` (calls per step), :func:`step_attempts`, :func:`totals`, :func:`run_workflows`,
           :func:`tool_calls` (the tool calls of a run)
Money:     :func:`cost_groups`, :func:`kpis`, :func:`cost_per_day`, :func:`unpriced`, :func:`run_costs`,
           :func:`step_cost_per_day`, :func:`failure_costs`, :func:`latency_percentiles`, :func:`agent_spend`,
           :func:`budgeted_runs`
Healing:   :func:`breakers`, :func:`breaker_events`, :func:`dead_letters`, :func:`dead_letter`,
           :func:`limits`, :func:`health`
Tasks:     :func:`projects`, :func:`project`, :func:`tasks`, :func:`task`, :func:`task_history`,
           :func:`task_runs`, :func:`task_of_run`
Access:    :func:`users`, :func:`user_count`, :func:`credentials`, :func:`audit`, :func:`agent_versions`,
           :func:`versioned_agents`, :func:`agent_version`
"""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from sqlalchemy import case, func, select, text

from core.calls import counts_as_attempt
from core.steps import FINAL_STEP_STATES
from ledger.db import day_of
from ledger.models import (FINAL_RUN_STATES, RUN_STATES, AgentVersion, AuditEntry, Breaker, BreakerEvent, Call,
                           CallRollup, DeadLetter, HealthCheck, Project, Run, Step, Task, TaskHistory, TaskRun,
                           ToolCall, User)
from ledger.rows import aware, call_dict, iso, run_dict, state_name, totals_dict, totals_select
from ledger.store import COST_GROUPS, Store

__all__ = [
    "COST_GROUPS", "RUN_STATES", "agent_spend", "agent_version", "agent_versions", "audit", "breaker_events",
    "breakers", "budgeted_runs", "cost_groups", "cost_per_day", "credentials", "dead_letter", "dead_letters",
    "failure_costs", "health", "kpis", "latency_percentiles", "limits", "progress", "project", "projects", "run",
    "run_costs", "run_steps", "run_workflows", "runs", "step_attempts", "step_cost_per_day", "steps", "task",
    "task_history", "task_of_run", "task_runs", "tasks", "tool_calls", "totals", "unfinished_runs", "unpriced",
    "user_count", "users", "versioned_agents",
]

UTC = timezone.utc
_RUNS = Run.__table__
_CALLS = Call.__table__
_BREAKERS = BreakerEvent.__table__
_BREAKER_ROWS = Breaker.__table__
_DEAD = DeadLetter.__table__
_HEALTH = HealthCheck.__table__
_STEPS = Step.__table__
_TOOL_CALLS = ToolCall.__table__
_PROJECTS = Project.__table__
_TASKS = Task.__table__
_TASK_HISTORY = TaskHistory.__table__
_TASK_RUNS = TaskRun.__table__
_USERS = User.__table__
_ROLLUP = CallRollup.__table__
_AUDIT = AuditEntry.__table__
_VERSIONS = AgentVersion.__table__


# --------------------------------------------------------------------------- runs


def runs(store: Store, *, limit: int | None = 50, workflow: str | None = None,
         state: str | None = None) -> list[dict[str, Any]]:
    """Runs, newest first: flow_run_id, workflow, state, inputs, started, ended (ISO),
    duration_s, tokens, cost_usd, calls, error, model_override, budget_usd, metadata.
    Totals of a RUNNING run are summed live from its calls."""
    q = select(_RUNS).order_by(_RUNS.c.started.desc(), _RUNS.c.flow_run_id.desc())
    if workflow is not None:
        q = q.where(_RUNS.c.workflow == workflow)
    if state is not None:
        q = q.where(_RUNS.c.state == state_name(state))
    if limit is not None:
        q = q.limit(int(limit))
    with store._read() as conn:
        found = [run_dict(r) for r in conn.execute(q).mappings()]
        running = [r["flow_run_id"] for r in found if r["state"] == "RUNNING"]
        if running:
            live = conn.execute(
                totals_select().add_columns(_CALLS.c.flow_run_id)
                .where(_CALLS.c.flow_run_id.in_(running)).group_by(_CALLS.c.flow_run_id)
            ).mappings()
            by_id = {row["flow_run_id"]: totals_dict(row) for row in live}
            for r in found:
                if r["flow_run_id"] in by_id:
                    r.update(by_id[r["flow_run_id"]])
    return found


def run(store: Store, flow_run_id: str) -> dict[str, Any] | None:
    """One run (as in :func:`runs`, plus ``workflow_ref``) and its ``calls`` in the order
    they were recorded (``n_calls`` is their number), or None."""
    with store._read() as conn:
        row = conn.execute(select(_RUNS).where(_RUNS.c.flow_run_id == flow_run_id)).mappings().first()
        if row is None:
            return None
        found = run_dict(row)
        found["workflow_ref"] = row["workflow_ref"]  # for `orchestra rerun` (not in runs(): it may be long)
        calls = [call_dict(c) for c in conn.execute(
            select(_CALLS).where(_CALLS.c.flow_run_id == flow_run_id).order_by(_CALLS.c.id)).mappings()]
    if found["state"] == "RUNNING":  # live totals; a finished run has them stored
        found.update(input_tokens=sum(c["input_tokens"] for c in calls),
                     output_tokens=sum(c["output_tokens"] for c in calls),
                     cached_tokens=sum(c["cached_tokens"] for c in calls),
                     cost_usd=sum(c["cost_usd"] for c in calls), calls=len(calls))
    found["n_calls"] = found["calls"]
    found["calls"] = calls
    return found


def run_steps(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's calls (from :func:`run`) folded per step, in the order the steps first
    called: kind (agent, container, command), agent, model (the last attempt's), image
    and exit_code (a container's or command's last attempt), status of the last attempt
    ("ok", "error", "interrupted", "cached"), attempts (by ``core.calls.counts_as_attempt``, the
    engine's rule), errors, cached, tokens, cost_usd, latency_ms (summed), last_error."""
    steps: dict[str, dict[str, Any]] = {}
    for c in calls:
        s = steps.setdefault(c["step"], {
            "step": c["step"], "kind": c.get("kind") or "agent", "agent": c["agent"], "model": c["model"],
            "image": None, "exit_code": None, "status": "ok", "attempts": 0,
            "errors": 0, "cached": False, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0,
            "cost_usd": 0.0, "latency_ms": 0.0, "last_error": None,
        })
        s["agent"], s["model"] = c["agent"] or s["agent"], c["model"]
        s["image"] = c.get("image") or s["image"]
        if c.get("exit_code") is not None:
            s["exit_code"] = c["exit_code"]
        s["cached"] = s["cached"] or c["cached"]
        s["attempts"] += counts_as_attempt(cached=c["cached"], purpose=c.get("purpose", "call"))
        for k in ("input_tokens", "output_tokens", "cached_tokens", "cost_usd", "latency_ms"):
            s[k] += c[k]
        if c["status"] != "ok":  # error, or interrupted (in flight when its process ended)
            s["errors"] += 1
            s["last_error"] = c["error"]
        s["status"] = c["status"]
    for s in steps.values():
        if s["cached"] and s["attempts"] == 0:
            s["status"] = "cached"
    return list(steps.values())


def step_attempts(store: Store, flow_run_id: str, step: str) -> list[dict[str, Any]]:
    """The calls of one step of one run, in the order they were recorded."""
    q = select(_CALLS).where(_CALLS.c.flow_run_id == flow_run_id, _CALLS.c.step == step).order_by(_CALLS.c.id)
    with store._read() as conn:
        return [call_dict(c) for c in conn.execute(q).mappings()]


def totals(store: Store, flow_run_id: str) -> dict[str, Any]:
    """calls, input/output/cached tokens and cost_usd summed over a run's calls (zeros if none)."""
    with store._read() as conn:
        row = conn.execute(totals_select().where(_CALLS.c.flow_run_id == flow_run_id)).mappings().one()
    return totals_dict(row)


def unfinished_runs(store: Store) -> list[dict[str, Any]]:
    """Runs the ledger holds as RUNNING, with what tells whether their process lives:
    flow_run_id, workflow, started, heartbeat (datetimes), pid, host."""
    c = _RUNS.c
    q = select(c.flow_run_id, c.workflow, c.started, c.heartbeat, c.pid, c.host).where(c.state == "RUNNING")
    with store._read() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def run_workflows(store: Store) -> list[str]:
    """The workflows that have runs in the ledger, sorted."""
    with store._read() as conn:
        return sorted(conn.execute(select(_RUNS.c.workflow).distinct()).scalars())


# --------------------------------------------------------------------------- money


def _midnight(dt: datetime | None) -> bool:
    return dt is None or aware(dt).time() == datetime.min.time()


def _day(dt: datetime) -> str:
    return aware(dt).strftime("%Y-%m-%d")


def cost_groups(store: Store, by: Literal["model", "agent", "workflow", "day"] = "model", *,
                since: datetime | None = None, until: datetime | None = None) -> list[dict[str, Any]]:
    """Calls, tokens and cost grouped by ``model``, ``agent``, ``workflow`` or ``day``
    (UTC ``YYYY-MM-DD`` of the call); by cost, highest first (``day``: oldest first).
    ``since <= created < until`` when given. ValueError naming the valid groups.

    Bounds at midnight UTC (or none) read the daily rollup (``call_rollup``: a few rows
    per day, whatever the number of calls); other bounds sum the calls themselves."""
    if by not in COST_GROUPS:
        raise ValueError(f"cannot group costs by {by!r}; valid values: {', '.join(COST_GROUPS)}")
    if not (_midnight(since) and _midnight(until)):
        return _cost_groups_of_calls(store, by, since=since, until=until)
    g = _ROLLUP.c
    key = {"model": g.model, "agent": func.nullif(g.agent, ""), "workflow": g.workflow, "day": g.day}[by]
    cost = func.sum(g.cost_usd)
    q = select(key.label(by), func.sum(g.calls).label("calls"), func.sum(g.input_tokens).label("input_tokens"),
               func.sum(g.output_tokens).label("output_tokens"), func.sum(g.cached_tokens).label("cached_tokens"),
               cost.label("cost_usd"))
    if since is not None:
        q = q.where(g.day >= _day(since))
    if until is not None:
        q = q.where(g.day < _day(until))
    q = q.group_by(key)
    q = q.order_by(key.asc()) if by == "day" else q.order_by(cost.desc(), key.asc().nulls_last())
    with store._read() as conn:
        rows = conn.execute(q).mappings().all()
    return [_group_row(by, row) for row in rows]


def _group_row(by: str, row: Any) -> dict[str, Any]:
    return {by: row[by], "calls": int(row["calls"]), "input_tokens": int(row["input_tokens"] or 0),
            "output_tokens": int(row["output_tokens"] or 0), "cached_tokens": int(row["cached_tokens"] or 0),
            "cost_usd": float(row["cost_usd"] or 0.0)}


def _cost_groups_of_calls(store: Store, by: str, *, since: datetime | None,
                          until: datetime | None) -> list[dict[str, Any]]:
    c = _CALLS.c
    key = {"model": c.model, "agent": c.agent, "workflow": _RUNS.c.workflow, "day": day_of(c.created)}[by]
    cost = func.sum(c.cost_usd)
    q = select(
        key.label(by), func.count(c.id).label("calls"), func.sum(c.input_tokens).label("input_tokens"),
        func.sum(c.output_tokens).label("output_tokens"), func.sum(c.cached_tokens).label("cached_tokens"),
        cost.label("cost_usd"),
    ).select_from(_CALLS)
    if by == "workflow":
        q = q.join(_RUNS, _RUNS.c.flow_run_id == c.flow_run_id)
    if since is not None:
        q = q.where(c.created >= aware(since))
    if until is not None:
        q = q.where(c.created < aware(until))
    q = q.group_by(key)
    q = q.order_by(key.asc()) if by == "day" else q.order_by(cost.desc(), key.asc().nulls_last())
    with store._read() as conn:
        rows = conn.execute(q).mappings().all()
    return [_group_row(by, row) for row in rows]


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _run_counts(store: Store, since: datetime | None) -> dict[str, int]:
    c = _RUNS.c
    q = select(
        func.count().label("runs"),
        func.coalesce(func.sum(case((c.state == "COMPLETED", 1), else_=0)), 0).label("completed"),
        func.coalesce(func.sum(case((c.state.in_(FINAL_RUN_STATES), 1), else_=0)), 0).label("finished"),
        func.coalesce(func.sum(case((c.state == "RUNNING", 1), else_=0)), 0).label("running"),
    )
    if since is not None:
        q = q.where(c.started >= since)
    with store._read() as conn:
        row = conn.execute(q).mappings().one()
    return {k: int(row[k] or 0) for k in ("runs", "completed", "finished", "running")}


def _call_totals(store: Store, since: datetime | None) -> dict[str, Any]:
    g = _ROLLUP.c
    q = select(*(func.coalesce(func.sum(getattr(g, k)), 0).label(k) for k in (
        "calls", "cache_hits", "input_tokens", "output_tokens", "cached_tokens", "cost_usd")))
    if since is not None:
        q = q.where(g.day >= _day(since))
    with store._read() as conn:
        row = conn.execute(q).mappings().one()
    out: dict[str, Any] = {k: int(row[k] or 0) for k in ("calls", "cache_hits", "input_tokens", "output_tokens",
                                                          "cached_tokens")}
    out["cost_usd"] = float(row["cost_usd"] or 0.0)
    out["provider_calls"] = out["calls"] - out["cache_hits"]
    out["tokens"] = out["input_tokens"] + out["output_tokens"]
    return out


def kpis(store: Store, *, days: int = 7, now: datetime | None = None) -> dict[str, Any]:
    """``{"recent": {...}, "all": {...}, "days": days}``; each has runs, completed,
    finished, running, success_rate (completed / finished runs, None without any
    finished run), calls (every ledger row), cache_hits, provider_calls (calls that
    reached a provider), input/output/cached tokens, tokens and cost_usd.
    "recent" counts runs started and calls made in the last ``days`` calendar days (UTC,
    today included: the days of :func:`cost_per_day`)."""
    since = datetime.combine(_now(now).date() - timedelta(days=days - 1), datetime.min.time(), tzinfo=UTC)
    out: dict[str, Any] = {"days": days}
    for name, bound in (("recent", since), ("all", None)):
        counts: dict[str, Any] = _run_counts(store, bound)
        counts["success_rate"] = counts["completed"] / counts["finished"] if counts["finished"] else None
        out[name] = {**counts, **_call_totals(store, bound)}
    return out


def cost_per_day(store: Store, *, days: int | None = 30, now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per UTC day, oldest first, today included: ``day`` (a date), ``cost_usd``,
    ``calls``, ``tokens``; days without calls are zeros. ``days=None``: from the first
    day with a call (empty list for an empty ledger)."""
    today = _now(now).date()
    if days is None:
        found = {str(r["day"]): r for r in cost_groups(store, "day")}
        if not found:
            return []
        first = min(min(date.fromisoformat(d) for d in found), today)
        days = (today - first).days + 1
    else:
        first = today - timedelta(days=days - 1)
        found = {str(r["day"]): r for r in cost_groups(store, "day", since=datetime(first.year, first.month,
                                                                                     first.day, tzinfo=UTC))}
    out = []
    for i in range(days):
        day = first + timedelta(days=i)
        r = found.get(day.isoformat(), {})
        out.append({"day": day, "cost_usd": float(r.get("cost_usd", 0.0)), "calls": int(r.get("calls", 0)),
                    "tokens": int(r.get("input_tokens", 0)) + int(r.get("output_tokens", 0))})
    return out


def unpriced(store: Store, *, since: datetime | None = None) -> dict[str, Any]:
    """Successful provider calls genai-prices could not price (they count as $0):
    ``{"calls": n, "models": [{"model", "calls", "input_tokens", "output_tokens"}]}``.
    Cache hits and failed attempts are left out (they cost nothing anyway). ``since`` is
    taken from its UTC day (the rollup's grain)."""
    g = _ROLLUP.c
    q = (select(g.model, func.sum(g.unpriced_calls).label("calls"),
                func.coalesce(func.sum(g.unpriced_input_tokens), 0).label("input_tokens"),
                func.coalesce(func.sum(g.unpriced_output_tokens), 0).label("output_tokens"))
         .where(g.unpriced_calls > 0).group_by(g.model).order_by(func.sum(g.unpriced_calls).desc(), g.model))
    if since is not None:
        q = q.where(g.day >= _day(since))
    with store._read() as conn:
        models = [{"model": r["model"], "calls": int(r["calls"]), "input_tokens": int(r["input_tokens"]),
                   "output_tokens": int(r["output_tokens"])} for r in conn.execute(q).mappings()]
    return {"calls": sum(m["calls"] for m in models), "models": models}


def run_costs(store: Store, *, since: datetime | None = None, limit: int = 5000) -> list[dict[str, Any]]:
    """What each run cost, oldest first (the newest ``limit``): flow_run_id, workflow, state,
    started (datetime), cost_usd, calls."""
    r = _RUNS.c
    q = select(r.flow_run_id, r.workflow, r.state, r.started, r.cost_usd, r.calls).order_by(r.started.desc())
    if since is not None:
        q = q.where(r.started >= aware(since))
    with store._read() as conn:
        rows = conn.execute(q.limit(int(limit))).mappings().all()
    return [{**dict(row), "cost_usd": float(row["cost_usd"] or 0.0), "calls": int(row["calls"] or 0)}
            for row in reversed(rows)]


def step_cost_per_day(store: Store, *, since: datetime | None = None, top: int = 8) -> list[dict[str, Any]]:
    """Cost per UTC day of the ``top`` most expensive steps (``workflow/step``), oldest
    first: day (``YYYY-MM-DD``), step, cost_usd, calls (from the daily rollup)."""
    g = _ROLLUP.c
    label = (g.workflow + "/" + g.step).label("step")
    window = [g.day >= _day(since)] if since is not None else []
    with store._read() as conn:
        leaders = [row[0] for row in conn.execute(
            select(label).where(*window).group_by(g.workflow, g.step)
            .order_by(func.sum(g.cost_usd).desc()).limit(int(top)))]
        if not leaders:
            return []
        q = (select(g.day, label, func.sum(g.cost_usd).label("cost_usd"), func.sum(g.calls).label("calls"))
             .where(*window, (g.workflow + "/" + g.step).in_(leaders)).group_by(g.day, g.workflow, g.step)
             .order_by(g.day))
        rows = conn.execute(q).mappings().all()
    return [{"day": row["day"], "step": row["step"], "cost_usd": float(row["cost_usd"] or 0.0),
             "calls": int(row["calls"])} for row in rows]


def failure_costs(store: Store, *, since: datetime | None = None) -> dict[str, Any]:
    """Money spent on what did not succeed: ``failed_attempts`` (calls that failed),
    ``failed_steps`` (successful calls of steps that failed anyway: a bad repair, a later
    item), ``failed_runs`` (everything runs that did not complete cost); each with its count."""
    c, r, st = _CALLS.c, _RUNS.c, _STEPS.c
    with store._read() as conn:
        g = _ROLLUP.c
        q = select(func.coalesce(func.sum(g.errors), 0), func.coalesce(func.sum(g.error_cost_usd), 0.0))
        if since is not None:
            q = q.where(g.day >= _day(since))
        attempts = conn.execute(q).one()
        failed = select(st.flow_run_id, st.step).where(st.state == "FAILED").subquery()
        q = (select(func.count(c.id), func.coalesce(func.sum(c.cost_usd), 0.0))
             .select_from(failed.join(_CALLS, (c.flow_run_id == failed.c.flow_run_id) & (c.step == failed.c.step)))
             .where(c.status == "ok"))
        if since is not None:
            q = q.where(c.created >= aware(since))
        steps_ = conn.execute(q).one()
        q = select(func.count(), func.coalesce(func.sum(r.cost_usd), 0.0)).where(
            r.state.in_(("FAILED", "CRASHED", "CANCELLED")))
        if since is not None:
            q = q.where(r.started >= aware(since))
        runs_ = conn.execute(q).one()
    return {"failed_attempts": {"calls": int(attempts[0]), "cost_usd": float(attempts[1])},
            "failed_steps": {"calls": int(steps_[0]), "cost_usd": float(steps_[1])},
            "failed_runs": {"runs": int(runs_[0]), "cost_usd": float(runs_[1])}}


def latency_percentiles(store: Store, by: Literal["model", "agent"] = "model", *,
                        since: datetime | None = None) -> list[dict[str, Any]]:
    """p50 and p95 latency (ms, nearest rank) of successful provider calls (cache hits left
    out) per ``model`` or ``agent``, with their count and mean; most calls first.

    Each percentile is one walk of a partial index in latency order
    (``ix_calls_<by>_latency``), not a sort of every call."""
    if by not in ("model", "agent"):
        raise ValueError(f"latency percentiles by {by!r}: model or agent")
    c, g = _CALLS.c, _ROLLUP.c
    key = c.model if by == "model" else c.agent
    # the partial indexes' own predicate, as literal text: a planner uses a partial index only
    # when the query's WHERE implies it, which a bound parameter never does
    usable = text("calls.cached = 0 AND calls.status = 'ok'" if store.backend == "sqlite"
                  else "calls.cached IS false AND calls.status = 'ok'")
    ok = [usable] + ([c.created >= aware(since)] if since is not None else [])
    out = []
    with store._read() as conn:
        if _midnight(since):  # counts and means from the daily rollup
            rkey = g.model if by == "model" else func.nullif(g.agent, "")
            n_ = func.sum(g.ok_calls)
            groups = conn.execute(select(rkey, n_, func.sum(g.ok_latency_ms) / n_)
                                  .where(*([g.day >= _day(since)] if since is not None else []))
                                  .group_by(rkey).having(n_ > 0).order_by(n_.desc(), rkey)).all()
        else:
            groups = conn.execute(select(key, func.count(), func.avg(c.latency_ms)).where(*ok).group_by(key)
                                  .order_by(func.count().desc(), key)).all()
        for value, n, mean in groups:
            n = int(n)
            match = key.is_(None) if value is None else key == value
            ranked = select(c.latency_ms).where(match, *ok).order_by(c.latency_ms).limit(1)
            p50 = conn.execute(ranked.offset(max(0, math.ceil(0.5 * n) - 1))).scalar()
            p95 = conn.execute(ranked.offset(max(0, math.ceil(0.95 * n) - 1))).scalar()
            out.append({by: value, "calls": int(n), "mean_ms": float(mean or 0.0), "p50_ms": float(p50 or 0.0),
                        "p95_ms": float(p95 or 0.0)})
    return out


def agent_spend(store: Store, agents: list[str], *, since: datetime) -> dict[str, float]:
    """What each of ``agents`` spent since ``since`` (daily budgets); 0.0 for no calls."""
    c = _CALLS.c
    if not agents:
        return {}
    q = (select(c.agent, func.coalesce(func.sum(c.cost_usd), 0.0)).where(c.agent.in_(list(agents)),
                                                                          c.created >= aware(since))
         .group_by(c.agent))
    with store._read() as conn:
        found = {a: float(v) for a, v in conn.execute(q).all()}
    return {a: found.get(a, 0.0) for a in agents}


def budgeted_runs(store: Store, *, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs that had a budget: flow_run_id, workflow, state, started (ISO),
    budget_usd, cost_usd (live for a RUNNING run)."""
    r = _RUNS.c
    q = (select(r.flow_run_id, r.workflow, r.state, r.started, r.budget_usd, r.cost_usd)
         .where(r.budget_usd.is_not(None)).order_by(r.started.desc()).limit(int(limit)))
    with store._read() as conn:
        rows = [dict(row) for row in conn.execute(q).mappings()]
        running = [row["flow_run_id"] for row in rows if row["state"] == "RUNNING"]
        live = dict(conn.execute(select(_CALLS.c.flow_run_id, func.sum(_CALLS.c.cost_usd))
                                 .where(_CALLS.c.flow_run_id.in_(running)).group_by(_CALLS.c.flow_run_id)).all()) \
            if running else {}
    return [{**row, "started": iso(row["started"]),
             "cost_usd": float(live.get(row["flow_run_id"], row["cost_usd"]) or 0.0)} for row in rows]


# --------------------------------------------------------------------------- self-healing


def _epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


def breakers(store: Store) -> list[dict[str, Any]]:
    """Every circuit breaker (one per provider endpoint), by key; times as epoch seconds."""
    with store._read() as conn:
        rows = conn.execute(select(_BREAKER_ROWS).order_by(_BREAKER_ROWS.c.key)).mappings().all()
    return [{**dict(r), "retry_at": _epoch(r["retry_at"]), "opened_at": _epoch(r["opened_at"]),
             "updated": _epoch(r["updated"])} for r in rows]


def breaker_events(store: Store, key: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """Breaker transitions, oldest first (the last ``limit``)."""
    q = select(_BREAKERS).order_by(_BREAKERS.c.id.desc()).limit(limit)
    if key is not None:
        q = q.where(_BREAKERS.c.key == key)
    with store._read() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for r in rows:
        r["created"] = iso(r["created"])
    return rows[::-1]


def dead_letters(store: Store, limit: int = 50, flow_run_id: str | None = None) -> list[dict[str, Any]]:
    """Steps that failed for good (prompt and error redacted), newest first."""
    q = select(_DEAD).order_by(_DEAD.c.id.desc()).limit(limit)
    if flow_run_id is not None:
        q = q.where(_DEAD.c.flow_run_id == flow_run_id)
    with store._read() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for r in rows:
        r["created"] = iso(r["created"])
    return rows


def dead_letter(store: Store, letter_id: int) -> dict[str, Any] | None:
    with store._read() as conn:
        row = conn.execute(select(_DEAD).where(_DEAD.c.id == int(letter_id))).mappings().first()
    if row is None:
        return None
    return {**dict(row), "created": iso(row["created"])}


def limits(store: Store) -> list[dict[str, Any]]:
    """The providers' limits (``orchestra limits``)."""
    return store.list_limits()


def health(store: Store, limit: int = 200) -> list[dict[str, Any]]:
    """Health probes (``orchestra agents health``), newest first."""
    with store._read() as conn:
        rows = [dict(r) for r in conn.execute(
            select(_HEALTH).order_by(_HEALTH.c.id.desc()).limit(limit)).mappings()]
    for r in rows:
        r["created"] = iso(r["created"])
    return rows


def steps(store: Store, flow_run_id: str) -> list[dict[str, Any]]:
    """Every step of a run in workflow order, steps that never ran included: step, kind,
    state (``core.steps``), depends_on, agent, model, items, error, prompt (rendered),
    output, started, ended (ISO). Prompts and outputs are redacted and clipped."""
    q = select(_STEPS).where(_STEPS.c.flow_run_id == flow_run_id).order_by(_STEPS.c.position, _STEPS.c.id)
    with store._read() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    return [{"step": r["step"], "kind": r["kind"], "state": r["state"], "depends_on": list(r["depends_on"] or []),
             "agent": r["agent"], "model": r["model"], "items": r["items"], "error": r["error"],
             "prompt": r["prompt"], "output": r["output"], "started": iso(r["started"]), "ended": iso(r["ended"])}
            for r in rows]


def progress(store: Store, flow_run_id: str) -> float | None:
    """The share of a run's steps that are finished (0..1), None for a run without steps."""
    rows = steps(store, flow_run_id)
    if not rows:
        return None
    return sum(r["state"] in FINAL_STEP_STATES for r in rows) / len(rows)


def tool_calls(store: Store, flow_run_id: str, step: str | None = None) -> list[dict[str, Any]]:
    """The tool calls of a run (of one step), in the order they ended: step, attempt, agent,
    server, tool, call_id, arguments (redacted), outcome (``core.calls.TOOL_OUTCOMES``), ok,
    duration_s, error, created (ISO)."""
    q = select(_TOOL_CALLS).where(_TOOL_CALLS.c.flow_run_id == flow_run_id)
    if step is not None:
        q = q.where(_TOOL_CALLS.c.step == step)
    with store._read() as conn:
        rows = [dict(r) for r in conn.execute(q.order_by(_TOOL_CALLS.c.id)).mappings()]
    return [{"step": r["step"], "attempt": r["attempt"], "agent": r["agent"], "server": r["server"],
             "tool": r["tool"], "call_id": r["call_id"], "arguments": r["arguments"], "outcome": r["outcome"],
             "ok": r["outcome"] == "ok", "duration_s": float(r["duration_s"] or 0.0), "error": r["error"],
             "created": iso(r["created"])} for r in rows]


# --------------------------------------------------------------------------- tasks


def projects(store: Store) -> list[dict[str, Any]]:
    """Every project by name: id, name, description, created, updated (ISO), task_count."""
    counts = (select(_TASKS.c.project_id, func.count(_TASKS.c.id).label("n"))
              .group_by(_TASKS.c.project_id).subquery())
    q = (select(_PROJECTS, func.coalesce(counts.c.n, 0).label("n_tasks"))
         .select_from(_PROJECTS.outerjoin(counts, counts.c.project_id == _PROJECTS.c.id))
         .order_by(_PROJECTS.c.name))
    with store._read() as conn:
        return [_project_dict(r) for r in conn.execute(q).mappings()]


def project(store: Store, key: str | int) -> dict[str, Any] | None:
    """One project by name (or id: an int, or digits no project is named), as in
    :func:`projects`; None when there is none."""
    with store._read() as conn:
        found = None
        if isinstance(key, str):
            found = conn.execute(select(_PROJECTS).where(_PROJECTS.c.name == key)).mappings().first()
        if found is None and (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            found = conn.execute(select(_PROJECTS).where(_PROJECTS.c.id == int(key))).mappings().first()
        if found is None:
            return None
        n = conn.execute(select(func.count(_TASKS.c.id)).where(_TASKS.c.project_id == found["id"])).scalar_one()
    return _project_dict({**found, "n_tasks": n})


def _project_dict(r: Any) -> dict[str, Any]:
    return {"id": int(r["id"]), "name": r["name"], "description": r["description"], "created": iso(r["created"]),
            "updated": iso(r["updated"]), "task_count": int(r["n_tasks"] or 0)}


def _tasks_select():
    """Tasks with their project's name, their number of runs and their latest run (its
    ledger state, None while the engine has not written it)."""
    latest = (select(_TASK_RUNS.c.task_id, func.max(_TASK_RUNS.c.id).label("last_id"),
                     func.count(_TASK_RUNS.c.id).label("n_runs"))
              .group_by(_TASK_RUNS.c.task_id).subquery())
    last = _TASK_RUNS.alias("last_run")
    return (select(_TASKS, _PROJECTS.c.name.label("project"), func.coalesce(latest.c.n_runs, 0).label("n_runs"),
                   last.c.flow_run_id.label("last_flow_run_id"), last.c.created.label("last_created"),
                   _RUNS.c.state.label("last_state"), _RUNS.c.started.label("last_started"),
                   _RUNS.c.ended.label("last_ended"), _RUNS.c.cost_usd.label("last_cost_usd"))
            .select_from(_TASKS.outerjoin(_PROJECTS, _PROJECTS.c.id == _TASKS.c.project_id)
                         .outerjoin(latest, latest.c.task_id == _TASKS.c.id)
                         .outerjoin(last, last.c.id == latest.c.last_id)
                         .outerjoin(_RUNS, _RUNS.c.flow_run_id == last.c.flow_run_id)))


def _task_dict(r: Any) -> dict[str, Any]:
    last = None
    if r["last_flow_run_id"] is not None:
        last = {"flow_run_id": r["last_flow_run_id"], "state": r["last_state"], "created": iso(r["last_created"]),
                "started": iso(r["last_started"]), "ended": iso(r["last_ended"]),
                "cost_usd": float(r["last_cost_usd"] or 0.0)}
    return {"id": int(r["id"]), "project_id": r["project_id"], "project": r["project"], "parent_id": r["parent_id"],
            "title": r["title"], "description": r["description"], "status": r["status"], "assignee": r["assignee"],
            "labels": list(r["labels"] or []), "workflow": r["workflow"], "inputs": dict(r["inputs"] or {}),
            "definition": r["definition"], "plan": r["plan"], "depends_on": [int(i) for i in r["depends_on"] or []],
            "created": iso(r["created"]), "updated": iso(r["updated"]), "runs": int(r["n_runs"] or 0),
            "last_run": last}


def tasks(store: Store, *, project_id: int | None = None, status: str | None = None,
          ids: list[int] | None = None, no_project: bool = False) -> list[dict[str, Any]]:
    """Tasks by id: id, project_id, project (its name), parent_id, title, description,
    status, assignee, labels, workflow, inputs, definition, plan, depends_on (task ids),
    created, updated (ISO), runs (how many) and last_run (flow_run_id, state in the
    ledger or None while the engine has not written the run, created, started, ended,
    cost_usd) or None. ``no_project``: only the tasks outside any project."""
    q = _tasks_select().order_by(_TASKS.c.id)
    if project_id is not None:
        q = q.where(_TASKS.c.project_id == int(project_id))
    if no_project:
        q = q.where(_TASKS.c.project_id.is_(None))
    if status is not None:
        q = q.where(_TASKS.c.status == status)
    if ids is not None:
        q = q.where(_TASKS.c.id.in_([int(i) for i in ids]))
    with store._read() as conn:
        return [_task_dict(r) for r in conn.execute(q).mappings()]


def task(store: Store, task_id: int) -> dict[str, Any] | None:
    """One task, as in :func:`tasks`, or None."""
    with store._read() as conn:
        row = conn.execute(_tasks_select().where(_TASKS.c.id == int(task_id))).mappings().first()
    return None if row is None else _task_dict(row)


def task_history(store: Store, task_id: int) -> list[dict[str, Any]]:
    """Every change of a task, oldest first: at (ISO), actor, field, old, new, reason."""
    q = select(_TASK_HISTORY).where(_TASK_HISTORY.c.task_id == int(task_id)).order_by(_TASK_HISTORY.c.id)
    with store._read() as conn:
        return [{"at": iso(r["at"]), "actor": r["actor"], "field": r["field"], "old": r["old"], "new": r["new"],
                 "reason": r["reason"]} for r in conn.execute(q).mappings()]


def task_runs(store: Store, task_id: int) -> list[dict[str, Any]]:
    """The flow runs that executed a task, oldest first: flow_run_id, actor, created, and
    from the ledger (None/zeros until the engine wrote the run) workflow, state, started,
    ended, duration_s, calls, cost_usd (a running run's summed live)."""
    q = (select(_TASK_RUNS.c.flow_run_id, _TASK_RUNS.c.actor, _TASK_RUNS.c.created, _RUNS.c.workflow,
                _RUNS.c.state, _RUNS.c.started, _RUNS.c.ended, _RUNS.c.duration_s, _RUNS.c.calls, _RUNS.c.cost_usd)
         .select_from(_TASK_RUNS.outerjoin(_RUNS, _RUNS.c.flow_run_id == _TASK_RUNS.c.flow_run_id))
         .where(_TASK_RUNS.c.task_id == int(task_id)).order_by(_TASK_RUNS.c.id))
    with store._read() as conn:
        found = [{"flow_run_id": r["flow_run_id"], "actor": r["actor"], "created": iso(r["created"]),
                  "workflow": r["workflow"], "state": r["state"], "started": iso(r["started"]),
                  "ended": iso(r["ended"]), "duration_s": r["duration_s"], "calls": int(r["calls"] or 0),
                  "cost_usd": float(r["cost_usd"] or 0.0)} for r in conn.execute(q).mappings()]
        running = [r["flow_run_id"] for r in found if r["state"] == "RUNNING"]
        if running:
            live = conn.execute(totals_select().add_columns(_CALLS.c.flow_run_id)
                                .where(_CALLS.c.flow_run_id.in_(running)).group_by(_CALLS.c.flow_run_id)).mappings()
            by_id = {row["flow_run_id"]: totals_dict(row) for row in live}
            for r in found:
                if r["flow_run_id"] in by_id:
                    r.update(calls=by_id[r["flow_run_id"]]["calls"], cost_usd=by_id[r["flow_run_id"]]["cost_usd"])
    return found


def task_of_run(store: Store, flow_run_id: str) -> int | None:
    """The task a flow run executed, or None."""
    with store._read() as conn:
        found = conn.execute(select(_TASK_RUNS.c.task_id).where(_TASK_RUNS.c.flow_run_id == flow_run_id)).first()
    return None if found is None else int(found[0])


# --------------------------------------------------------------------------- access


def users(store: Store) -> list[dict[str, Any]]:
    """Dashboard users by name: name, role, password (whether one is set: never the hash),
    created, updated (ISO)."""
    with store._read() as conn:
        rows = conn.execute(select(_USERS).order_by(_USERS.c.name)).mappings().all()
    return [{"name": r["name"], "role": r["role"], "password": r["password_hash"] is not None,
             "created": iso(r["created"]), "updated": iso(r["updated"])} for r in rows]


def user_count(store: Store) -> int:
    with store._read() as conn:
        return int(conn.execute(select(func.count()).select_from(_USERS)).scalar() or 0)


def credentials(store: Store, name: str) -> dict[str, Any] | None:
    """``{"name", "role", "password_hash"}`` of one user, or None: what a login checks
    (``orchestra.users.authenticate``), and nothing else reads the hash."""
    with store._read() as conn:
        row = conn.execute(select(_USERS.c.name, _USERS.c.role, _USERS.c.password_hash)
                           .where(_USERS.c.name == name)).mappings().first()
    return dict(row) if row else None


def audit(store: Store, *, limit: int | None = 500, actor: str | None = None, action: str | None = None,
          outcome: str | None = None, since: datetime | None = None) -> list[dict[str, Any]]:
    """The audit log, newest first: id, at (ISO), actor, role, via, action, target, outcome
    (ok | refused | failed), before, after (redacted when written), detail. ``action``
    matches a whole action (``agent.edit``) or a prefix ending in a dot (``agent.``)."""
    q = select(_AUDIT).order_by(_AUDIT.c.at.desc(), _AUDIT.c.id.desc())
    if actor:
        q = q.where(_AUDIT.c.actor == actor)
    if action:
        q = q.where(_AUDIT.c.action.startswith(action, autoescape=True) if action.endswith(".")
                    else _AUDIT.c.action == action)
    if outcome:
        q = q.where(_AUDIT.c.outcome == outcome)
    if since is not None:
        q = q.where(_AUDIT.c.at >= aware(since))
    if limit is not None:
        q = q.limit(int(limit))
    with store._read() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for r in rows:
        r["at"] = iso(r["at"])
    return rows


def agent_versions(store: Store, agent: str) -> list[dict[str, Any]]:
    """The saved versions of one agent, newest first: version, action, file, actor, created
    (ISO), size (characters of its text; the text itself: :func:`agent_version`)."""
    q = (select(_VERSIONS.c.version, _VERSIONS.c.action, _VERSIONS.c.file, _VERSIONS.c.actor, _VERSIONS.c.created,
                func.length(_VERSIONS.c.text).label("size"))
         .where(_VERSIONS.c.agent == agent).order_by(_VERSIONS.c.version.desc()))
    with store._read() as conn:
        rows = [dict(r) for r in conn.execute(q).mappings()]
    for r in rows:
        r["created"] = iso(r["created"])
        r["size"] = int(r["size"] or 0)
    return rows


def versioned_agents(store: Store) -> list[str]:
    """The agents with saved versions (deleted ones included), sorted."""
    with store._read() as conn:
        return sorted(conn.execute(select(_VERSIONS.c.agent).distinct()).scalars())


def agent_version(store: Store, agent: str, version: int) -> dict[str, Any] | None:
    """One saved version with its ``text``, or None."""
    with store._read() as conn:
        row = conn.execute(select(_VERSIONS).where(_VERSIONS.c.agent == agent, _VERSIONS.c.version == int(version))
                           ).mappings().first()
    if row is None:
        return None
    return {**{k: row[k] for k in ("agent", "version", "action", "file", "text", "actor")},
            "created": iso(row["created"])}
