"""A task's status, as the ledger keeps it and every layer shows it (``orchestra.tasks`` decides it).

``todo`` (not run yet), ``running`` (its latest run is going), ``done`` (its latest run
completed and none of its children is open), ``blocked`` (its run completed, but a child
is still open), ``failed``, ``cancelled``. A task is *open* until it is ``done``.
"""

from __future__ import annotations

__all__ = ["TASK_STATUSES", "EXECUTABLE", "PROJECT_RUNS", "is_open"]

TASK_STATUSES = ("todo", "running", "done", "failed", "blocked", "cancelled")
# what `tasks execute` starts (again): never a running or blocked task; a done one runs again
EXECUTABLE = ("todo", "failed", "cancelled", "done")
# what a project's execution starts: what is left to do (a cancelled task stays cancelled)
PROJECT_RUNS = ("todo", "failed")


def is_open(status: str) -> bool:
    return status != "done"
