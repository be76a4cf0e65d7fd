"""Self-healing around each provider call: circuit breakers, fallbacks, capability
routing, provider limits, budgets and dead letters.

The engine (`flows.engine`) and the agent step kind (`flows.steps.agent`) call in at
a few points only:

* `begin_run` / `end_run` around a run: the run's budget, the breakers' shared
  backend (the store), the provider limits;
* `guarded_call` instead of `agents.call_agent` for every attempt: budget check,
  breaker check (an open breaker refuses the call without a request), the provider
  limiter, then the call, then the breaker's and the budget's bookkeeping;
* `with_fallbacks` around a step attempt's call: an agent's `fallback:` agents are
  tried in order when its breaker is open, or when its call failed and will not be
  retried (the last attempt, or a non-transient error). Each fallback call is one
  attempt in the ledger; the step's `agent` in `--json` is the agent that answered;
* `route` for a step whose `agent:` names capabilities instead of an agent;
* `record_dead_letters` at the end of a run: each step that failed for good is kept
  with its rendered prompt and error (`orchestra failed list|show`).

Breaker transitions become Prefect events (`orchestra.breaker.opened`,
`orchestra.breaker.half_opened`, `orchestra.breaker.closed`) and rows in the
ledger's `breaker_events`.
"""

from __future__ import annotations

import contextvars
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import agents
from agents.base import AgentCallError, AgentConfig, default_model
from agents.breaker import DENY, PROBE, BreakerOpen, Endpoint, breakers, endpoint
from core.calls import CallRecord
from core.settings import settings
from flows.budget import Budget, BudgetExceeded
from flows.errors import StepError
from flows.limits import limiter

log = logging.getLogger("orchestra.resilience")

__all__ = ["begin_run", "end_run", "finish_run", "workflow_ref", "guarded_call", "with_fallbacks", "route",
           "record_dead_letters", "remember_prompts", "attempt_timeout", "BudgetExceeded", "BreakerOpen"]


@dataclass
class RunGuard:
    workflow: Any
    ledger: Any
    budget: Budget
    model_override: str | None = None
    registry: dict[str, AgentConfig] | None = None
    prompts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    _agents: dict[str, AgentConfig | None] = field(default_factory=dict)
    _chains: dict[tuple[str, str], list[tuple[AgentConfig, str]]] = field(default_factory=dict)

    def _registry(self) -> dict[str, AgentConfig]:
        if self.registry is None:
            from agents.registry import load_registry

            self.registry = load_registry()
        return self.registry

    def agent(self, name: str) -> AgentConfig | None:
        if name not in self._agents:
            wf_agents = getattr(self.workflow, "agents", {}) or {}
            if name in wf_agents:
                self._agents[name] = AgentConfig(name=name, **wf_agents[name].model_dump(exclude_unset=True))
            else:
                self._agents[name] = self._registry().get(name)
        return self._agents[name]

    def all_agents(self) -> list[AgentConfig]:
        names = set(self._registry()) | set(getattr(self.workflow, "agents", {}) or {})
        return [a for a in (self.agent(n) for n in sorted(names)) if a is not None]

    def model_for(self, agent: AgentConfig) -> str:
        return self.model_override or agent.model or default_model()

    def chain(self, config: AgentConfig, model: str) -> list[tuple[AgentConfig, str]]:
        """The fallbacks of ``config``, depth first (a fallback's own fallbacks follow it)."""
        key = (config.name, model)
        found = self._chains.get(key)
        if found is None:
            found, seen = [], {config.name}
            stack = list(config.fallback)
            while stack:
                name = stack.pop(0)
                if name in seen:
                    continue
                seen.add(name)
                agent = self.agent(name)
                if agent is None:
                    log.warning("agent %r: unknown fallback agent %r skipped", config.name, name)
                    continue
                found.append((agent, self.model_for(agent)))
                stack[:0] = list(agent.fallback)
            self._chains[key] = found
        return found


_guard: contextvars.ContextVar[RunGuard | None] = contextvars.ContextVar("orchestra_guard", default=None)


async def begin_run(wf: Any, ledger: Any, *, budget_usd: float | None = None,
                    model_override: str | None = None) -> contextvars.Token:
    """Set up one run. ``budget_usd`` (``--budget``) wins over the workflow's ``budget_usd``.
    ValueError for a budget that is not a number >= 0."""
    label = "--budget" if budget_usd is not None else "budget_usd"
    limit = budget_usd if budget_usd is not None else getattr(wf, "budget_usd", None)
    budget = Budget(limit, label=label, workflow=getattr(wf, "name", ""), ledger=ledger)
    breakers.configure()
    breakers.use_backend(ledger)
    await limiter.refresh(ledger)
    return _guard.set(RunGuard(workflow=wf, ledger=ledger, budget=budget, model_override=model_override))


def end_run(token: contextvars.Token) -> None:
    _guard.reset(token)


def finish_run(token: contextvars.Token, ledger: Any, flow_run_id: str, wf: Any, reports: dict[str, Any]) -> None:
    """The end of a run: keep its dead letters, drop the guard."""
    try:
        record_dead_letters(ledger, flow_run_id, wf, reports)
    finally:
        end_run(token)


def workflow_ref(wf: Any) -> str:
    """What `orchestra rerun` loads again: the file's absolute path, else the workflow as JSON."""
    from pathlib import Path

    source = getattr(wf, "source", None)
    if source and not source.startswith("<") and Path(source).is_file():
        return str(Path(source).resolve())
    return wf.model_dump_json(exclude_defaults=True)


def remember_prompts(step_id: str, prompts: list[tuple[str, str]]) -> None:
    guard = _guard.get()
    if guard is not None:
        guard.prompts[step_id] = prompts


def attempt_timeout(timeout: float | None, agent: AgentConfig) -> float | None:
    """The Prefect timeout of one step attempt. With fallbacks, the step's ``timeout`` bounds
    each call (the SDK's request timeout) and the attempt as a whole is only a backstop:
    one ``timeout`` per agent it may call, plus slack for a loaded event loop."""
    if timeout is None or not agent.fallback:
        return timeout
    guard = _guard.get()
    n = len(guard.chain(agent, guard.model_for(agent))) if guard else len(agent.fallback)
    return timeout * (2 + n) + 5.0


# ---------------------------------------------------------------------------
# one attempt


class _CircuitOpen(Exception):
    """Raised by guarded_call for a refused call; with_fallbacks turns it into a StepError."""


async def guarded_call(config: AgentConfig, prompt: str, *, model: str, timeout: float | None = None,
                       json_mode: bool = False, step: str = "?", api_key: str | None = None,
                       base_url: str | None = None, conversation: Any = None, tools: Any = None,
                       on_send: Callable[[], Awaitable[Any]] | None = None):
    """``agents.call_agent`` with the budget, the breaker and the provider limiter around it.

    A round trip of the tool loop passes its ``conversation`` (``prompt`` is then its text,
    which the budget bounds); a fast-agent call with tools passes ``tools``. ``on_send()``
    is called just before the request goes out (past the breaker, the budget and the
    limiter): the attempt's in-flight mark.

    Raises ``AgentCallError`` as call_agent does (the caller records the attempt),
    ``BudgetExceeded`` or an open-breaker error (no request was sent: nothing to record).
    """
    guard = _guard.get()
    ep = endpoint(model, base_url)
    decision = breakers.check(ep)
    if decision == DENY:
        state = breakers.state(ep, refresh=False)
        raise _CircuitOpen(f"step '{step}': agent '{config.name}': {BreakerOpen(ep, state['retry_at'])}")
    probe = decision == PROBE
    budget = guard.budget if guard is not None else None
    reserved = 0.0
    if budget is not None and budget.applies(config):
        config = budget.capped(config)
        try:
            reserved = budget.reserve(config, model, prompt, step)
        except BudgetExceeded:
            breakers.release(ep, probe)
            raise
    cost = 0.0
    started = time.perf_counter()
    try:
        async with limiter.slot(ep.provider):
            if on_send is not None:
                await on_send()
            result = await agents.call_agent(config, prompt, model=model, timeout=timeout, json_mode=json_mode,
                                             api_key=api_key, base_url=base_url, conversation=conversation,
                                             tools=tools)
    except AgentCallError as exc:
        cost = sum(r.cost_usd for r in exc.rounds)  # requests that succeeded before the failure
        if exc.transient:
            breakers.failure(ep, probe, exc.message)
        elif exc.status_code is not None:
            breakers.success(ep, probe)  # the provider answered
        else:
            breakers.release(ep, probe)  # e.g. no API key: says nothing about the provider
        raise
    except BaseException as exc:  # cancelled: by the step's timeout (a failure) or by the run
        cost = sum(r.cost_usd for r in getattr(exc, "rounds", None) or [])  # a fast-agent loop stopped
        if timeout is not None and time.perf_counter() - started >= timeout * 0.95:
            breakers.failure(ep, probe, f"timed out after {timeout:g} s")
        else:
            breakers.release(ep, probe)
        raise
    else:
        cost = result.cost_usd
        breakers.success(ep, probe)
        return result
    finally:
        if budget is not None and reserved:
            budget.settle(config, reserved, cost)
        elif budget is not None and cost:
            budget.settle(config, 0.0, cost)


def _final_attempt() -> bool:
    from prefect.context import TaskRunContext

    ctx = TaskRunContext.get()
    if ctx is None or ctx.task_run is None:
        return True
    return (ctx.task_run.run_count or 1) > (ctx.task.retries or 0)


def _strip(message: str, step: str) -> str:
    prefix = f"step '{step}': "
    return message[len(prefix):] if message.startswith(prefix) else message


async def with_fallbacks(call_one: Callable[[AgentConfig, str], Awaitable[tuple[Any, dict]]],
                         config: AgentConfig, model: str, step: str) -> tuple[AgentConfig, str, Any, dict]:
    """One step attempt: ``call_one(agent, model)`` for the agent, then for its fallbacks
    in order when needed. Returns (the agent that answered, its model, result, outcome)."""
    guard = _guard.get()
    chain = guard.chain(config, model) if guard is not None and config.fallback else ()
    if not chain:  # the common case: nothing to do but translate our two refusals
        try:
            result, outcome = await call_one(config, model)
        except _CircuitOpen as exc:
            raise StepError(str(exc), transient=True) from None
        except BudgetExceeded as exc:
            raise StepError(str(exc), transient=False) from None
        return config, model, result, outcome
    failures: list[str] = []
    transient = False
    for i, (agent, agent_model) in enumerate([(config, model), *chain]):
        try:
            result, outcome = await call_one(agent, agent_model)
        except _CircuitOpen as exc:
            failures.append(_strip(str(exc), step))
            transient = True
            continue
        except BudgetExceeded as exc:
            raise StepError(str(exc), transient=False) from None
        except StepError as exc:
            if i == 0 and exc.transient and not _final_attempt():
                raise  # Prefect retries the agent itself first
            failures.append(f"agent '{agent.name}': {_strip(str(exc), step)}")
            transient = transient or exc.transient
            continue
        if i:
            log.info("step %s: fallback agent %s answered for %s", step, agent.name, config.name)
        return agent, agent_model, result, outcome
    names = " -> ".join([config.name] + [a.name for a, _ in chain])
    raise StepError(f"step '{step}': every agent failed ({names}): " + "; ".join(failures), transient=transient)


# ---------------------------------------------------------------------------
# routing


async def route(wf: Any, step: Any, registry: dict | None, run: Any = None) -> AgentConfig:
    """The agent for a step whose ``agent:`` is ``{capabilities, strategy}``."""
    from agents import routing

    guard = _guard.get()
    if guard is None:  # outside a run (e.g. tests of resolution): a throwaway guard
        guard = RunGuard(workflow=wf, ledger=None, budget=Budget(None))
    if registry is not None and guard.registry is None:
        guard.registry = registry
    spec = step.agent
    agents = routing.capable(guard.all_agents(), spec.capabilities)
    if not agents:
        raise StepError(f"step '{step.id}': no agent has the capabilities {', '.join(spec.capabilities)}")
    candidates = []
    for agent in agents:
        model = guard.model_for(agent)
        candidates.append(routing.Candidate(agent=agent, model=model, open=breakers.is_open(endpoint(model))))
    strategy = spec.strategy
    if strategy == "cheapest":
        for c in candidates:
            c.price = routing.reference_price(c.model)
    elif strategy in ("fastest", "least_loaded", "round_robin") and guard.ledger is not None:
        stats = guard.ledger.agent_stats([c.name for c in candidates], window_s=settings().routing_window)
        for c in candidates:
            s = stats.get(c.name, {})
            c.latency_ms, c.load, c.last_call_id = s.get("latency_ms"), s.get("recent_calls", 0), s.get("last_call_id")
    if strategy == "llm":
        pick = await _ask_router(step, candidates, run)
    else:
        pick = routing.choose(candidates, strategy, route_key=tuple(sorted(spec.capabilities)))
    log.info("step %s: routed to %s (%s)", step.id, pick.name, strategy)
    return pick.agent


async def _ask_router(step: Any, candidates: list, run: Any):
    """`strategy: llm`: one plain call to the router model (the ``router_model`` setting,
    else the default model), recorded in the ledger as step ``<id>:route``."""
    from agents import routing

    pool = [c for c in candidates if not c.open] or candidates
    task = step.prompt or ""  # the step's prompt template: routing happens before it is rendered
    model = settings().router_model or default_model()
    router = AgentConfig(name="router", model=model, max_tokens=20,
                         instruction="Answer with exactly one agent name from the list.")
    prompt = routing.router_prompt(pool, task, step.agent.capabilities)
    where = {"flow_run_id": run.flow_run_id if run is not None else "", "step": f"{step.id}:route",
             "attempt": 1, "agent": "router", "purpose": "route"}
    started = time.perf_counter()
    key: str | None = None

    async def sending() -> None:
        nonlocal key
        if run is not None:
            key = await run.attempt_started(step=where["step"], model=model, agent="router", attempt=1, purpose="route")

    try:
        result = await guarded_call(router, prompt, model=model, timeout=60, step=step.id, on_send=sending)
    except (AgentCallError, _CircuitOpen, BudgetExceeded) as exc:
        if run is not None and isinstance(exc, AgentCallError):
            run.record(CallRecord.from_error(exc.message, model=model, **where, key=key,
                                             latency_ms=(time.perf_counter() - started) * 1000))
        log.warning("step %s: the router failed (%s); taking the first candidate", step.id, exc)
        return pool[0] if pool else candidates[0]
    if run is not None:
        run.record(CallRecord.from_result(result, **where, key=key))
    return routing.parse_choice(result.output, pool)


# ---------------------------------------------------------------------------
# dead letters


def record_dead_letters(ledger: Any, flow_run_id: str, wf: Any, reports: dict[str, Any]) -> int:
    """Keep every step that failed for good; returns how many were written."""
    if ledger is None:
        return 0
    guard = _guard.get()
    written = 0
    for sid, report in reports.items():
        if report.state != "FAILED":
            continue
        prompts = guard.prompts.get(sid) if guard is not None else None
        if prompts:
            prompt = prompts[0][1] if len(prompts) == 1 else "\n\n".join(f"--- {n}\n{p}" for n, p in prompts)
        else:
            prompt = None
        try:
            ledger.add_dead_letter(flow_run_id=flow_run_id, workflow=wf.name, step=sid, agent=report.agent,
                                  model=report.model, prompt=prompt, error=report.error or "failed",
                                  attempts=report.attempts)
            written += 1
        except Exception as exc:  # never fail a run for its dead letters
            log.warning("could not keep the dead letter of step %s: %s", sid, exc)
    return written


# ---------------------------------------------------------------------------
# breaker transitions -> Prefect events

_EVENT_NAMES = {"open": "opened", "half_open": "half_opened", "closed": "closed"}


def _emit(ep: Endpoint, old: str, new: str, info: dict) -> None:
    try:
        from prefect.events import emit_event

        emit_event(
            event=f"orchestra.breaker.{_EVENT_NAMES.get(new, new)}",
            resource={
                "prefect.resource.id": f"orchestra.breaker.{ep.model}@{ep.base_url}",
                "prefect.resource.name": ep.key,
                "orchestra.provider": ep.provider,
                "orchestra.model": ep.model,
                "orchestra.base-url": ep.base_url,
            },
            payload={"from": old, "to": new, "failures": info.get("failures"), "reason": info.get("reason"),
                     "retry_at": info.get("retry_at")},
        )
    except Exception:  # events are best effort
        log.debug("could not emit a breaker event", exc_info=True)
    log.warning("circuit breaker %s: %s -> %s (%s)", ep.key, old, new, info.get("reason"))


breakers.add_listener(_emit)
