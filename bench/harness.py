"""What a benchmark runs in: Orchestra's local Prefect server in a home of its own, and
the fake OpenAI-compatible provider (``tests/fakes/openai_server.py``) in a process of its
own.

The home is a new temporary one by default, removed at the end, so every invocation
starts on an empty Prefect database and ledger (a database that has kept earlier
benchmarks' runs makes the server slower: its figures would depend on what ran before).
``keep`` (the scripts' ``--home DIR``) runs in a folder and keeps it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def local_server(keep: Path | None = None) -> Iterator[Path]:
    """Set ``ORCHESTRA_HOME`` (and drop ``PREFECT_API_URL``: always Orchestra's local server),
    configure Prefect as ``orchestra run`` does, start the local server fresh in that home
    and stop it at the end; yields the home."""
    home = keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="orchestra-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["ORCHESTRA_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    try:
        # imported after ORCHESTRA_HOME is set: Orchestra reads its settings once
        from orchestra import prefect_server, runtime

        runtime.configure(quiet_console=True)  # what `orchestra run` sets, nothing more
        prefect_server.stop()  # a server left in a kept home may run other code or settings
        prefect_server.ensure(echo=print)
        try:
            yield home
        finally:
            prefect_server.stop()
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def fake_openai(latency_ms: float = 0) -> Iterator[str]:
    """The fake provider at ``latency_ms``, with ``OPENAI_BASE_URL`` and ``OPENAI_API_KEY``
    pointing at it; yields its URL and stops it at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0",
                             "--latency-ms", str(latency_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline().strip()
        if not line.startswith("READY "):
            raise SystemExit(f"fake provider did not start: {line!r}")
        url = line.split(" ", 1)[1]
        os.environ.update(OPENAI_BASE_URL=f"{url}/v1", OPENAI_API_KEY="bench")
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
