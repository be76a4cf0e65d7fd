"""Capability routing: pick one agent among those that have every capability a step needs.

    agent: {capabilities: [code-review], strategy: cheapest}

Strategies, each deterministic on the same inputs (ties break by agent name):

* ``cheapest``: the lowest genai-prices price of a reference call (1,000 input and
  1,000 output tokens) of the agent's model; free models (fast-agent passthrough)
  cost 0; models genai-prices does not know come last;
* ``fastest``: the lowest mean latency of the agent's recent successful calls in the
  ledger; agents without history come last;
* ``least_loaded``: the fewest calls in the ledger in the last few minutes;
* ``round_robin``: the agent after the one that was picked last (in this process,
  else the one with the newest call in the ledger), in name order;
* ``llm``: a router model reads the agents' descriptions and the task and names one
  (see :func:`router_prompt` and :func:`parse_choice`); an answer that names no
  candidate, or more than one, picks the first candidate by name.

Agents whose circuit breaker is open are skipped (unless every candidate is open).
The ledger statistics come from the caller (``services`` reads them); nothing here
imports Prefect or SQL.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Iterable

from . import pricing
from .base import AgentConfig, parse_model

STRATEGIES = ("cheapest", "fastest", "least_loaded", "round_robin", "llm")
REFERENCE_TOKENS = 1000


@dataclass
class Candidate:
    agent: AgentConfig
    model: str
    price: float | None = None  # USD of the reference call; None: unknown
    latency_ms: float | None = None
    load: int = 0
    last_call_id: int | None = None
    open: bool = False

    @property
    def name(self) -> str:
        return self.agent.name


def capable(agents: Iterable[AgentConfig], capabilities: Iterable[str]) -> list[AgentConfig]:
    """The agents that declare every one of ``capabilities``, by name."""
    need = set(capabilities)
    return sorted((a for a in agents if need <= set(a.capabilities)), key=lambda a: a.name)


def reference_price(model: str) -> float | None:
    provider, name = parse_model(model)
    cost, priced = pricing.price(provider, name, REFERENCE_TOKENS, REFERENCE_TOKENS)
    return cost if priced else None


_rr_lock = threading.Lock()
_rr_last: dict[tuple[str, ...], str] = {}


def reset_round_robin() -> None:
    with _rr_lock:
        _rr_last.clear()


def choose(candidates: list[Candidate], strategy: str, *, route_key: tuple[str, ...] = ()) -> Candidate:
    """The candidate ``strategy`` picks (``llm`` is resolved by the caller with
    :func:`parse_choice`; here it means the first candidate)."""
    if not candidates:
        raise ValueError("no candidate agents")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown routing strategy {strategy!r} (one of {', '.join(STRATEGIES)})")
    pool = [c for c in candidates if not c.open] or list(candidates)
    pool.sort(key=lambda c: c.name)
    if strategy == "cheapest":
        return min(pool, key=lambda c: (c.price is None, c.price or 0.0, c.name))
    if strategy == "fastest":
        return min(pool, key=lambda c: (c.latency_ms is None, c.latency_ms or 0.0, c.name))
    if strategy == "least_loaded":
        return min(pool, key=lambda c: (c.load, c.name))
    if strategy == "round_robin":
        with _rr_lock:
            last = _rr_last.get(route_key)
            if last is None:
                used = [c for c in candidates if c.last_call_id is not None]
                last = max(used, key=lambda c: c.last_call_id).name if used else None
            if last is None:
                pick = pool[0]
            else:
                # the first candidate after `last` in name order (wrapping), open ones skipped
                after = [c for c in pool if c.name > last]
                pick = after[0] if after else pool[0]
            _rr_last[route_key] = pick.name
            return pick
    return pool[0]  # llm without an answer


def router_prompt(candidates: list[Candidate], task: str, capabilities: Iterable[str]) -> str:
    lines = [
        "You route a task to one of several agents. Reply with the name of the best agent and nothing else.",
        f"Required capabilities: {', '.join(capabilities)}.",
        "",
        "Agents:",
    ]
    for c in sorted(candidates, key=lambda c: c.name):
        lines.append(f"- {c.name}: {(c.agent.description or c.agent.instruction or 'no description').strip()[:300]}")
    lines += ["", "Task:", task[:4000]]
    return "\n".join(lines)


_WORD = re.compile(r"[A-Za-z0-9_.-]+")


def parse_choice(answer: str, candidates: list[Candidate]) -> Candidate:
    """The candidate the router's ``answer`` names; the first candidate (by name) when the
    answer names none of them or several (e.g. a model that echoes the question)."""
    pool = sorted(candidates, key=lambda c: c.name)
    by_name = {c.name.lower(): c for c in pool}
    text = (answer or "").strip().strip("`*\"' .").lower()
    if text in by_name:
        return by_name[text]
    first_line = text.splitlines()[0].strip().strip("`*\"' .") if text else ""
    if first_line in by_name:
        return by_name[first_line]
    named = {w for w in _WORD.findall(text)} & set(by_name)
    if len(named) == 1:
        return by_name[named.pop()]
    return pool[0]
