"""What every `orchestra` command shares: the consoles, the exit convention, small parsers.

Exit codes: 0 completed, 1 a run (or a probe) failed, 2 invalid input (file, inputs,
model, arguments, a setting). Errors a user can cause print one clear message, never
a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Exit(Exception):
    """End the command with ``code``; ``message`` on stderr (or, with ``--json``, as the
    ``error`` of one JSON object on stdout, with ``problems`` and ``file``)."""

    def __init__(self, code: int, message: str | None = None, *, problems: list[str] | None = None,
                 file: str | None = None):
        self.code, self.message, self.problems, self.file = code, message, problems, file


def fail(message: str, code: int = 2, *, problems: list[str] | None = None, file: str | None = None) -> Exit:
    return Exit(code, message, problems=problems, file=file)


def invalid(exc: Exception, code: int = 2) -> Exit:
    """An Exit for a WorkflowError (its problems and file kept) or any other user error."""
    return fail(str(exc), code, problems=getattr(exc, "problems", None), file=getattr(exc, "source", None))


def error_object(exc: Exit) -> dict[str, Any]:
    """What ``--json`` prints for an error: ``{"error", "problems", "file"}``."""
    return {"error": exc.message, "problems": exc.problems if exc.problems is not None else [exc.message],
            "file": exc.file}


def load(file: Path):
    from flows.spec import WorkflowError, load_workflow

    try:
        return load_workflow(file)
    except WorkflowError as exc:
        raise invalid(exc) from None


def parse_pairs(pairs: list[str]) -> dict[str, str]:
    values = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise fail(f"-i {pair!r}: expected key=value")
        values[key.strip()] = value
    return values


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")


def table(rows: list[dict], title: str, columns: list[tuple[str, str]]) -> None:
    """``rows`` as a rich table of ``columns`` ``[(key, header)]``."""
    from rich.table import Table

    t = Table(title=title)
    for _, header in columns:
        t.add_column(header)
    for r in rows:
        t.add_row(*("" if r.get(k) is None else str(r.get(k)) for k, _ in columns))
    out.print(t)


def emit(rows: list[dict], as_json: bool, title: str, columns: list[tuple[str, str]]) -> None:
    print_json(rows) if as_json else table(rows, title, columns)


def ledger():
    """The app's ledger (``orchestra.runtime.ledger``); a setting that cannot be used exits 2."""
    from orchestra.runtime import ledger as app_ledger

    try:
        return app_ledger()
    except RuntimeError as exc:
        raise fail(str(exc)) from None
