"""Agent steps (``prompt:``): one provider call per attempt, through the self-healing
layer (budget, breaker, provider limits, fallbacks), with one repair call when the
answer does not match ``output_schema``.

Each request is one ledger row (``core.calls.CallRecord``): the repair call is recorded
with ``purpose="repair"`` and does not count as an attempt.

An agent with ``servers:`` uses tools: for openai/anthropic the attempt is the tool loop
of ``agents.tools.converse`` on the run's MCP sessions, each round trip one guarded
request (budget, breaker, limits) and one row; fast-agent runs its own loop on the same
servers (``agents.tools.ToolUse``), each of its requests one row. Every tool call is
recorded through ``RunState.record_tool_call``. A server that does not start, an
allow-list naming a tool its server lacks, or ``max_tool_calls`` reached fails the
attempt (only a transient start failure is retried); a tool error is the model's to
read. The step cache keys on the servers' definitions, so a cached answer replays no
tool call and a changed server is a new answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import agents
from agents.base import AgentCallError, AgentConfig, AgentResult, default_model
from agents.tools import Toolbox, ToolUse, ToolUseError, converse
from core.calls import CallRecord, ToolCallRecord
from core.redact import redact_data
from flows import progress, resilience, templates
from flows import tools as run_tools
from flows.context import RunState, current_run
from flows.errors import StepError
from flows.steps.base import BaseKind, Prepared, StepContext, StepResult, parse_output

__all__ = ["AgentKind", "resolve_agent", "credentials"]

CACHE_PREFIX = "orchestra-step-v2-"  # v2: results are StepResult objects (v1 were dicts)


class AgentKind(BaseKind):
    name = "agent"
    outputs = ("output",)

    # -- validation ---------------------------------------------------------
    def validate(self, step: Any, wf: Any, registry: dict[str, Any]) -> list[str]:
        agent = step.agent
        problems = []
        if step.allow_failure:
            problems.append(f"step '{step.id}': allow_failure: only container and command steps have an exit code")
        if isinstance(agent, str) and agent not in wf.agents and agent not in registry:
            problems.append(f"step '{step.id}': unknown agent '{agent}' (not in the workflow's agents: nor in "
                            "agents/*.yaml)")
        return problems

    def templates(self, step: Any) -> list[tuple[str, str]]:
        return [("prompt", step.prompt)]

    # -- running --------------------------------------------------------------
    async def prepare(self, step: Any, ctx: StepContext) -> Prepared:
        run = ctx.run
        if step.agent is not None and not isinstance(step.agent, str):  # {capabilities, strategy}
            agent = await resilience.route(ctx.wf, step, run.agents() if run else None, run)
        else:
            agent = resolve_agent(ctx.wf, step, run)
        model = ctx.model_override or agent.model or default_model()
        source = _prompt_source(ctx.wf, step, ctx.deps)
        if step.for_each is not None:
            items = templates.evaluate(step.for_each, ctx.values)
            if not isinstance(items, (list, tuple)):
                raise StepError(f"step '{step.id}': for_each must give a list, got {type(items).__name__}")
            prompts = [(f"{step.id}[{i}]", templates.render(source, {**ctx.values, "item": it, "index": i}))
                       for i, it in enumerate(items)]
        else:
            prompts = [(step.id, templates.render(source, ctx.values))]
        resilience.remember_prompts(step.id, prompts)  # for the dead letter, should the step fail for good
        params = agent.model_dump(exclude_defaults=True)
        servers = run.servers if run is not None else None
        # what decides the tools (the cache key): the definitions of the servers the agent
        # and its fallbacks may use (a digest: task-run parameters are visible in the UI)
        uses = [s for a in _with_fallbacks(agent, ctx.wf, run) for s in a.servers]
        known = servers if servers is not None else run_tools.static_map(ctx.wf)
        digest = run_tools.digest(known, uses) if uses else None
        runs = [(label, {"step": step.id, "prompt": prompt, "agent": params, "model": model,
                         "timeout": step.timeout, "output_schema": step.output_schema, "tools": digest})
                for label, prompt in prompts]
        shown = prompts[0][1] if step.for_each is None else "\n\n".join(f"--- {n}\n{p}" for n, p in prompts)
        return Prepared(runs=runs, agent=agent.name, model=model, prompt=shown,
                        timeout=resilience.attempt_timeout(step.timeout, agent), tools=bool(uses))

    def cache_key(self, params: dict[str, Any]) -> str:
        """What decides the answer: rendered prompt, agent config, model, schema, the tools' servers."""
        material = {k: params[k] for k in ("prompt", "agent", "model", "output_schema")}
        if params.get("tools"):  # only with tools: the key of a step without them is as it was
            material["tools"] = params["tools"]
        digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
        return CACHE_PREFIX + digest

    async def attempt(self, params: dict[str, Any], attempt: int) -> StepResult:
        run = current_run()
        step, prompt, schema, timeout = params["step"], params["prompt"], params["output_schema"], params["timeout"]
        config = AgentConfig.model_validate(params["agent"])
        progress.notify(step, "RUNNING", {"attempt": attempt})
        config, model, result, outcome = await resilience.with_fallbacks(  # breaker open / retries exhausted
            lambda cfg, m: _answer(run, step, cfg, m, prompt, timeout, attempt, json_mode=schema is not None),
            config, params["model"], step)
        output: Any = result.output
        if schema is not None:
            output, problem = parse_output(result.output, schema)
            if problem is not None:  # one repair call, then the step fails for good
                repair = (f"{prompt}\n\nYour previous answer was not valid: {problem}\n"
                          f"Previous answer:\n{result.output}\n\n"
                          f"Reply with only a JSON value that matches this JSON Schema:\n{json.dumps(schema)}")
                fixed, fixed_outcome = await _call(run, step, config, model, repair, timeout, attempt,
                                                   json_mode=True, purpose="repair")
                outcome = _merge(outcome, fixed_outcome)
                output, problem = parse_output(fixed.output, schema)
                if problem is not None:
                    raise StepError(f"step '{step}': output does not match output_schema after one repair "
                                    f"attempt: {problem}")
        # a key the provider echoes back never reaches the report, --json, artifacts or the cache
        return StepResult(redact_data(output), agent=config.name, model=model, **outcome)


async def _answer(run: RunState | None, step: str, config: AgentConfig, model: str, prompt: str,
                  timeout: float | None, attempt: int, json_mode: bool) -> tuple[AgentResult, dict]:
    """The agent's answer to ``prompt``: one request, or the tool loop when it has servers."""
    if not config.servers:
        return await _call(run, step, config, model, prompt, timeout, attempt, json_mode)
    where = f"step '{step}': agent '{config.name}'"
    if run is None or run.mcp is None:
        raise StepError(f"{where}: tool use needs a run (its MCP sessions): run the workflow")

    def on_call(result: Any) -> None:
        run.record_tool_call(ToolCallRecord.from_result(result, flow_run_id=run.flow_run_id, step=step,
                                                        attempt=attempt, agent=config.name))

    try:
        fmt = agents.tool_format(model.split(":", 1)[0])
        if fmt is None:  # fast-agent: its own loop on the same servers
            use = await ToolUse.for_agent(run.mcp, config, where=where, on_call=on_call)
            return await _call(run, step, config, model, prompt, timeout, attempt, json_mode, tools=use)
        toolbox = await Toolbox.open(run.mcp, config, where=where, on_call=on_call)
        outcomes: list[dict] = []

        async def send(conversation: Any) -> AgentResult:
            result, outcome = await _call(run, step, config, model, conversation.text(), timeout, attempt,
                                          json_mode, purpose="tool" if outcomes else "call",
                                          conversation=conversation)
            outcomes.append(outcome)
            return result

        rounds = await converse(fmt, prompt, toolbox=toolbox, send=send, max_tool_calls=config.max_tool_calls,
                                where=where)
    except ToolUseError as exc:
        raise StepError(exc.message, transient=exc.transient) from None
    total = outcomes[0]
    for more in outcomes[1:]:
        total = _merge(total, more)
    return rounds[-1], total


async def _call(run: RunState | None, step: str, config: AgentConfig, model: str, prompt: str,
                timeout: float | None, attempt: int, json_mode: bool, purpose: str = "call",
                conversation: Any = None, tools: Any = None) -> tuple[AgentResult, dict]:
    """One provider request through the self-healing layer (a fast-agent call with ``tools``:
    its loop's requests); its ledger rows either way."""
    started = time.perf_counter()
    key: str | None = None  # the request's in-flight mark, closed by the first row below

    async def sending() -> None:
        nonlocal key
        if run:
            key = await run.attempt_started(step=step, model=model, agent=config.name, attempt=attempt, purpose=purpose)

    def closing() -> str | None:  # the key for the row that closes the mark (one row only)
        nonlocal key
        found, key = key, None
        return found

    def record_rounds(rounds: list[AgentResult], closes: bool = True) -> None:
        for i, r in enumerate(rounds if run else ()):  # fast-agent's loop: its first request is the call
            run.record(CallRecord.from_result(r, flow_run_id=run.flow_run_id, step=step, attempt=attempt,
                                              agent=config.name, purpose=purpose if i == 0 else "tool",
                                              key=closing() if i == 0 and closes else None))

    try:
        found = await credentials(model.split(":", 1)[0], config)
        result = await resilience.guarded_call(config, prompt, model=model, timeout=timeout, json_mode=json_mode,
                                               step=step, conversation=conversation, tools=tools, on_send=sending,
                                               **found)
    except ToolUseError as exc:  # fast-agent's loop stopped (max_tool_calls): its requests were made
        record_rounds(exc.rounds)
        raise
    except AgentCallError as exc:
        record_rounds(exc.rounds, closes=False)
        if run:
            run.record(CallRecord.from_error(exc.message, flow_run_id=run.flow_run_id, step=step, model=model,
                                             agent=config.name, attempt=attempt,
                                             purpose="tool" if exc.rounds else purpose, key=closing(),
                                             latency_ms=(time.perf_counter() - started) * 1000))
        raise StepError(f"step '{step}': {exc.message}", transient=exc.transient) from None
    except asyncio.CancelledError:
        if run:
            run.record(CallRecord.from_error(f"timed out after {timeout}s" if timeout else "cancelled",
                                             flow_run_id=run.flow_run_id, step=step, model=model,
                                             agent=config.name, attempt=attempt, purpose=purpose, key=closing(),
                                             latency_ms=(time.perf_counter() - started) * 1000))
        raise
    else:
        record_rounds(result.rounds or [result])
    finally:
        if key and run:  # it ended without a request of its own (e.g. its MCP servers did not start)
            run.attempt_dropped(key)
    return result, {"input_tokens": result.input_tokens, "output_tokens": result.output_tokens,
                    "cached_tokens": result.cached_tokens, "cost_usd": result.cost_usd, "priced": result.priced,
                    "latency_ms": result.latency_ms}


async def credentials(provider: str, config: AgentConfig) -> dict[str, str | None]:
    """``blocks.credentials.acall_credentials`` (the block the agent names, then the
    environment, then ``<provider>-default``), its errors as a failed call."""
    from blocks.credentials import CredentialsError, acall_credentials

    try:
        return await acall_credentials(provider, config.credentials)
    except CredentialsError as exc:
        raise AgentCallError(str(exc), provider=provider, model=provider, transient=False) from None


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k in ("input_tokens", "output_tokens", "cached_tokens", "cost_usd", "latency_ms"):
        out[k] = a[k] + b[k]
    out["priced"] = a["priced"] and b["priced"]
    return out


def _with_fallbacks(agent: AgentConfig, wf: Any, run: RunState | None) -> list[AgentConfig]:
    """The agent and every fallback agent it may hand the step to (depth first, once each)."""
    found, seen, stack = [agent], {agent.name}, list(agent.fallback)
    registry = None
    while stack:
        name = stack.pop(0)
        if name in seen:
            continue
        seen.add(name)
        if name in wf.agents:
            other = AgentConfig(name=name, **wf.agents[name].model_dump(exclude_unset=True))
        else:
            registry = registry if registry is not None else (run.agents() if run else _registry())
            other = registry.get(name)
        if other is not None:
            found.append(other)
            stack[:0] = list(other.fallback)
    return found


def _registry() -> dict[str, AgentConfig]:
    from agents.registry import load_registry

    return load_registry()


def resolve_agent(wf: Any, step: Any, run: RunState | None = None) -> AgentConfig:
    """The agent a step names: the workflow's own, else agents/*.yaml; ``default`` for none."""
    if step.agent is None:
        return AgentConfig(name="default")
    if step.agent in wf.agents:
        return AgentConfig(name=step.agent, **wf.agents[step.agent].model_dump(exclude_unset=True))
    if run is not None:
        registry = run.agents()
    else:
        from agents.registry import load_registry

        registry = load_registry()
    if step.agent in registry:
        return registry[step.agent]
    raise StepError(f"step '{step.id}': unknown agent '{step.agent}'")


def _prompt_source(wf: Any, step: Any, deps: list[str]) -> str:
    """A sequential step receives the previous step's output, appended when its prompt
    does not place it itself."""
    if wf.type != "sequential" or not deps:
        return step.prompt
    prev = deps[0]
    free, paths = templates.references(step.prompt)
    if "previous" in free or any(root == "steps" and key == prev for root, key, _ in paths):
        return step.prompt
    return step.prompt + "\n\n{{ previous.output }}"
