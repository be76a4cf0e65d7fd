"""Agent steps (``prompt:``): one provider call per attempt, through the self-healing
layer (budget, breaker, provider limits, fallbacks), with one repair call when the
answer does not match ``output_schema``.

Each attempt's request is one ledger row (``core.calls.CallRecord``): the repair call
is recorded with ``purpose="repair"`` and does not count as an attempt.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

from agents.base import AgentCallError, AgentConfig, AgentResult, default_model
from core.calls import CallRecord
from core.redact import redact_value
from flows import progress, resilience, templates
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
        runs = [(label, {"step": step.id, "prompt": prompt, "agent": params, "model": model,
                         "timeout": step.timeout, "output_schema": step.output_schema})
                for label, prompt in prompts]
        shown = prompts[0][1] if step.for_each is None else "\n\n".join(f"--- {n}\n{p}" for n, p in prompts)
        return Prepared(runs=runs, agent=agent.name, model=model, prompt=shown,
                        timeout=resilience.attempt_timeout(step.timeout, agent))

    def cache_key(self, params: dict[str, Any]) -> str:
        """What decides the answer: rendered prompt, agent config, model, schema."""
        material = {k: params[k] for k in ("prompt", "agent", "model", "output_schema")}
        digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
        return CACHE_PREFIX + digest

    async def attempt(self, params: dict[str, Any], attempt: int) -> StepResult:
        run = current_run()
        step, prompt, schema, timeout = params["step"], params["prompt"], params["output_schema"], params["timeout"]
        config = AgentConfig.model_validate(params["agent"])
        progress.notify(step, "RUNNING", {"attempt": attempt})
        config, model, result, outcome = await resilience.with_fallbacks(  # breaker open / retries exhausted
            lambda cfg, m: _call(run, step, cfg, m, prompt, timeout, attempt, json_mode=schema is not None),
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
        return StepResult(redact_value(output), agent=config.name, model=model, **outcome)


async def _call(run: RunState | None, step: str, config: AgentConfig, model: str, prompt: str,
                timeout: float | None, attempt: int, json_mode: bool, purpose: str = "call") -> tuple[AgentResult, dict]:
    """One provider request through the self-healing layer; its ledger row either way."""
    started = time.perf_counter()
    try:
        found = await credentials(model.split(":", 1)[0], config)
        result = await resilience.guarded_call(config, prompt, model=model, timeout=timeout, json_mode=json_mode,
                                               step=step, **found)
    except AgentCallError as exc:
        if run:
            run.record(CallRecord.from_error(exc.message, flow_run_id=run.flow_run_id, step=step, model=model,
                                             agent=config.name, attempt=attempt, purpose=purpose,
                                             latency_ms=(time.perf_counter() - started) * 1000))
        raise StepError(f"step '{step}': {exc.message}", transient=exc.transient) from None
    except asyncio.CancelledError:
        if run:
            run.record(CallRecord.from_error(f"timed out after {timeout}s" if timeout else "cancelled",
                                             flow_run_id=run.flow_run_id, step=step, model=model,
                                             agent=config.name, attempt=attempt, purpose=purpose,
                                             latency_ms=(time.perf_counter() - started) * 1000))
        raise
    if run:
        run.record(CallRecord.from_result(result, flow_run_id=run.flow_run_id, step=step, attempt=attempt,
                                          agent=config.name, purpose=purpose))
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
