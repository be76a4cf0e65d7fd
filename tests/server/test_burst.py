"""A burst of 20 deployment runs on Orchestra's local server (SQLite) completes 20 of 20.

Prefect's own server on SQLite loses some of such a burst: its DEFERRED transactions
meet, SQLite answers "database is locked" at once and the API answers 503 until a
client runs out of retries (17-19 of 20 completed here). The local server's app
(orchestra.prefect_app) begins every SQLite transaction IMMEDIATE, so writers queue.
One process worker without a flow-run limit (20 flow-run processes at once), Prefect's
default client retries, the wire fake at 200 ms; bench/load.py measures the same burst.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from ledger import queries
from tests.support.prefect_stack import ROOT, start_stack

pytestmark = [pytest.mark.server]

RUNS = 20
MODEL = "openai:gpt-4.1-mini"


def _bench():
    spec = importlib.util.spec_from_file_location("orchestra_bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_twenty_runs_at_once_on_the_local_servers_sqlite_all_complete():
    from ledger.store import Store

    bench = _bench()
    home = Path(tempfile.mkdtemp(prefix="orchestra-burst-"))
    stack = start_stack(home, deployments=("code-review",), local_server=True)
    try:
        result = bench.submit_burst(stack.api, runs=RUNS, model=MODEL, timeout=600)
        print("\n" + bench.markdown(result, {"model": MODEL, "latency_ms": 200, "workers": 1, "limit": None,
                                             "database": "SQLite (Orchestra's local server app)"}))
        failed = [i for i, state in result["run_states"].items() if state != "COMPLETED"]
        assert not failed, f"{result['run_messages']}\n{stack.diagnostics(failed[0])}"
        requests = httpx.get(stack.fake_url.removesuffix("/v1") + "/_fake/requests", timeout=10).json()
        ledger = Store(stack.ledger_url)
        rows = [queries.run(ledger, run_id) for run_id in result["flow_run_ids"]]
        assert all(r["state"] == "COMPLETED" and len(r["calls"]) == 4 for r in rows)
        assert sum(len(r["calls"]) for r in rows) == len(requests) == RUNS * 4
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)
