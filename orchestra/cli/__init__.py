"""The `orchestra` command line: one Typer app assembled from sub-apps.

``run``, ``rerun``, ``validate``, ``graph`` (orchestra.cli.run); ``runs``, ``costs``,
``failed`` (orchestra.cli.ledger); ``agents`` (orchestra.cli.agents); ``approve``,
``limits``, ``server``, ``dashboard``, ``mcp`` (orchestra.cli.ops); ``users``, ``audit``
(orchestra.cli.access). Exit codes: 0
completed, 1 a run failed, 2 invalid input; errors print one line, never a traceback.
Heavy imports (Prefect, the SDKs) happen inside the commands that need them.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from orchestra.cli import access, agents, ledger, ops, run
from orchestra.cli.common import Exit, err

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run AI-agent workflows as Prefect flows, with a cost ledger.")
for _module in (run, ledger, agents, ops, access):
    _module.register(app)


def main() -> None:
    from core.redact import redact
    from core.settings import SettingsError, settings

    try:
        debug = settings().debug
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {escape(redact(str(exc)))}", markup=True, highlight=False)
        sys.exit(2)
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
        if isinstance(exc, SettingsError):
            err.print(f"[red]error:[/red] {escape(redact(str(exc)))}", markup=True, highlight=False)
            sys.exit(2)
        if debug:
            raise
        err.print(f"[red]error:[/red] {type(exc).__name__}: {escape(redact(str(exc)))}", markup=True,
                  highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    main()
