"""One row of the ledger's ``calls`` table: one attempt at a provider (or a cache hit).

The engine builds every row with the constructors below and hands it to the ledger
it was given; the ledger only maps it to columns. Nothing else builds a row.

``purpose`` says why the call was made: ``call`` (the step's own request),
``repair`` (the one follow-up that asks for output matching ``output_schema``) or
``route`` (a ``strategy: llm`` router call, recorded under step ``<id>:route``).
``kind`` says what ran: ``agent`` (a provider call), ``container`` (a command in a
Dagger container: ``image``, ``exit_code``) or ``command`` (a process on the worker:
``exit_code``); a container or command attempt costs 0 (it is priced: nothing is
unknown about it) and its ``latency_ms`` is its duration.
:attr:`CallRecord.counts_as_attempt` is the one rule for a step's ``attempts``:
its own provider requests, not cache hits, repairs or router calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

__all__ = ["CallRecord", "CALL_STATUSES", "PURPOSES", "CALL_KINDS", "PROCESS_PROVIDERS", "counts_as_attempt"]

CALL_STATUSES = ("ok", "error")
PURPOSES = ("call", "repair", "route")
Purpose = Literal["call", "repair", "route"]
CALL_KINDS = ("agent", "container", "command")
# the ``provider`` (and ``model``, for a command) of a container or command attempt's row
PROCESS_PROVIDERS = {"container": "dagger", "command": "worker"}


def _now() -> datetime:
    return datetime.now(timezone.utc)


def counts_as_attempt(*, cached: bool, purpose: str) -> bool:
    """Whether a row is one of a step's attempts (its own request, not a cache hit)."""
    return not cached and purpose == "call"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One attempt, as the ledger stores it. ``provider`` defaults to the model's prefix."""

    flow_run_id: str
    step: str
    model: str
    provider: str | None = None
    agent: str | None = None
    attempt: int = 1
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = False
    latency_ms: float = 0.0
    status: str = "ok"
    error: str | None = None
    cached: bool = False
    purpose: str = "call"
    kind: str = "agent"
    image: str | None = None  # a container attempt's image
    exit_code: int | None = None  # a container or command attempt's exit code (None: it never ran)
    created: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.status not in CALL_STATUSES:
            raise ValueError(f"CallRecord.status must be one of {CALL_STATUSES}, got {self.status!r}")
        if self.purpose not in PURPOSES:
            raise ValueError(f"CallRecord.purpose must be one of {PURPOSES}, got {self.purpose!r}")
        if self.kind not in CALL_KINDS:
            raise ValueError(f"CallRecord.kind must be one of {CALL_KINDS}, got {self.kind!r}")
        if not self.provider:
            object.__setattr__(self, "provider", self.model.split(":", 1)[0] if ":" in self.model else "unknown")

    @property
    def counts_as_attempt(self) -> bool:
        return counts_as_attempt(cached=self.cached, purpose=self.purpose)

    @classmethod
    def from_result(cls, result: Any, *, flow_run_id: str, step: str, attempt: int, agent: str | None = None,
                    purpose: Purpose = "call") -> CallRecord:
        """A successful attempt from an ``agents.AgentResult`` (any object with its fields)."""
        return cls(flow_run_id=flow_run_id, step=step, model=result.model, provider=result.provider,
                   agent=agent if agent is not None else result.agent, attempt=attempt,
                   input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                   cached_tokens=result.cached_tokens, cost_usd=result.cost_usd, priced=result.priced,
                   latency_ms=result.latency_ms, purpose=purpose)

    @classmethod
    def from_error(cls, message: str, *, flow_run_id: str, step: str, model: str, agent: str | None,
                   attempt: int, latency_ms: float, purpose: Purpose = "call") -> CallRecord:
        """A failed attempt (an error, a timeout, a cancellation): no tokens, no cost."""
        return cls(flow_run_id=flow_run_id, step=step, model=model, agent=agent, attempt=attempt,
                   latency_ms=latency_ms, status="error", error=message or "failed", purpose=purpose)

    @classmethod
    def from_process(cls, kind: Literal["container", "command"], *, flow_run_id: str, step: str, attempt: int,
                     latency_ms: float, exit_code: int | None, image: str | None = None,
                     error: str | None = None) -> CallRecord:
        """One attempt of a container or command step: what ran (``image``), its exit code
        and duration, cost 0. ``error`` set: the attempt failed (a non-zero exit that the
        step does not allow, a timeout, an engine that could not be reached)."""
        provider = PROCESS_PROVIDERS[kind]
        return cls(flow_run_id=flow_run_id, step=step, model=image or provider, provider=provider, attempt=attempt,
                   priced=True, latency_ms=latency_ms, status="error" if error else "ok", error=error,
                   kind=kind, image=image, exit_code=exit_code)

    @classmethod
    def cache_hit(cls, *, flow_run_id: str, step: str, model: str, agent: str | None, priced: bool,
                  kind: str = "agent", image: str | None = None) -> CallRecord:
        """A step served from the cache: a row so the ledger shows it, at no cost."""
        provider = PROCESS_PROVIDERS.get(kind)
        return cls(flow_run_id=flow_run_id, step=step, model=model or image or provider or "", agent=agent,
                   provider=provider, attempt=0, cached=True, priced=priced or kind != "agent", kind=kind,
                   image=image)

    def event_payload(self) -> dict[str, Any]:
        """What the attempt's Prefect event carries (``orchestra.agent.call``; a container or
        command attempt's also names its kind, image and exit code)."""
        payload = {"step": self.step, "model": self.model, "provider": self.provider, "attempt": self.attempt,
                   "status": self.status, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens,
                   "cached_tokens": self.cached_tokens, "cost_usd": self.cost_usd, "latency_ms": self.latency_ms}
        if self.kind != "agent":
            payload.update(kind=self.kind, image=self.image, exit_code=self.exit_code)
        return payload
