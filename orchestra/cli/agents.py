"""`orchestra agents list|show|test|health`: the agent registry (agents/*.yaml)."""

from __future__ import annotations

import asyncio
from typing import Optional

import typer

from orchestra.cli.common import Exit, emit, err, fail, ledger, out, print_json


def register(app: typer.Typer) -> None:
    agents_app = typer.Typer(no_args_is_help=True, help="The agent registry (agents/*.yaml).")
    agents_app.command("list")(agents_list)
    agents_app.command("show")(agents_show)
    agents_app.command("test")(agents_test)
    agents_app.command("health")(agents_health)
    app.add_typer(agents_app, name="agents")


def registry():
    from agents.registry import load_registry

    try:
        return load_registry()
    except ValueError as exc:
        raise fail(str(exc)) from None


def _agent(name: str):
    reg = registry()
    if name not in reg:
        raise fail(f"unknown agent '{name}' (known: {', '.join(sorted(reg))})")
    return reg[name]


def agents_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The agents in agents/*.yaml."""
    from agents.base import default_model

    rows = [{"name": a.name, "model": a.model or f"(default: {default_model()})", "capabilities": a.capabilities,
             "description": a.description or ""} for a in registry().values()]
    if as_json:
        print_json(rows)
        return
    emit([{**r, "capabilities": ", ".join(r["capabilities"])} for r in rows], False, "agents",
         [("name", "name"), ("model", "model"), ("capabilities", "capabilities"), ("description", "description")])


def agents_show(name: str) -> None:
    """One agent's definition."""
    import yaml

    out.print(yaml.safe_dump(_agent(name).model_dump(exclude_none=True), sort_keys=False).rstrip(), markup=False)


async def _credentials(model: str, agent) -> dict:
    from blocks.credentials import acall_credentials

    return await acall_credentials(model.partition(":")[0], agent.credentials)


def agents_test(
    name: str,
    prompt: str = typer.Option("Reply with the single word: ok", "--prompt"),
    model: Optional[str] = typer.Option(None, "--model"),
) -> None:
    """Send one prompt to an agent and show the answer, tokens, cost and latency."""
    from agents import call_agent
    from agents.base import AgentCallError, default_model
    from blocks.credentials import CredentialsError
    from orchestra.runs import check_model

    agent = _agent(name)
    try:
        check_model(model, "--model")
    except ValueError as exc:
        raise fail(str(exc)) from None
    chosen = model or agent.model or default_model()

    async def call():
        return await call_agent(agent, prompt, model=chosen, **await _credentials(chosen, agent))

    try:
        result = asyncio.run(call())
    except AgentCallError as exc:
        raise fail(f"agent '{name}': {exc.message}", 1) from None
    except CredentialsError as exc:
        raise fail(f"agent '{name}': {exc}", 1) from None
    out.print(result.output, markup=False)
    err.print(f"[dim]{result.model} · {result.input_tokens} in / {result.output_tokens} out · "
              f"${result.cost_usd:.6f}{'' if result.priced else ' (unpriced)'} · {result.latency_ms:.0f} ms[/dim]")


def agents_health(
    as_json: bool = typer.Option(False, "--json"),
    timeout: float = typer.Option(20.0, "--timeout", min=0.1, help="Seconds per probe"),
) -> None:
    """Probe every agent with a one-token call; record status and latency; show breaker states."""
    from orchestra import runtime

    runtime.configure(quiet_console=True)
    store = ledger()
    rows = asyncio.run(_health(registry(), timeout, store))
    store.record_health(rows)
    emit(rows, as_json, "agent health", [("agent", "agent"), ("model", "model"), ("status", "status"),
                                         ("latency_ms", "ms"), ("breaker", "breaker"), ("error", "error")])
    raise Exit(0 if all(r["status"] == "ok" for r in rows) else 1)


async def _health(registry: dict, timeout: float, store) -> list[dict]:
    import time

    from agents import call_agent
    from agents.base import AgentCallError, AgentConfig, default_model
    from agents.breaker import breakers, endpoint
    from blocks.credentials import CredentialsError

    breakers.configure()
    breakers.use_backend(store)

    async def probe(agent) -> dict:
        model = agent.model or default_model()
        started = time.perf_counter()
        row = {"agent": agent.name, "model": model}
        try:
            credentials = await _credentials(model, agent)
            result = await call_agent(agent.model_copy(update={"max_tokens": 1}), "Reply with: ok",
                                      model=model, timeout=timeout, **credentials)
            row.update(status="ok", latency_ms=round(result.latency_ms, 1), cost_usd=result.cost_usd, error=None)
        except (AgentCallError, CredentialsError) as exc:
            row.update(status="error", latency_ms=round((time.perf_counter() - started) * 1000, 1),
                       cost_usd=0.0, error=getattr(exc, "message", None) or str(exc))
        row["breaker"] = breakers.state(endpoint(model))["state"]
        return row

    if any((a.model or default_model()).startswith("fast-agent:") for a in registry.values()):
        # fast-agent starts its runtime (seconds) on the first call: not a latency to report
        await call_agent(AgentConfig(name="warm-up"), "ok", model="fast-agent:passthrough")
    return list(await asyncio.gather(*(probe(a) for a in registry.values())))
