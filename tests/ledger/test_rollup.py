"""The daily rollup the cost queries read (call_rollup, revision 0010): always the sum of the
calls that are there, on SQLite and PostgreSQL, written by the write path and backfilled by
the migration; latency percentiles by nearest rank."""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta, timezone

from sqlalchemy import text

from ledger import queries
from ledger.store import CallRecord, Store
from tests.ledger.test_store import _isolated_env, db_url, pg_server, store  # noqa: F401  (fixtures)

UTC = timezone.utc
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
MODELS = ["openai:gpt-4.1-mini", "anthropic:claude-sonnet-4-0", "openai:my-local-llama"]


def write_random(store: Store, n: int = 600, seed: int = 3) -> list[CallRecord]:
    rng = random.Random(seed)
    made = []
    for r in range(6):
        store.start_run(flow_run_id=f"r{r}", workflow=["code-review", "hello"][r % 2], inputs={}, started=T0)
    for i in range(n):
        call = CallRecord(flow_run_id=f"r{rng.randrange(6)}", step=rng.choice(["a", "b", "c"]),
                          model=rng.choice(MODELS), agent=rng.choice(["reviewer", "writer", None]),
                          input_tokens=rng.randint(0, 900), output_tokens=rng.randint(0, 300),
                          cost_usd=rng.random() / 1000, priced=rng.random() < 0.8, cached=rng.random() < 0.1,
                          status="error" if rng.random() < 0.1 else "ok", latency_ms=rng.uniform(5, 3000),
                          created=T0 + timedelta(hours=rng.uniform(0, 24 * 20)))
        store.record_call(call)
        made.append(call)
    store.flush()
    return made


def by_python(calls, by):
    out = {}
    for c in calls:
        key = {"model": c.model, "agent": c.agent, "day": c.created.strftime("%Y-%m-%d")}[by]
        acc = out.setdefault(key, [0, 0, 0.0])
        acc[0] += 1
        acc[1] += c.input_tokens
        acc[2] += c.cost_usd
    return out


def test_the_rollup_is_the_sum_of_the_calls(store):
    calls = write_random(store)
    for by in ("model", "agent", "day"):
        expected = by_python(calls, by)
        got = {r[by]: [r["calls"], r["input_tokens"], r["cost_usd"]] for r in queries.cost_groups(store, by)}
        assert got.keys() == expected.keys()
        for k, (n, tokens, cost) in expected.items():
            assert got[k][:2] == [n, tokens] and math.isclose(got[k][2], cost, rel_tol=1e-9), (by, k)
    since = datetime(2025, 3, 10, tzinfo=UTC)  # midnight: the rollup; 13:00: the calls themselves
    recent = [c for c in calls if c.created >= since]
    assert sum(r["calls"] for r in queries.cost_groups(store, "model", since=since)) == len(recent)
    later = since + timedelta(hours=13)
    assert sum(r["calls"] for r in queries.cost_groups(store, "model", since=later)) == len(
        [c for c in calls if c.created >= later])
    unpriced = [c for c in calls if not c.priced and not c.cached and c.status == "ok"]
    assert queries.unpriced(store)["calls"] == len(unpriced)
    failures = queries.failure_costs(store)["failed_attempts"]
    assert failures["calls"] == sum(c.status == "error" for c in calls)
    kpis = queries.kpis(store, now=T0 + timedelta(days=30))["all"]
    assert (kpis["calls"], kpis["cache_hits"]) == (len(calls), sum(c.cached for c in calls))


def test_latency_percentiles_are_nearest_rank(store):
    calls = write_random(store, n=400, seed=11)
    for row in queries.latency_percentiles(store, "model"):
        values = sorted(c.latency_ms for c in calls if c.model == row["model"] and not c.cached
                        and c.status == "ok")
        assert row["calls"] == len(values)
        assert math.isclose(row["p50_ms"], values[math.ceil(0.5 * len(values)) - 1])
        assert math.isclose(row["p95_ms"], values[math.ceil(0.95 * len(values)) - 1])
    agents = {r["agent"] for r in queries.latency_percentiles(store, "agent")}
    assert agents == {"reviewer", "writer", None}


def test_the_migration_backfills_the_rollup_from_existing_calls(db_url):
    from alembic import command
    from alembic.config import Config

    from ledger.migrations import MIGRATIONS_DIR

    old = Store(db_url, auto_migrate=False)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", old.url.render_as_string(hide_password=False).replace("%", "%%"))
    with old.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["configure_logging"] = False
        command.upgrade(cfg, "0009")  # just before the rollup
        conn.execute(text("INSERT INTO runs (flow_run_id, workflow, state, inputs, started) "
                          "VALUES ('r1', 'hello', 'COMPLETED', '{}', :t)"), {"t": T0.replace(tzinfo=None)})
        for i in range(5):
            conn.execute(text("INSERT INTO calls (flow_run_id, step, provider, model, attempt, input_tokens, "
                              "output_tokens, cached_tokens, cost_usd, priced, latency_ms, status, cached, purpose, "
                              "created) VALUES ('r1', 'greet', 'openai', 'openai:gpt-4.1-mini', 1, 10, 5, 0, 0.5, "
                              ":priced, 100, 'ok', :cached, 'call', :t)"),
                         {"t": (T0 + timedelta(days=i % 2)).replace(tzinfo=None), "priced": True, "cached": i == 0})
    old.engine.dispose()
    new = Store(db_url)  # migrates to head: 0010 sums the calls that are there
    days = {r["day"]: r for r in queries.cost_groups(new, "day")}
    assert {d: r["calls"] for d, r in days.items()} == {"2025-03-01": 3, "2025-03-02": 2}
    assert math.isclose(sum(r["cost_usd"] for r in days.values()), 2.5)
    assert queries.kpis(new, now=T0)["all"]["cache_hits"] == 1
    new.record_call(CallRecord(flow_run_id="r1", step="greet", model="openai:gpt-4.1-mini", cost_usd=1.0,
                               created=T0))
    assert queries.cost_groups(new, "day")[0]["calls"] == 4  # and the write path adds to it
    new.close()
