"""One row of the ledger's ``calls`` table: one attempt at a provider (or a cache hit);
and one row of its ``tool_calls`` table: one tool call an agent asked for.

The engine builds every row with the constructors below and hands it to the ledger
it was given; the ledger only maps it to columns. Nothing else builds a row.

``purpose`` says why the call was made: ``call`` (the step's own request),
``tool`` (a later round trip of a tool loop: it brings the model its tool results),
``repair`` (the one follow-up that asks for output matching ``output_schema``) or
``route`` (a ``strategy: llm`` router call, recorded under step ``<id>:route``).
``kind`` says what ran: ``agent`` (a provider call), ``container`` (a command in a
Dagger container: ``image``, ``exit_code``) or ``command`` (a process on the worker:
``exit_code``); a container or command attempt costs 0 (it is priced: nothing is
unknown about it) and its ``latency_ms`` is its duration.
``status`` is ``ok``, ``error`` or ``interrupted``: an attempt the ledger saw start
(:meth:`CallRecord.in_flight`, a row of ``open_calls`` with the attempt's ``key``) and
never saw end, because its process died or its run ended meanwhile; such a row has no
tokens and no cost (what the provider billed, if it answered, is unknown).
:attr:`CallRecord.counts_as_attempt` is the one rule for a step's ``attempts``:
its own first requests, not cache hits, tool rounds, repairs or router calls; so a
step's attempts are the times it was tried, whatever tools it used.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any, Literal

from core.redact import redact

__all__ = ["CallRecord", "CALL_STATUSES", "INTERRUPTED", "PURPOSES", "CALL_KINDS", "PROCESS_PROVIDERS", "ToolCallRecord",
           "TOOL_OUTCOMES", "counts_as_attempt"]

CALL_STATUSES = ("ok", "error", "interrupted")
INTERRUPTED = "the attempt was in flight when its process ended"
PURPOSES = ("call", "tool", "repair", "route")
Purpose = Literal["call", "tool", "repair", "route"]
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
    key: str | None = None  # the attempt's in-flight mark (in_flight) that this row closes

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
    def in_flight(cls, *, flow_run_id: str, step: str, model: str, agent: str | None, attempt: int,
                  purpose: Purpose = "call", kind: str = "agent", image: str | None = None) -> CallRecord:
        """An attempt that starts now: the mark the ledger keeps (``open_calls``) until the
        row with the same ``key`` closes it. If none ever does, the mark becomes this row:
        ``interrupted``, no tokens, no cost, its latency the time until it was found."""
        provider = PROCESS_PROVIDERS.get(kind)
        return cls(flow_run_id=flow_run_id, step=step, model=model or image or provider or "", provider=provider,
                   agent=agent, attempt=attempt, purpose=purpose, kind=kind, image=image, status="interrupted",
                   error=INTERRUPTED, priced=kind != "agent", key=uuid.uuid4().hex)

    def interrupted(self, *, ended: datetime, why: str | None = None) -> CallRecord:
        """This in-flight mark as the row of an attempt that never ended (found at ``ended``)."""
        return replace(self, status="interrupted", error=why or INTERRUPTED,
                       latency_ms=max(0.0, (ended - self.created).total_seconds() * 1000))

    @classmethod
    def from_result(cls, result: Any, *, flow_run_id: str, step: str, attempt: int, agent: str | None = None,
                    purpose: Purpose = "call", key: str | None = None) -> CallRecord:
        """A successful attempt from an ``agents.AgentResult`` (any object with its fields)."""
        return cls(flow_run_id=flow_run_id, step=step, model=result.model, provider=result.provider,
                   agent=agent if agent is not None else result.agent, attempt=attempt,
                   input_tokens=result.input_tokens, output_tokens=result.output_tokens,
                   cached_tokens=result.cached_tokens, cost_usd=result.cost_usd, priced=result.priced,
                   latency_ms=result.latency_ms, purpose=purpose, key=key)

    @classmethod
    def from_error(cls, message: str, *, flow_run_id: str, step: str, model: str, agent: str | None,
                   attempt: int, latency_ms: float, purpose: Purpose = "call", key: str | None = None) -> CallRecord:
        """A failed attempt (an error, a timeout, a cancellation): no tokens, no cost."""
        return cls(flow_run_id=flow_run_id, step=step, model=model, agent=agent, attempt=attempt,
                   latency_ms=latency_ms, status="error", error=message or "failed", purpose=purpose, key=key)

    @classmethod
    def from_process(cls, kind: Literal["container", "command"], *, flow_run_id: str, step: str, attempt: int,
                     latency_ms: float, exit_code: int | None, image: str | None = None,
                     error: str | None = None, key: str | None = None) -> CallRecord:
        """One attempt of a container or command step: what ran (``image``), its exit code
        and duration, cost 0. ``error`` set: the attempt failed (a non-zero exit that the
        step does not allow, a timeout, an engine that could not be reached)."""
        provider = PROCESS_PROVIDERS[kind]
        return cls(flow_run_id=flow_run_id, step=step, model=image or provider, provider=provider, attempt=attempt,
                   priced=True, latency_ms=latency_ms, status="error" if error else "ok", error=error,
                   kind=kind, image=image, exit_code=exit_code, key=key)

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


# ok: the server answered; error: the tool (or its server) reported an error; timeout: no
# answer within the agent's tool_timeout; invalid: never sent (arguments that fail the
# tool's input schema, or a tool the agent was not offered); cancelled: the attempt ended
# (its timeout, the run) while the call was in flight.
TOOL_OUTCOMES = ("ok", "error", "timeout", "invalid", "cancelled")


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One tool call an agent asked for in one step attempt, as the ledger keeps it.

    ``arguments`` are the model's arguments as it sent them (the ledger redacts them
    before it writes them); ``error`` is what the model was told when the call failed.
    """

    flow_run_id: str
    step: str
    attempt: int
    server: str
    tool: str
    outcome: str
    duration_s: float = 0.0
    arguments: Any = None
    error: str | None = None
    agent: str | None = None
    call_id: str | None = None  # the provider's id of the call (OpenAI call_..., Anthropic toolu_...)
    created: datetime = field(default_factory=_now)

    def __post_init__(self) -> None:
        if self.outcome not in TOOL_OUTCOMES:
            raise ValueError(f"ToolCallRecord.outcome must be one of {TOOL_OUTCOMES}, got {self.outcome!r}")

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    @classmethod
    def from_result(cls, result: Any, *, flow_run_id: str, step: str, attempt: int,
                    agent: str | None = None) -> ToolCallRecord:
        """A tool call from an ``agents.tools.ToolResult`` (any object with its fields)."""
        return cls(flow_run_id=flow_run_id, step=step, attempt=attempt, server=result.server, tool=result.tool,
                   outcome=result.outcome, duration_s=result.duration_s, arguments=result.arguments,
                   error=result.error, agent=agent, call_id=result.call_id)

    def report_entry(self) -> dict[str, Any]:
        """What ``orchestra run --json`` lists under the step's ``tool_calls``."""
        return {"server": self.server, "tool": self.tool, "ok": self.ok, "duration_s": round(self.duration_s, 3),
                "attempt": self.attempt}

    def event_payload(self) -> dict[str, Any]:
        """What the ``orchestra.tool.call`` Prefect event carries (no arguments: they may hold data
        the ledger redacts)."""
        return {"step": self.step, "attempt": self.attempt, "agent": self.agent, "server": self.server,
                "tool": self.tool, "outcome": self.outcome, "ok": self.ok, "duration_s": self.duration_s,
                "error": redact(self.error) if self.error else None}
