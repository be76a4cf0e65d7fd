"""The audited writes that are not files or users: provider limits and runs (started,
approved, cancelled). Each checks the actor's role and writes its audit row through
``orchestra.access``; the CLI (as the owner) and the dashboard's pages call these.

    actions.set_limit(actor, "openai", concurrency=8, rpm=500)
    flow_run_id = actions.start_run(actor, request)          # a prepared orchestra.runs.RunRequest
    actions.answer_approval(actor, flow_run_id, approved=True, reason="")
    actions.cancel_run(actor, flow_run_id)
"""

from __future__ import annotations

from typing import Any

from orchestra import access
from orchestra.access import Actor

__all__ = ["answer_approval", "cancel_run", "set_limit", "start_run"]


def _store(store: Any) -> Any:
    if store is not None:
        return store
    from orchestra.runtime import ledger

    return ledger()


def set_limit(actor: Actor, provider: str, *, concurrency: int | None, rpm: int | None,
              store: Any = None) -> dict[str, Any] | None:
    """Set (both None: clear) a provider's limits in the ledger; the new row or None.
    ValueError naming the provider or the number that is wrong; nothing written then."""
    from agents.providers import PROVIDERS

    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
    for label, value in (("concurrency", concurrency), ("rpm", rpm)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{label}: a whole number of at least 1, or empty for no limit (got {value!r})")
    store = _store(store)
    before = next((r for r in store.list_limits() if r["provider"] == provider), None)

    def change() -> dict[str, Any] | None:
        store.set_limit(provider, concurrency=concurrency, rpm=rpm)
        return next((r for r in store.list_limits() if r["provider"] == provider), None)

    keep = ("concurrency", "rpm")
    return access.perform(actor, "limits.set", provider, change,
                          before={k: before[k] for k in keep} if before else None,
                          after=lambda row: {k: row[k] for k in keep} if row else None, store=store)
