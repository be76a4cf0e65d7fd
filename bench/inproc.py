"""Where a step's client CPU goes, inside one process, at 0 ms latency: each thread's CPU
per step (from /proc/self/task), the ledger's transactions per step, for Orchestra with
its step-cache storage (ResultFiles) and with Prefect's default one, and for bare Prefect
(bench/run.py's third side), in alternating rounds so every side sees the same machine.

    python bench/inproc.py                       # chain of 20, 4 rounds of 4 runs per side
    python bench/inproc.py --workload wide --runs 3
    python bench/ledger_writer.py                # the ledger's writer alone, no Prefect

A measurement, not a test; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import fake_openai, local_server  # noqa: E402  (bench/harness.py)

TICK = os.sysconf("SC_CLK_TCK")
SIDES = ("orchestra", "prefect-storage", "bare")


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of each live thread of this process, by thread name."""
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        name = ("asyncio pool" if t.name.startswith("asyncio_") else
                "other threads" if t.name.startswith("Thread-") else t.name)
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / TICK
    return out


async def measure(workload: str, runs: int, rounds: int, url: str) -> dict:
    import run as bench_run  # bench/run.py: the workloads, the bare-Prefect side
    from sqlalchemy import event

    import flows.engine as engine
    from orchestra import runtime
    from orchestra.flow import run_workflow

    dag = bench_run.WORKLOADS[workload]()
    wf = bench_run.as_workflow(workload, dag)
    flow_fn = run_workflow.with_options(name=f"bench-inproc-{workload}")
    ours = engine.result_files
    store = runtime.ledger()
    begins = [0]
    event.listen(store.engine, "begin", lambda conn: begins.__setitem__(0, begins[0] + 1))

    def storage(side: str) -> None:
        # "prefect-storage": the step task without a result storage of its own, i.e. Prefect's
        # default LocalFileSystem under the same path (what the step cache used before ResultFiles)
        engine.result_files = ours if side == "orchestra" else (lambda path: None)
        engine._variant.cache_clear()

    async def one(side: str) -> None:
        if side == "bare":
            await bench_run.prefect_bare(dag, f"{url}/v1", uuid.uuid4().hex)
        else:
            await bench_run.orchestra(flow_fn, wf, uuid.uuid4().hex)

    for side in SIDES:  # warm-up
        storage(side)
        await one(side)
    results: dict = {side: {"cpu": [], "threads": [], "transactions": []} for side in SIDES}
    steps = runs * len(dag)
    for _ in range(rounds):
        for side in SIDES:
            storage(side)
            store.flush()
            t0, c0, b0 = thread_cpu(), time.process_time(), begins[0]
            for _ in range(runs):
                await one(side)
            store.flush()
            t1, c1 = thread_cpu(), time.process_time()
            rec = results[side]
            rec["cpu"].append((c1 - c0) * 1000 / steps)
            rec["threads"].append({k: (t1[k] - t0.get(k, 0.0)) * 1000 / steps for k in t1})
            rec["transactions"].append((begins[0] - b0) / steps)
    storage("orchestra")
    return results


def _span(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="chain", choices=["wide", "chain", "grid"])
    parser.add_argument("--runs", type=int, default=4, help="flow runs per side per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with local_server(), fake_openai(0) as url:
        results = asyncio.run(measure(args.workload, args.runs, args.rounds, url))
    print(f"{args.workload}, 0 ms, {args.rounds} rounds of {args.runs} runs per side: median (range) over rounds, "
          f"ms of CPU per step\n")
    names = sorted({k for r in results.values() for t in r["threads"] for k, v in t.items() if v >= 0.05})
    print("| side | process | " + " | ".join(names) + " | ledger transactions per step |")
    print("| --- | ---: | " + " | ".join("---:" for _ in names) + " | ---: |")
    for side, r in results.items():
        cells = [_span([t.get(k, 0.0) for t in r["threads"]]) for k in names]
        print(f"| {side} | {_span(r['cpu'])} | " + " | ".join(cells)
              + f" | {statistics.median(r['transactions']):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
