"""The Orchestra home a benchmark runs in: a new temporary one by default, removed at the
end, so every invocation starts on an empty Prefect database and ledger (a database that
has kept earlier benchmarks' runs makes the server slower: its figures would depend on
what ran before). ``--home DIR`` keeps one instead."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def bench_home(keep: Path | None = None) -> Iterator[Path]:
    """Set ``ORCHESTRA_HOME`` (and drop ``PREFECT_API_URL``: always Orchestra's local server,
    started in that home) for the benchmark; yields the folder."""
    home = keep.resolve() if keep else Path(tempfile.mkdtemp(prefix="orchestra-bench-"))
    home.mkdir(parents=True, exist_ok=True)
    os.environ["ORCHESTRA_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    try:
        yield home
    finally:
        if keep is None:
            shutil.rmtree(home, ignore_errors=True)
