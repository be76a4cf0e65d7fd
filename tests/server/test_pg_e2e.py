"""PostgreSQL end to end: the Prefect server itself on PostgreSQL (asyncpg) and the
Orchestra ledger on PostgreSQL (psycopg2), each in its own database of the
throw-away cluster of tests/support/pg.py; a deployment run through a process worker.
See the `pg_stack` fixture in tests/prefect_server_fixture.py.
"""

from __future__ import annotations

import json
import re

import pytest

from ledger import queries

from tests.support.prefect_stack import PgStack

pytest_plugins = ["tests.support.prefect_server_fixture"]
pytestmark = [pytest.mark.server, pytest.mark.postgres]


def test_a_deployment_run_on_a_prefect_server_and_a_ledger_on_postgresql(pg_stack: PgStack):
    import psycopg2

    from ledger.store import Store

    stack, api = pg_stack.stack, pg_stack.stack.api
    run_id = api.create_run(api.deployment_id("code-review"), {"model": "openai:gpt-4.1-mini"})
    try:
        run = api.wait([run_id], timeout=240)[run_id]
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{stack.diagnostics(run_id)}") from None
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{stack.diagnostics(run_id)}"
    assert sorted(t["name"] for t in api.task_runs(run_id)) == ["correctness", "security", "style", "summary"]

    # the Prefect server keeps its rows in PostgreSQL
    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", pg_stack.prefect_db_url)
    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT state_type FROM flow_run WHERE id = %s", (run_id,))
        assert cur.fetchone() == ("COMPLETED",)
        cur.execute("SELECT count(*) FROM task_run WHERE flow_run_id = %s", (run_id,))
        assert cur.fetchone() == (4,)

    # and the ledger too, with the cost the artifact shows
    ledger = Store(stack.ledger_url)
    assert ledger.url.get_backend_name() == "postgresql"
    row = queries.run(ledger, run_id)
    assert row is not None and row["state"] == "COMPLETED" and row["workflow"] == "code-review"
    assert len(row["calls"]) == 4 and {c["model"] for c in row["calls"]} == {"openai:gpt-4.1-mini"}
    assert row["cost_usd"] > 0
    artifact = next(a for a in api.artifacts(run_id) if a["key"] == "code-review-cost")
    rows = json.loads(artifact["data"]) if isinstance(artifact["data"], str) else artifact["data"]
    total = next(r for r in rows if r["step"] == "TOTAL")
    assert total["cost_usd"] == pytest.approx(row["cost_usd"], rel=1e-6)
