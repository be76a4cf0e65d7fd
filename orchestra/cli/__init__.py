"""The `orchestra` command line.

Exit codes: 0 completed, 1 a run failed, 2 invalid input (file, inputs, model,
arguments). Errors a user can cause print one clear message, never a traceback.
Heavy imports (Prefect, the SDKs) happen inside the commands that need them.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run AI-agent workflows as Prefect flows, with a cost ledger.")
agents_app = typer.Typer(no_args_is_help=True, help="The agent registry (agents/*.yaml).")
server_app = typer.Typer(no_args_is_help=True, help="Orchestra's local Prefect server.")
app.add_typer(agents_app, name="agents")
app.add_typer(server_app, name="server")

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Exit(Exception):
    def __init__(self, code: int, message: str | None = None):
        self.code, self.message = code, message


def _fail(message: str, code: int = 2) -> Exit:
    return Exit(code, message)


def _load(file: Path):
    from flows.spec import WorkflowError, load_workflow

    try:
        return load_workflow(file)
    except WorkflowError as exc:
        raise _fail(str(exc)) from None


def _parse_pairs(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _fail(f"-i {pair!r}: expected key=value")
        values[key.strip()] = value
    return values


# ---------------------------------------------------------------------------
# run


@app.command()
def run(
    file: Path = typer.Argument(..., help="Workflow file (.yaml, .json, .py)"),
    input: list[str] = typer.Option([], "-i", "--input", help="key=value, repeatable"),
    model: Optional[str] = typer.Option(None, "--model", help="Use this model for every agent"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Call every provider again; store nothing in the cache"),
    budget: Optional[float] = typer.Option(None, "--budget", help="Most this run may spend, in USD (overrides budget_usd)"),
) -> None:
    """Run a workflow as a Prefect flow run."""
    from agents.base import parse_model
    from flows.spec import WorkflowError, coerce_inputs

    wf = _load(file)
    try:
        values = coerce_inputs(wf, _parse_pairs(input))
    except WorkflowError as exc:
        raise _fail(str(exc)) from None
    if model:
        try:
            parse_model(model)
        except ValueError as exc:
            raise _fail(f"--model: {exc}") from None
    _check_budget(budget)
    report = _execute(wf, str(file.resolve()), values, model, no_cache, live=not as_json and out.is_terminal,
                      budget=budget)
    if as_json:
        sys.stdout.write(json.dumps(report, default=str) + "\n")
    else:
        _print_report(report)
    raise Exit(0 if report["state"] == "COMPLETED" else 1)


def _check_budget(budget: float | None) -> None:
    import math

    if budget is not None and (math.isnan(budget) or math.isinf(budget) or budget < 0):
        raise _fail(f"--budget: must be a number of USD >= 0 (got {budget:g})")


def _execute(wf, workflow_ref: str | dict, values: dict, model: str | None, no_cache: bool, live: bool,
             budget: float | None = None) -> dict:
    from services import runner  # shared with `orchestra mcp`

    from services.prefect_server import UnreachableServer

    try:
        runner.ensure_prefect(echo=lambda m: err.print(f"[dim]{m}[/dim]"))
    except UnreachableServer as exc:
        raise _fail(str(exc), 2) from None
    except RuntimeError as exc:
        raise _fail(f"Prefect: {exc}", 1) from None
    from flows.approval import no_server_problem

    if problem := no_server_problem(wf):  # before anything is written
        raise _fail(problem)
    table = _LiveTable(wf) if live else None

    def main() -> dict:
        return asyncio.run(runner.run(wf, workflow_ref, values, model=model, no_cache=no_cache, budget=budget,
                                      listener=table.update if table else None))

    if table:
        with table:
            return main()
    return main()


class _LiveTable:
    """A live table of step states while a run is in progress (terminal only)."""

    COLORS = {"COMPLETED": "green", "FAILED": "red", "RUNNING": "yellow", "SKIPPED": "dim", "NOT_READY": "dim"}

    def __init__(self, wf):
        from rich.live import Live

        self.rows = {s.id: {"state": "PENDING"} for s in wf.steps}
        self.live = Live(self._render(), console=out, refresh_per_second=8, transient=True)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)

    def update(self, step: str, state: str, info: dict) -> None:
        base = step.split("[", 1)[0]
        row = self.rows.setdefault(base, {})
        row.update({k: v for k, v in info.items() if k in ("agent", "model", "cost_usd", "attempt")})
        if state != "RUNNING" or row.get("state") in (None, "PENDING", "RUNNING"):
            row["state"] = state
        self.live.update(self._render())

    def _render(self):
        from rich.table import Table

        table = Table(title="steps", expand=False)
        for col in ("step", "state", "agent", "model", "cost $"):
            table.add_column(col)
        for sid, row in self.rows.items():
            st = row.get("state", "PENDING")
            color = self.COLORS.get(st, "white")
            cost = row.get("cost_usd")
            table.add_row(sid, f"[{color}]{st}[/{color}]", row.get("agent") or "", row.get("model") or "",
                          f"{cost:.6f}" if cost is not None else "")
        return table


def _print_report(report: dict) -> None:
    from rich.table import Table

    from rich import box

    color = "green" if report["state"] == "COMPLETED" else "red"
    table = Table(title=f"{report['workflow']} — [{color}]{report['state']}[/{color}]", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("step", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("agent / model", overflow="fold", min_width=22)
    for col in ("tries", "tokens", "cost $", "s"):
        table.add_column(col, justify="right", no_wrap=True)
    for sid, s in report["steps"].items():
        st = s["state"] if not s.get("cached") else "CACHED"
        scolor = {"COMPLETED": "green", "CACHED": "cyan", "FAILED": "red"}.get(st, "dim")
        who = escape(s.get("agent") or "") + (f"\n[dim]{escape(s['model'])}[/dim]" if s.get("model") else "")
        table.add_row(sid, f"[{scolor}]{st}[/{scolor}]", who, str(s["attempts"]),
                      f"{s['input_tokens']}/{s['output_tokens']}", f"{s['cost_usd']:.6f}", f"{s['duration_s']:.2f}")
    out.print(table)
    for sid, s in report["steps"].items():
        if s.get("error"):
            err.print(f"[red]{escape(s['error'])}[/red]", highlight=False)
    if report.get("error") and not report["steps"]:
        err.print(f"[red]{escape(report['error'])}[/red]", highlight=False)
    last = [s for s in report["steps"].values() if s["state"] == "COMPLETED"]
    if last:
        output = last[-1]["output"]
        out.print("\n[bold]output[/bold] (last completed step):", highlight=False)
        out.print(output if isinstance(output, str) else json.dumps(output, indent=2), markup=False, highlight=False)
    out.print(f"\nflow run {report['flow_run_id']} · {report['duration_s']:.2f} s · "
              f"{report['input_tokens']} in / {report['output_tokens']} out tokens · ${report['cost_usd']:.6f}",
              highlight=False)


# ---------------------------------------------------------------------------
# validate, graph


@app.command()
def validate(file: Path = typer.Argument(..., help="Workflow file")) -> None:
    """Check a workflow; print every error with its location."""
    wf = _load(file)
    out.print(f"{file}: ok — workflow '{wf.name}', {len(wf.steps)} steps ({wf.type})")


@app.command()
def graph(file: Path = typer.Argument(..., help="Workflow file")) -> None:
    """Print the workflow's DAG as Mermaid."""
    wf = _load(file)
    sys.stdout.write(wf.mermaid() + "\n")


# ---------------------------------------------------------------------------
# ledger queries


@app.command()
def runs(
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(50, "--limit", min=1),
    workflow: Optional[str] = typer.Option(None, "--workflow"),
) -> None:
    """Recent runs from the ledger."""
    from services.store import get_store

    rows = get_store().list_runs(limit=limit, workflow=workflow)
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    from rich.table import Table

    table = Table(title="runs")
    for col in ("flow_run_id", "workflow", "state", "cost $", "started"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["flow_run_id"], r["workflow"], r["state"], f"{r['cost_usd']:.6f}", str(r["started"]))
    out.print(table)


@app.command()
def costs(
    by: str = typer.Option("model", "--by", help="model | agent | workflow | day"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cost totals from the ledger."""
    from services.store import get_store

    if by not in ("model", "agent", "workflow", "day"):
        raise _fail(f"--by: must be one of model, agent, workflow, day (got {by!r})")
    rows = get_store().costs(by)
    if as_json:
        sys.stdout.write(json.dumps(rows, default=str) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"costs by {by}")
    for col in (by, "calls", "input tokens", "output tokens", "cost $"):
        table.add_column(col, justify="left" if col == by else "right")
    for r in rows:
        table.add_row(str(r[by]), str(r["calls"]), str(r["input_tokens"]), str(r["output_tokens"]), f"{r['cost_usd']:.6f}")
    out.print(table)


# ---------------------------------------------------------------------------
# agents


def _registry():
    from agents.registry import load_registry

    try:
        return load_registry()
    except ValueError as exc:
        raise _fail(str(exc)) from None


@agents_app.command("list")
def agents_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The agents in agents/*.yaml."""
    from agents.base import default_model

    reg = _registry()
    rows = [{"name": a.name, "model": a.model or f"(default: {default_model()})", "capabilities": a.capabilities,
             "description": a.description or ""} for a in reg.values()]
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    from rich.table import Table

    table = Table(title="agents")
    for col in ("name", "model", "capabilities", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], r["model"], ", ".join(r["capabilities"]), r["description"])
    out.print(table)


@agents_app.command("show")
def agents_show(name: str) -> None:
    """One agent's definition."""
    reg = _registry()
    if name not in reg:
        raise _fail(f"unknown agent '{name}' (known: {', '.join(sorted(reg))})")
    import yaml

    out.print(yaml.safe_dump(reg[name].model_dump(exclude_none=True), sort_keys=False).rstrip(), markup=False)


@agents_app.command("test")
def agents_test(
    name: str,
    prompt: str = typer.Option("Reply with the single word: ok", "--prompt"),
    model: Optional[str] = typer.Option(None, "--model"),
) -> None:
    """Send one prompt to an agent and show the answer, tokens, cost and latency."""
    from agents import call_agent
    from agents.base import AgentCallError, parse_model

    reg = _registry()
    if name not in reg:
        raise _fail(f"unknown agent '{name}' (known: {', '.join(sorted(reg))})")
    if model:
        try:
            parse_model(model)
        except ValueError as exc:
            raise _fail(f"--model: {exc}") from None
    try:
        result = asyncio.run(call_agent(reg[name], prompt, model=model))
    except AgentCallError as exc:
        raise _fail(f"agent '{name}': {exc.message}", 1) from None
    out.print(result.output, markup=False)
    err.print(f"[dim]{result.model} · {result.input_tokens} in / {result.output_tokens} out · "
              f"${result.cost_usd:.6f}{'' if result.priced else ' (unpriced)'} · {result.latency_ms:.0f} ms[/dim]")


# ---------------------------------------------------------------------------
# server, dashboard


@server_app.command("start")
def server_start() -> None:
    """Start (or find) the local Prefect server."""
    from services import prefect_server

    os.environ.pop("PREFECT_API_URL", None)
    os.environ["ORCHESTRA_PREFECT"] = "local"
    try:
        url = prefect_server.ensure(echo=lambda m: err.print(f"[dim]{m}[/dim]"))
    except RuntimeError as exc:
        raise _fail(str(exc), 1) from None
    out.print(f"Prefect API: {url}\nPrefect UI:  {url[:-4]}")


@server_app.command("status")
def server_status() -> None:
    from services import prefect_server

    info = prefect_server.status()
    if not info:
        out.print("no local Prefect server is running")
        raise Exit(1)
    out.print(f"running (pid {info['pid']}): API {info['url']} · UI {info['ui']} · log {info['log']}")


@server_app.command("stop")
def server_stop() -> None:
    from services import prefect_server

    out.print("stopped" if prefect_server.stop() else "no local Prefect server was running")


@app.command()
def dashboard(
    port: int = typer.Option(8501, "--port"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (loopback only until login lands)"),
) -> None:
    """Open the Streamlit dashboard (streamlit run dashboard/app.py) on 127.0.0.1."""
    import ipaddress
    import subprocess

    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise _fail(f"--host {host}: the dashboard has no login yet and can edit agents, "
                    "so it only listens on a loopback address (127.0.0.1, ::1, localhost)")
    app_path = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
    raise Exit(subprocess.call([sys.executable, "-m", "streamlit", "run", str(app_path),
                                "--server.address", host,
                                "--server.port", str(port), "--server.headless", "true",
                                "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false"]))


@app.command("mcp")
def mcp_command() -> None:
    """Serve Orchestra as an MCP server over stdio (Claude Desktop, fast-agent, ...)."""
    from services.mcp_server import main as serve

    serve()


# rerun, failed, approve, limits, agents health
from services.cli_resilience import register as _register_resilience  # noqa: E402

_register_resilience(sys.modules[__name__])


def main() -> None:
    try:
        app(standalone_mode=False)
    except Exit as exc:
        if exc.message:
            err.print(f"[red]error:[/red] {escape(exc.message)}", markup=True, highlight=False)
        sys.exit(exc.code)
    except Exception as exc:  # click usage errors and anything else: one line, no traceback
        import click
        from typer._click import exceptions as typer_click  # typer >= 0.17 vendors its own click

        if isinstance(exc, (click.exceptions.Exit, typer.Exit)):
            sys.exit(exc.exit_code)
        if isinstance(exc, (click.ClickException, typer_click.ClickException)):
            exc.show()
            sys.exit(2)
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            sys.exit(130)
        if os.environ.get("ORCHESTRA_DEBUG"):
            raise
        from services.redact import redact

        err.print(f"[red]error:[/red] {type(exc).__name__}: {escape(redact(str(exc)))}", markup=True, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
