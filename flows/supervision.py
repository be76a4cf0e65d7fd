"""What watches a run while it goes: cancellation and the heartbeat.

A run cancelled through Prefect (the UI, ``prefect flow-run cancel``, the API,
``orchestra cancel``) has its flow run set to ``CANCELLING``; a watcher task reads the
flow run's state every ``cancel_poll`` seconds (``ORCHESTRA_CANCEL_POLL``, default 1)
and cancels the run's steps: in-flight provider calls are cancelled, no new step
starts. A caller in this process cancels with :func:`cancel` (Ctrl-C on
``orchestra run``); in a flow-run process of its own (a worker's) SIGTERM does the
same. The same task writes the run's heartbeat to the ledger every
``heartbeat`` seconds (``ORCHESTRA_HEARTBEAT``, default 10), so that a reaper can tell
a run whose process died (``orchestra.reaper``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import Any, AsyncIterator

from core.settings import settings

__all__ = ["Control", "watch", "cancel", "active"]

log = logging.getLogger("orchestra.supervision")

_active: dict[str, "Control"] = {}


class Control:
    """One run's steps task, and why it was cancelled (None: it was not)."""

    def __init__(self, flow_run_id: str):
        self.flow_run_id = flow_run_id
        self.task: asyncio.Task | None = None
        self.reason: str | None = None

    def cancel(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            log.warning("run %s: %s; cancelling its steps", self.flow_run_id, reason)
        if self.task is not None and not self.task.done():
            self.task.get_loop().call_soon_threadsafe(self.task.cancel)


def active() -> list[str]:
    """The flow-run ids of the runs of this process that are going."""
    return list(_active)


def cancel(reason: str, flow_run_id: str | None = None) -> int:
    """Cancel the runs of this process (one, or all); how many were asked."""
    controls = [_active[flow_run_id]] if flow_run_id in _active else list(_active.values()) if flow_run_id is None else []
    for control in controls:
        control.cancel(reason)
    return len(controls)


async def _cancelling(flow_run_id: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.objects import StateType

    async with get_client() as client:
        flow_run = await client.read_flow_run(flow_run_id)
    return flow_run.state is not None and flow_run.state.type in (StateType.CANCELLING, StateType.CANCELLED)


async def _watch(control: Control, ledger: Any) -> None:
    current = settings()
    poll, beat = current.cancel_poll, current.heartbeat
    last_beat = 0.0
    while True:
        now = time.monotonic()
        if ledger is not None and now - last_beat >= beat:
            with contextlib.suppress(Exception):  # the heartbeat is best effort
                ledger.heartbeat(control.flow_run_id)
            last_beat = now
        try:
            if await _cancelling(control.flow_run_id):
                control.cancel("cancelled through Prefect")
                return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the API is briefly unreachable: keep watching
            log.debug("run %s: cannot read its state: %s", control.flow_run_id, exc)
        await asyncio.sleep(poll)


def _on_sigterm(control: Control):
    """In a flow-run process of its own (a worker's, or ``orchestra.runs.start``'s, which
    set ``PREFECT__FLOW_RUN_ID``), SIGTERM is how the run is told to stop: the worker
    cancelling it, or a shutdown. Its steps are cancelled and the run ends CANCELLED
    with its report and ledger written, instead of the process dying mid-write."""
    import signal
    import threading

    if os.environ.get("PREFECT__FLOW_RUN_ID") != control.flow_run_id or \
            threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)
    try:
        loop.add_signal_handler(signal.SIGTERM, control.cancel, "stopped by SIGTERM (its worker cancelled it, "
                                                                 "or the process was shut down)")
    except (NotImplementedError, RuntimeError):
        return lambda: None

    def restore() -> None:
        loop.remove_signal_handler(signal.SIGTERM)
        signal.signal(signal.SIGTERM, previous)

    return restore


@contextlib.asynccontextmanager
async def watch(flow_run_id: str, ledger: Any = None) -> AsyncIterator[Control]:
    """Watch one run while the block runs: set ``control.task`` to the steps' task."""
    control = Control(flow_run_id)
    _active[flow_run_id] = control
    if ledger is not None:
        with contextlib.suppress(Exception):
            ledger.heartbeat(flow_run_id, pid=os.getpid(), host=socket.gethostname())
    watcher = asyncio.ensure_future(_watch(control, ledger))
    restore = _on_sigterm(control)
    try:
        yield control
    finally:
        restore()
        _active.pop(flow_run_id, None)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await watcher
