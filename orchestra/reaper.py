"""The reaper: a run the ledger holds as RUNNING whose process died ends as Prefect says.

A run's process writes a heartbeat every ``heartbeat`` seconds (``flows.supervision``)
and its pid and host once. A RUNNING run is dead when its process is gone (same host,
no such pid) or its last heartbeat is older than ``reap_after`` seconds
(``ORCHESTRA_REAP_AFTER``, default 45). It then ends in the ledger as its flow run
ended in Prefect when Prefect knows (``CANCELLED`` by a worker, for one), else
``CRASHED`` in both: the flow run is set Crashed, the steps that were not final end
CRASHED (or CANCELLED), the totals are what it spent. The CLI runs :func:`reap` when
it starts a run or lists runs; the local Prefect server's supervisor every 15 s.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import datetime, timedelta, timezone
from typing import Any

from core.settings import settings

__all__ = ["reap", "is_dead"]

log = logging.getLogger("orchestra.reaper")
UTC = timezone.utc
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    try:  # a zombie (dead, not yet waited for by its parent) is gone too
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def is_dead(run: dict[str, Any], *, now: datetime | None = None, host: str | None = None) -> str | None:
    """Why ``run`` (a row of ``ledger.queries.unfinished_runs``) is dead, or None."""
    now = now or datetime.now(UTC)
    here = host or socket.gethostname()
    if run.get("pid") and run.get("host") == here and not _alive(int(run["pid"])):
        return f"its process (pid {run['pid']} on {here}) is gone"
    last = run.get("heartbeat") or run.get("started")
    limit = settings().reap_after
    if last is not None and now - last > timedelta(seconds=limit):
        return f"no heartbeat for more than {limit:g} s (last {last.isoformat(timespec='seconds')})"
    return None


def _prefect_state(flow_run_id: str, api: str | None) -> str | None:
    """The flow run's state type in Prefect, None when it cannot be read (no API)."""
    if not api:
        return None
    try:
        from prefect.client.orchestration import get_client

        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(flow_run_id)
        return flow_run.state.type.value if flow_run.state else None
    except Exception as exc:
        log.debug("reaper: cannot read flow run %s: %s", flow_run_id, exc)
        return None


def _crash_in_prefect(flow_run_id: str, why: str) -> None:
    try:
        from prefect.client.orchestration import get_client
        from prefect.states import Crashed

        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Crashed(message=f"Orchestra's reaper: {why}"), force=True)
    except Exception as exc:
        log.warning("reaper: cannot mark flow run %s crashed in Prefect: %s", flow_run_id, exc)


def reap(store: Any = None, *, api: str | None = None, now: datetime | None = None) -> list[dict[str, str]]:
    """End every dead RUNNING run; ``[{flow_run_id, state, why}]`` of those ended. ``api``:
    the Prefect API to read and mark the flow runs on (``PREFECT_API_URL`` set in this
    process), None to follow the ledger alone."""
    from ledger import queries
    from orchestra.runtime import ledger

    store = store or ledger()
    ended = []
    for run in queries.unfinished_runs(store):
        why = is_dead(run, now=now)
        if why is None:
            continue
        prefect = _prefect_state(run["flow_run_id"], api)
        state = prefect if prefect in FINAL else "CRASHED"
        if prefect is not None and prefect not in FINAL:
            _crash_in_prefect(run["flow_run_id"], why)
        message = f"the run's process died: {why}" if state == "CRASHED" else f"{state.lower()} in Prefect; {why}"
        try:
            store.close_steps(run["flow_run_id"], "CANCELLED" if state == "CANCELLED" else "CRASHED", message)
            store.finish_run(flow_run_id=run["flow_run_id"], state=state, ended=now or datetime.now(UTC),
                             error=message)
        except Exception as exc:  # another reaper got there first, or the store is down
            log.debug("reaper: %s: %s", run["flow_run_id"], exc)
            continue
        log.warning("reaper: run %s of %s is %s: %s", run["flow_run_id"], run["workflow"], state, why)
        ended.append({"flow_run_id": run["flow_run_id"], "state": state, "why": why})
    return ended
