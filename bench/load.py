"""Load: N deployment runs of code-review submitted at once, through Prefect's REST API.

By default it brings up everything on this machine, as tests/server/test_load.py does:
`prefect server start` (SQLite) in a temporary PREFECT_HOME, the `orchestra`
process work pool, `prefect deploy` of the code-review deployment, the OpenAI
wire fake at a fixed latency, and process workers. Then it submits N runs of
`run_workflow/code-review` at once (4 agent calls each: three in parallel, then
the summary) with `model: openai:gpt-4.1-mini` against the fake, no result
cache, a different `code` input per run, and waits for all of them.

    python bench/load.py                          # 20 runs, 200 ms fake latency, 1 worker, SQLite
    python bench/load.py --database postgres --limit 4   # as tests/server/test_load.py runs it
    python bench/load.py --runs 40 --workers 2 --limit 4
    python bench/load.py --api http://127.0.0.1:4200/api   # a server of yours: its deployment
                                                  # run_workflow/code-review and its workers
                                                  # (they need OPENAI_BASE_URL/OPENAI_API_KEY)

It prints runs per minute (N over first submission to last completion) and the
p50/p95/max time from submission to completion, measured on the server's own
clocks (flow run `created` to `end_time`), as Markdown; `--json` prints an object.
No timing is asserted anywhere: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.prefect_stack import Api, Stack, start_stack  # noqa: E402

MODEL = "openai:gpt-4.1-mini"
STEPS = 4  # code-review: security, correctness, style -> summary


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def submit_burst(api: Api, runs: int = 20, model: str = MODEL, deployment: str = "code-review",
                 timeout: float = 900.0, concurrency: int = 1) -> dict:
    """Submit `runs` flow runs of the deployment at once (back to back, or `concurrency`
    POSTs in parallel), wait for all; the numbers."""
    deployment_id = api.deployment_id(deployment)

    def submit(i: int) -> str:
        return api.create_run(deployment_id, {
            "model": model, "no_cache": True,
            "inputs": {"code": f"def add(a, b):  # variant {i}\n    return a - b"},
        })

    t0 = time.time()
    with ThreadPoolExecutor(max_workers=max(1, min(runs, concurrency))) as pool:
        ids = list(pool.map(submit, range(runs)))
    submitted_s = time.time() - t0
    final = api.wait(ids, timeout=timeout, poll=0.5)
    states = Counter(run["state"]["type"] for run in final.values())
    latencies = [_ts(run["end_time"]) - _ts(run["created"]) for run in final.values() if run.get("end_time")]
    first = min(_ts(run["created"]) for run in final.values())
    last = max(_ts(run["end_time"]) for run in final.values() if run.get("end_time"))
    span = max(last - first, 1e-9)
    return {
        "runs": runs,
        "states": dict(states),
        "submit_s": round(submitted_s, 2),
        "span_s": round(span, 1),
        "runs_per_min": round(runs / span * 60, 1),
        "p50_s": round(percentile(latencies, 50), 1) if latencies else None,
        "p95_s": round(percentile(latencies, 95), 1) if latencies else None,
        "max_s": round(max(latencies), 1) if latencies else None,
        "mean_run_s": round(statistics.mean(run["total_run_time"] for run in final.values()), 2),
        "api_retries": {str(k): v for k, v in api.retries.items()},  # 503 = the server's database was locked
        "flow_run_ids": ids,
        "run_states": {i: final[i]["state"]["type"] for i in ids},
        "run_messages": {i: final[i]["state"].get("message") for i in ids
                         if final[i]["state"]["type"] != "COMPLETED"},
    }


def _fake_requests(stack: Stack) -> int | None:
    import httpx

    if not stack.fake_url:
        return None
    try:
        return len(httpx.get(stack.fake_url.removesuffix("/v1") + "/_fake/requests", timeout=10).json())
    except (httpx.HTTPError, ValueError):
        return None


def markdown(result: dict, setup: dict) -> str:
    lines = [
        f"Load: {result['runs']} runs of code-review ({STEPS} agent calls each, {setup['model']}, "
        f"fake latency {setup['latency_ms']:.0f} ms), {setup['workers']} process worker(s)"
        + (f" running at most {setup['limit']} flow runs each" if setup.get("limit") else "")
        + f", Prefect server on {setup['database']}, {os.cpu_count()} CPU cores",
        "",
        "| runs | completed | runs/min | p50 submit→done | p95 | max | mean flow run time |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {result['runs']} | {result['states'].get('COMPLETED', 0)} | {result['runs_per_min']} | "
        f"{result['p50_s']} s | {result['p95_s']} s | {result['max_s']} s | {result['mean_run_s']} s |",
    ]
    if result.get("provider_requests") is not None:
        lines += ["", f"Requests at the fake provider: {result['provider_requests']}."]
    if result.get("api_retries"):
        retried = ", ".join(f"{v} x {k}" for k, v in result["api_retries"].items())
        lines += ["", f"Client retries against the Prefect API while submitting and polling: {retried}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/load.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--latency-ms", type=float, default=200.0, help="the fake provider's latency")
    p.add_argument("--workers", type=int, default=1, help="process workers on the pool (own stack only)")
    p.add_argument("--limit", type=int, default=None, help="flow runs at once per worker (prefect worker --limit)")
    p.add_argument("--concurrency", type=int, default=1, help="parallel POSTs while submitting (1: back to back)")
    p.add_argument("--server", choices=("local", "prefect"), default="local",
                   help="local: the app Orchestra's local server runs; prefect: `prefect server start`")
    p.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite",
                   help="the Prefect server's database (postgres: a throw-away cluster, see tests/support/pg.py)")
    p.add_argument("--model", default=MODEL)
    p.add_argument("--api", help="use this Prefect server (its deployment and workers) instead of starting one")
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--keep", action="store_true", help="keep the stack's folder (server, worker and fake logs)")
    args = p.parse_args(argv)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    setup = {"model": args.model, "latency_ms": args.latency_ms, "workers": args.workers, "database": "SQLite",
             "limit": args.limit, "concurrency": args.concurrency}
    if args.api:
        api = Api(args.api)
        if not api.healthy():
            print(f"error: the Prefect server at {args.api} is not reachable", file=sys.stderr)
            return 2
        setup.update(workers="the server's", database="the server's database", latency_ms=float("nan"))
        try:
            result = submit_burst(api, args.runs, args.model, timeout=args.timeout, concurrency=args.concurrency)
        finally:
            api.close()
    else:
        home = Path(tempfile.mkdtemp(prefix="orchestra-load-"))
        t0 = time.time()
        server_env = None
        if args.database == "postgres":
            from tests.support.pg import create_database, postgres_unavailable_reason, postgres_url

            pg = postgres_url()
            if pg is None:
                print(f"error: PostgreSQL unavailable: {postgres_unavailable_reason()}", file=sys.stderr)
                return 2
            url = create_database(pg, "orchestra_load_prefect").replace("postgresql+psycopg2://", "postgresql+asyncpg://")
            server_env = {"PREFECT_API_DATABASE_CONNECTION_URL": url}
            setup["database"] = "PostgreSQL"
        stack = start_stack(home, deployments=("code-review",), fake_latency_ms=args.latency_ms,
                            server_env=server_env, worker_limit=args.limit, local_server=args.server == "local")
        setup["server"] = args.server
        try:
            for i in range(1, args.workers):
                stack.add_worker(f"orchestra-load-worker-{i}", limit=args.limit)
            print(f"stack up in {time.time() - t0:.0f} s: {stack.server.url}", file=sys.stderr)
            result = submit_burst(stack.api, args.runs, args.model, timeout=args.timeout,
                                  concurrency=args.concurrency)
            result["provider_requests"] = _fake_requests(stack)
        finally:
            stack.stop()
            if args.keep:
                print(f"logs kept in {home}", file=sys.stderr)
            else:
                shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps({**setup, **result}, indent=2))
    elif result["run_messages"]:
        print(markdown(result, setup) + "\n\nNot completed:\n" + "\n".join(
            f"- {i}: {result['run_states'][i]} {m}" for i, m in result["run_messages"].items()))
    else:
        print(markdown(result, setup))
    return 0 if result["states"].get("COMPLETED", 0) == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
