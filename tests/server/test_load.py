"""Load: 12 deployment runs of code-review submitted at once all complete, three times
the worker's limit of 4, so runs queue for the worker. No timing is asserted;
bench/load.py measures (and prints the same table here with -s; `--runs 20` is the
burst of docs/scaling.md). 12, not 20: on 2 cores each run is a flow-run process of
~4 CPU-s, and the suite's 20-run burst is tests/server/test_burst.py (SQLite).

Runs on the PostgreSQL stack (tests/prefect_server_fixture.py): Prefect server and
ledger on PostgreSQL, one process worker running at most 4 flow runs at once,
whose runs call the OpenAI wire fake at 200 ms, 4 calls per run.
"""

from __future__ import annotations

import importlib.util

import httpx
import pytest

from ledger import queries

from tests.support.prefect_stack import ROOT, WORKER_LIMIT, PgStack

pytest_plugins = ["tests.support.prefect_server_fixture"]
pytestmark = [pytest.mark.server, pytest.mark.postgres]

RUNS = 12  # > 2 x WORKER_LIMIT: the worker takes runs as others end
MODEL = "openai:gpt-4.1-mini"


def _bench():
    spec = importlib.util.spec_from_file_location("orchestra_bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twelve_code_review_runs_submitted_at_once_all_complete(pg_stack: PgStack):
    from ledger.store import Store

    bench, stack = _bench(), pg_stack.stack
    fake = stack.fake_url.removesuffix("/v1")
    httpx.post(f"{fake}/_fake/reset", timeout=10).raise_for_status()

    result = bench.submit_burst(stack.api, runs=RUNS, model=MODEL, timeout=600)
    print("\n" + bench.markdown(result, {"model": MODEL, "latency_ms": 200, "workers": 1, "limit": WORKER_LIMIT,
                                         "database": "PostgreSQL"}))
    failed = [i for i, state in result["run_states"].items() if state != "COMPLETED"]
    assert not failed, f"{result['run_messages']}\n{stack.diagnostics(failed[0])}"

    ledger = Store(stack.ledger_url)
    for run_id in result["flow_run_ids"]:
        row = queries.run(ledger, run_id)
        assert row["state"] == "COMPLETED" and len(row["calls"]) == 4, run_id
        assert all(c["model"] == MODEL and c["status"] == "ok" for c in row["calls"]), run_id
    # every agent call reached the provider exactly once: no result cache, no retry
    assert len(httpx.get(f"{fake}/_fake/requests", timeout=10).json()) == RUNS * 4
