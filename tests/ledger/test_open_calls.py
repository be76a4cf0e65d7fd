"""In-flight marks (revision 0009): an attempt's mark is written when it starts and removed
by the row that ends it; one left behind becomes an ``interrupted`` call when its run ends
(the engine's finish, or the reaper's CRASHED). SQLite and PostgreSQL. (A real SIGKILL in
the middle of a provider request: tests/app/test_resilience_cli.py.)"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import inspect

from core.calls import INTERRUPTED, CallRecord
from ledger import queries
from ledger.migrations import MIGRATIONS_DIR, head_revisions
from ledger.store import Store
from tests.ledger.test_store import db_url, pg_server, rows, store  # noqa: F401  (the fixtures)

UTC = timezone.utc
MODEL = "openai:gpt-4.1-mini"


def _run(store: Store, run_id: str = "r1") -> str:
    store.start_run(flow_run_id=run_id, workflow="wf", inputs={}, started=datetime.now(UTC) - timedelta(seconds=5))
    return run_id


def _mark(run_id: str, step: str = "s1", attempt: int = 1, **kw) -> CallRecord:
    return CallRecord.in_flight(flow_run_id=run_id, step=step, model=MODEL, agent="a", attempt=attempt, **kw)


def _open(store: Store) -> list[str]:
    return [r[0] for r in rows(store, "SELECT key FROM open_calls ORDER BY key")]


def test_a_mark_is_committed_before_the_event_and_its_row_removes_it(store):
    run = _run(store)
    mark = _mark(run)
    assert store.record_call_start(mark).wait(10)  # committed: a SIGKILL now leaves it behind
    assert _open(store) == [mark.key]
    store.record_call(CallRecord(flow_run_id=run, step="s1", model=MODEL, agent="a", input_tokens=3,
                                 output_tokens=2, cost_usd=0.01, priced=True, key=mark.key))
    store.flush()
    assert _open(store) == []
    [row] = queries.run(store, run)["calls"]
    assert row["status"] == "ok" and row["cost_usd"] == 0.01


def test_a_mark_that_ends_in_the_same_batch_is_never_written_and_a_drop_writes_no_row(store):
    run = _run(store)
    quick, dropped = _mark(run, "quick"), _mark(run, "dropped")
    store.record_call_start(quick)
    store.record_call(CallRecord(flow_run_id=run, step="quick", model=MODEL, key=quick.key))
    store.record_call_start(dropped)
    store.drop_call_start(dropped.key)
    store.flush()
    assert _open(store) == []
    assert [c["step"] for c in queries.run(store, run)["calls"]] == ["quick"]
    late = _mark(run, "late")
    assert store.record_call_start(late).wait(10) and _open(store) == [late.key]
    store.drop_call_start(late.key)  # in a later batch than its mark
    store.flush()
    assert _open(store) == [] and len(queries.run(store, run)["calls"]) == 1


def test_a_mark_left_behind_becomes_an_interrupted_call_when_the_run_ends(store):
    run = _run(store)
    done, lost = _mark(run, "done"), _mark(run, "lost", attempt=2, purpose="tool")
    store.record_call_start(done)
    store.record_call(CallRecord(flow_run_id=run, step="done", model=MODEL, cost_usd=0.5, priced=True,
                                 key=done.key))
    store.record_call_start(lost)
    totals = store.finish_run(flow_run_id=run, state="CRASHED", ended=datetime.now(UTC), error="killed")
    assert _open(store) == []
    calls = {c["step"]: c for c in queries.run(store, run)["calls"]}
    assert calls["done"]["status"] == "ok"
    gone = calls["lost"]
    assert (gone["status"], gone["error"], gone["attempt"], gone["purpose"]) == ("interrupted", INTERRUPTED, 2, "tool")
    assert gone["cost_usd"] == 0 and gone["input_tokens"] == 0 and gone["latency_ms"] >= 0
    assert totals["calls"] == 2 and totals["cost_usd"] == 0.5  # the interrupted call counts, at no cost
    [step] = [s for s in queries.run_steps(queries.run(store, run)["calls"]) if s["step"] == "lost"]
    assert step["status"] == "interrupted" and step["errors"] == 1 and step["last_error"] == INTERRUPTED


def test_a_run_that_ends_otherwise_says_how_it_ended_and_a_container_mark_keeps_its_image(store):
    run = _run(store)
    mark = CallRecord.in_flight(flow_run_id=run, step="build", model="", agent=None, attempt=1, kind="container",
                                image="alpine:3.20")
    store.record_call_start(mark)
    store.finish_run(flow_run_id=run, state="CANCELLED", ended=datetime.now(UTC))
    [row] = queries.run(store, run)["calls"]
    assert (row["status"], row["kind"], row["image"], row["provider"]) == ("interrupted", "container",
                                                                           "alpine:3.20", "dagger")
    assert row["error"] == "the run ended CANCELLED while this attempt was in flight"


def test_0009_downgrades_to_0008_keeping_an_interrupted_call_as_an_error(db_url):  # noqa: F811
    from alembic import command
    from alembic.config import Config

    s = Store(db_url)
    s.migrate()
    run = _run(s)
    s.record_call_start(_mark(run))
    s.finish_run(flow_run_id=run, state="CRASHED", ended=datetime.now(UTC))
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    with s._write_engine.connect() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["configure_logging"] = False
        command.downgrade(cfg, "0008")
        conn.commit()
        assert "open_calls" not in set(inspect(conn).get_table_names())
        command.upgrade(cfg, "head")
        conn.commit()
    assert s.current_revisions() == head_revisions()
    [row] = queries.run(s, run)["calls"]
    assert row["status"] == "error" and row["error"] == INTERRUPTED
    s.close()
