"""The `orchestra` command line: one Typer app assembled from sub-apps.

``run``, ``rerun``, ``validate``, ``graph`` (orchestra.cli.run); ``runs``, ``costs``,
``failed`` (orchestra.cli.ledger); ``agents`` (orchestra.cli.agents); ``tasks``, ``projects``
(orchestra.cli.tasks); ``approve``, ``cancel``,
``limits``, ``server``, ``dashboard``, ``mcp`` (orchestra.cli.ops); ``users``, ``audit``
(orchestra.cli.access). Exit codes: 0
completed, 1 a run failed, 2 invalid input; errors print one line, never a traceback.
Heavy imports (Prefect, the SDKs) happen inside the commands that need them.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from orchestra.cli import access, agents, ledger, ops, run, tasks
from orchestra.cli.common import Exit, err, error_object, print_json

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Run AI-agent workflows as Prefect flows, with a cost ledger.")
for _module in (run, ledger, agents, tasks, ops, access):
    _module.register(app)


def main() -> None:
    """Run the CLI. With ``--json``, an error is one JSON object on stdout too
    (``{"error", "problems", "file"}``), as well as one line on stderr."""
    from core.redact import redact
    from core.settings import SettingsError, settings

    as_json = "--json" in sys.argv[1:]

    def stop(exc: Exit) -> None:
        if exc.message:
            exc.message = redact(exc.message)
            err.print(f"[red]error:[/red] {escape(exc.message)}", markup=True, highlight=False)
            if as_json:
                print_json(error_object(exc))
        sys.exit(exc.code)

    try:
        debug = settings().debug
    except SettingsError as exc:
        stop(Exit(2, str(exc)))
    try:
        app(standalone_mode=False)
    except Exit as exc:
        stop(exc)
    except Exception as exc:  # click usage errors and anything else: one line, no traceback
        import click
        from typer._click import exceptions as typer_click  # typer >= 0.17 vendors its own click

        if isinstance(exc, (click.exceptions.Exit, typer.Exit)):
            sys.exit(exc.exit_code)
        if isinstance(exc, (click.ClickException, typer_click.ClickException)):
            if as_json:
                print_json({"error": exc.format_message(), "problems": [exc.format_message()], "file": None})
            exc.show()
            sys.exit(2)
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            sys.exit(130)
        if isinstance(exc, SettingsError):
            stop(Exit(2, str(exc)))
        if debug:
            raise
        stop(Exit(1, f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    main()
