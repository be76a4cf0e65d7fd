"""`orchestra` commands of the self-healing layer: rerun, failed, approve, limits, agents health.

Registered onto the app of ``services.cli`` by :func:`register` (with that module
passed in, so ``python -m services.cli`` and the ``orchestra`` script get the same
commands). Exit codes as everywhere: 0 fine, 1 a run or a probe failed, 2 invalid
input.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Optional

import typer
from rich.markup import escape


def register(cli: ModuleType) -> None:
    app, agents_app, out, err = cli.app, cli.agents_app, cli.out, cli.err
    Exit, _fail = cli.Exit, cli._fail

    failed_app = typer.Typer(no_args_is_help=True, help="Steps that failed for good (dead letters).")
    limits_app = typer.Typer(no_args_is_help=True, help="Concurrency and requests-per-minute per provider.")
    app.add_typer(failed_app, name="failed")
    app.add_typer(limits_app, name="limits")

    def store():
        from services.store import get_store

        return get_store()

    def emit(rows, as_json: bool, title: str, columns: list[tuple[str, str]]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(rows, default=str) + "\n")
            return
        from rich.table import Table

        table = Table(title=title)
        for _, header in columns:
            table.add_column(header)
        for r in rows:
            table.add_row(*("" if r.get(k) is None else str(r.get(k)) for k, _ in columns))
        out.print(table)

    # ------------------------------------------------------------------ rerun

    @app.command()
    def rerun(
        run_id: str = typer.Argument(..., help="flow_run_id of a run in the ledger (orchestra runs)"),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout"),
        model: Optional[str] = typer.Option(None, "--model", help="Override the model again (default: the run's)"),
        budget: Optional[float] = typer.Option(None, "--budget", help="Budget in USD (default: the run's)"),
    ) -> None:
        """Run a recorded run's workflow again with the same inputs; steps that completed
        come from the cache, only the others call a provider."""
        from agents.base import parse_model
        from flows.spec import WorkflowError, coerce_inputs, load_workflow, parse_workflow

        row = store().get_run(run_id)
        if row is None:
            raise _fail(f"no run {run_id!r} in the ledger (see `orchestra runs`)")
        ref = row.get("workflow_ref")
        if not ref:
            raise _fail(f"run {run_id} was recorded without its workflow definition; run the file again "
                        "with `orchestra run FILE`")
        try:
            if ref.lstrip().startswith("{"):
                workflow_ref: str | dict = json.loads(ref)
                wf = parse_workflow(workflow_ref, source=f"<workflow of run {run_id}>", default_name=row["workflow"])
            else:
                workflow_ref = ref
                wf = load_workflow(Path(ref))
            values = coerce_inputs(wf, row.get("inputs") or {})
        except WorkflowError as exc:
            raise _fail(f"rerun {run_id}: {exc}") from None
        model = model or row.get("model_override")
        if model:
            try:
                parse_model(model)
            except ValueError as exc:
                raise _fail(f"--model: {exc}") from None
        cli._check_budget(budget)
        budget = budget if budget is not None else row.get("budget_usd")
        report = cli._execute(wf, workflow_ref, values, model, False, live=not as_json and out.is_terminal,
                              budget=budget)
        if as_json:
            sys.stdout.write(json.dumps(report, default=str) + "\n")
        else:
            cli._print_report(report)
        raise Exit(0 if report["state"] == "COMPLETED" else 1)

    # ------------------------------------------------------------------ dead letters

    @failed_app.command("list")
    def failed_list(
        as_json: bool = typer.Option(False, "--json"),
        limit: int = typer.Option(50, "--limit", min=1),
        run_id: Optional[str] = typer.Option(None, "--run", help="Only this flow run"),
    ) -> None:
        """Steps that failed for good, newest first."""
        rows = store().list_dead_letters(limit=limit, flow_run_id=run_id)
        if as_json:
            emit(rows, True, "", [])
            return
        short = [{**r, "error": (r["error"] or "").splitlines()[0][:120]} for r in rows]
        emit(short, False, "failed steps", [("id", "id"), ("created", "when"), ("workflow", "workflow"),
                                             ("step", "step"), ("agent", "agent"), ("attempts", "attempts"),
                                             ("flow_run_id", "flow run"), ("error", "error")])

    @failed_app.command("show")
    def failed_show(letter_id: int = typer.Argument(..., help="The id from `orchestra failed list`"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
        """One failed step: its rendered prompt and its error."""
        row = store().get_dead_letter(letter_id)
        if row is None:
            raise _fail(f"no failed step with id {letter_id} (see `orchestra failed list`)")
        if as_json:
            sys.stdout.write(json.dumps(row, default=str) + "\n")
            return
        for key in ("workflow", "step", "agent", "model", "attempts", "flow_run_id", "created"):
            out.print(f"[bold]{key}[/bold]: {escape(str(row.get(key)))}")
        out.print("[bold]error[/bold]:")
        out.print(row["error"], markup=False)
        out.print("[bold]prompt[/bold]:")
        out.print(row.get("prompt") or "(not rendered: the step failed before its prompt was)", markup=False)

    # ------------------------------------------------------------------ approvals

    @app.command()
    def approve(
        run_id: str = typer.Argument(..., help="The paused flow run"),
        reject: bool = typer.Option(False, "--reject", help="Reject: the run fails"),
        reason: str = typer.Option("", "--reason", help="Why (shown in the run's error on a rejection)"),
    ) -> None:
        """Approve (or reject) a flow run that waits at an approval step."""
        from services import prefect_server, runtime

        runtime.configure(quiet_console=True)
        if not os.environ.get("PREFECT_API_URL"):
            info = prefect_server.status()
            if info is None:
                raise _fail("no Prefect server: set PREFECT_API_URL, or start one with `orchestra server start`")
            os.environ["PREFECT_API_URL"] = info["url"]
        from flows.approval import answer

        try:
            asyncio.run(answer(run_id, approved=not reject, reason=reason))
        except ValueError as exc:
            raise _fail(str(exc)) from None
        out.print(f"{'rejected' if reject else 'approved'}: flow run {run_id}" + (f" ({reason})" if reason else ""),
                  markup=False)

    # ------------------------------------------------------------------ limits

    @limits_app.command("set")
    def limits_set(
        provider: str = typer.Argument(..., help="openai | anthropic | fast-agent"),
        concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Calls in flight at most"),
        rpm: Optional[int] = typer.Option(None, "--rpm", min=1, help="Requests per minute at most"),
        clear: bool = typer.Option(False, "--clear", help="Remove the provider's limits"),
    ) -> None:
        """Set a provider's limits (kept in the store; mirrored to Prefect global
        concurrency limits when a Prefect server is configured)."""
        from agents.base import PROVIDERS

        if provider not in PROVIDERS:
            raise _fail(f"unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
        if clear:
            concurrency = rpm = None
        elif concurrency is None and rpm is None:
            raise _fail("give --concurrency and/or --rpm (or --clear)")
        st = store()
        st.set_limit(provider, concurrency=concurrency, rpm=rpm)
        synced = _sync_prefect(st, provider)
        row = next((r for r in st.list_limits() if r["provider"] == provider), None)
        what = "cleared" if row is None else f"concurrency {row['concurrency'] or '-'}, rpm {row['rpm'] or '-'}"
        out.print(f"{provider}: {what}" + (f" (Prefect global concurrency limits on {synced})" if synced else
                                          " (local limiter: no Prefect server configured)"), markup=False)

    def _sync_prefect(st, provider: str) -> str | None:
        url = os.environ.get("PREFECT_API_URL")
        if not url:
            from services import prefect_server

            info = prefect_server.status()
            url = info["url"] if info else None
        if not url or os.environ.get("ORCHESTRA_LIMITER") == "local":
            return None
        os.environ["PREFECT_API_URL"] = url
        from services import runtime

        runtime.configure(quiet_console=True)
        from flows.limits import sync_to_prefect

        rows = [r for r in st.list_limits() if r["provider"] == provider] or [
            {"provider": provider, "concurrency": None, "rpm": None}]
        try:
            asyncio.run(sync_to_prefect(rows))
        except Exception as exc:
            raise _fail(f"the limits are saved, but Prefect at {url} refused them: {exc}", 1) from None
        return url

    @limits_app.command("list")
    def limits_list(as_json: bool = typer.Option(False, "--json")) -> None:
        """The providers' limits."""
        rows = store().list_limits()
        emit(rows, as_json, "provider limits", [("provider", "provider"), ("concurrency", "concurrency"),
                                                ("rpm", "rpm"), ("updated", "updated")])

    # ------------------------------------------------------------------ health

    @agents_app.command("health")
    def agents_health(
        as_json: bool = typer.Option(False, "--json"),
        timeout: float = typer.Option(20.0, "--timeout", min=0.1, help="Seconds per probe"),
    ) -> None:
        """Probe every agent with a one-token call; record status and latency; show breaker states."""
        from services import runtime

        runtime.configure(quiet_console=True)
        rows = asyncio.run(_health(cli._registry(), timeout))
        store().record_health(rows)
        emit(rows, as_json, "agent health", [("agent", "agent"), ("model", "model"), ("status", "status"),
                                             ("latency_ms", "ms"), ("breaker", "breaker"), ("error", "error")])
        raise Exit(0 if all(r["status"] == "ok" for r in rows) else 1)

    async def _health(registry: dict, timeout: float) -> list[dict]:
        import time

        from agents import call_agent
        from agents.base import AgentCallError, default_model
        from agents.breaker import breakers, endpoint

        st = store()
        breakers.configure()
        breakers.use_backend(st)

        async def probe(agent) -> dict:
            model = agent.model or default_model()
            started = time.perf_counter()
            row = {"agent": agent.name, "model": model}
            try:
                credentials = await _credentials(model, agent)
                result = await call_agent(agent.model_copy(update={"max_tokens": 1}), "Reply with: ok",
                                          model=model, timeout=timeout, **credentials)
                row.update(status="ok", latency_ms=round(result.latency_ms, 1), cost_usd=result.cost_usd, error=None)
            except AgentCallError as exc:
                row.update(status="error", latency_ms=round((time.perf_counter() - started) * 1000, 1),
                           cost_usd=0.0, error=exc.message)
            row["breaker"] = breakers.state(endpoint(model))["state"]
            return row

        if any((a.model or default_model()).startswith("fast-agent:") for a in registry.values()):
            from agents.base import AgentConfig

            # fast-agent starts its runtime (seconds) on the first call: not a latency to report
            await call_agent(AgentConfig(name="warm-up"), "ok", model="fast-agent:passthrough")
        return list(await asyncio.gather(*(probe(a) for a in registry.values())))

    async def _credentials(model: str, agent) -> dict:
        provider = model.partition(":")[0]
        if provider == "fast-agent":
            return {}
        from flows.compile import _credentials as resolve

        return await resolve(provider, agent)
