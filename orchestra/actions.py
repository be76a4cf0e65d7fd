"""The audited writes that are not files or users: provider limits and runs (started,
approved, cancelled). Each checks the actor's role and writes its audit row through
``orchestra.access``; the CLI (as the owner) and the dashboard's pages call these.

    actions.set_limit(actor, "openai", concurrency=8, rpm=500)
    flow_run_id = actions.start_run(actor, request)          # a prepared orchestra.runs.RunRequest
    actions.answer_approval(actor, flow_run_id, approved=True, reason="")
    actions.cancel_run(actor, flow_run_id)                  # also cancels the task it executes
    actions.note_run(actor, request)                         # a run this process starts and waits for
"""

from __future__ import annotations

from typing import Any

from orchestra import access
from orchestra.access import Actor

__all__ = ["answer_approval", "cancel_run", "note_run", "set_limit", "start_run"]


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


def start_run(actor: Actor, request: Any, *, store: Any = None) -> str:
    """Start a prepared run (``orchestra.runs.prepare``) in the background as ``actor``
    (``run.start``, member and above); its flow-run id. Needs a Prefect API:
    ``orchestra.runs.ensure_prefect()`` first."""
    import asyncio

    from orchestra import runs

    access.require(actor, "run.start", request.wf.name, store=store)
    return access.perform(actor, "run.start", request.wf.name, lambda: asyncio.run(runs.start(request)),
                          after=lambda flow_run_id: {"flow_run_id": flow_run_id, "inputs": request.values,
                                                     "model": request.model, "budget_usd": request.budget},
                          store=store)


def note_run(actor: Actor, request: Any, *, store: Any = None) -> None:
    """A run this process starts and waits for (``orchestra run``/``rerun``, the MCP tools
    ``run_workflow``/``rerun``): ``run.start`` checked and audited before it starts (its
    flow-run id is then the ledger's newest run of the workflow)."""
    access.perform(actor, "run.start", request.wf.name, lambda: None,
                   after={"inputs": request.values, "model": request.model, "budget_usd": request.budget,
                          "where": "in this process"}, store=store)


def answer_approval(actor: Actor, flow_run_id: str, *, approved: bool, reason: str = "", store: Any = None) -> None:
    """Approve or reject a run paused at an approval step (``run.approve``)."""
    import asyncio

    access.require(actor, "run.approve", flow_run_id, store=store)
    from flows.steps.approval import answer

    access.perform(actor, "run.approve", flow_run_id,
                   lambda: asyncio.run(answer(flow_run_id, approved=approved, reason=reason)),
                   after={"approved": approved, "reason": reason or None}, store=store)


def cancel_run(actor: Actor, flow_run_id: str) -> dict[str, Any]:
    """Ask Prefect to cancel a flow run (``run.cancel``, audited): it becomes CANCELLING and
    the run's watcher stops it within seconds; the task it executes, if any, is cancelled
    too. The one cancel of the CLI, the dashboard and the MCP server (``orchestra.tasks.cancel_run``):
    ``{flow_run_id, state, previous, task_id}``; ValueError naming the run."""
    import asyncio

    from orchestra import tasks

    return asyncio.run(tasks.cancel_run(flow_run_id, actor=actor))
