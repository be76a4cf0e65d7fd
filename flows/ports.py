"""What the engine needs from a ledger: a Protocol the app layer's ledger satisfies.

The engine never imports the ledger. It is handed an object with these methods (the
app layer passes ``ledger.store.Store``; tests may pass None for no ledger). Calls
arrive as ``core.calls.CallRecord`` and tool calls as ``core.calls.ToolCallRecord``;
``record_call``, ``record_call_start`` and ``record_tool_call`` must not block (queue,
write later).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from core.calls import CallRecord, ToolCallRecord
from core.steps import StepState

__all__ = ["Ledger"]


class Ledger(Protocol):
    # runs and calls
    def start_run(self, *, flow_run_id: str, workflow: str, inputs: dict[str, Any], started: datetime,
                  model_override: str | None, workflow_ref: str | None, budget_usd: float | None,
                  metadata: dict[str, Any] | None) -> None: ...

    def record_call(self, call: CallRecord) -> None: ...

    # CallRecord.in_flight, queued; closed by the row with its key. ``committed`` (anything with
    # a thread-safe ``set()``; default a new threading.Event) is set once the mark is committed
    # and returned
    def record_call_start(self, call: CallRecord, committed: Any = None) -> Any: ...

    def drop_call_start(self, key: str) -> None: ...  # the mark goes without a row (no request was sent)

    def record_step(self, step: StepState) -> None: ...

    def heartbeat(self, flow_run_id: str, *, pid: int | None = None, host: str | None = None) -> None: ...
    def record_tool_call(self, call: ToolCallRecord) -> None: ...  # queued, like record_call

    def finish_run(self, *, flow_run_id: str, state: str, ended: datetime, error: str | None = None) -> Any: ...

    def add_dead_letter(self, *, flow_run_id: str, workflow: str, step: str, error: str, agent: str | None,
                        model: str | None, prompt: str | None, attempts: int) -> int: ...

    # what the self-healing layer reads and shares
    def load_breaker(self, key: str) -> dict[str, Any] | None: ...

    def swap_breaker(self, key: str, expect_version: int, values: dict[str, Any],
                     event: dict[str, Any] | None = None) -> bool: ...

    def list_limits(self) -> list[dict[str, Any]]: ...

    def agent_stats(self, agents: list[str], *, window_s: float) -> dict[str, dict[str, Any]]: ...

    def spent_since(self, agent: str, since: datetime) -> float: ...
