"""Budgets: a run's `budget_usd` (the workflow's, or `orchestra run --budget`) and an
agent's `daily_budget_usd`.

Before each provider call the engine reserves the call's worst case: the whole
prompt at the input price plus `max_tokens` at the output price (genai-prices).
A call whose worst case does not fit in what is left (after what was spent and
what calls in flight have reserved) is not made: :class:`BudgetExceeded` names the
budget, the amount spent and the amount needed. When the call returns, its
reservation is replaced by its real cost. So concurrent steps cannot overspend
together, and nothing is spent beyond a budget.

The prompt's token count is bounded without a tokenizer: byte-level BPE tokenizers
(OpenAI's, Anthropic's) never make more tokens than UTF-8 bytes, so the bound is
the prompt's and instruction's byte count plus a small per-message overhead. It
is conservative (about 4x for English text). An agent without `max_tokens` gets
the `budget_max_tokens` setting (`ORCHESTRA_BUDGET_MAX_TOKENS`, default 4096) as its cap while a budget applies,
so the worst case is a real bound. Models genai-prices does not know cost 0 and
cannot be held to a budget.

Daily budgets start from the agent's spend in the ledger since 00:00 UTC (read
once per run) and add this run's calls; runs in other processes on the same day
are seen from their next run on. All checks are in-memory arithmetic.
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timezone
from typing import Any

from agents import pricing
from agents.base import AgentConfig, parse_model
from core.settings import settings

MESSAGE_OVERHEAD_TOKENS = 16


class BudgetExceeded(Exception):
    """A call not made because its worst case would exceed a budget."""


def output_cap() -> int:
    """The ``budget_max_tokens`` setting (``ORCHESTRA_BUDGET_MAX_TOKENS``, default 4096)."""
    return settings().budget_max_tokens


def prompt_token_bound(prompt: str, instruction: str | None = None) -> int:
    return len(prompt.encode()) + len((instruction or "").encode()) + MESSAGE_OVERHEAD_TOKENS


def worst_case(agent: AgentConfig, model: str, prompt: str) -> float:
    provider, name = parse_model(model)
    max_tokens = agent.max_tokens or output_cap()
    return pricing.worst_case_cost(provider, name, prompt_token_bound(prompt, agent.instruction), max_tokens)


def _usd(x: float) -> str:
    return f"${x:.6f}" if x < 1 else f"${x:.4f}"


class Budget:
    """The budgets of one run. ``limit`` None: no run budget."""

    def __init__(self, limit: float | None, *, label: str = "budget_usd", workflow: str = "",
                 ledger: Any = None):
        if limit is not None and (not isinstance(limit, (int, float)) or isinstance(limit, bool)
                                  or math.isnan(limit) or limit < 0):
            raise ValueError(f"{label}: must be a number >= 0 (got {limit!r})")
        self.limit = float(limit) if limit is not None else None
        self.label = label
        self.workflow = workflow
        self.ledger = ledger
        self.spent = 0.0
        self.reserved = 0.0
        self._daily_base: dict[str, float] = {}
        self._daily_run: dict[str, float] = {}
        self._daily_reserved: dict[str, float] = {}
        self._lock = threading.Lock()

    def applies(self, agent: AgentConfig) -> bool:
        return self.limit is not None or agent.daily_budget_usd is not None

    def capped(self, agent: AgentConfig) -> AgentConfig:
        """``agent`` with an output cap when a budget applies and it has none."""
        if agent.max_tokens is None and self.applies(agent):
            return agent.model_copy(update={"max_tokens": output_cap()})
        return agent

    def reserve(self, agent: AgentConfig, model: str, prompt: str, step: str) -> float:
        """Reserve the call's worst case or raise :class:`BudgetExceeded`; returns the amount."""
        if not self.applies(agent):
            return 0.0
        worst = worst_case(agent, model, prompt)
        daily = agent.daily_budget_usd
        if daily is not None and agent.name not in self._daily_base:
            self._daily_base[agent.name] = self._spent_today(agent.name)
        with self._lock:
            if self.limit is not None and self.spent + self.reserved + worst > self.limit + 1e-12:
                in_flight = f" (+ {_usd(self.reserved)} reserved by calls in flight)" if self.reserved else ""
                raise BudgetExceeded(
                    f"step '{step}': {self.label} {_usd(self.limit)} of workflow '{self.workflow}' would be "
                    f"exceeded: spent {_usd(self.spent)}{in_flight}, the next call (agent '{agent.name}', "
                    f"{model}) needs up to {_usd(worst)}; the call was not made")
            if daily is not None:
                used = self._daily_base[agent.name] + self._daily_run.get(agent.name, 0.0)
                held = self._daily_reserved.get(agent.name, 0.0)
                if used + held + worst > daily + 1e-12:
                    raise BudgetExceeded(
                        f"step '{step}': agent '{agent.name}' daily_budget_usd {_usd(daily)} would be exceeded: "
                        f"spent {_usd(used)} today (UTC){f' (+ {_usd(held)} in flight)' if held else ''}, "
                        f"the next call ({model}) needs up to {_usd(worst)}; the call was not made")
                self._daily_reserved[agent.name] = held + worst
            self.reserved += worst
        return worst

    def settle(self, agent: AgentConfig, reserved: float, cost: float) -> None:
        """Replace a reservation by what the call cost (0 for a failed call)."""
        with self._lock:
            self.reserved = max(0.0, self.reserved - reserved)
            self.spent += cost
            if agent.daily_budget_usd is not None:
                name = agent.name
                self._daily_reserved[name] = max(0.0, self._daily_reserved.get(name, 0.0) - reserved)
                self._daily_run[name] = self._daily_run.get(name, 0.0) + cost

    def _spent_today(self, agent: str) -> float:
        if self.ledger is None:
            return 0.0
        midnight = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
        return self.ledger.spent_since(agent, midnight)
