"""A stand-in for the ``dagger`` CLI, for the SDK's own way of starting an engine session.

When no session is open (no ``DAGGER_SESSION_PORT``), the dagger-io SDK runs
``$_EXPERIMENTAL_DAGGER_CLI_BIN session --label ...``, reads one JSON line
``{"port": N, "session_token": "..."}`` from its stdout, talks GraphQL to that port, sends
the CLI's stderr to ``Config(log_output=...)``, and ends the session by closing the CLI's
stdin. This script does exactly that with a :class:`DaggerEngineFake` in its own process:

    cli = write_cli(tmp_path)                    # an executable `dagger` in tmp_path
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_CLI_BIN", str(cli))   # or put tmp_path on PATH

Every session start and end is appended to ``$DAGGER_DOUBLE_SESSIONS`` (a file) when that
variable is set, so a test can count the sessions a run opened and see that they closed.
Only ``session`` is emulated; anything else exits 2 saying so.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SESSION_LOG = "DAGGER_DOUBLE_SESSIONS"
STARTED_LINE = "engine double: session started"


def _note(event: str) -> None:
    path = os.environ.get(SESSION_LOG)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{event} {os.getpid()}\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "session":
        print(f"dagger (engine double): only `dagger session` is emulated, not {' '.join(argv)!r}", file=sys.stderr)
        return 2
    from tests.fakes.dagger_engine import DaggerEngineFake

    engine = DaggerEngineFake().start()
    try:
        _note("start")
        print(json.dumps({"port": engine.port, "session_token": engine.token}), flush=True)
        print(f"{STARTED_LINE} on 127.0.0.1:{engine.port}", file=sys.stderr, flush=True)
        sys.stdin.read()  # the SDK ends the session by closing our stdin
        print("engine double: session closed", file=sys.stderr, flush=True)
    finally:
        engine.stop()
        _note("stop")
    return 0


def write_cli(folder: Path, name: str = "dagger") -> Path:
    """An executable ``folder/name`` that runs this script with this interpreter."""
    path = Path(folder) / name
    path.write_text(f"#!/bin/sh\nPYTHONPATH={ROOT} exec {sys.executable} -m tests.fakes.dagger_cli \"$@\"\n")
    path.chmod(0o755)
    return path


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
