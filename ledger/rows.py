"""Row helpers shared by the ledger's write path and its queries (package-internal)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select

from ledger.models import Call

UTC = timezone.utc
_CALLS = Call.__table__


def aware(dt: datetime | None) -> datetime:
    if dt is None:
        return datetime.now(UTC)
    if not isinstance(dt, datetime):
        raise TypeError(f"expected a datetime, got {type(dt).__name__}")
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def state_name(state: Any) -> str:
    # Accepts "COMPLETED", "completed", Prefect's StateType enum or a State object.
    state = getattr(state, "type", state)
    return str(getattr(state, "value", state)).upper()


def run_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "flow_run_id": row["flow_run_id"],
        "workflow": row["workflow"],
        "state": row["state"],
        "inputs": row["inputs"],
        "started": iso(row["started"]),
        "ended": iso(row["ended"]),
        "duration_s": row["duration_s"],
        "input_tokens": int(row["input_tokens"] or 0),
        "output_tokens": int(row["output_tokens"] or 0),
        "cached_tokens": int(row["cached_tokens"] or 0),
        "cost_usd": float(row["cost_usd"] or 0.0),
        "calls": int(row["calls"] or 0),
        "error": row["error"],
        "model_override": row["model_override"],
        "budget_usd": row["budget_usd"],
        "metadata": row["metadata"],
    }


def call_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    d = dict(row)
    d["created"] = iso(d["created"])
    d["priced"] = bool(d["priced"])
    d["cached"] = bool(d["cached"])
    return d


def totals_select() -> Any:
    c = _CALLS.c
    return select(
        func.count(c.id).label("calls"),
        func.coalesce(func.sum(c.input_tokens), 0).label("input_tokens"),
        func.coalesce(func.sum(c.output_tokens), 0).label("output_tokens"),
        func.coalesce(func.sum(c.cached_tokens), 0).label("cached_tokens"),
        func.coalesce(func.sum(c.cost_usd), 0.0).label("cost_usd"),
    )


def totals_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "calls": int(row["calls"] or 0),
        "input_tokens": int(row["input_tokens"] or 0),
        "output_tokens": int(row["output_tokens"] or 0),
        "cached_tokens": int(row["cached_tokens"] or 0),
        "cost_usd": float(row["cost_usd"] or 0.0),
    }
