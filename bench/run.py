"""Orchestra against the physical limit, and against plain asyncio, in one run.

Three DAGs of LLM calls against a local OpenAI-compatible fake at a fixed latency:
  wide:  64 independent calls, then one reducer that depends on all of them
  chain: 20 calls, each depending on the one before
  grid:  8 layers of 8; every node depends on the whole previous layer
For each: wall ÷ (critical path × latency), through Orchestra (every step a Prefect
task run, on a running Prefect server) and through a plain asyncio + AsyncOpenAI
baseline; then the excess ms per step at 0 ms latency (Orchestra − baseline) ÷ steps.

    python bench/run.py                # 200 ms latency, 3 repeats, median
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


WORKLOADS = {"wide": wide, "chain": chain, "grid": grid}


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
        context = " ".join(outputs[d][:40] for d in dag[sid])
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


async def measure(names: list[str], latency_ms: int, repeats: int, url: str) -> dict:
    from orchestra.flow import run_workflow

    results = {}
    for name in names:
        dag = WORKLOADS[name]()
        wf = as_workflow(name, dag)
        flow_fn = run_workflow.with_options(name=f"bench-{name}")
        row = {"steps": len(dag), "depth": depth(dag)}
        for latency in (latency_ms, 0):
            set_latency(url, latency)
            base, orch = [], []
            # one warm-up of each, then alternate so both see the same machine state
            await baseline(dag, f"{url}/v1", uuid.uuid4().hex)
            await orchestra(flow_fn, wf, uuid.uuid4().hex)
            for _ in range(repeats):
                base.append(await baseline(dag, f"{url}/v1", uuid.uuid4().hex))
                await asyncio.sleep(0.5)
                orch.append(await orchestra(flow_fn, wf, uuid.uuid4().hex))
                await asyncio.sleep(2.0)  # let the Prefect server drain its event backlog
            row[latency] = (statistics.median(base), statistics.median(orch))
        results[name] = row
    return results


def report(results: dict, latency_ms: int, repeats: int) -> str:
    lines = [
        f"Latency {latency_ms} ms, median of {repeats} (after one warm-up), fake provider in its own process, "
        f"Prefect server running, {os.cpu_count()} cores.",
        "",
        "| workload | steps | critical path | bound (s) | baseline × bound | Orchestra × bound | excess ms/step at 0 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in results.items():
        bound = row["depth"] * latency_ms / 1000
        b, o = row[latency_ms]
        b0, o0 = row[0]
        excess = (o0 - b0) * 1000 / row["steps"]
        lines.append(f"| {name} | {row['steps']} | {row['depth']} | {bound:.2f} | {b / bound:.2f} | {o / bound:.2f} | {excess:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS))
    parser.add_argument("--smoke", action="store_true", help="quick run (CI smoke mode)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    args = parser.parse_args()
    if args.smoke:
        args.latency_ms, args.repeats = 50, 1
        args.only = args.only or ["wide", "chain"]
    names = args.only or list(WORKLOADS)

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
