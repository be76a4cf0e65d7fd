"""`orchestra runs`, `costs`, `failed list|show`: the ledger, through ``ledger.queries``."""

from __future__ import annotations

from typing import Optional

import typer
from rich.markup import escape

from orchestra.cli.common import emit, fail, ledger, out, print_json


def register(app: typer.Typer) -> None:
    app.command()(runs)
    app.command()(costs)
    failed_app = typer.Typer(no_args_is_help=True, help="Steps that failed for good (dead letters).")
    failed_app.command("list")(failed_list)
    failed_app.command("show")(failed_show)
    app.add_typer(failed_app, name="failed")


def runs(
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(50, "--limit", min=1),
    workflow: Optional[str] = typer.Option(None, "--workflow"),
) -> None:
    """Recent runs from the ledger."""
    from ledger import queries
    from orchestra import reaper
    from orchestra.prefect_server import known_api

    store = ledger()
    reaper.reap(store, api=known_api())  # a run whose process died shows as it ended, not as RUNNING
    rows = queries.runs(store, limit=limit, workflow=workflow)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title="runs")
    for col in ("flow_run_id", "workflow", "state", "cost $", "started"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["flow_run_id"], r["workflow"], r["state"], f"{r['cost_usd']:.6f}", str(r["started"]))
    out.print(table)


def costs(
    by: str = typer.Option("model", "--by", help="model | agent | workflow | day"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Cost totals from the ledger."""
    from ledger import queries

    if by not in queries.COST_GROUPS:
        raise fail(f"--by: must be one of {', '.join(queries.COST_GROUPS)} (got {by!r})")
    rows = queries.cost_groups(ledger(), by)
    if as_json:
        print_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"costs by {by}")
    for col in (by, "calls", "input tokens", "output tokens", "cost $"):
        table.add_column(col, justify="left" if col == by else "right")
    for r in rows:
        table.add_row(str(r[by]), str(r["calls"]), str(r["input_tokens"]), str(r["output_tokens"]),
                      f"{r['cost_usd']:.6f}")
    out.print(table)


def failed_list(
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(50, "--limit", min=1),
    run_id: Optional[str] = typer.Option(None, "--run", help="Only this flow run"),
) -> None:
    """Steps that failed for good, newest first."""
    from ledger import queries

    rows = queries.dead_letters(ledger(), limit=limit, flow_run_id=run_id)
    if as_json:
        print_json(rows)
        return
    short = [{**r, "error": (r["error"] or "").splitlines()[0][:120]} for r in rows]
    emit(short, False, "failed steps", [("id", "id"), ("created", "when"), ("workflow", "workflow"),
                                         ("step", "step"), ("agent", "agent"), ("attempts", "attempts"),
                                         ("flow_run_id", "flow run"), ("error", "error")])


def failed_show(letter_id: int = typer.Argument(..., help="The id from `orchestra failed list`"),
                as_json: bool = typer.Option(False, "--json")) -> None:
    """One failed step: its rendered prompt and its error."""
    from ledger import queries

    row = queries.dead_letter(ledger(), letter_id)
    if row is None:
        raise fail(f"no failed step with id {letter_id} (see `orchestra failed list`)")
    if as_json:
        print_json(row)
        return
    for key in ("workflow", "step", "agent", "model", "attempts", "flow_run_id", "created"):
        out.print(f"[bold]{key}[/bold]: {escape(str(row.get(key)))}")
    out.print("[bold]error[/bold]:")
    out.print(row["error"], markup=False)
    out.print("[bold]prompt[/bold]:")
    out.print(row.get("prompt") or "(not rendered: the step failed before its prompt was)", markup=False)
