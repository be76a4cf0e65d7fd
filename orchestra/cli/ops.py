"""`orchestra approve`, `limits`, `server start|status|stop`, `dashboard`, `mcp`."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from orchestra.cli.common import Exit, emit, err, fail, ledger, out


def register(app: typer.Typer) -> None:
    app.command()(approve)
    app.command()(cancel)
    limits_app = typer.Typer(no_args_is_help=True, help="Concurrency and requests-per-minute per provider.")
    limits_app.command("set")(limits_set)
    limits_app.command("list")(limits_list)
    app.add_typer(limits_app, name="limits")
    server_app = typer.Typer(no_args_is_help=True, help="Orchestra's local Prefect server.")
    server_app.command("start")(server_start)
    server_app.command("status")(server_status)
    server_app.command("stop")(server_stop)
    app.add_typer(server_app, name="server")
    app.command()(dashboard)
    app.command("mcp")(mcp_command)


def _known_prefect() -> str | None:
    from orchestra.prefect_server import known_api

    return known_api()


def approve(
    run_id: str = typer.Argument(..., help="The paused flow run"),
    reject: bool = typer.Option(False, "--reject", help="Reject: the run fails"),
    reason: str = typer.Option("", "--reason", help="Why (shown in the run's error on a rejection)"),
) -> None:
    """Approve (or reject) a flow run that waits at an approval step."""
    from orchestra import runtime

    runtime.configure(quiet_console=True)
    if _known_prefect() is None:
        raise fail("no Prefect server: set PREFECT_API_URL, or start one with `orchestra server start`")
    from orchestra import actions
    from orchestra.access import cli_actor

    try:
        actions.answer_approval(cli_actor(), run_id, approved=not reject, reason=reason)
    except ValueError as exc:
        raise fail(str(exc)) from None
    out.print(f"{'rejected' if reject else 'approved'}: flow run {run_id}" + (f" ({reason})" if reason else ""),
              markup=False)


def cancel(run_id: str = typer.Argument(..., help="The flow run to cancel (orchestra runs)")) -> None:
    """Cancel a running flow run (local or on a worker): it stops within seconds and ends
    CANCELLED in Prefect and in the ledger, with what it spent so far."""
    from orchestra import access, actions, runtime

    runtime.configure(quiet_console=True)
    if _known_prefect() is None:
        raise fail("no Prefect server: set PREFECT_API_URL, or start one with `orchestra server start`")
    try:
        result = actions.cancel_run(access.cli_actor(), run_id)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if result["state"] == result["previous"] and result["state"] != "CANCELLING":
        raise fail(f"flow run {run_id} is not running (state: {result['state']})")
    out.print(f"cancelling: flow run {run_id} (was {result['previous']})", markup=False)


def limits_set(
    provider: str = typer.Argument(..., help="a provider: openai | anthropic | fast-agent"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", min=1, help="Calls in flight at most"),
    rpm: Optional[int] = typer.Option(None, "--rpm", min=1, help="Requests per minute at most"),
    clear: bool = typer.Option(False, "--clear", help="Remove the provider's limits"),
) -> None:
    """Set a provider's limits (kept in the ledger; mirrored to Prefect global
    concurrency limits when a Prefect server is configured)."""
    from orchestra import actions
    from orchestra.access import cli_actor

    if clear:
        concurrency = rpm = None
    elif concurrency is None and rpm is None:
        raise fail("give --concurrency and/or --rpm (or --clear)")
    store = ledger()
    try:
        row = actions.set_limit(cli_actor(), provider, concurrency=concurrency, rpm=rpm, store=store)
    except ValueError as exc:
        raise fail(str(exc)) from None
    synced = _sync_prefect(store, provider)
    what = "cleared" if row is None else f"concurrency {row['concurrency'] or '-'}, rpm {row['rpm'] or '-'}"
    out.print(f"{provider}: {what}" + (f" (Prefect global concurrency limits on {synced})" if synced else
                                      " (local limiter: no Prefect server configured)"), markup=False)


def _sync_prefect(store, provider: str) -> str | None:
    from core.settings import settings

    if settings().limiter == "local":
        return None
    url = _known_prefect()
    if not url:
        return None
    from orchestra import runtime

    runtime.configure(quiet_console=True)
    from flows.limits import sync_to_prefect

    rows = [r for r in store.list_limits() if r["provider"] == provider] or [
        {"provider": provider, "concurrency": None, "rpm": None}]
    try:
        asyncio.run(sync_to_prefect(rows))
    except Exception as exc:
        raise fail(f"the limits are saved, but Prefect at {url} refused them: {exc}", 1) from None
    return url


def limits_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The providers' limits."""
    from ledger import queries

    emit(queries.limits(ledger()), as_json, "provider limits",
         [("provider", "provider"), ("concurrency", "concurrency"), ("rpm", "rpm"), ("updated", "updated")])


def server_start() -> None:
    """Start (or find) the local Prefect server."""
    from orchestra import prefect_server

    os.environ.pop("PREFECT_API_URL", None)
    try:
        url = prefect_server.ensure(echo=lambda m: err.print(f"[dim]{m}[/dim]"), mode="local")
    except RuntimeError as exc:
        raise fail(str(exc), 1) from None
    out.print(f"Prefect API: {url}\nPrefect UI:  {url[:-4]}")


def server_status() -> None:
    """Whether the local Prefect server runs, and where."""
    from orchestra import prefect_server

    info = prefect_server.status()
    if not info:
        out.print("no local Prefect server is running")
        raise Exit(1)
    out.print(f"running (pid {info['pid']}): API {info['url']} · UI {info['ui']} · log {info['log']}")


def server_stop() -> None:
    """Stop the local Prefect server."""
    from orchestra import prefect_server

    out.print("stopped" if prefect_server.stop() else "no local Prefect server was running")


def dashboard(
    port: int = typer.Option(8501, "--port"),
    host: str = typer.Option("127.0.0.1", "--host",
                             help="Address to listen on; a non-loopback one needs a user (`orchestra users add`)"),
) -> None:
    """Open the Streamlit dashboard (streamlit run dashboard/server.py), on 127.0.0.1 by default.

    With users in the ledger everyone logs in; before the first user exists the
    dashboard is the machine user's own (the owner) and listens on loopback only."""
    import subprocess

    from orchestra.runtime import is_loopback
    from orchestra.users import any_users

    if not is_loopback(host) and not any_users(store=ledger()):
        raise fail(f"--host {host}: no dashboard user exists yet, so anyone reaching {host}:{port} would act "
                   "as the owner; add one first (`orchestra users add NAME --role owner`), or listen on "
                   "127.0.0.1")
    app_path = Path(__file__).resolve().parents[2] / "dashboard" / "server.py"  # app.py and the login route
    raise Exit(subprocess.call([sys.executable, "-m", "streamlit", "run", str(app_path),
                                "--server.address", host,
                                "--server.port", str(port), "--server.headless", "true",
                                "--client.toolbarMode", "viewer", "--browser.gatherUsageStats", "false"]))


def mcp_command(
    http: bool = typer.Option(False, "--http", help="Serve streamable HTTP (at /mcp) instead of stdio"),
    host: str = typer.Option("127.0.0.1", "--host", help="--http: the address to listen on (a non-loopback one "
                                                         "needs ORCHESTRA_MCP_TOKEN)"),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535,
                                       help="--http: the port (default 8765; 0: a free one)"),
) -> None:
    """Serve Orchestra as an MCP server over stdio (Claude Desktop, fast-agent, ...), or streamable HTTP."""
    from orchestra.mcp_server import DEFAULT_HTTP_PORT, main as serve

    serve(http=http, host=host, port=DEFAULT_HTTP_PORT if port is None else port)
