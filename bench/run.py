"""Orchestra against the physical limit, and against plain asyncio, in one run.

DAGs of LLM calls against a local OpenAI-compatible fake at a fixed latency:
  wide:    64 independent calls, then one reducer that depends on all of them
  chain:   20 calls, each depending on the one before
  grid:    8 layers of 8; every node depends on the whole previous layer
  fan1k:   one for_each step over 1,000 items (a task run each), then a reducer
  fan10k:  the same over 10,000 items (with --scale)
For each, through Orchestra (every step or item a Prefect task run, on Orchestra's
local Prefect server) and through a plain asyncio + AsyncOpenAI baseline, in the same
run, alternating: wall ÷ (critical path × latency); the excess ms per step at 0 ms
latency (Orchestra − baseline); the client's CPU per step (this process: both run
here); the Prefect server's CPU per task run, counted until it is idle again after
the flow returned; and, for the fan-outs, the peak RSS of the client and the server.

    python bench/run.py                # 200 ms latency, 3 repeats, median; wide chain grid fan1k
    python bench/run.py --scale        # and fan10k (one repeat of it)
    python bench/run.py --smoke        # quick: 1 repeat, 50 ms, wide and chain only

Numbers are printed as a Markdown table (and saved to bench/results.md).
No timing is asserted anywhere: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import procstat  # noqa: E402  (bench/procstat.py)


# ---------------------------------------------------------------------------
# workloads: {step_id: [deps]}


def wide(n: int = 64) -> dict[str, list[str]]:
    dag = {f"w{i}": [] for i in range(n)}
    dag["reduce"] = list(dag)
    return dag


def chain(n: int = 20) -> dict[str, list[str]]:
    return {f"c{i}": ([f"c{i - 1}"] if i else []) for i in range(n)}


def grid(layers: int = 8, width: int = 8) -> dict[str, list[str]]:
    dag = {}
    for layer in range(layers):
        for j in range(width):
            dag[f"g{layer}_{j}"] = [f"g{layer - 1}_{k}" for k in range(width)] if layer else []
    return dag


def fan(items: int) -> dict[str, list[str]]:
    """A for_each over ``items`` (one node per item), then a reducer."""
    dag = {f"f{i}": [] for i in range(items)}
    dag["reduce"] = list(dag)
    return dag


WORKLOADS = {"wide": wide, "chain": chain, "grid": grid, "fan1k": lambda: fan(1000), "fan10k": lambda: fan(10_000)}
FANOUTS = {"fan1k": 1000, "fan10k": 10_000}


def depth(dag: dict[str, list[str]]) -> int:
    memo: dict[str, int] = {}

    def d(s: str) -> int:
        if s not in memo:
            memo[s] = 1 + max((d(p) for p in dag[s]), default=0)
        return memo[s]

    return max(d(s) for s in dag)


# ---------------------------------------------------------------------------
# baseline: plain asyncio + the openai SDK, dependency-driven


async def baseline(dag: dict[str, list[str]], base_url: str, nonce: str) -> float:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    futures: dict[str, asyncio.Task] = {}
    outputs: dict[str, str] = {}

    async def node(sid: str) -> None:
        for dep in dag[sid]:
            await futures[dep]
        deps = dag[sid]  # a fan-out's reducer gets the count, as Orchestra's does
        context = str(len(deps)) if len(deps) > 64 else " ".join(outputs[d][:40] for d in deps)
        reply = await client.chat.completions.create(
            model="bench-model", messages=[{"role": "user", "content": f"{nonce} {sid} {context}"}])
        outputs[sid] = reply.choices[0].message.content

    t0 = time.perf_counter()
    for sid in dag:
        futures[sid] = asyncio.ensure_future(node(sid))
    await asyncio.gather(*futures.values())
    wall = time.perf_counter() - t0
    await client.close()
    return wall


# ---------------------------------------------------------------------------
# Orchestra: the same DAG as a workflow, every step a Prefect task run


def as_workflow(name: str, dag: dict[str, list[str]]) -> dict:
    if name in FANOUTS:
        n = FANOUTS[name]
        return {"name": f"bench-{name}", "type": "graph", "inputs": {"nonce": {"type": "string"}},
                "agents": {"bench": {"model": "openai:bench-model"}},
                "steps": [{"id": "fan", "for_each": f"range({n})", "agent": "bench", "retries": 2,
                           "prompt": "{{ inputs.nonce }} f{{ item }}"},
                          {"id": "reduce", "depends_on": ["fan"], "agent": "bench", "retries": 2,
                           "prompt": "{{ inputs.nonce }} reduce {{ steps.fan.output | length }}"}]}
    steps = []
    for sid, deps in dag.items():
        context = " ".join("{{ steps['%s'].output[:40] }}" % d for d in deps)
        steps.append({"id": sid, "depends_on": deps, "prompt": "{{ inputs.nonce }} " + sid + " " + context,
                      "agent": "bench", "retries": 2})
    return {"name": f"bench-{name}", "type": "graph", "inputs": {"nonce": {"type": "string"}},
            "agents": {"bench": {"model": "openai:bench-model"}}, "steps": steps}


async def orchestra(flow_fn, workflow: dict, nonce: str) -> float:
    t0 = time.perf_counter()
    state = await flow_fn(workflow=workflow, inputs={"nonce": nonce}, return_state=True)
    wall = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"bench run failed: {state.message}")
    return wall


# ---------------------------------------------------------------------------


def start_fake(latency_ms: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.openai_server", "--port", "0",
                             "--latency-ms", str(latency_ms)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        raise SystemExit(f"fake provider did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def set_latency(url: str, latency_ms: int) -> None:
    import httpx

    httpx.post(f"{url}/_fake/config", json={"latency_ms": latency_ms}).raise_for_status()


def _server_pids() -> list[int]:
    from orchestra import prefect_server

    info = prefect_server.status()
    return procstat.tree(info["pid"]) if info else []


def _timed(coro_fn):
    """(wall, client CPU) of one awaited call."""
    async def run(*args):
        c0, t0 = time.process_time(), time.perf_counter()
        await coro_fn(*args)
        return time.perf_counter() - t0, time.process_time() - c0
    return run


async def measure(names: list[str], latency_ms: int, repeats: int, url: str) -> dict:
    from orchestra.flow import run_workflow

    server = _server_pids()
    me = os.getpid()
    results = {}
    for name in names:
        dag = WORKLOADS[name]()
        wf = as_workflow(name, dag)
        flow_fn = run_workflow.with_options(name=f"bench-{name}")
        reps = 1 if name == "fan10k" else repeats
        row = {"steps": len(dag), "depth": depth(dag), "task_runs": len(dag)}
        for latency in (latency_ms, 0):
            set_latency(url, latency)
            b_wall, o_wall, b_cpu, o_cpu, s_cpu = [], [], [], [], []
            # one warm-up of each (not for the 10,000-item run), then alternate so both see the same machine
            if name != "fan10k":
                await baseline(dag, f"{url}/v1", uuid.uuid4().hex)
                await orchestra(flow_fn, wf, uuid.uuid4().hex)
                procstat.wait_idle(server)
            for _ in range(reps):
                procstat.reset_peak(me)
                wall, cpu = await _timed(baseline)(dag, f"{url}/v1", uuid.uuid4().hex)
                b_wall.append(wall)
                b_cpu.append(cpu)
                base_rss = procstat.peak_rss(me)
                await asyncio.sleep(0.5)
                procstat.reset_peak(me)
                for pid in server:
                    procstat.reset_peak(pid)
                s0 = procstat.total_cpu(server)
                wall, cpu = await _timed(orchestra)(flow_fn, wf, uuid.uuid4().hex)
                o_wall.append(wall)
                o_cpu.append(cpu)
                procstat.wait_idle(server)  # the server's backlog after the flow returned counts
                s_cpu.append(procstat.total_cpu(server) - s0)
                if latency == latency_ms:
                    row["rss"] = (base_rss, procstat.peak_rss(me), max((procstat.peak_rss(p) for p in server),
                                                                        default=0))
            row[latency] = {"baseline": statistics.median(b_wall), "orchestra": statistics.median(o_wall),
                            "baseline_cpu": statistics.median(b_cpu), "orchestra_cpu": statistics.median(o_cpu),
                            "server_cpu": statistics.median(s_cpu)}
        results[name] = row
    return results


def report(results: dict, latency_ms: int, repeats: int) -> str:
    lines = [
        f"Latency {latency_ms} ms, median of {repeats} (after one warm-up; fan10k: one run), fake provider in its "
        f"own process, Orchestra's local Prefect server, {os.cpu_count()} cores. CPU columns at {latency_ms} ms.",
        "",
        "| workload | steps | critical path | bound (s) | baseline × bound | Orchestra × bound | Orchestra ÷ baseline "
        "| excess ms/step at 0 ms | client CPU ms/step: baseline / Orchestra | server CPU ms/task run "
        "| peak RSS MiB: baseline / client / server |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        bound = row["depth"] * latency_ms / 1000
        r, r0 = row[latency_ms], row[0]
        excess = (r0["orchestra"] - r0["baseline"]) * 1000 / row["steps"]
        cpu_b, cpu_o = r["baseline_cpu"] * 1000 / row["steps"], r["orchestra_cpu"] * 1000 / row["steps"]
        server = r["server_cpu"] * 1000 / row["task_runs"]
        rss = " / ".join(f"{v / 2**20:.0f}" for v in row.get("rss", ())) if name in FANOUTS else ""
        lines.append(f"| {name} | {row['steps']} | {row['depth']} | {bound:.2f} | {r['baseline'] / bound:.2f} "
                     f"| {r['orchestra'] / bound:.2f} | {r['orchestra'] / r['baseline']:.2f} | {excess:.1f} "
                     f"| {cpu_b:.1f} / {cpu_o:.1f} | {server:.1f} | {rss} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS))
    parser.add_argument("--scale", action="store_true", help="add the 10,000-item fan-out (fan10k)")
    parser.add_argument("--smoke", action="store_true", help="quick run (CI smoke mode)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = parser.parse_args()
    if args.smoke:
        args.latency_ms, args.repeats = 50, 1
        args.only = args.only or ["wide", "chain"]
    names = args.only or [n for n in WORKLOADS if n != "fan10k" or args.scale]

    from orchestra import runtime

    os.environ.setdefault("ORCHESTRA_HOME", str(ROOT / ".orchestra-bench"))
    runtime.configure(quiet_console=True)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from orchestra import prefect_server

    prefect_server.ensure(echo=print)
    fake, url = start_fake(args.latency_ms)
    os.environ["OPENAI_BASE_URL"] = f"{url}/v1"
    os.environ["OPENAI_API_KEY"] = "bench"
    try:
        results = asyncio.run(measure(names, args.latency_ms, args.repeats, url))
    finally:
        fake.terminate()
        fake.wait(10)
    table = report(results, args.latency_ms, args.repeats)
    print(table)
    if not args.smoke:
        Path(args.out).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
