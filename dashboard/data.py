"""What the dashboard shows, as plain data: ``ledger.queries`` composed with the agent
registry, the settings, the environment and the Prefect API. No SQL, no file writes
(agent edits go through ``orchestra.agent_files``, which checks the role and audits).

The Streamlit pages (``dashboard/``) only render what these functions return; every
function here works without Streamlit, so it is unit-tested on a seeded ledger.

* Every value is display-ready: no secret (only "set"/"not set" and where it came
  from), URLs with their passwords masked, free text passed through
  :func:`core.redact.redact`.
* An empty ledger gives empty lists and zeros, never an exception.
* Nothing here imports Prefect: the Prefect API is read over HTTP (two requests, a
  short timeout, no retries), so the dashboard starts fast and fails soft.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import re
import shutil
import socket
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from agents.providers import SPECS
from core.redact import redact, redact_url
from core.settings import settings
from ledger import queries
from ledger.queries import COST_GROUPS, RUN_STATES
from ledger.store import Store, get_store

__all__ = [
    "AgentFormError",
    "COST_GROUPS",
    "ORCHESTRA_BLOCK_TYPES",
    "agent_form_values",
    "agent_rows",
    "agents_dir",
    "audit_rows",
    "breaker_rows",
    "budget_rows",
    "failure_costs",
    "latency_rows",
    "run_costs",
    "step_cost_per_day",
    "cost_per_day",
    "cost_rows",
    "dagger_status",
    "fast_agent_status",
    "flow_run_url",
    "general_settings",
    "health_rows",
    "input_text",
    "parse_budget",
    "with_links",
    "workflow_entries",
    "workflow_entry",
    "kpis",
    "ledger_key",
    "orchestra_blocks",
    "prefect_api_url",
    "prefect_status",
    "prefect_ui_url",
    "provider_rows",
    "recent_runs",
    "dag_layout",
    "run_detail",
    "step_extras",
    "run_filters",
    "run_rows",
    "agent_file_text",
    "agent_from_form",
    "limit_rows",
    "parse_limits",
    "provider_names",
    "versioned_agents",
    "preview_agent",
    "save_agent",
    "store_for",
    "try_agent",
    "unpriced",
]

UTC = timezone.utc
NO_AGENT = "(no agent)"
NO_WORKFLOW = "(unknown workflow)"
# slug -> (display name, what it holds); the four types `prefect block register -m blocks` registers
ORCHESTRA_BLOCK_TYPES: dict[str, tuple[str, str]] = {
    "orchestra-provider-credentials": ("Orchestra Provider Credentials", "an LLM provider's API key and endpoint"),
    "orchestra-fast-agent-settings": ("Orchestra Fast-Agent Settings", "fast-agent default model, MCP servers"),
    "orchestra-dagger-engine": ("Orchestra Dagger Engine", "how container steps reach a Dagger engine"),
    "orchestra-store": ("Orchestra Store", "the ledger's database URL"),
}
# Block fields that are never secret and help a person recognise a document.
_SAFE_BLOCK_FIELDS = {
    "orchestra-provider-credentials": ("provider", "base_url", "organization"),
    "orchestra-fast-agent-settings": ("default_model", "logger_level"),
    "orchestra-dagger-engine": ("session_port", "runner_host", "cli_bin", "timeout_seconds"),
    "orchestra-store": (),
}


# --------------------------------------------------------------------------- helpers


def store_for(url: str | None = None) -> Store:
    """The process-wide ledger of ``url`` (default: the app's, ``orchestra.runtime.ledger()``)."""
    if url is None:
        from orchestra.runtime import ledger

        return ledger()
    return get_store(url)


def ledger_key() -> str:
    """A string that changes when the ledger the dashboard reads changes (a cache key;
    it may hold a password, so it is never shown)."""
    current = settings()
    return f"{current.db_url or ''}|{current.store_block or ''}|{current.home}"


def _now(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _parse(ts: str | datetime | None) -> datetime | None:
    if ts is None or isinstance(ts, datetime):
        return ts
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None


def _first_line(text: str | None, limit: int = 160) -> str | None:
    if not text:
        return None
    line = redact(str(text)).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def kpis(store: Store, *, days: int = 7, now: datetime | None = None) -> dict[str, Any]:
    """``ledger.queries.kpis``: runs, success rate, calls, tokens and cost, recent and all time."""
    return queries.kpis(store, days=days, now=now)


def cost_per_day(store: Store, *, days: int | None = 30, now: datetime | None = None) -> list[dict[str, Any]]:
    """``ledger.queries.cost_per_day``: one row per UTC day, zeros for days without calls."""
    return queries.cost_per_day(store, days=days, now=now)


def run_rows(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs as table rows: started (datetime), workflow, state, duration_s,
    calls, tokens, cost_usd, error (first line, redacted), flow_run_id."""
    return [
        {
            "started": _parse(r["started"]),
            "workflow": r["workflow"],
            "state": r["state"],
            "duration_s": r["duration_s"],
            "calls": r["calls"],
            "tokens": r["input_tokens"] + r["output_tokens"],
            "cost_usd": r["cost_usd"],
            "error": _first_line(r["error"]),
            "flow_run_id": r["flow_run_id"],
        }
        for r in runs
    ]


def with_links(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run rows with ``link``: the run's page in this dashboard (``run?id=<flow run id>``)."""
    return [{**r, "link": f"run?id={r['flow_run_id']}"} for r in rows]


def recent_runs(store: Store, limit: int = 10) -> list[dict[str, Any]]:
    return run_rows(queries.runs(store, limit=limit))


def top_workflow(store: Store) -> dict[str, Any] | None:
    """The workflow that cost the most (all time), or None without calls."""
    rows = queries.cost_groups(store, "workflow")
    return rows[0] if rows else None


def example_workflow() -> str:
    """A shipped workflow to suggest on an empty ledger (a path relative to the repository)."""
    from orchestra.runtime import REPO_ROOT, workflows_dir

    folder = workflows_dir()
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    preferred = [p for p in files if p.stem == "hello"] or files
    if not preferred:
        return "my-workflow.yaml"
    try:
        return str(preferred[0].relative_to(REPO_ROOT))
    except ValueError:
        return str(preferred[0])


# --------------------------------------------------------------------------- runs


def run_filters(store: Store) -> dict[str, list[str]]:
    """The workflows in the ledger (sorted) and the run states."""
    return {"workflows": queries.run_workflows(store), "states": list(RUN_STATES)}


def list_runs(store: Store, *, workflow: str | None = None, state: str | None = None,
              limit: int = 200) -> list[dict[str, Any]]:
    return run_rows(queries.runs(store, limit=limit, workflow=workflow or None, state=state or None))


STEP_FIELDS = ("step", "kind", "state", "depends_on", "agent", "model", "items", "error", "prompt", "output",
               "started", "ended")
_CALL_FIELDS = ("status", "attempts", "errors", "cached", "input_tokens", "output_tokens", "cached_tokens",
                "cost_usd", "latency_ms", "last_error")


def _why(step: dict[str, Any], run_state: str) -> str | None:
    """Why a step did not run (or not to the end), in a sentence; None when it completed."""
    state = step["state"]
    if state == "NOT_READY":
        return step.get("error") or "an upstream step did not complete"
    if state == "SKIPPED":
        return "its `when:` condition was false"
    if state == "FAILED":
        return step.get("error") or step.get("last_error") or "failed"
    if state == "CANCELLED":
        return step.get("error") or "cancelled"
    if state in ("PENDING", "RUNNING", "PAUSED") and run_state not in ("RUNNING",):
        return f"never finished: the run ended {run_state} first"
    if state == "PENDING":
        return "waiting for its upstream steps"
    if state == "PAUSED":
        return "waiting for an approval"
    return None


def run_detail(store: Store, flow_run_id: str) -> dict[str, Any] | None:
    """``{"run", "inputs", "steps", "calls", "tool_calls", "dead_letters", "first_failure", "final"}`` of one
    run, or None.

    ``steps``: every step of the run in workflow order, the ones that never ran included
    (``ledger.queries.steps``), each with its state, kind, depends_on, agent, model,
    prompt, output, started/ended (datetimes), ``duration_s``, ``why`` (a sentence when it
    did not complete), its attempts folded by the engine's rule (``ledger.queries.run_steps``:
    attempts, errors, status, tokens, cost, latency, last_error), its ``calls``, and
    whatever other fields a step row carries (a kind's own: shown as they are). A run
    recorded before steps were kept has one step per step that called a provider.
    ``calls``: every attempt. ``tool_calls``: every tool call the run's agents made
    (``ledger.queries.tool_calls``; arguments as redacted JSON text), also on each step
    as its ``tool_calls``; a container or command step carries its ``image`` and last
    ``exit_code``. ``inputs``: ``[{"input", "value"}]`` (values as text).
    ``first_failure``: ``{"step", "error"}`` of the first step that failed, else of the run.
    """
    run = queries.run(store, flow_run_id)
    if run is None:
        return None
    calls = run.pop("calls")
    run["n_calls"] = run.get("n_calls", len(calls))
    run["cache_hits"] = sum(1 for c in calls if c["cached"])
    run["provider_calls"] = len(calls) - run["cache_hits"]
    run["started"] = _parse(run["started"])
    run["ended"] = _parse(run["ended"])
    run["error"] = redact(run["error"]) if run["error"] else None
    inputs = [
        {"input": k, "value": v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}
        for k, v in (run.pop("inputs") or {}).items()
    ]
    call_rows = [
        {
            "#": i + 1, "step": c["step"], "kind": c.get("kind") or "agent", "attempt": c["attempt"],
            "agent": c["agent"], "model": c["model"], "image": c.get("image"), "exit_code": c.get("exit_code"),
            "status": "cached" if c["cached"] else c["status"], "purpose": c["purpose"],
            "input_tokens": c["input_tokens"],
            "output_tokens": c["output_tokens"], "cached_tokens": c["cached_tokens"],
            "cost_usd": c["cost_usd"], "priced": c["priced"], "latency_ms": c["latency_ms"],
            "cached": c["cached"], "error": _first_line(c["error"], 300), "created": _parse(c["created"]),
        }
        for i, c in enumerate(calls)
    ]
    letters = queries.dead_letters(store, limit=50, flow_run_id=flow_run_id)
    dead = [
        {"step": d["step"], "agent": d["agent"], "model": d["model"], "attempts": d["attempts"],
         "error": _first_line(d["error"], 300), "created": _parse(d["created"])}
        for d in letters
    ]
    tools = [
        {"step": t["step"], "attempt": t["attempt"], "agent": t["agent"], "tool": f"{t['server']}.{t['tool']}",
         "outcome": t["outcome"], "duration_s": t["duration_s"],
         "arguments": redact(json.dumps(t["arguments"], ensure_ascii=False))[:300],
         "error": _first_line(t["error"], 300), "created": _parse(t["created"])}
        for t in queries.tool_calls(store, flow_run_id)
    ]
    tools_by_step: dict[str, list[dict[str, Any]]] = {}
    for t in tools:
        tools_by_step.setdefault(t["step"], []).append({k: v for k, v in t.items() if k != "step"})
    folded = {row["step"]: {**row, "last_error": _first_line(row["last_error"])} for row in queries.run_steps(calls)}
    by_step: dict[str, list[dict[str, Any]]] = {}
    for c in call_rows:
        by_step.setdefault(c["step"], []).append(c)
    recorded = queries.steps(store, flow_run_id)
    if not recorded:  # a run from before the steps table: the steps that called a provider
        recorded = [{"step": name, "kind": "agent", "state": "FAILED" if f["status"] == "error" else "COMPLETED",
                     "depends_on": [], "agent": f["agent"], "model": f["model"], "items": None, "error": None,
                     "prompt": None, "output": None, "started": None, "ended": None} for name, f in folded.items()]
    steps = []
    for row in recorded:
        f = folded.get(row["step"], {})
        step = {**row, "started": _parse(row["started"]), "ended": _parse(row["ended"]),
                "error": redact(row["error"]) if row.get("error") else None}
        step["agent"] = step.get("agent") or f.get("agent")
        step["model"] = step.get("model") or f.get("model")
        for k in _CALL_FIELDS:
            step[k] = f.get(k, 0 if k not in ("status", "last_error", "cached") else None)
        step["cached"] = bool(f.get("cached"))
        for k in ("image", "exit_code"):  # a container's or command's
            if f.get(k) is not None:
                step[k] = f[k]
        step["tool_calls"] = tools_by_step.get(row["step"], [])
        step["calls"] = by_step.get(row["step"], [])
        step["duration_s"] = ((step["ended"] - step["started"]).total_seconds()
                              if step["started"] and step["ended"] else None)
        step["why"] = _why(step, run["state"])
        steps.append(step)
    failed = sorted((s for s in steps if s["state"] == "FAILED"),
                    key=lambda s: s["ended"] or datetime.max.replace(tzinfo=UTC))
    first = ({"step": failed[0]["step"], "error": failed[0]["why"]} if failed
             else {"step": None, "error": run["error"]} if run["error"] else None)
    return {"run": run, "inputs": inputs, "steps": steps, "calls": call_rows, "tool_calls": tools, "dead_letters": dead,
            "first_failure": first, "final": run["state"] != "RUNNING"}


def step_extras(step: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a step row beyond the common ones (a kind's own: tool calls, an image,
    an exit code, ...), non-empty ones only: the run page shows them as they are."""
    known = set(STEP_FIELDS) | set(_CALL_FIELDS) | {"calls", "duration_s", "why"}
    return {k: v for k, v in step.items() if k not in known and v not in (None, "", [], {})}


def dag_layout(steps: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """``{step: (column, row)}``: a step's column is its longest chain of upstream steps,
    its row its order among the steps of that column (workflow order)."""
    names = [s["step"] for s in steps]
    deps = {s["step"]: [d for d in s.get("depends_on") or [] if d in names] for s in steps}
    depth: dict[str, int] = {}

    def level(name: str, seen: frozenset = frozenset()) -> int:
        if name not in depth:
            depth[name] = 0 if name in seen else 1 + max((level(d, seen | {name}) for d in deps[name]), default=-1)
        return depth[name]

    rows: dict[int, int] = {}
    out = {}
    for name in names:
        col = level(name)
        out[name] = (col, rows.get(col, 0))
        rows[col] = rows.get(col, 0) + 1
    return out


# --------------------------------------------------------------------------- workflows


def workflow_entry(path: str | Path) -> dict[str, Any]:
    """One workflow file as the Workflows page shows it: name, file, description, type,
    ``ok``, ``problems`` (each naming the step or field), ``steps`` (for the DAG preview:
    step, kind, depends_on, agent, state "PENDING") and ``inputs`` (name -> type,
    description, default, required)."""
    from flows.spec import WorkflowError, load_workflow

    path = Path(path)
    entry: dict[str, Any] = {"name": path.stem, "file": str(path), "description": None, "type": None, "ok": False,
                             "problems": [], "steps": [], "inputs": {}}
    try:
        wf = load_workflow(path)
    except WorkflowError as exc:
        entry["problems"] = [redact(p) for p in exc.problems]
        return entry
    except (OSError, ValueError) as exc:
        entry["problems"] = [redact(str(exc))]
        return entry
    deps = wf.dependencies()
    entry.update(name=wf.name, description=wf.description, type=wf.type, ok=True,
                 steps=[{"step": s.id, "kind": s.kind, "depends_on": deps[s.id], "state": "PENDING",
                         "agent": s.agent if isinstance(s.agent, str) else None,
                         "why": f"for_each: {s.for_each}" if s.for_each else None} for s in wf.steps],
                 inputs={k: {"type": v.type, "description": v.description, "default": v.default,
                             "required": v.is_required} for k, v in wf.inputs.items()})
    return entry


def workflow_entries(extra: list[str] | None = None) -> list[dict[str, Any]]:
    """The shipped workflows (``deployments/workflows``) and any other files named in ``extra``."""
    from orchestra.runtime import workflows_dir
    from orchestra.workflows import SUFFIXES

    folder = workflows_dir()
    files = sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file()) if folder.is_dir() else []
    entries = [{**workflow_entry(p), "source": "shipped"} for p in files]
    for path in extra or []:
        entries.append({**workflow_entry(path), "source": "file"})
    return entries


def parse_budget(text: Any) -> float | None:
    """A budget field's text as USD (empty: none); ValueError naming the field."""
    raw = str(text or "").strip().removeprefix("$")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"budget: {raw!r} is not a number of USD") from None
    if value < 0 or value != value or value in (float("inf"),):
        raise ValueError(f"budget: must be a number of USD >= 0 (got {raw})")
    return value


def input_text(value: Any) -> str:
    """A typed default as the text the form shows (JSON for objects and arrays)."""
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value)


# --------------------------------------------------------------------------- audit


def _compact(value: Any, limit: int = 400) -> str | None:
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = redact(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def audit_rows(store: Store, *, limit: int = 500, **filters: Any) -> list[dict[str, Any]]:
    """``ledger.queries.audit`` for a table: ``at`` a datetime, before/after as short JSON text."""
    return [{**r, "at": _parse(r["at"]), "before": _compact(r["before"]), "after": _compact(r["after"]),
             "detail": _first_line(r["detail"], 300)}
            for r in queries.audit(store, limit=limit, **filters)]


def user_rows(store: Store) -> list[dict[str, Any]]:
    """The dashboard's users for a table: name, role, ``login`` (password or single
    sign-on), created and updated as datetimes. Never a hash."""
    return [{"name": u["name"], "role": u["role"], "login": "password" if u["password"] else "single sign-on",
             "created": _parse(u["created"]), "updated": _parse(u["updated"])} for u in queries.users(store)]


# --------------------------------------------------------------------------- Prefect links


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


_CLOUD_API = re.compile(r"^https://api\.(prefect\.(?:cloud|dev))/api/accounts/([^/]+)/workspaces/([^/]+)/?$")


def ui_from_api(api_url: str) -> str:
    """The Prefect UI address for an API address (Prefect Cloud's form included)."""
    api_url = _strip_userinfo(api_url.strip()).rstrip("/")
    m = _CLOUD_API.match(api_url)
    if m:
        return f"https://app.{m[1]}/account/{m[2]}/workspace/{m[3]}"
    return api_url[: -len("/api")] if api_url.endswith("/api") else api_url


def _local_server() -> dict | None:
    try:
        from orchestra import prefect_server

        return prefect_server.status()
    except Exception:
        return None


def prefect_api_url(local: dict | None | bool = True) -> tuple[str | None, str]:
    """``(api_url, source)``: ``$PREFECT_API_URL``, else Orchestra's local Prefect server
    when it runs (``local=False`` skips that check), else ``(None, "ephemeral")``."""
    env = os.environ.get("PREFECT_API_URL", "").strip()
    if env:
        return env, "PREFECT_API_URL"
    info = _local_server() if local is True else (local or None)
    if info and info.get("url"):
        return info["url"], "local Orchestra server"
    return None, "ephemeral"


def prefect_ui_url(local: dict | None | bool = True) -> str | None:
    """The Prefect UI to link to: ``$PREFECT_UI_URL``, else derived from the API URL
    (``$PREFECT_API_URL`` or the local server), else None.  Never holds credentials."""
    ui = os.environ.get("PREFECT_UI_URL", "").strip()
    if ui:
        return _strip_userinfo(ui).rstrip("/")
    env = os.environ.get("PREFECT_API_URL", "").strip()
    if env:
        return ui_from_api(env)
    info = _local_server() if local is True else (local or None)
    if info:
        return _strip_userinfo(info.get("ui") or ui_from_api(info["url"])).rstrip("/")
    return None


def flow_run_url(flow_run_id: str, ui_url: str | None) -> str | None:
    """The Prefect UI page of a flow run, or None when no UI is known."""
    return f"{ui_url.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui_url else None


# --------------------------------------------------------------------------- costs


def cost_rows(store: Store, by: str, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """``store.costs(by)`` with a printable key in ``label`` (a missing agent is
    "(no agent)") and ``tokens`` (input + output)."""
    rows = queries.cost_groups(store, by, since=since)  # ValueError names the valid groups
    blank = {"agent": NO_AGENT, "workflow": NO_WORKFLOW}.get(by, "(none)")
    for r in rows:
        r["label"] = str(r[by]) if r[by] not in (None, "") else blank
        r["tokens"] = r["input_tokens"] + r["output_tokens"]
    return rows


RUN_POINTS = 2000  # the cost-per-run chart's newest runs


def run_costs(store: Store, *, since: datetime | None = None) -> list[dict[str, Any]]:
    return queries.run_costs(store, since=since, limit=RUN_POINTS)


def step_cost_per_day(store: Store, *, since: datetime | None = None) -> list[dict[str, Any]]:
    return queries.step_cost_per_day(store, since=since)


def failure_costs(store: Store, *, since: datetime | None = None) -> dict[str, Any]:
    return queries.failure_costs(store, since=since)


def latency_rows(store: Store, by: str, *, since: datetime | None = None) -> list[dict[str, Any]]:
    """p50/p95 latency per model or agent, with a printable ``label``."""
    rows = queries.latency_percentiles(store, by, since=since)  # type: ignore[arg-type]
    for r in rows:
        r["label"] = str(r[by]) if r[by] else (NO_AGENT if by == "agent" else "(none)")
    return rows


def budget_rows(store: Store, folder: str | Path | None = None, *, now: datetime | None = None) -> dict[str, Any]:
    """Budgets and how much of each is used: ``agents`` (each agent's ``daily_budget_usd``
    and what it spent since midnight UTC) and ``runs`` (the newest runs that had a budget)."""
    from agents.registry import agent_files, load_agent

    budgets: dict[str, float] = {}
    for path in agent_files(agents_dir(folder)):
        try:
            a = load_agent(path)
        except ValueError:
            continue
        if a.daily_budget_usd is not None:
            budgets[a.name] = float(a.daily_budget_usd)
    midnight = _now(now).replace(hour=0, minute=0, second=0, microsecond=0)
    spent = queries.agent_spend(store, sorted(budgets), since=midnight)
    agents = [{"agent": name, "budget_usd": budgets[name], "spent_usd": spent.get(name, 0.0),
               "used": (spent.get(name, 0.0) / budgets[name]) if budgets[name] else None} for name in sorted(budgets)]
    runs = [{**r, "started": _parse(r["started"]), "used": (r["cost_usd"] / r["budget_usd"]) if r["budget_usd"]
             else None} for r in queries.budgeted_runs(store)]
    return {"agents": agents, "runs": runs}


def unpriced(store: Store, *, since: datetime | None = None) -> dict[str, Any]:
    """``ledger.queries.unpriced``: successful calls genai-prices could not price."""
    return queries.unpriced(store, since=since)


# --------------------------------------------------------------------------- agents


def agents_dir(path: str | Path | None = None) -> Path:
    """The folder of agent files the dashboard manages (default: the registry, ``agents/``)."""
    if path:
        return Path(path)
    from agents.registry import AGENTS_DIR

    return AGENTS_DIR


def agent_rows(folder: str | Path | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """``(agents, problems)``: one row per agent file that loads (name, description,
    model, capabilities, fallback, credentials block name, daily budget, file) and one
    message per file that does not (a broken file never hides the others)."""
    from agents.base import default_model
    from agents.registry import agent_files, load_agent

    folder = agents_dir(folder)
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    seen: dict[str, str] = {}
    for path in agent_files(folder):
        try:
            a = load_agent(path)
        except ValueError as exc:
            problems.append(redact(str(exc)))
            continue
        if a.name in seen:
            problems.append(f"{path.name}: agent {a.name!r} is already defined in {seen[a.name]}")
            continue
        seen[a.name] = path.name
        rows.append({
            "name": a.name,
            "description": a.description or "",
            "model": a.model or f"default ({default_model()})",
            "capabilities": ", ".join(a.capabilities),
            "fallback": ", ".join(a.fallback),
            "credentials": a.credentials or "",
            "daily_budget_usd": a.daily_budget_usd,
            "file": path.name,
        })
    return rows, problems


def breaker_rows(store: Store) -> list[dict[str, Any]]:
    """Circuit breakers, one per provider endpoint (model @ base URL)."""
    rows = queries.breakers(store)

    def ts(epoch: float | None) -> datetime | None:
        return datetime.fromtimestamp(epoch, UTC) if epoch else None

    return [
        {"model": r["model"], "endpoint": redact_url(r["base_url"]), "state": r["state"],
         "failures": r["failures"], "opened": ts(r["opened_at"]), "retry_at": ts(r["retry_at"]),
         "updated": ts(r["updated"])}
        for r in rows
    ]


def health_rows(store: Store) -> list[dict[str, Any]]:
    """The latest health check of each agent (``orchestra agents health``), by agent name."""
    checks = queries.health(store, limit=500)  # newest first
    latest: dict[str, dict[str, Any]] = {}
    for h in checks:
        latest.setdefault(h["agent"], {
            "agent": h["agent"], "model": h["model"], "status": h["status"],
            "latency_ms": h["latency_ms"], "cost_usd": h["cost_usd"],
            "error": _first_line(h["error"], 300), "checked": _parse(h["created"]),
        })
    return [latest[k] for k in sorted(latest)]


FORM_FIELDS = ("name", "description", "model", "instruction", "temperature", "max_tokens",
               "capabilities", "fallback", "servers", "credentials", "daily_budget_usd")
_LIST_FIELDS = ("capabilities", "fallback", "servers")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class AgentFormError(ValueError):
    """The form's values do not make a valid agent; ``errors`` is ``[(field, message)]``."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))


def agent_form_values(name: str | None, folder: str | Path | None = None) -> dict[str, Any]:
    """The form's starting values: the agent ``name``'s file, or blanks for a new agent.
    Lists are comma-separated text; numbers are text ("" for none)."""
    values: dict[str, Any] = {f: "" for f in FORM_FIELDS}
    values["fallback"] = []
    if not name:
        return values
    from agents.registry import agent_file, load_agent

    path = agent_file(name, agents_dir(folder))
    if path is None:
        return values
    a = load_agent(path)
    for f in FORM_FIELDS:
        v = getattr(a, f)
        if f == "fallback":
            values[f] = list(v)
        elif f in _LIST_FIELDS:
            values[f] = ", ".join(v)
        else:
            values[f] = "" if v is None else str(v)
    return values


def _split(text: Any) -> list[str]:
    if isinstance(text, (list, tuple)):
        return [str(x).strip() for x in text if str(x).strip()]
    return [p.strip() for p in str(text or "").replace("\n", ",").split(",") if p.strip()]


def _agent_data(values: Mapping[str, Any]) -> tuple[str, dict[str, Any], list[tuple[str, str]]]:
    """Form values -> (name, YAML mapping without the name, errors)."""
    errors: list[tuple[str, str]] = []
    unknown = set(values) - set(FORM_FIELDS)
    if unknown:
        errors.append((sorted(unknown)[0], f"unknown field (allowed: {', '.join(FORM_FIELDS)})"))
    name = str(values.get("name") or "").strip()
    if not name:
        errors.append(("name", "is required"))
    elif not _NAME.match(name) or ".." in name:
        errors.append(("name", f"{name!r} is not a valid agent name: use letters, digits, '-', '_' or '.' "
                               "(it is also the file name)"))
    data: dict[str, Any] = {}
    for f in ("description", "model", "instruction", "credentials"):
        v = str(values.get(f) or "").strip()
        if v:
            data[f] = v + "\n" if f == "instruction" and "\n" in v else v
    for f, kind in (("temperature", float), ("max_tokens", int), ("daily_budget_usd", float)):
        raw = values.get(f)
        if raw is None or str(raw).strip() == "":
            continue
        try:
            data[f] = kind(str(raw).strip()) if not isinstance(raw, (int, float)) else kind(raw)
        except ValueError:
            errors.append((f, f"{raw!r} is not {'a whole number' if kind is int else 'a number'}"))
    for f in _LIST_FIELDS:
        items = _split(values.get(f))
        if items:
            data[f] = items
    # Agent files are committed and shown everywhere: a key pasted into any field is refused.
    for f, v in data.items():
        for text in v if isinstance(v, list) else [v]:
            if isinstance(text, str) and redact(text) != text:
                hint = " (name a ProviderCredentials block here, not a key)" if f == "credentials" else ""
                errors.append((f, f"looks like it contains a secret{hint}; agent files must not hold keys"))
                break
    return name, data, errors


def _validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "agent"
        msg = err["msg"].removeprefix("Value error, ")
        out.append((field.split(".")[0] if field.split(".")[0] in FORM_FIELDS else field, redact(msg)))
    return out


def agent_from_form(values: Mapping[str, Any]) -> Any:
    """The form's values as an ``agents.base.AgentConfig``; :class:`AgentFormError` naming
    each bad field (an unknown model or provider, a budget that is not a number, ...)."""
    from agents.base import AgentConfig

    name, data, errors = _agent_data(values)
    agent = None
    if not errors:
        try:
            agent = AgentConfig.model_validate({"name": name, **data})
        except ValidationError as exc:
            errors += _validation_errors(exc)
    if errors or agent is None:
        raise AgentFormError(errors)
    return agent


def _form_error(exc: Exception) -> AgentFormError:
    field = getattr(exc, "field", "agent")
    return AgentFormError([(field, redact(str(exc)).removeprefix(f"{field}: "))])


def preview_agent(values: Mapping[str, Any], folder: str | Path | None = None, *, overwrite: bool = False) -> Any:
    """What saving the form would write: an ``orchestra.agent_files.Plan`` (file, old and
    new text, unified diff). :class:`AgentFormError` naming the field; nothing written."""
    from agents.registry import AgentFileError
    from orchestra import agent_files

    agent = agent_from_form(values)
    try:
        return agent_files.preview(agent, agents_dir(folder), overwrite=overwrite)
    except AgentFileError as exc:
        raise _form_error(exc) from None


def save_agent(values: Mapping[str, Any], folder: str | Path | None = None, *, overwrite: bool = False,
               actor: Any, expected: str | None = None) -> Path:
    """Validate the form's values and save them through ``orchestra.agent_files.save`` as
    ``actor`` (the role is checked and the change audited there; a version is kept).

    ``overwrite=False`` refuses an agent that already exists; ``expected`` is the file's
    text the diff was made from. :class:`AgentFormError` naming each bad field,
    ``orchestra.access.Forbidden`` for a role that may not; nothing is written then."""
    from agents.registry import AgentFileError
    from orchestra import agent_files

    agent = agent_from_form(values)
    try:
        return agent_files.save(actor, agent, agents_dir(folder), overwrite=overwrite, expected=expected).file
    except (AgentFileError, agent_files.AgentConflict) as exc:
        raise _form_error(exc) from None


def versioned_agents(store: Store) -> list[str]:
    """Agents with saved versions, deleted ones included (``ledger.queries.versioned_agents``)."""
    return queries.versioned_agents(store)


def agent_file_text(name: str, folder: str | Path | None = None) -> str | None:
    """The text of agent ``name``'s file now, or None when it has none."""
    from agents.registry import agent_file

    path = agent_file(name, agents_dir(folder))
    return None if path is None else path.read_text(encoding="utf-8")


def limit_rows(store: Store) -> list[dict[str, Any]]:
    """The providers' limits (``ledger.queries.limits``), ``updated`` a datetime."""
    return [{**r, "updated": _parse(r["updated"])} for r in queries.limits(store)]


def provider_names() -> list[str]:
    return [spec.name for spec in SPECS]


def parse_limits(concurrency: Any, rpm: Any) -> dict[str, int | None]:
    """The limits form's text as numbers (empty: no limit); ValueError naming the field."""
    out: dict[str, int | None] = {}
    for label, key, raw in (("Calls in flight", "concurrency", concurrency), ("Requests per minute", "rpm", rpm)):
        text = str(raw or "").strip()
        if not text:
            out[key] = None
            continue
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"{label}: {text!r} is not a whole number") from None
        if value < 1:
            raise ValueError(f"{label}: at least 1 (or empty for no limit)")
        out[key] = value
    return out


def try_agent(agent: Any, prompt: str, *, folder: str | Path | None = None,
              timeout: float = 60.0) -> dict[str, Any]:
    """One call of an agent (an ``AgentConfig`` or a registry name) with ``prompt``,
    through ``agents.call_agent``; not recorded in the ledger.

    ``{"ok": True, "output", "model", "input_tokens", "output_tokens", "cost_usd",
    "priced", "latency_ms"}`` or ``{"ok": False, "error": <redacted message>}``."""
    from agents import AgentCallError, AgentConfig, call_agent, default_model, load_registry, parse_model

    try:
        if not isinstance(agent, AgentConfig):
            registry = load_registry(agents_dir(folder))
            if agent not in registry:
                return {"ok": False, "error": f"no agent named {agent!r} in {agents_dir(folder)}"}
            agent = registry[agent]
        from blocks.credentials import call_credentials

        provider, _ = parse_model(agent.model or default_model())
        credentials = call_credentials(provider, agent.credentials)
        result = asyncio.run(call_agent(agent, prompt, timeout=timeout, **credentials))
    except AgentCallError as exc:
        return {"ok": False, "error": redact(exc.message)}
    except Exception as exc:  # MissingCredentials, a bad registry file, ...
        return {"ok": False, "error": redact(str(exc) or type(exc).__name__)}
    return {
        "ok": True, "output": redact(result.output), "model": result.model,
        "input_tokens": result.input_tokens, "output_tokens": result.output_tokens,
        "cost_usd": result.cost_usd, "priced": result.priced, "latency_ms": result.latency_ms,
    }


# --------------------------------------------------------------------------- configuration


def _env_set(name: str) -> bool:
    return bool(os.environ.get(name, "").strip())


def _show_url(value: str | None) -> str | None:
    return redact(redact_url(value)) if value else None


def provider_rows() -> list[dict[str, str]]:
    """Per provider: whether an API key is set ("set"/"not set", never the value), where
    it comes from, and the endpoint."""
    rows = []
    for spec in SPECS:  # agents.providers: one entry per provider
        if spec.key_var is None:
            free = "/".join(sorted(spec.free_models)) or "its models"
            rows.append({"provider": spec.name, "API key": "not needed",
                         "source": f"{free} need no key; other {spec.name} models use the keys above",
                         "endpoint": "in-process", "endpoint source": "built-in"})
            continue
        key_set = spec.key_set()
        base = os.environ.get(spec.base_url_var or "", "").strip()
        rows.append({
            "provider": spec.name,
            "API key": "set" if key_set else "not set",
            "source": (f"environment ({spec.key_var})" if key_set
                       else f"none in the environment; a Prefect block '{spec.name}-default' or an agent's "
                            "`credentials:` block may provide it"),
            "endpoint": _show_url(base) if base else f"{spec.default_base_url} (default)",
            "endpoint source": spec.base_url_var if base else "built-in",
        })
    return rows


def _source(field: str) -> str:
    """Where a setting's value comes from: its ``ORCHESTRA_*`` variable, or the default."""
    var = f"ORCHESTRA_{field.upper()}"
    return var if _env_set(var) else "built-in"


_SHOWN_SETTINGS = {"default_model": "default model", "home": "Orchestra home", "prefect": "Prefect mode",
                   "server_port": "local server port", "router_model": "router model", "limiter": "provider limiter",
                   "breaker_threshold": "breaker threshold", "breaker_cooldown": "breaker cool-down (s)",
                   "retry_delay": "retry backoff factor (s)", "budget_max_tokens": "output cap under a budget",
                   "fast_agent_block": "fast-agent settings block", "store_block": "ledger block"}


def general_settings(store: Store | None = None) -> list[dict[str, str]]:
    """Orchestra's settings (``core.settings``: value and where it comes from) and the
    ledger (URL with its password masked, backend, schema revision)."""
    current = settings()
    rows = [{"setting": label, "value": "" if getattr(current, f) is None else str(getattr(current, f)),
             "source": _source(f)} for f, label in _SHOWN_SETTINGS.items()]
    source = "ORCHESTRA_DB_URL" if current.db_url else (
        "ORCHESTRA_STORE_BLOCK" if current.store_block else "ORCHESTRA_HOME (SQLite)")
    try:
        store = store or store_for()
    except Exception as exc:
        rows.append({"setting": "ledger", "value": f"invalid: {_first_line(str(exc))}", "source": source})
    else:
        rows.append({"setting": "ledger", "value": redact_url(store.display_url), "source": source})
        rows.append({"setting": "ledger backend", "value": store.backend, "source": "ledger URL"})
        try:
            revisions = store.current_revisions()
            schema = ", ".join(sorted(revisions)) if revisions else "not migrated yet"
        except Exception as exc:
            schema = f"unreachable: {_first_line(str(exc))}"
        rows.append({"setting": "ledger schema", "value": schema, "source": "Alembic revision"})
    return rows


def prefect_status() -> dict[str, Any]:
    """Where Prefect runs: ``api_url`` (credentials masked), ``source``, ``ui_url``,
    ``local`` (the local server's pid/url or None), ``mode``, ``reachable`` (True, False,
    or None without an API) and a one-line ``summary``."""
    local = _local_server()
    api, source = prefect_api_url(local=local or False)
    ui = prefect_ui_url(local=local or False)
    mode = settings().prefect
    reachable = None
    if source == "PREFECT_API_URL":
        problem = _prefect_health(api)
        reachable = problem is None
        summary = ("The Prefect API from PREFECT_API_URL answers." if reachable
                   else f"The Prefect API from PREFECT_API_URL {problem}.")
    elif local:
        reachable = True
        summary = f"Orchestra's local Prefect server is running (pid {local.get('pid')})"
    elif mode == "ephemeral":
        summary = "ORCHESTRA_PREFECT=ephemeral: every command starts Prefect's ephemeral server"
    else:
        summary = "No Prefect server is running: `orchestra run` starts the local one (or `orchestra server start`)"
    return {
        "api_url": _show_url(api), "source": source, "ui_url": _show_url(ui),
        "local": {"pid": local.get("pid"), "url": _show_url(local.get("url"))} if local else None,
        "mode": mode, "summary": summary, "reachable": reachable,
    }


def fast_agent_status() -> list[dict[str, str]]:
    """fast-agent: installed version, the model it uses by default, config files."""
    try:
        version = importlib.metadata.version("fast-agent-mcp")
    except importlib.metadata.PackageNotFoundError:
        version = None
    cfg = [p for p in ("fastagent.config.yaml", "fastagent.secrets.yaml") if Path(p).is_file()]
    return [
        {"setting": "fast-agent", "value": f"installed ({version})" if version else "not installed",
         "source": "fast-agent-mcp package"},
        {"setting": "fast-agent default model", "value": "passthrough",
         "source": "Orchestra's built-in settings (a FastAgentSettings block can change it)"},
        {"setting": "config files", "value": ", ".join(cfg) if cfg else "none (Orchestra builds fast-agent's settings in code)",
         "source": "working directory"},
    ]


def dagger_status(timeout: float = 0.5) -> list[dict[str, str]]:
    """Dagger: whether a session is set (``DAGGER_SESSION_PORT``) and answers, whether
    its token is set (never the token), the runner host and the CLI."""
    port = os.environ.get("DAGGER_SESSION_PORT", "").strip()
    if port:
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=timeout):
                reach = f"set ({port}); the session answers on 127.0.0.1:{port}"
        except (OSError, ValueError):
            reach = f"set ({port}); nothing answers on 127.0.0.1:{port}"
    else:
        reach = "not set: the Dagger SDK provisions an engine when a container step runs"
    runner = os.environ.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST", "").strip()
    cli = shutil.which("dagger")
    try:
        sdk = importlib.metadata.version("dagger-io")
    except importlib.metadata.PackageNotFoundError:
        sdk = None
    return [
        {"setting": "session (DAGGER_SESSION_PORT)", "value": reach, "source": "environment"},
        {"setting": "session token (DAGGER_SESSION_TOKEN)",
         "value": "set" if _env_set("DAGGER_SESSION_TOKEN") else "not set", "source": "environment"},
        {"setting": "runner host", "value": _show_url(runner) if runner else "default",
         "source": "_EXPERIMENTAL_DAGGER_RUNNER_HOST" if runner else "built-in"},
        {"setting": "dagger CLI", "value": cli or "not on PATH", "source": "PATH"},
        {"setting": "Dagger SDK", "value": f"installed ({sdk})" if sdk else "not installed",
         "source": "dagger-io package"},
    ]


def _http_problem(exc: Exception) -> str:
    import httpx

    if isinstance(exc, httpx.ConnectError):
        return "cannot be reached (nothing answers at that address)"
    if isinstance(exc, httpx.TimeoutException):
        return "did not answer in time"
    if isinstance(exc, httpx.HTTPStatusError):
        return f"answered HTTP {exc.response.status_code}"
    return f"could not be read ({type(exc).__name__})"


def _prefect_health(api_url: str, timeout: float = 1.5) -> str | None:
    """None when ``GET <api>/health`` answers 200, else what went wrong (one phrase)."""
    import httpx

    headers, auth = _prefect_headers()
    try:
        r = httpx.get(f"{api_url.rstrip('/')}/health", timeout=timeout, headers=headers, auth=auth)
        r.raise_for_status()
    except Exception as exc:
        return _http_problem(exc)
    return None


def _prefect_headers() -> tuple[dict[str, str], Any]:
    headers: dict[str, str] = {}
    auth = None
    key = os.environ.get("PREFECT_API_KEY", "").strip()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    basic = os.environ.get("PREFECT_API_AUTH_STRING", "").strip()
    if basic and ":" in basic:
        user, _, password = basic.partition(":")
        auth = (user, password)
    return headers, auth


def _safe_value(value: Any) -> str:
    if isinstance(value, str):
        return _show_url(value) or ""
    return str(value)


def orchestra_blocks(api_url: str | None, timeout: float = 3.0) -> dict[str, Any]:
    """Orchestra's block types on the Prefect API and their documents (names and a few
    non-secret fields; secret fields are never requested).

    ``{"ok", "message", "types": [{"type", "slug", "holds", "registered", "documents"}],
    "documents": [{"name", "type", "details", "updated"}]}``.  Fails soft: any problem
    is ``ok=False`` with a one-line ``message``."""
    types = [
        {"type": name, "slug": slug, "holds": holds, "registered": "unknown", "documents": 0}
        for slug, (name, holds) in ORCHESTRA_BLOCK_TYPES.items()
    ]
    if not api_url:
        return {"ok": False, "types": types, "documents": [],
                "message": "No Prefect API is configured (PREFECT_API_URL is unset and no local "
                           "Orchestra server runs), so blocks cannot be listed."}
    import httpx

    headers, auth = _prefect_headers()
    base = api_url.rstrip("/")
    slugs = list(ORCHESTRA_BLOCK_TYPES)
    try:
        with httpx.Client(timeout=timeout, headers=headers, auth=auth) as client:
            r = client.post(f"{base}/block_types/filter", json={"block_types": {"slug": {"any_": slugs}}})
            r.raise_for_status()
            registered = {t["slug"] for t in r.json()}
            r = client.post(f"{base}/block_documents/filter", json={
                "block_types": {"slug": {"any_": slugs}},
                "block_documents": {"is_anonymous": {"eq_": False}},
                "include_secrets": False, "limit": 200,
            })
            r.raise_for_status()
            docs = r.json()
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        return {"ok": False, "types": types, "documents": [],
                "message": f"The Prefect API at {_show_url(base)} {_http_problem(exc)}, so blocks cannot be listed."}
    documents = []
    counts: dict[str, int] = {}
    for d in docs:
        slug = (d.get("block_type") or {}).get("slug") or ""
        counts[slug] = counts.get(slug, 0) + 1
        data = d.get("data") or {}
        details = [f"{f}: {_safe_value(data[f])}" for f in _SAFE_BLOCK_FIELDS.get(slug, ())
                   if data.get(f) not in (None, "", [], {})]
        if slug == "orchestra-fast-agent-settings" and isinstance(data.get("mcp_servers"), dict):
            names = sorted(data["mcp_servers"])
            details.append(f"MCP servers: {', '.join(names) if names else 'none'}")
        documents.append({
            "name": d.get("name") or "",
            "type": ORCHESTRA_BLOCK_TYPES.get(slug, (slug,))[0],
            "details": "; ".join(details),
            "updated": _parse(d.get("updated")),
        })
    for t in types:
        t["registered"] = "yes" if t["slug"] in registered else "no"
        t["documents"] = counts.get(t["slug"], 0)
    return {"ok": True, "types": types, "documents": documents,
            "message": f"{len(registered)} of {len(slugs)} Orchestra block types registered, "
                       f"{len(documents)} saved block(s)."}
