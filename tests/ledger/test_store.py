"""The ledger (ledger.store / models / migrations / redact) on SQLite and PostgreSQL.

PostgreSQL tests run against a private throw-away cluster (tests/support/pg.py) and are
skipped with the reason when none can be started.
"""

from __future__ import annotations

import asyncio
import enum
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from ledger import queries
from sqlalchemy import inspect, text

from ledger import store as store_mod
from ledger.migrations import ALEMBIC_INI, MIGRATIONS_DIR, VERSION_TABLE, head_revisions
from ledger.models import Base
from core.redact import redact, redact_url
from ledger.store import CallRecord, Store, get_store

try:
    from tests.support.pg import create_database, drop_database, postgres_unavailable_reason, postgres_url
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    from pg import create_database, drop_database, postgres_unavailable_reason, postgres_url

UTC = timezone.utc
REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    monkeypatch.delenv("ORCHESTRA_DB_URL", raising=False)
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="session")
def pg_server() -> str:
    url = postgres_url()
    if url is None:
        pytest.skip(f"PostgreSQL unavailable: {postgres_unavailable_reason()}")
    return url


@pytest.fixture(params=BACKENDS)
def db_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/ledger.db"
        return
    server = request.getfixturevalue("pg_server")
    name = "t_" + uuid.uuid4().hex[:12]
    url = create_database(server, name)
    yield url
    drop_database(server, name)


@pytest.fixture
def store(db_url):
    s = Store(db_url)
    s.migrate()
    yield s
    s.close()


def call(run: str, step: str = "s1", **kw) -> CallRecord:
    kw.setdefault("model", "openai:gpt-4.1-mini")
    return CallRecord(flow_run_id=run, step=step, **kw)


def rows(store: Store, sql: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(text(sql), params).all()


# --------------------------------------------------------------------------- migrations


def test_migrate_is_idempotent(db_url, monkeypatch):
    s = Store(db_url, auto_migrate=False)
    assert s.current_revisions() is None
    s.migrate()
    assert s.current_revisions() == head_revisions() == frozenset({"0010"})
    s.migrate()  # same Store: a no-op

    insp = inspect(s.engine)
    tables = set(insp.get_table_names())
    assert {"runs", "calls", VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # Prefect's table name stays free
    s.start_run(flow_run_id="keep", workflow="wf", inputs={}, started=T0)
    s.close()

    # A new Store at head takes the fast path and never reaches Alembic.
    def boom(self, conn):
        raise AssertionError("alembic ran although the store is at head")

    monkeypatch.setattr(Store, "_alembic_upgrade", boom)
    s2 = Store(db_url)
    s2.migrate()
    assert s2.current_revisions() == head_revisions()
    assert [r["flow_run_id"] for r in queries.runs(s2)] == ["keep"]
    assert rows(s2, f"SELECT count(*) FROM {VERSION_TABLE}")[0][0] == 1
    s2.close()


def test_models_match_migrations(store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "version_table": VERSION_TABLE}
        )
        assert compare_metadata(ctx, Base.metadata) == []


def test_concurrent_first_migrations_do_not_collide(db_url):
    stores = [Store(db_url, auto_migrate=False) for _ in range(4)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(stores))

    def go(s: Store) -> None:
        barrier.wait()
        try:
            s.migrate()
        except BaseException as exc:  # pragma: no cover - the failure is reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert all(s.current_revisions() == frozenset({"0010"}) for s in stores)
    for s in stores:
        s.close()


def test_head_revisions_agree_with_alembic():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert frozenset(ScriptDirectory.from_config(cfg).get_heads()) == head_revisions()


def test_alembic_command_line_works_from_any_cwd(tmp_path):
    url = f"sqlite:///{tmp_path}/cli/ledger.db"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["ORCHESTRA_DB_URL"] = url
    for args in (["upgrade", "head"], ["current"]):
        r = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), *args],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
        assert r.returncode == 0, r.stderr
    assert "0010 (head)" in r.stdout
    s = Store(url, auto_migrate=False)
    assert s.current_revisions() == head_revisions()
    s.close()


# --------------------------------------------------------------------------- runs and calls


def test_finish_run_totals_are_the_sum_of_the_calls(store):
    store.start_run(flow_run_id="r1", workflow="code-review", inputs={"code": "x"}, started=T0,
                    model_override="openai:gpt-4.1")
    recorded = [
        call("r1", "security", agent="reviewer", input_tokens=270, output_tokens=80,
             cached_tokens=10, cost_usd=0.00014, priced=True, latency_ms=410.0),
        call("r1", "style", agent="reviewer", attempt=1, status="error",
             error="429 Too Many Requests", latency_ms=12.0),
        call("r1", "style", agent="reviewer", attempt=2, input_tokens=250, output_tokens=70,
             cost_usd=0.00012, priced=True),
        call("r1", "summary", agent=None, model="anthropic:claude-3-5-haiku", input_tokens=292,
             output_tokens=80, cached_tokens=200, cost_usd=0.00016, priced=True, cached=True),
    ]
    for c in recorded:
        store.record_call(c)
    ended = T0 + timedelta(seconds=12.5)
    written = store.finish_run(flow_run_id="r1", state="COMPLETED", ended=ended)

    expected = {
        "calls": 4,
        "input_tokens": 270 + 250 + 292,
        "output_tokens": 80 + 70 + 80,
        "cached_tokens": 10 + 200,
        "cost_usd": pytest.approx(0.00014 + 0.00012 + 0.00016, rel=1e-12),
    }
    assert written == {**expected, "duration_s": 12.5}
    assert queries.totals(store, "r1") == expected

    run = queries.run(store, "r1")
    assert run["state"] == "COMPLETED"
    assert run["workflow"] == "code-review"
    assert run["inputs"] == {"code": "x"}
    assert run["model_override"] == "openai:gpt-4.1"
    assert run["started"] == "2025-03-01T12:00:00+00:00"
    assert run["ended"] == "2025-03-01T12:00:12.500000+00:00"
    assert run["duration_s"] == 12.5
    assert run["error"] is None
    for key, value in expected.items():
        if key != "calls":
            assert run[key] == value
    assert run["n_calls"] == 4
    calls = run["calls"]
    assert [(c["step"], c["attempt"], c["status"]) for c in calls] == [
        ("security", 1, "ok"), ("style", 1, "error"), ("style", 2, "ok"), ("summary", 1, "ok"),
    ]
    assert calls[0]["provider"] == "openai" and calls[3]["provider"] == "anthropic"
    assert calls[0]["priced"] is True and calls[1]["priced"] is False
    assert calls[3]["cached"] is True and calls[0]["cached"] is False
    assert calls[1]["error"] == "429 Too Many Requests"
    assert calls[0]["latency_ms"] == 410.0
    assert datetime.fromisoformat(calls[0]["created"]).tzinfo is not None

    style = queries.step_attempts(store, "r1", "style")
    assert [(c["attempt"], c["status"], c["input_tokens"]) for c in style] == [
        (1, "error", 0), (2, "ok", 250),
    ]
    assert queries.step_attempts(store, "r1", "nope") == []
    assert queries.totals(store, "unknown-run") == {
        "calls": 0, "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "cost_usd": 0.0,
    }
    assert queries.run(store, "unknown-run") is None

    # The list shows the stored totals.
    (listed,) = queries.runs(store)
    assert (listed["calls"], listed["input_tokens"], listed["cost_usd"]) == (
        4, 812, pytest.approx(0.00042)
    )


def test_running_run_shows_live_totals_and_failed_run_keeps_error(store):
    store.start_run(flow_run_id="live", workflow="wf", inputs={}, started=T0)
    store.record_call(call("live", input_tokens=5, output_tokens=7, cost_usd=0.5))
    store.record_call(call("live", input_tokens=1, output_tokens=1, cost_usd=0.25))
    (run,) = queries.runs(store)
    assert run["state"] == "RUNNING" and run["ended"] is None and run["duration_s"] is None
    assert (run["calls"], run["input_tokens"], run["output_tokens"], run["cost_usd"]) == (
        2, 6, 8, 0.75
    )
    detail = queries.run(store, "live")
    assert (detail["n_calls"], detail["cost_usd"], len(detail["calls"])) == (2, 0.75, 2)

    class StateType(enum.Enum):  # what Prefect's StateType looks like
        FAILED = "FAILED"

    store.finish_run(flow_run_id="live", state=StateType.FAILED, ended=T0 + timedelta(seconds=3),
                     error="step 'x' failed")
    run = queries.run(store, "live")
    assert (run["state"], run["error"], run["n_calls"], run["cost_usd"]) == (
        "FAILED", "step 'x' failed", 2, 0.75
    )


def test_start_run_again_is_a_retry_of_the_same_run(store):
    store.start_run(flow_run_id="r", workflow="wf", inputs={"a": 1}, started=T0)
    store.record_call(call("r", cost_usd=1.0))
    store.finish_run(flow_run_id="r", state="FAILED", ended=T0 + timedelta(seconds=1), error="boom")
    store.start_run(flow_run_id="r", workflow="wf", inputs={"a": 1}, started=T0 + timedelta(minutes=1))
    run = queries.run(store, "r")
    assert (run["state"], run["started"], run["ended"], run["error"]) == (
        "RUNNING", T0.isoformat(), None, None
    )
    store.record_call(call("r", cost_usd=2.0))
    totals = store.finish_run(flow_run_id="r", state="completed", ended=T0 + timedelta(minutes=2))
    assert (totals["calls"], totals["cost_usd"], totals["duration_s"]) == (2, 3.0, 120.0)
    assert len(queries.runs(store)) == 1


def test_finish_run_rejects_unknown_runs_and_states(store):
    with pytest.raises(KeyError, match="ghost"):
        store.finish_run(flow_run_id="ghost", state="COMPLETED", ended=T0)
    store.start_run(flow_run_id="r", workflow="wf", inputs={}, started=T0)
    with pytest.raises(ValueError, match="COMPLETED"):
        store.finish_run(flow_run_id="r", state="RUNNING", ended=T0)
    with pytest.raises(TypeError, match="bogus"):
        store.finish_run(flow_run_id="r", state="COMPLETED", ended=T0, bogus=1)
    # Totals passed the architecture.md way are accepted and ignored (SQL is the truth).
    totals = store.finish_run(flow_run_id="r", state="COMPLETED", ended=T0, cost_usd=99.0)
    assert totals["cost_usd"] == 0.0
    assert queries.run(store, "r")["cost_usd"] == 0.0


def test_timestamps_are_stored_and_returned_in_utc(store):
    plus_two = timezone(timedelta(hours=2))
    store.start_run(flow_run_id="tz", workflow="wf", inputs={},
                    started=datetime(2025, 3, 1, 23, 30, tzinfo=plus_two))
    store.start_run(flow_run_id="naive", workflow="wf", inputs={},
                    started=datetime(2025, 3, 1, 22, 0))  # naive = UTC
    store.record_call(call("tz", created=datetime(2025, 3, 2, 0, 30, tzinfo=plus_two)))
    runs = {r["flow_run_id"]: r for r in queries.runs(store)}
    assert runs["tz"]["started"] == "2025-03-01T21:30:00+00:00"
    assert runs["naive"]["started"] == "2025-03-01T22:00:00+00:00"
    assert [r["flow_run_id"] for r in queries.runs(store)] == ["naive", "tz"]
    # 00:30 at +02:00 is still March 1st in UTC.
    assert [d["day"] for d in queries.cost_groups(store, "day")] == ["2025-03-01"]


def test_list_runs_newest_first_with_limit_and_filters(store):
    order = [3, 0, 4, 1, 2]
    for i in order:
        store.start_run(flow_run_id=f"run-{i}", workflow="even" if i % 2 == 0 else "odd",
                        inputs={"i": i}, started=T0 + timedelta(minutes=i))
    store.finish_run(flow_run_id="run-4", state="COMPLETED", ended=T0 + timedelta(hours=1))
    listed = queries.runs(store)
    assert [r["flow_run_id"] for r in listed] == ["run-4", "run-3", "run-2", "run-1", "run-0"]
    assert {"flow_run_id", "workflow", "state", "cost_usd", "started", "input_tokens",
            "output_tokens", "duration_s", "calls"} <= set(listed[0])
    assert listed[0]["started"] == (T0 + timedelta(minutes=4)).isoformat()
    assert datetime.fromisoformat(listed[0]["started"]) == T0 + timedelta(minutes=4)
    assert [r["flow_run_id"] for r in queries.runs(store, limit=2)] == ["run-4", "run-3"]
    assert [r["flow_run_id"] for r in queries.runs(store, workflow="odd")] == ["run-3", "run-1"]
    assert [r["flow_run_id"] for r in queries.runs(store, state="COMPLETED")] == ["run-4"]
    assert queries.runs(store, workflow="none") == []


# --------------------------------------------------------------------------- costs


def _seed_costs(store: Store) -> None:
    day1, day2 = T0, T0 + timedelta(days=1)
    store.start_run(flow_run_id="a1", workflow="wf-a", inputs={}, started=day1)
    store.start_run(flow_run_id="b1", workflow="wf-b", inputs={}, started=day1)
    store.start_run(flow_run_id="a2", workflow="wf-a", inputs={}, started=day2)
    m1, m2 = "openai:gpt-4.1-mini", "anthropic:claude-sonnet-4"
    for c in [
        call("a1", model=m1, agent="reviewer", input_tokens=100, output_tokens=10, cost_usd=1.0, created=day1),
        call("a1", model=m2, agent="writer", input_tokens=200, output_tokens=20, cost_usd=4.0, created=day1),
        call("b1", model=m1, agent="reviewer", input_tokens=300, output_tokens=30, cost_usd=2.0,
             created=day1 + timedelta(hours=11, minutes=59)),
        call("b1", model=m1, agent=None, input_tokens=50, output_tokens=5, cost_usd=0.5,
             created=datetime(2025, 3, 1, 23, 59, 59, 999999, tzinfo=UTC)),
        call("a2", model=m2, agent="writer", input_tokens=400, output_tokens=40, cached_tokens=7,
             cost_usd=8.0, created=day2),
        call("a2", model=m1, agent="reviewer", status="error", error="timeout", created=day2),
    ]:
        store.record_call(c)


def _strip(groups):
    return [{k: (round(v, 9) if isinstance(v, float) else v) for k, v in g.items()} for g in groups]


def test_costs_by_model(store):
    _seed_costs(store)
    assert _strip(queries.cost_groups(store, "model")) == [
        {"model": "anthropic:claude-sonnet-4", "calls": 2, "input_tokens": 600,
         "output_tokens": 60, "cached_tokens": 7, "cost_usd": 12.0},
        {"model": "openai:gpt-4.1-mini", "calls": 4, "input_tokens": 450,
         "output_tokens": 45, "cached_tokens": 0, "cost_usd": 3.5},
    ]


def test_costs_by_agent(store):
    _seed_costs(store)
    assert _strip(queries.cost_groups(store, "agent")) == [
        {"agent": "writer", "calls": 2, "input_tokens": 600, "output_tokens": 60,
         "cached_tokens": 7, "cost_usd": 12.0},
        {"agent": "reviewer", "calls": 3, "input_tokens": 400, "output_tokens": 40,
         "cached_tokens": 0, "cost_usd": 3.0},
        {"agent": None, "calls": 1, "input_tokens": 50, "output_tokens": 5,
         "cached_tokens": 0, "cost_usd": 0.5},
    ]


def test_costs_by_workflow(store):
    _seed_costs(store)
    assert _strip(queries.cost_groups(store, "workflow")) == [
        {"workflow": "wf-a", "calls": 4, "input_tokens": 700, "output_tokens": 70,
         "cached_tokens": 7, "cost_usd": 13.0},
        {"workflow": "wf-b", "calls": 2, "input_tokens": 350, "output_tokens": 35,
         "cached_tokens": 0, "cost_usd": 2.5},
    ]


def test_costs_by_day(store):
    _seed_costs(store)
    assert _strip(queries.cost_groups(store, "day")) == [
        {"day": "2025-03-01", "calls": 4, "input_tokens": 650, "output_tokens": 65,
         "cached_tokens": 0, "cost_usd": 7.5},
        {"day": "2025-03-02", "calls": 2, "input_tokens": 400, "output_tokens": 40,
         "cached_tokens": 7, "cost_usd": 8.0},
    ]
    only_day2 = queries.cost_groups(store, "model", since=T0 + timedelta(days=1))
    assert [(g["model"], g["calls"], g["cost_usd"]) for g in only_day2] == [
        ("anthropic:claude-sonnet-4", 1, 8.0), ("openai:gpt-4.1-mini", 1, 0.0),
    ]
    only_day1 = queries.cost_groups(store, "workflow", until=T0 + timedelta(days=1))
    assert [(g["workflow"], g["calls"]) for g in only_day1] == [("wf-a", 2), ("wf-b", 2)]


def test_costs_empty_and_bad_group(store):
    assert queries.cost_groups(store, "model") == []
    with pytest.raises(ValueError) as info:
        queries.cost_groups(store, "provider")
    message = str(info.value)
    assert "'provider'" in message
    for valid in ("model", "agent", "workflow", "day"):
        assert valid in message


# --------------------------------------------------------------------------- secrets


def test_errors_and_inputs_are_redacted_before_they_are_written(store, monkeypatch):
    env_secret = "zq-env-Secret-9876543"
    monkeypatch.setenv("ORCHESTRA_TEST_API_KEY", env_secret)
    openai_key = "sk-abc123def456ghi789jkl"
    anthropic_key = "sk-ant-api03-AbCdEf123456"
    store.start_run(flow_run_id="sec", workflow="wf",
                    inputs={"note": f"use {openai_key}", "n": 3, "nested": [env_secret]},
                    started=T0)
    store.record_call(call(
        "sec", status="error",
        error=(f"401 Unauthorized: Incorrect API key provided: {openai_key}. "
               f"headers: Authorization: Bearer {env_secret}; x-api-key: {anthropic_key}; "
               "db postgresql://bob:hunter2pass@db.example:5432/ledger"),
    ))
    store.finish_run(flow_run_id="sec", state="FAILED", ended=T0,
                     error=f"step failed with key {env_secret}")

    run = queries.run(store, "sec")
    err = run["calls"][0]["error"]
    assert err == (
        "401 Unauthorized: Incorrect API key provided: sk-***. "
        "headers: Authorization: Bearer ***; x-api-key: ***; "
        "db postgresql://bob:***@db.example:5432/ledger"
    )
    assert run["error"] == "step failed with key ***"
    assert run["inputs"] == {"note": "use sk-***", "n": 3, "nested": ["***"]}

    # Nothing secret anywhere in the raw tables.
    dump = repr(rows(store, "SELECT * FROM runs")) + repr(rows(store, "SELECT * FROM calls"))
    for secret in (env_secret, openai_key, anthropic_key, "hunter2pass", "abc123def"):
        assert secret not in dump


def test_redact_patterns(monkeypatch):
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-1234567")
    monkeypatch.setenv("DB_PASSWORD", "pa55word!")
    monkeypatch.setenv("SHORT_KEY", "abc12")  # shorter than 6: left alone
    monkeypatch.setenv("HOSTNAME_SUFFIX", "visible-value")  # not a secret name
    assert redact("t=tok-1234567 p=pa55word! s=abc12 h=visible-value") == (
        "t=*** p=*** s=abc12 h=visible-value"
    )
    assert redact("key sk-abc123def456 and sk-ant-api03-xyzXYZ_123-456") == (
        "key sk-*** and sk-ant-***"
    )
    assert redact("Authorization: Bearer eyJhbGciOi.J9.abc") == "Authorization: Bearer ***"
    assert redact('{"api_key": "k-12345678", "password": "x"}') == '{"api_key": "***", "password": "***"}'
    assert redact("https://u:p%40ss@h/x?a=1&token=zzz&b=2") == "https://u:***@h/x?a=1&token=***&b=2"
    assert redact("ghp_" + "a" * 36) == "ghp_***"
    assert redact("task-manager uses scikit-learn; sk-short") == "task-manager uses scikit-learn; sk-short"
    assert redact("") == "" and redact(None) is None
    assert redact_url("postgresql://user:pass@host/db") == "postgresql://user:***@host/db"
    assert redact_url("postgresql+psycopg2://user:p@ss:w0rd@host:5432/db") == (
        "postgresql+psycopg2://user:***@host:5432/db"
    )
    assert redact_url("redis://:only-pw@localhost:6379/0") == "redis://:***@localhost:6379/0"
    assert redact_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert redact_url("postgresql://user@host/db") == "postgresql://user@host/db"
    assert redact_url(None) is None


def test_store_repr_hides_the_password():
    s = Store("postgresql://orchestra:sup3rsecret@db.invalid:5432/ledger", auto_migrate=False)
    assert "sup3rsecret" not in repr(s) and "sup3rsecret" not in s.display_url
    assert s.url.drivername == "postgresql+psycopg2"


# --------------------------------------------------------------------------- concurrency


def test_200_calls_from_8_threads(store):
    store.start_run(flow_run_id="conc", workflow="wf", inputs={}, started=T0)
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(25):
            store.record_call(call("conc", step=f"t{t}", attempt=i + 1, input_tokens=1,
                                   output_tokens=2, cost_usd=0.001))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.flush(timeout=60)
    assert rows(store, "SELECT count(*) FROM calls WHERE flow_run_id = 'conc'")[0][0] == 200
    pairs = rows(store, "SELECT step, attempt FROM calls")
    assert len(set(pairs)) == 200
    assert sorted(set(p[0] for p in pairs)) == [f"t{t}" for t in range(8)]
    totals = store.finish_run(flow_run_id="conc", state="COMPLETED", ended=T0 + timedelta(seconds=1))
    assert (totals["calls"], totals["input_tokens"], totals["output_tokens"]) == (200, 200, 400)
    assert totals["cost_usd"] == pytest.approx(0.2)
    assert store.write_errors == 0


def test_64_concurrent_calls_from_one_event_loop(store):
    store.start_run(flow_run_id="loop", workflow="wf", inputs={}, started=T0)

    async def one(i: int) -> None:
        await asyncio.sleep(0)
        store.record_call(call("loop", step=f"s{i}", output_tokens=i))

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(64)))

    asyncio.run(main())
    totals = store.finish_run(flow_run_id="loop", state="COMPLETED", ended=T0)
    assert (totals["calls"], totals["output_tokens"]) == (64, sum(range(64)))


def test_record_call_does_not_wait_for_a_locked_database(tmp_path):
    path = tmp_path / "locked.db"
    s = Store(f"sqlite:///{path}")
    s.start_run(flow_run_id="r", workflow="wf", inputs={}, started=T0)
    s.record_call(call("r", step="warmup"))
    s.flush()

    blocker = sqlite3.connect(path, isolation_level=None, timeout=30)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        async def burst() -> None:
            async def one(i: int) -> None:
                s.record_call(call("r", step=f"s{i}"))
            await asyncio.gather(*(one(i) for i in range(64)))

        asyncio.run(burst())  # returns although no row can be written now
        reader = sqlite3.connect(path)
        assert reader.execute("SELECT count(*) FROM calls").fetchone()[0] == 1
        reader.close()
        assert s.flush(timeout=0.2) is False  # still waiting on the lock
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert s.flush(timeout=60) is True
    assert queries.totals(s, "r")["calls"] == 65
    s.close()


def test_a_bad_call_does_not_stop_the_writer(store, caplog):
    store.start_run(flow_run_id="ok", workflow="wf", inputs={}, started=T0)
    store.record_call(call("ok", step="before"))
    store.record_call(call("no-such-run", step="orphan"))  # violates the foreign key
    store.record_call(call("ok", step="after"))
    store.flush()
    assert store.write_errors == 1
    assert "no-such-run" in caplog.text
    assert [c["step"] for c in queries.run(store, "ok")["calls"]] == ["before", "after"]
    store.record_call(call("ok", step="later"))
    assert queries.totals(store, "ok")["calls"] == 3


def test_record_call_validates_on_the_caller_side(store):
    with pytest.raises(ValueError, match="status"):
        call("r", status="weird")
    with pytest.raises(TypeError):
        store.record_call({"flow_run_id": "r", "step": "s", "model": "m", "nope": 1})
    with pytest.raises(TypeError):
        store.record_call(42)


def test_record_call_accepts_mappings_and_adapter_results(store):
    from dataclasses import dataclass

    @dataclass
    class FakeAgentResult:  # the shape of agents.base.AgentResult
        output: str
        provider: str
        model: str
        input_tokens: int = 0
        output_tokens: int = 0
        cached_tokens: int = 0
        cost_usd: float = 0.0
        priced: bool = False
        attempts: int = 1
        latency_ms: float = 0.0
        agent: str | None = None

    store.start_run(flow_run_id="m", workflow="wf", inputs={}, started=T0)
    store.record_call({"flow_run_id": "m", "step": "a", "model": "fast-agent:passthrough"})
    result = FakeAgentResult("hi", "openai", "openai:gpt-4.1", 3, 4, 1, 0.5, True, 2, 9.5, "rev")
    store.record_call(CallRecord.from_result(result, flow_run_id="m", step="b", attempt=2))
    store.record_call(CallRecord.from_error("503 overloaded", flow_run_id="m", step="c", model="anthropic:claude",
                                            agent=None, attempt=3, latency_ms=0.0))
    calls = queries.run(store, "m")["calls"]
    assert [(c["step"], c["provider"], c["model"], c["agent"], c["attempt"], c["status"])
            for c in calls] == [
        ("a", "fast-agent", "fast-agent:passthrough", None, 1, "ok"),
        ("b", "openai", "openai:gpt-4.1", "rev", 2, "ok"),
        ("c", "anthropic", "anthropic:claude", None, 3, "error"),
    ]
    assert (calls[1]["cost_usd"], calls[1]["priced"], calls[1]["latency_ms"]) == (0.5, True, 9.5)
    assert calls[2]["error"] == "503 overloaded"


def test_queued_calls_are_flushed_at_interpreter_exit(tmp_path):
    url = f"sqlite:///{tmp_path}/exit.db"
    code = (
        "from datetime import datetime, timezone\n"
        "from ledger.store import get_store, CallRecord\n"
        f"s = get_store({url!r})\n"
        "s.start_run(flow_run_id='x', workflow='wf', inputs={}, started=datetime.now(timezone.utc))\n"
        "for i in range(300):\n"
        "    s.record_call(CallRecord(flow_run_id='x', step=str(i), model='openai:m'))\n"
        # no flush: the atexit hook must commit the queue
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    s = Store(url)
    assert queries.totals(s, "x")["calls"] == 300
    s.close()


# --------------------------------------------------------------------------- URLs and engines


def test_url_resolution_and_one_store_per_url(tmp_path, monkeypatch):
    home = tmp_path / "home" / "nested"
    monkeypatch.setenv("ORCHESTRA_HOME", str(home))
    default = get_store()
    assert Path(default.url.database) == home / "orchestra.db"
    assert home.is_dir()
    assert get_store() is default

    env_url = f"sqlite:///{tmp_path}/env/ledger.db"
    monkeypatch.setenv("ORCHESTRA_DB_URL", env_url)
    from_env = get_store()
    assert from_env is not default and from_env is get_store(env_url)
    assert Path(from_env.url.database) == tmp_path / "env" / "ledger.db"

    explicit = get_store(f"sqlite:///{tmp_path}/explicit.db")
    assert Path(explicit.url.database) == tmp_path / "explicit.db"
    for s in (default, from_env, explicit):
        s.start_run(flow_run_id="u", workflow="wf", inputs={}, started=T0)
        s.close()
    with store_mod._BY_URL_LOCK:
        for key in [k for k, v in store_mod._BY_URL.items() if v in (default, from_env, explicit)]:
            del store_mod._BY_URL[key]


def test_sqlite_runs_in_wal_mode_with_busy_timeout(tmp_path):
    s = Store(f"sqlite:///{tmp_path}/wal.db")
    s.migrate()
    with s.engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("busy_timeout") == 30_000
        assert pragma("foreign_keys") == 1
    s.close()


def test_in_memory_sqlite_store():
    s = Store("sqlite://")
    s.start_run(flow_run_id="mem", workflow="wf", inputs={}, started=T0)
    for i in range(20):
        s.record_call(call("mem", step=str(i), cost_usd=0.5))
    assert s.finish_run(flow_run_id="mem", state="COMPLETED", ended=T0)["cost_usd"] == 10.0
    assert [g["calls"] for g in queries.cost_groups(s, "workflow")] == [20]
    s.close()


# --------------------------------------------------------------------------- tool calls (0007)


def test_tool_calls_are_written_redacted_in_order_and_read_back(store, monkeypatch):
    from core.calls import ToolCallRecord
    from core.redact import register_secret

    monkeypatch.setenv("SEARCH_TOKEN", "tok-env-secret-77")
    register_secret("blk-registered-secret-88")
    store.start_run(flow_run_id="tr", workflow="w", started=T0)
    made = [
        ToolCallRecord(flow_run_id="tr", step="ask", attempt=1, server="fake", tool="add", outcome="ok",
                       duration_s=0.012, arguments={"a": 2, "b": 3}, agent="a", call_id="call_1"),
        ToolCallRecord(flow_run_id="tr", step="ask", attempt=1, server="fake", tool="secret_echo", outcome="error",
                       duration_s=0.5, agent="a",
                       arguments={"token": "plain-value", "note": "sk-proj-abcdefghijk and tok-env-secret-77",
                                  "nested": [{"password": "hunter22"}, "blk-registered-secret-88"]},
                       error="echoed tok-env-secret-77 back"),
        ToolCallRecord(flow_run_id="tr", step="other", attempt=2, server="time", tool="get_current_time",
                       outcome="timeout", duration_s=60.0, arguments={"timezone": "UTC"}),
    ]
    for t in made:
        store.record_tool_call(t)
    got = queries.tool_calls(store, "tr")
    assert [(t["step"], t["attempt"], t["server"], t["tool"], t["outcome"], t["ok"]) for t in got] == [
        ("ask", 1, "fake", "add", "ok", True), ("ask", 1, "fake", "secret_echo", "error", False),
        ("other", 2, "time", "get_current_time", "timeout", False)]
    assert got[0]["arguments"] == {"a": 2, "b": 3} and got[0]["call_id"] == "call_1"
    assert got[1]["arguments"] == {"token": "***", "note": "sk-*** and ***", "nested": [{"password": "***"}, "***"]}
    assert got[1]["error"] == "echoed *** back"
    assert [t["duration_s"] for t in got] == [0.012, 0.5, 60.0]
    assert [t["step"] for t in queries.tool_calls(store, "tr", step="other")] == ["other"]
    assert queries.tool_calls(store, "nope") == []
    with pytest.raises(ValueError, match="outcome must be one of"):
        ToolCallRecord(flow_run_id="tr", step="s", attempt=1, server="x", tool="y", outcome="maybe")
    with pytest.raises(TypeError, match="expects a ToolCallRecord"):
        store.record_tool_call({"server": "x"})


def test_a_batch_of_every_kind_is_one_transaction(store):
    """A step's states, its in-flight mark, its call row and a tool call, taken off the
    queue together, are committed in one transaction (a transaction per kind cost the
    writer most of its time on a run of sequential steps)."""
    from sqlalchemy import event

    from core.calls import ToolCallRecord
    from core.steps import StepState

    store.start_run(flow_run_id="r", workflow="w", started=T0)
    store.flush()
    mark = CallRecord.in_flight(flow_run_id="r", step="s", model="openai:m", agent=None, attempt=1)
    done = call("r", step="s", key=mark.key, input_tokens=3)
    begins: list[int] = []
    event.listen(store.engine, "begin", lambda conn: begins.append(1))
    store._commit(  # what the writer thread commits for one batch taken off its queue
        batch=[(done, done.created)], opens=[mark], drops=set(),
        tools=[ToolCallRecord(flow_run_id="r", step="s", attempt=1, server="x", tool="t", outcome="ok")],
        steps=[StepState(flow_run_id="r", step="s", state="RUNNING"),
               StepState(flow_run_id="r", step="s", state="COMPLETED", output="done")],
        beats=[])
    assert len(begins) == 1
    run = queries.run(store, "r")
    assert [c["input_tokens"] for c in run["calls"]] == [3]
    assert len(queries.tool_calls(store, "r")) == 1
    assert rows(store, "SELECT state, output FROM steps WHERE flow_run_id = 'r'")[0][0] == "COMPLETED"
    assert rows(store, "SELECT count(*) FROM open_calls")[0][0] == 0
    assert queries.totals(store, "r")["input_tokens"] == 3


def test_one_bad_record_in_a_mixed_batch_sinks_only_itself(store):
    from core.calls import ToolCallRecord
    from core.steps import StepState

    store.start_run(flow_run_id="ok", workflow="w", started=T0)
    store.flush()
    store.record_step(StepState(flow_run_id="ok", step="s", state="COMPLETED", output="done"))
    store.record_call(call("ok", step="s", input_tokens=5))
    store.record_tool_call(ToolCallRecord(flow_run_id="unknown", step="s", attempt=1, server="x", tool="t",
                                          outcome="ok"))  # violates the foreign key: the batch's transaction fails
    store.record_call(call("ok", step="s2", input_tokens=7))
    store.flush()
    assert store.write_errors == 1
    assert sorted(c["input_tokens"] for c in queries.run(store, "ok")["calls"]) == [5, 7]
    assert queries.totals(store, "ok")["input_tokens"] == 12  # the rollup: each call once
    assert rows(store, "SELECT state FROM steps WHERE flow_run_id = 'ok'")[0][0] == "COMPLETED"


def test_a_tool_call_of_an_unknown_run_does_not_sink_the_others(store, caplog):
    from core.calls import ToolCallRecord

    store.start_run(flow_run_id="known", workflow="w", started=T0)
    for run in ("known", "unknown", "known"):
        store.record_tool_call(ToolCallRecord(flow_run_id=run, step="s", attempt=1, server="x", tool="t",
                                              outcome="ok"))
    store.flush()
    assert len(queries.tool_calls(store, "known")) == 2 and store.write_errors == 1


def test_the_newest_revisions_downgrade_and_upgrade(tmp_path):
    from alembic import command
    from alembic.config import Config

    url = f"sqlite:///{tmp_path}/down.db"
    s = Store(url)
    s.migrate()
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logging"] = False
    command.downgrade(cfg, "0004")  # through 0007 (tool calls), 0006 (process calls), 0005 (heartbeat)
    assert "tool_calls" not in inspect(s.engine).get_table_names()
    assert {"kind", "pid"}.isdisjoint(c["name"] for t in ("calls", "runs") for c in inspect(s.engine).get_columns(t))
    assert s.current_revisions() == frozenset({"0004"})
    command.upgrade(cfg, "head")
    assert "tool_calls" in inspect(s.engine).get_table_names()
    s.close()
