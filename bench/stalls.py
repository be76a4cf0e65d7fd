"""How long the client's event loop goes without reading a socket during a fan-out: one
Orchestra run in this process at 200 ms (the fake provider), with the loop's stalls
(a 50 ms sleep that wakes more than 1 s late), gen-2 garbage collections, and, with
--where, the main thread's stack during the stalls (a watchdog thread samples it).

    python bench/stalls.py                         # fan10k, the engine's start pacing as shipped
    python bench/stalls.py --starting 100000       # the same with every admitted item starting at once
    python bench/stalls.py --workload fan1k --where

A stall of 5 s or more lets the SDK's connect timeout fire on a connection the loop made
just before it (flows.context.StartPacer says why a fan-out's start was one). A
measurement, not a test; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import fake_openai, local_server  # noqa: E402  (bench/harness.py)

STALL_S = 1.0


class Collections:
    """Gen-2 collections: (start, seconds) each, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []
        self._start = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        elif info["generation"] == 2:
            self.pauses.append((self._start, time.perf_counter() - self._start))


def _frame_key(frame) -> str:
    stack = traceback.extract_stack(frame)
    ours = [f for f in stack if f.filename.startswith(str(ROOT)) and "/.venv/" not in f.filename
            and "/bench/" not in f.filename]
    theirs = [f for f in stack if "/site-packages/" in f.filename][-3:]
    head = f"{Path(ours[-1].filename).name}:{ours[-1].name}" if ours else "-"
    return head + " | " + " <- ".join(f"{Path(f.filename).name}:{f.name}" for f in reversed(theirs))


async def measure(workload: str, where: bool) -> dict:
    import run as bench_run  # bench/run.py: the workloads

    from orchestra.flow import run_workflow

    dag = bench_run.WORKLOADS[workload]()
    flow_fn = run_workflow.with_options(name=f"bench-stalls-{workload}")
    collections_ = Collections()
    main_thread = threading.get_ident()
    last_tick = [time.perf_counter()]
    stalls: list[tuple[float, float]] = []
    stacks: collections.Counter = collections.Counter()
    done = threading.Event()

    def watchdog() -> None:
        while not done.wait(0.25):
            if time.perf_counter() - last_tick[0] > STALL_S:
                frame = sys._current_frames().get(main_thread)
                if frame is not None:
                    stacks[_frame_key(frame)] += 1

    async def ticker() -> None:
        while not done.is_set():
            t = time.perf_counter()
            last_tick[0] = t
            await asyncio.sleep(0.05)
            late = time.perf_counter() - t - 0.05
            if late > STALL_S:
                stalls.append((t, late))

    if where:
        threading.Thread(target=watchdog, daemon=True, name="stall watchdog").start()
    tick = asyncio.create_task(ticker())
    t0 = time.perf_counter()
    try:
        await bench_run.orchestra(flow_fn, bench_run.as_workflow(workload, dag), uuid.uuid4().hex)
        outcome = "completed"
    except SystemExit as exc:  # bench_run.orchestra: the run did not complete
        outcome = str(exc)
    wall = time.perf_counter() - t0
    done.set()
    await tick
    rows = bench_run.ledger_calls(bench_run.LAST_RUN[0]) if outcome == "completed" else None
    pauses = [(s, d) for s, d in collections_.pauses if s >= t0]
    return {"outcome": outcome, "wall": wall, "steps": len(dag), "rows": rows,
            "stalls": [(s - t0, d) for s, d in stalls], "gc": pauses, "stacks": stacks.most_common(10)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="fan10k", choices=["fan1k", "fan10k", "wide", "grid"])
    parser.add_argument("--starting", type=int, metavar="N",
                        help="task runs that may start in one pass of the loop (flows.context.STARTING)")
    parser.add_argument("--where", action="store_true", help="sample the main thread's stack during stalls")
    args = parser.parse_args()
    with local_server(), fake_openai(200):
        from flows import context

        if args.starting:
            context.STARTING = args.starting
        r = asyncio.run(measure(args.workload, args.where))
        starting = context.STARTING
    longest = max((d for _, d in r["stalls"]), default=0.0)
    print(f"{args.workload}, 200 ms, STARTING={starting}: {r['outcome']} in {r['wall']:.1f} s; "
          f"ledger rows {r['rows']} for {r['steps']} steps")
    print(f"loop stalls > {STALL_S:.0f} s: {len(r['stalls'])}, longest {longest:.1f} s; first three (s into the run, "
          f"s): " + ", ".join(f"{s:.1f}+{d:.1f}" for s, d in r["stalls"][:3]))
    gc_s = [d for _, d in r["gc"]]
    print(f"gen-2 collections: {len(gc_s)}, {sum(gc_s):.1f} s in all, longest {max(gc_s, default=0):.2f} s")
    for key, n in r["stacks"]:
        print(f"  {n:4d} samples  {key}")
    return 0 if r["outcome"] == "completed" else 1


if __name__ == "__main__":
    sys.exit(main())
