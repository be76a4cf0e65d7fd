"""The ledger's writer alone, no Prefect: N sequential steps as the engine writes them
(RUNNING, the in-flight mark and the wait for its commit, the call row, COMPLETED) into
a new SQLite ledger; the writer thread's CPU per step (from /proc/self/task) and the
transactions per step.

    python bench/ledger_writer.py              # 300 steps, 3 runs
    python bench/ledger_writer.py --steps 1000 --runs 5

A measurement, not a test; see bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TICK = os.sysconf("SC_CLK_TCK")


def writer_cpu(store) -> float:
    fields = Path(f"/proc/self/task/{store._writer.native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def one(steps: int) -> tuple[float, float, float]:
    from sqlalchemy import event

    from core.calls import CallRecord
    from core.steps import StepState
    from ledger.store import Store

    with tempfile.TemporaryDirectory() as home:
        store = Store(f"sqlite:///{home}/ledger.db")
        run = str(uuid.uuid4())
        store.start_run(flow_run_id=run, workflow="bench", inputs={}, started=datetime.now(timezone.utc))
        store.heartbeat(run)  # starts the writer thread
        store.flush()
        begins = [0]
        event.listen(store.engine, "begin", lambda conn: begins.__setitem__(0, begins[0] + 1))
        c0, t0 = writer_cpu(store), time.perf_counter()
        for i in range(steps):
            step = f"s{i}"
            store.record_step(StepState(flow_run_id=run, step=step, state="RUNNING", position=i, prompt="p " * 20))
            mark = CallRecord.in_flight(flow_run_id=run, step=step, model="openai:m", agent="a", attempt=1)
            store.record_call_start(mark).wait(2)
            store.record_call(CallRecord(flow_run_id=run, step=step, model="openai:m", agent="a", input_tokens=10,
                                         output_tokens=5, cost_usd=0.001, priced=True, latency_ms=3.0, key=mark.key))
            time.sleep(0.005)  # the task run ends
            store.record_step(StepState(flow_run_id=run, step=step, state="COMPLETED", position=i,
                                        output="answer " * 10))
        store.flush()
        cpu, wall = writer_cpu(store) - c0, time.perf_counter() - t0
        store.close()
    return cpu * 1000 / steps, wall * 1000 / steps, begins[0] / steps


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one(args.steps) for _ in range(args.runs)]
    cpu, wall, tx = zip(*runs)
    print(f"{args.steps} sequential steps, {args.runs} runs: writer CPU {min(cpu):.2f}–{max(cpu):.2f} ms per step, "
          f"wall {min(wall):.2f}–{max(wall):.2f} ms per step, {statistics.median(tx):.2f} transactions per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
