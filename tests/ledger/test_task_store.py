"""Projects and tasks in the ledger (revision 0008): the write path (ledger.task_store, one
transaction per change with its history rows) and the readers in ledger.queries, on SQLite
and PostgreSQL; the migration down to 0004 and up again."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from core.calls import CallRecord
from ledger import queries
from ledger.migrations import MIGRATIONS_DIR, head_revisions
from ledger.store import Store, TaskConflict
from tests.ledger.test_store import db_url, pg_server, store  # noqa: F401  (the fixtures)

T0 = datetime(2025, 6, 1, 9, 0, tzinfo=timezone.utc)
TASK_TABLES = {"projects", "tasks", "task_history", "task_runs"}


def test_0008_downgrades_to_0007_and_upgrades_again(db_url):
    from alembic import command
    from alembic.config import Config

    s = Store(db_url)
    s.migrate()
    pid = s.create_project("keep", at=T0)
    s.create_task({"project_id": pid, "title": "kept"}, actor="t", at=T0)

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    with s._write_engine.connect() as conn:
        cfg.attributes["connection"] = conn
        cfg.attributes["configure_logging"] = False
        command.downgrade(cfg, "0007")
        conn.commit()
        tables = set(inspect(conn).get_table_names())
        assert not TASK_TABLES & tables and {"runs", "steps", "tool_calls"} <= tables
        assert s._read_revisions(conn) == frozenset({"0007"})
        command.upgrade(cfg, "head")
        conn.commit()
        assert TASK_TABLES <= set(inspect(conn).get_table_names())
    assert s.current_revisions() == head_revisions() and queries.projects(s) == []
    s.close()


def test_a_task_and_every_change_with_its_history(store):
    pid = store.create_project("acme", "shop", at=T0)
    with pytest.raises(ValueError, match="a project named 'acme' exists already"):
        store.create_project("acme")
    tid = store.create_task({"project_id": pid, "title": "Login", "labels": ["auth"], "depends_on": []},
                            actor="cli", at=T0)
    made = store.update_task(tid, {"assignee": "ada", "title": "Login", "labels": ["auth", "web"]}, actor="mcp",
                             reason="triage", at=T0 + timedelta(minutes=1))
    assert made == {"assignee": (None, "ada"), "labels": (["auth"], ["auth", "web"])}  # the title did not change
    assert store.update_task(tid, {"assignee": "ada"}, actor="mcp") == {}  # nothing changed, nothing written
    history = queries.task_history(store, tid)
    assert [(h["actor"], h["field"], h["old"], h["new"], h["reason"]) for h in history] == [
        ("cli", "created", None, "todo", None), ("mcp", "assignee", None, "ada", "triage"),
        ("mcp", "labels", '["auth"]', '["auth", "web"]', "triage")]
    task = queries.task(store, tid)
    assert (task["project"], task["assignee"], task["labels"], task["status"], task["runs"], task["last_run"]) == (
        "acme", "ada", ["auth", "web"], "todo", 0, None)
    assert queries.project(store, "acme")["task_count"] == 1 == queries.project(store, pid)["task_count"]
    assert queries.project(store, "nope") is None and queries.task(store, 999) is None


def test_a_status_change_is_compare_and_set_and_a_failed_change_leaves_nothing(store):
    tid = store.create_task({"title": "Run me"}, actor="cli", at=T0)
    store.update_task(tid, {"status": "running"}, actor="cli", expect_status=["todo"], add_run="run-1")
    with pytest.raises(TaskConflict) as caught:  # a second start: the task is running already
        store.update_task(tid, {"status": "running"}, actor="cli", expect_status=["todo"], add_run="run-2")
    assert caught.value.status == "running"
    with pytest.raises(IntegrityError):  # the same flow run twice: the whole change is rolled back
        store.update_task(tid, {"status": "done"}, actor="cli", add_run="run-1")
    assert queries.task(store, tid)["status"] == "running"
    assert [h["field"] for h in queries.task_history(store, tid)] == ["created", "status"]
    assert [r["flow_run_id"] for r in queries.task_runs(store, tid)] == ["run-1"]
    with pytest.raises(ValueError, match="task status must be one of"):
        store.update_task(tid, {"status": "half-done"}, actor="cli")
    with pytest.raises(TypeError, match="unknown fields"):
        store.update_task(tid, {"id": 7}, actor="cli")
    with pytest.raises(KeyError):
        store.update_task(999, {"title": "x"}, actor="cli")


def test_a_tasks_runs_come_with_their_ledger_state_and_cost(store):
    tid = store.create_task({"title": "Greet"}, actor="cli", at=T0)
    store.update_task(tid, {"status": "running"}, actor="cli", add_run="run-a", at=T0)
    assert queries.task(store, tid)["last_run"]["state"] is None  # the engine has not written the run yet
    store.start_run(flow_run_id="run-a", workflow="hello", inputs={}, started=T0)
    store.record_call(CallRecord(flow_run_id="run-a", step="greet", model="openai:gpt-4.1-mini", input_tokens=10,
                                 output_tokens=5, cost_usd=0.25, priced=True))
    (live,) = queries.task_runs(store, tid)
    assert (live["state"], live["calls"], live["cost_usd"], live["workflow"]) == ("RUNNING", 1, 0.25, "hello")
    store.finish_run(flow_run_id="run-a", state="COMPLETED", ended=T0 + timedelta(seconds=3))
    last = queries.task(store, tid)["last_run"]
    assert (last["flow_run_id"], last["state"], last["cost_usd"]) == ("run-a", "COMPLETED", 0.25)
    assert queries.task_of_run(store, "run-a") == tid and queries.task_of_run(store, "run-b") is None
    store.update_task(tid, {}, actor="cli", add_run="run-b")
    assert queries.task(store, tid)["runs"] == 2 and queries.task(store, tid)["last_run"]["flow_run_id"] == "run-b"


def test_free_text_inputs_and_definitions_are_redacted_before_they_are_written(store, monkeypatch):
    secret = "sk-live-task-store-0123456789abcdef"
    monkeypatch.setenv("SHOP_API_KEY", secret)
    tid = store.create_task({"title": f"Rotate {secret}", "description": "token=abcdef123456 please",
                             "inputs": {"key": secret, "nested": [secret]},
                             "definition": {"name": "x", "steps": [{"id": "a", "prompt": f"use {secret}"}]}},
                            actor="cli")
    store.update_task(tid, {"assignee": secret}, actor="cli")
    task = queries.task(store, tid)
    dumped = repr(task) + repr(queries.task_history(store, tid))
    assert secret not in dumped and "abcdef123456" not in dumped
    assert task["inputs"] == {"key": "***", "nested": ["***"]} and task["description"] == "token=*** please"


def test_a_task_names_an_existing_project_and_parent(store):
    """The foreign keys hold on both backends."""
    with pytest.raises(IntegrityError):
        store.create_task({"title": "orphan", "project_id": 12345}, actor="cli")
    with pytest.raises(IntegrityError):
        store.create_task({"title": "orphan", "parent_id": 12345}, actor="cli")
    assert queries.tasks(store) == []

