"""Orchestra against the physical limit, and against plain asyncio, in one run.

DAGs of LLM calls against a local OpenAI-compatible fake at a fixed latency:
  wide:    64 independent calls, then one reducer that depends on all of them
  chain:   20 calls, each depending on the one before
  grid:    8 layers of 8; every node depends on the whole previous layer
  fan1k:   one for_each step over 1,000 items (a task run each), then a reducer
  fan10k:  the same over 10,000 items (with --scale)
For each, through Orchestra (every step or item a Prefect task run, on Orchestra's
local Prefect server, started fresh by this command and stopped at its end) and
through a plain asyncio + AsyncOpenAI baseline, in the same run, alternating. See
bench/README.md for what each column means and how the server's CPU is counted.

    python bench/run.py                # 200 ms latency, 3 repeats; wide chain grid fan1k
    python bench/run.py --scale        # and fan10k (one repeat of it)
    python bench/run.py --smoke        # quick: 1 repeat, 50 ms, wide and chain only
    python bench/run.py --only wide --env PREFECT_SERVER_SERVICES_FOREMAN_ENABLED=false
                                       # one setting changed, for the bench and its server
    python bench/run.py --only wide fan1k --profile bench/profiles   # py-spy of client and server

Numbers are printed as a Markdown table (and saved to bench/results.md; --json keeps
every repeat). No timing is asserted anywhere: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from harness import fake_openai, local_server  # noqa: E402  (bench/harness.py)


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

    # the SDK's own retries, two, as each Orchestra step here has (`retries: 2`): without them
    # one connect timeout among 10,000 requests on a saturated machine ends the baseline
    client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=2)
    # at most the SDK's connection pool (1,000) in flight: 10,000 requests at once would wait
    # for a connection past the SDK's 5 s pool timeout and fail (fan10k)
    slots = asyncio.Semaphore(1000)
    futures: dict[str, asyncio.Task] = {}
    outputs: dict[str, str] = {}

    async def node(sid: str) -> None:
        for dep in dag[sid]:
            await futures[dep]
        deps = dag[sid]  # a fan-out's reducer gets the count, as Orchestra's does
        context = str(len(deps)) if len(deps) > 64 else " ".join(outputs[d][:40] for d in deps)
        async with slots:
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
# bare Prefect: the baseline's calls, each one an async Prefect task run awaited from an
# async flow (the cheapest of Prefect's task styles here), on the same local server. No
# Orchestra code runs: this is the floor that a step as a Prefect task run stands on.

_PREFECT: dict = {}


def bare_prefect():
    """The bare-Prefect flow (built once: Prefect registers a task's and a flow's source)."""
    if "flow" in _PREFECT:
        return _PREFECT["flow"]
    from openai import AsyncOpenAI
    from prefect import flow, task

    @task(name="call", task_run_name="{sid}", retries=2)
    async def call(sid: str, prompt: str) -> str:
        reply = await _PREFECT["client"].chat.completions.create(
            model="bench-model", messages=[{"role": "user", "content": prompt}])
        return reply.choices[0].message.content

    @flow(name="bench-prefect")
    async def bare(dag: dict[str, list[str]], base_url: str, nonce: str) -> int:
        # the baseline's client (its two retries, with backoff: a fan-out of 10,000 on a saturated
        # loop sees connect timeouts) in the baseline's calls, each a task run with Orchestra's retries
        _PREFECT["client"] = client = AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=2)
        slots = asyncio.Semaphore(1000)  # as the baseline
        futures: dict[str, asyncio.Task] = {}
        outputs: dict[str, str] = {}

        async def node(sid: str) -> None:
            for dep in dag[sid]:
                await futures[dep]
            deps = dag[sid]
            context = str(len(deps)) if len(deps) > 64 else " ".join(outputs[d][:40] for d in deps)
            async with slots:
                outputs[sid] = await call(sid, f"{nonce} {sid} {context}")

        for sid in dag:
            futures[sid] = asyncio.ensure_future(node(sid))
        await asyncio.gather(*futures.values())
        await client.close()
        return len(outputs)

    _PREFECT["flow"] = bare
    return bare


async def prefect_bare(dag: dict[str, list[str]], base_url: str, nonce: str) -> float:
    t0 = time.perf_counter()
    state = await bare_prefect()(dag, base_url, nonce, return_state=True)
    wall = time.perf_counter() - t0
    if not state.is_completed():
        raise BareFailed(str(state.message))
    return wall


class BareFailed(RuntimeError):
    """The bare-Prefect run did not complete (recorded in the table; the rest goes on)."""


class SideFailed(RuntimeError):
    """A baseline or Orchestra run that did not complete, its message naming the side: the
    workload's row is then that message."""


async def _side(side: str, awaitable):
    """Await one side's run; a failure becomes a SideFailed that names ``side``."""
    try:
        return await awaitable
    except (Exception, SystemExit) as exc:
        raise SideFailed(f"{side}: {type(exc).__name__}: {exc}") from exc


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


# --no-prefect: without the bare-Prefect side. It never runs fan10k: 1,000 bare task runs at
# once failed there three times in three (connect timeouts, retries exhausted), and the loaded
# machine it left made the Orchestra run after it fail too (bench/README.md).
BARE = True
NO_CACHE = False  # --no-cache: the step cache off (no result persisted per step), to measure what it costs
LAST_RUN: list[str] = []  # the flow run id of the last Orchestra run


async def orchestra(flow_fn, workflow: dict, nonce: str) -> float:
    t0 = time.perf_counter()
    state = await flow_fn(workflow=workflow, inputs={"nonce": nonce}, return_state=True, no_cache=NO_CACHE)
    wall = time.perf_counter() - t0
    if not state.is_completed():
        raise SystemExit(f"bench run failed: {state.message}")
    LAST_RUN[:] = [str(state.state_details.flow_run_id)]
    return wall


def ledger_calls(flow_run_id: str) -> int:
    """The ledger's call rows of a run (once its writer has flushed)."""
    from ledger import queries
    from orchestra import runtime

    store = runtime.ledger()
    store.flush()
    return len(queries.run(store, flow_run_id)["calls"])


# ---------------------------------------------------------------------------


def set_latency(url: str, latency_ms: int) -> None:
    import httpx

    httpx.post(f"{url}/_fake/config", json={"latency_ms": latency_ms}).raise_for_status()


def fake_requests(url: str) -> int:
    import httpx

    return len(httpx.get(f"{url}/_fake/requests", timeout=60).json())


def server_pids() -> list[int]:
    """The Prefect server's processes: the uvicorn process Orchestra's supervisor runs (and
    anything it starts), not the supervisor itself (its reaper runs every 15 s whatever
    the load: idle cost, not a task run's)."""
    from orchestra import prefect_server

    info = prefect_server.status()
    if not info:
        raise SystemExit("no local Prefect server is running")
    pids = [p for p in procstat.tree(info["pid"]) if p != info["pid"]]
    if not any("orchestra.prefect_app" in procstat.cmdline(p) for p in pids):
        raise SystemExit(f"the local server's supervisor ({info['pid']}) runs no orchestra.prefect_app process: "
                         f"{[procstat.cmdline(p) for p in pids]}")
    return pids


def _timed(coro_fn):
    """(wall, client CPU) of one awaited call."""
    async def run(*args):
        c0, t0 = time.process_time(), time.perf_counter()
        await coro_fn(*args)
        return time.perf_counter() - t0, time.process_time() - c0
    return run


class Profiler:
    """py-spy recording one process (raw collapsed stacks), from start() to stop()."""

    def __init__(self, pid: int, out: Path):
        self.pid, self.out = pid, out
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        spy = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen([str(spy), "record", "-p", str(self.pid), "-f", "raw", "-o", str(self.out),
                                      "-r", "100", "--nonblocking"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        import signal

        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(60)


async def _on_server(server: list[int], idle: float, url: str, side, *args) -> dict:
    """One run of a side that runs on the local Prefect server: its wall and client CPU,
    the client's and the server's peak RSS, the server's CPU until it is idle again (its
    idle rate taken off), the provider's requests."""
    me = os.getpid()
    procstat.reset_peak(me)
    for pid in server:
        procstat.reset_peak(pid)
    requests0 = fake_requests(url)
    s0, t0 = procstat.total_cpu(server), time.monotonic()
    wall, cpu = await _timed(side)(*args)
    rec = {"wall": wall, "cpu": cpu, "client_rss": procstat.peak_rss(me)}
    rec["drain_s"] = procstat.wait_idle(server, idle)  # the server's backlog after the flow returned
    s1, t1 = procstat.total_cpu(server), time.monotonic()
    rec["server_cpu_raw"] = s1 - s0
    rec["server_cpu"] = max(0.0, (s1 - s0) - idle * (t1 - t0))
    rec["server_rss"] = max((procstat.peak_rss(p) for p in server), default=0)
    rec["requests"] = fake_requests(url) - requests0
    return rec


async def measure(names: list[str], latency_ms: int, repeats: int, url: str,
                  profile_dir: Path | None = None) -> dict:
    server = server_pids()
    idle = procstat.idle_rate(server)
    results: dict = {"server_idle_cpu_per_s": idle}
    for name in names:
        try:
            results[name] = await _workload(name, latency_ms, repeats, url, server, idle, profile_dir)
        except (Exception, SystemExit) as exc:  # a side that did not complete: recorded, the rest goes on
            results[name] = (str(exc) if isinstance(exc, SideFailed) else f"{type(exc).__name__}: {exc}")[:300]
            print(f"{name}: a run did not complete: {results[name]}", file=sys.stderr)
            procstat.wait_idle(server, idle)
    return results


async def _workload(name: str, latency_ms: int, repeats: int, url: str, server: list[int], idle: float,
                    profile_dir: Path | None) -> dict:
    """One workload's runs: a warm-up of each side, then the repeats, the sides alternating."""
    from orchestra.flow import run_workflow

    me = os.getpid()
    dag = WORKLOADS[name]()
    wf = as_workflow(name, dag)
    flow_fn = run_workflow.with_options(name=f"bench-{name}")
    reps = 1 if name == "fan10k" else repeats
    row: dict = {"steps": len(dag), "depth": depth(dag), "task_runs": len(dag)}
    latencies = (latency_ms,) if profile_dir else (latency_ms, 0)
    for latency in latencies:
        set_latency(url, latency)
        runs: list[dict] = []
        # one warm-up of each (not for the 10,000-item run), then alternate so both see the same machine
        if name != "fan10k":
            await _side("the baseline's warm-up", baseline(dag, f"{url}/v1", uuid.uuid4().hex))
            if BARE and not profile_dir:
                with contextlib.suppress(BareFailed):  # the measured run records a failure
                    await prefect_bare(dag, f"{url}/v1", uuid.uuid4().hex)
            await _side("Orchestra's warm-up", orchestra(flow_fn, wf, uuid.uuid4().hex))
            procstat.wait_idle(server, idle)
        for _ in range(1 if profile_dir else reps):
            rec: dict = {}
            if not profile_dir:
                procstat.reset_peak(me)
                rec["baseline"], rec["baseline_cpu"] = await _side(
                    "the baseline", _timed(baseline)(dag, f"{url}/v1", uuid.uuid4().hex))
                rec["baseline_rss"] = procstat.peak_rss(me)
                await asyncio.sleep(0.5)
                if BARE and name != "fan10k":  # see BARE
                    try:
                        bare = await _on_server(server, idle, url, prefect_bare, dag, f"{url}/v1",
                                                uuid.uuid4().hex)
                        rec.update({f"prefect_{k}": v for k, v in bare.items()})
                    except BareFailed as exc:
                        rec["prefect_failed"] = str(exc)[:300]
                        print(f"{name}: the bare-Prefect run failed: {exc}", file=sys.stderr)
                        procstat.wait_idle(server, idle)
            spies = []
            if profile_dir:
                spies = [Profiler(me, profile_dir / f"{name}-client.txt"),
                         Profiler(server[0], profile_dir / f"{name}-server.txt")]
                for spy in spies:
                    spy.start()
            orch = await _side("Orchestra", _on_server(server, idle, url, orchestra, flow_fn, wf, uuid.uuid4().hex))
            rec.update(orchestra=orch["wall"], orchestra_cpu=orch["cpu"],
                       **{k: v for k, v in orch.items() if k not in ("wall", "cpu")})
            rec["ledger_calls"] = ledger_calls(LAST_RUN[0])
            for spy in spies:
                spy.stop()
            runs.append(rec)
        row[latency] = runs
    return row


def _med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def _span(values: list[float], fmt: str = "{:.2f}") -> str:
    """The median, and the range when there is more than one value."""
    med = statistics.median(values)
    if len(values) < 2 or fmt.format(min(values)) == fmt.format(max(values)):
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def report(results: dict, latency_ms: int, repeats: int, env: list[str]) -> str:
    lines = [
        f"Latency {latency_ms} ms, {repeats} repeats (after one warm-up; fan10k: one run): median (range). "
        f"Fake provider in its own process, Orchestra's local Prefect server (started fresh), "
        f"{os.cpu_count()} cores. CPU columns at {latency_ms} ms; server CPU counted until it is idle again, "
        f"its idle rate ({results['server_idle_cpu_per_s'] * 1000:.0f} ms/s) taken off."
        + (f" Settings: {' '.join(env)}." if env else "") + (" Step cache off." if NO_CACHE else ""),
        "",
        ("| workload | steps | critical path | bound (s) | baseline × bound | Orchestra × bound | Orchestra ÷ baseline "
         "| bare Prefect ÷ baseline | excess ms/step at 0 ms | client CPU ms/step: baseline / bare Prefect / Orchestra "
         "| server CPU ms/task run: bare Prefect / Orchestra | peak RSS MiB: baseline / client / server |"),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results.items():
        if not isinstance(row, dict):
            continue
        bound = row["depth"] * latency_ms / 1000
        runs, runs0 = row[latency_ms], row.get(0, [])
        n = row["steps"]
        bare = all("prefect_wall" in r for r in runs)
        bare_failed = "failed" if any("prefect_failed" in r for r in runs) else "–"

        def per(key: str, div: float, runs: list[dict] = runs) -> str:
            return _span([r[key] * 1000 / div for r in runs], "{:.1f}") if all(key in r for r in runs) else "–"

        ratio = [r["orchestra"] / r["baseline"] for r in runs]
        excess = [(r["orchestra"] - r["baseline"]) * 1000 / n for r in runs0]
        rss = (f"{max(r['baseline_rss'] for r in runs) / 2**20:.0f} / {max(r['client_rss'] for r in runs) / 2**20:.0f}"
               f" / {max(r['server_rss'] for r in runs) / 2**20:.0f}")
        lines.append(
            f"| {name} | {n} | {row['depth']} | {bound:.2f} | {_span([r['baseline'] / bound for r in runs])} "
            f"| {_span([r['orchestra'] / bound for r in runs])} | {_span(ratio)} "
            f"| {_span([r['prefect_wall'] / r['baseline'] for r in runs]) if bare else bare_failed} "
            f"| {_span(excess, '{:.1f}') if excess else ''} "
            f"| {per('baseline_cpu', n)} / {per('prefect_cpu', n)} / {per('orchestra_cpu', n)} "
            f"| {per('prefect_server_cpu', row['task_runs'])} / {per('server_cpu', row['task_runs'])} | {rss} |")
    failed = [f"{name}: did not complete ({row})" for name, row in results.items()
              if name in WORKLOADS and isinstance(row, str)]
    return "\n".join(lines + ([""] + failed if failed else []))


def _wait_quiet(limit_s: float = 900.0) -> str:
    """Wait (at most ``limit_s``) until no CI run is going and the 1-minute load is below 1.0;
    what the machine was doing when we started."""
    t0 = time.monotonic()
    while True:
        load = float(Path("/proc/loadavg").read_text().split()[0])
        ci = subprocess.run(["pgrep", "-f", ".ci/run"], capture_output=True, text=True).stdout.strip()
        if (load < 1.0 and not ci) or time.monotonic() - t0 > limit_s:
            return f"load {load:.2f}" + (", a CI run going" if ci else "")
        time.sleep(30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency-ms", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=list(WORKLOADS))
    parser.add_argument("--scale", action="store_true", help="add the 10,000-item fan-out (fan10k)")
    parser.add_argument("--smoke", action="store_true", help="quick run (CI smoke mode)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="a variable for this run and its Prefect server (repeatable)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record py-spy profiles (raw stacks) of the client and the server, one Orchestra "
                             "run per workload, instead of measuring")
    parser.add_argument("--wait-quiet", action="store_true",
                        help="first wait (up to 15 min) for a quiet machine: no .ci/run, load below 1.0")
    parser.add_argument("--no-prefect", action="store_true",
                        help="leave out the bare-Prefect side (the same calls as Prefect tasks, no Orchestra)")
    parser.add_argument("--no-cache", action="store_true",
                        help="run Orchestra with the step cache off (what persisting each step's result costs)")
    parser.add_argument("--home", type=Path, metavar="DIR",
                        help="run in this Orchestra home and keep it (default: a new temporary one, removed at "
                             "the end, so the server starts on an empty database)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every repeat's numbers as JSON")
    args = parser.parse_args()
    if args.smoke:
        args.latency_ms, args.repeats = 50, 1
        args.only = args.only or ["wide", "chain"]
    names = args.only or [n for n in WORKLOADS if n != "fan10k" or args.scale]
    global NO_CACHE, BARE
    NO_CACHE, BARE = args.no_cache, not args.no_prefect
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--env {item}: expected NAME=VALUE")
        os.environ[key] = value

    machine = _wait_quiet() if args.wait_quiet else ""
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with local_server(args.home), fake_openai(args.latency_ms) as url:
        results = asyncio.run(measure(names, args.latency_ms, args.repeats, url, args.profile))
    if args.profile:
        print(f"profiles in {args.profile}: python bench/profile_top.py {args.profile}/*.txt")
        return 0
    results["machine"] = machine
    table = report(results, args.latency_ms, args.repeats, args.env)
    rows = [f"{name} {r['ledger_calls']}/{r['requests']}" for name, row in results.items() if isinstance(row, dict)
            for r in row[args.latency_ms]]
    table += "\n\nLedger call rows / provider requests, per Orchestra run: " + ", ".join(rows) + "."
    if machine:
        table += f"\n\nMachine when it started: {machine}."
    print(table)
    if args.json:
        import json

        args.json.write_text(json.dumps({"args": vars(args) | {"profile": None, "json": str(args.json)},
                                         "results": results}, indent=1, default=str))
    if not args.smoke:
        Path(args.out).write_text(table + "\n")
    return 1 if any(isinstance(results.get(name), str) for name in names) else 0  # a workload did not complete


if __name__ == "__main__":
    sys.exit(main())
