"""What a flow-run process costs before its first step: CPU and wall time.

A worker (and ``orchestra.runs.start``) runs a flow run as ``python -m prefect.engine <id>``
in a new process. This creates the flow run on Orchestra's local Prefect server, runs
that command here as a child, and reads:

* the child's CPU (user + system, ``getrusage(RUSAGE_CHILDREN)``) and wall time to exit;
* the time from the process start to its first step starting (the ledger's ``steps``
  row), and to the flow run's end;
* with ``--importtime``, the modules it spent most on (``python -X importtime``).

    python bench/startup.py                  # 5 runs of a one-step workflow (openai: against the fake)
    python bench/startup.py --workflow hello # the shipped hello (fast-agent passthrough)
    python bench/startup.py --importtime     # and the top imports of one run

Nothing is asserted: a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import fake_openai, local_server  # noqa: E402  (bench/harness.py)

ONE_STEP = {"name": "startup", "inputs": {"nonce": {"type": "string"}},
            "agents": {"a": {"model": "openai:bench-model"}},
            "steps": [{"id": "only", "agent": "a", "prompt": "{{ inputs.nonce }}"}]}


def _top_imports(stderr: str, top: int = 12) -> list[tuple[str, float]]:
    """(module, cumulative s) of the top-level imports in ``-X importtime`` output."""
    found = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if name.startswith("  ") or not cumulative.strip().isdigit():  # only top-level imports
            continue
        found.append((name.strip(), int(cumulative) / 1e6))
    return sorted(found, key=lambda x: -x[1])[:top]


async def one(workflow, importtime: bool) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.states import Pending

    from ledger import queries
    from orchestra import runtime
    from orchestra.flow import run_workflow

    parameters = {"workflow": workflow, "inputs": {"nonce": uuid.uuid4().hex} if isinstance(workflow, dict) else {},
                  "model": None, "no_cache": True, "budget_usd": None}
    async with get_client() as client:
        flow_run = await client.create_flow_run(run_workflow, parameters=parameters, state=Pending())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(PREFECT__FLOW_RUN_ID=str(flow_run.id), PREFECT__FLOW_ENTRYPOINT="orchestra/flow.py:run_workflow")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = datetime.now().astimezone()
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "prefect.engine",
                           str(flow_run.id)], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"the flow-run process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    store = runtime.ledger()
    store.flush()
    steps = queries.steps(store, str(flow_run.id))
    first = min(datetime.fromisoformat(s["started"]) for s in steps if s["started"])
    return {"cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), "wall": wall,
            "first_step": (first - started).total_seconds(),
            "imports": _top_imports(proc.stderr) if importtime else []}


def _span(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workflow", help="a shipped workflow's name (default: a one-step openai workflow)")
    parser.add_argument("--importtime", action="store_true", help="also list the top imports of one more run")
    parser.add_argument("--home", type=Path, metavar="DIR",
                        help="run in this Orchestra home and keep it (default: a new temporary one, removed)")
    args = parser.parse_args()

    workflow = args.workflow or ONE_STEP
    # a shipped workflow runs on its own model; the one-step workflow on the fake, at 0 ms
    with local_server(args.home), (contextlib.nullcontext() if args.workflow else fake_openai()):
        asyncio.run(one(workflow, False))  # warm-up: the server's first flow run, the OS's file cache
        runs = [asyncio.run(one(workflow, False)) for _ in range(args.runs)]
        imports = asyncio.run(one(workflow, True))["imports"] if args.importtime else []
    name = args.workflow or "one openai step (fake, 0 ms)"
    print(f"A flow-run process (`python -m prefect.engine <id>`), {name}, {args.runs} runs after a warm-up, "
          f"{os.cpu_count()} cores: median (range).\n")
    print("| CPU-s (process) | s to the first step | s to exit |")
    print("| ---: | ---: | ---: |")
    print(f"| {_span([r['cpu'] for r in runs])} | {_span([r['first_step'] for r in runs])} "
          f"| {_span([r['wall'] for r in runs])} |")
    if imports:
        print("\n| top-level import (one run, -X importtime) | cumulative s |\n| --- | ---: |")
        for module, seconds in imports:
            print(f"| `{module}` | {seconds:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
