"""The reaper (orchestra.reaper) against a real ledger: a RUNNING run whose process is
gone, or whose heartbeat stopped, ends CRASHED with its unfinished steps; a live one is
left alone. (SIGKILL of a real `orchestra run`, then reaping and rerun:
tests/app/test_resilience_cli.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

from core.steps import StepState
from ledger import queries
from orchestra import reaper

UTC = timezone.utc


def _start(store, run_id: str, *, pid: int | None = None, host: str | None = None) -> None:
    store.start_run(flow_run_id=run_id, workflow="wf", inputs={}, started=datetime.now(UTC))
    store.record_step(StepState(flow_run_id=run_id, step="a", state="COMPLETED"))
    store.record_step(StepState(flow_run_id=run_id, step="b", state="RUNNING"))
    store.heartbeat(run_id, pid=pid, host=host)
    store.flush()


def test_a_run_whose_process_is_gone_is_crashed_and_a_live_one_is_not(orchestra_env):
    import socket

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    _start(orchestra_env, "dead-run", pid=gone.pid, host=socket.gethostname())
    _start(orchestra_env, "live-run", pid=os.getpid(), host=socket.gethostname())
    ended = reaper.reap(orchestra_env)
    assert [e["flow_run_id"] for e in ended] == ["dead-run"]
    row = queries.run(orchestra_env, "dead-run")
    assert row["state"] == "CRASHED" and f"pid {gone.pid}" in row["error"]
    assert [(s["step"], s["state"]) for s in queries.steps(orchestra_env, "dead-run")] == [
        ("a", "COMPLETED"), ("b", "CRASHED")]
    assert queries.run(orchestra_env, "live-run")["state"] == "RUNNING"


def test_a_run_of_another_host_is_crashed_once_its_heartbeat_is_old(orchestra_env, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_REAP_AFTER", "30")
    _start(orchestra_env, "far-run", pid=1, host="another-host")
    assert reaper.reap(orchestra_env) == []  # fresh heartbeat
    later = datetime.now(UTC) + timedelta(seconds=31)
    ended = reaper.reap(orchestra_env, now=later)
    assert ended and ended[0]["state"] == "CRASHED" and "no heartbeat for more than 30 s" in ended[0]["why"]
    assert queries.run(orchestra_env, "far-run")["state"] == "CRASHED"
