"""`orchestra run`, `rerun`, `validate`, `graph`: a workflow as a Prefect flow run."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from orchestra.cli.common import Exit, err, fail, invalid, load, out, parse_pairs, print_json


def register(app: typer.Typer) -> None:
    app.command()(run)
    app.command()(rerun)
    app.command()(validate)
    app.command()(graph)


def run(
    file: Path = typer.Argument(..., help="Workflow file (.yaml, .json, .py)"),
    input: list[str] = typer.Option([], "-i", "--input", help="key=value, repeatable"),
    model: Optional[str] = typer.Option(None, "--model", help="Use this model for every agent"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout"),
    no_cache: bool = typer.Option(False, "--no-cache", help="Call every provider again; store nothing in the cache"),
    budget: Optional[float] = typer.Option(None, "--budget", help="Most this run may spend, in USD (overrides budget_usd)"),
) -> None:
    """Run a workflow as a Prefect flow run."""
    from flows.spec import WorkflowError
    from orchestra import runs

    wf = load(file)
    try:
        request = runs.prepare(wf, parse_pairs(input), model=model, no_cache=no_cache, budget=budget,
                               model_label="--model", budget_label="--budget")
    except (WorkflowError, ValueError) as exc:
        raise invalid(exc) from None
    request.ref = str(file.resolve())
    _finish(execute(request, live=not as_json and out.is_terminal), as_json)


def rerun(
    run_id: str = typer.Argument(..., help="flow_run_id of a run in the ledger (orchestra runs)"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout"),
    model: Optional[str] = typer.Option(None, "--model", help="Override the model again (default: the run's)"),
    budget: Optional[float] = typer.Option(None, "--budget", help="Budget in USD (default: the run's)"),
) -> None:
    """Run a recorded run's workflow again with the same inputs; steps that completed
    come from the cache, only the others call a provider."""
    from orchestra import runs

    try:
        request = runs.rerun_request(run_id, model=model, budget=budget)
    except (ValueError, RuntimeError) as exc:
        raise invalid(exc) from None
    _finish(execute(request, live=not as_json and out.is_terminal), as_json)


def _finish(report: dict, as_json: bool) -> None:
    from orchestra import runs

    print_json(report) if as_json else print_report(report)
    if report["state"] == "CANCELLED" and runs.interrupted():
        raise Exit(130)
    raise Exit(0 if report["state"] == "COMPLETED" else 1)


def execute(request, live: bool) -> dict:
    """Run ``request`` in this process (the local Prefect server or PREFECT_API_URL)."""
    from orchestra import runs
    from orchestra.prefect_server import UnreachableServer

    try:
        runs.ensure_prefect(echo=lambda m: err.print(f"[dim]{m}[/dim]"))
    except UnreachableServer as exc:
        raise fail(str(exc), 2) from None
    except RuntimeError as exc:
        raise fail(f"Prefect: {exc}", 1) from None
    import os

    from orchestra import reaper

    reaper.reap(api=os.environ.get("PREFECT_API_URL"))  # runs whose process died end as Prefect says
    from flows.steps.approval import no_server_problem

    if problem := no_server_problem(request.wf):  # before anything is written
        raise fail(problem, file=request.wf.source)
    from orchestra import access, actions

    actions.note_run(access.cli_actor(), request)
    table = LiveTable(request.wf) if live else None

    def main() -> dict:
        return asyncio.run(runs.run(request, listener=table.update if table else None))

    if table:
        with table:
            return main()
    return main()


class LiveTable:
    """A live table of step states while a run is in progress (terminal only)."""

    COLORS = {"COMPLETED": "green", "FAILED": "red", "RUNNING": "yellow", "SKIPPED": "dim", "NOT_READY": "dim"}

    def __init__(self, wf):
        from rich.live import Live

        self.rows = {s.id: {"state": "PENDING", "kind": s.kind} for s in wf.steps}
        self.live = Live(self._render(), console=out, refresh_per_second=8, transient=True)

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.__exit__(*exc)

    def update(self, step: str, state: str, info: dict) -> None:
        base = step.split("[", 1)[0]
        row = self.rows.setdefault(base, {})
        row.update({k: v for k, v in info.items()
                    if k in ("agent", "model", "image", "exit_code", "cost_usd", "attempt", "duration_s")})
        if state != "RUNNING" or row.get("state") in (None, "PENDING", "RUNNING"):
            row["state"] = state
        self.live.update(self._render())

    def _render(self):
        from rich.table import Table

        table = Table(title="steps", expand=False)
        for col in ("step", "kind", "state", "agent · model / image", "exit", "s", "cost $"):
            table.add_column(col)
        for sid, row in self.rows.items():
            st = row.get("state", "PENDING")
            color = self.COLORS.get(st, "white")
            cost, seconds = row.get("cost_usd"), row.get("duration_s")
            table.add_row(sid, row.get("kind") or "", f"[{color}]{st}[/{color}]", escape(_who(row, " · ")),
                          _exit(row.get("exit_code")), f"{seconds:.2f}" if seconds is not None else "",
                          f"{cost:.6f}" if cost is not None else "")
        return table


def _who(step: dict, sep: str) -> str:
    """What ran a step: the agent and model, a container's image, a command ("sandboxed" or not)."""
    if step.get("kind") == "container":
        return step.get("image") or ""
    if step.get("kind") == "command":
        return "" if "sandboxed" not in step else ("sandboxed" if step["sandboxed"] else "not sandboxed")
    return sep.join(x for x in (step.get("agent"), step.get("model")) if x)


def _exit(code) -> str:
    if code is None:
        return ""
    return ",".join(str(c) for c in code) if isinstance(code, list) else str(code)


def print_report(report: dict) -> None:
    from rich import box
    from rich.table import Table

    color = "green" if report["state"] == "COMPLETED" else "red"
    table = Table(title=f"{report['workflow']} — [{color}]{report['state']}[/{color}]", title_justify="left",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    table.add_column("step", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("agent / model", overflow="fold", min_width=22)
    exits = any(s.get("kind") in ("container", "command") for s in report["steps"].values())
    for col in ("tries", "tokens", *(("exit",) if exits else ()), "cost $", "s"):
        table.add_column(col, justify="right", no_wrap=True)
    for sid, s in report["steps"].items():
        st = s["state"] if not s.get("cached") else "CACHED"
        scolor = {"COMPLETED": "green", "CACHED": "cyan", "FAILED": "red"}.get(st, "dim")
        process = s.get("kind") in ("container", "command")
        if process:  # what ran it: the kind, then the image (or whether it was sandboxed)
            detail = _who(s, "")
            who = f"{s['kind']}" + (f"\n[dim]{escape(detail)}[/dim]" if detail else "")
        else:
            who = escape(s.get("agent") or "") + (f"\n[dim]{escape(s['model'])}[/dim]" if s.get("model") else "")
            if s.get("kind") not in (None, "agent") and not who:
                who = f"[dim]{s['kind']}[/dim]"
        tokens = "" if process else f"{s['input_tokens']}/{s['output_tokens']}"
        exit_cell = (_exit(s.get("exit_code")),) if exits else ()
        table.add_row(sid, f"[{scolor}]{st}[/{scolor}]", who, str(s["attempts"]), tokens, *exit_cell,
                      f"{s['cost_usd']:.6f}", f"{s['duration_s']:.2f}")
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


def validate(file: Path = typer.Argument(..., help="Workflow file")) -> None:
    """Check a workflow; print every error with its location (exit 2), and warnings (exit 0)."""
    wf = load(file)
    out.print(f"{file}: ok — workflow '{wf.name}', {len(wf.steps)} steps ({wf.type})")
    for warning in wf.warnings:
        err.print(f"[yellow]warning:[/yellow] {escape(f'{file}: {warning}')}", highlight=False)


def graph(file: Path = typer.Argument(..., help="Workflow file")) -> None:
    """Print the workflow's DAG as Mermaid."""
    import sys

    wf = load(file)
    sys.stdout.write(wf.mermaid() + "\n")
