"""The write path of projects and tasks (revision 0008), mixed into :class:`ledger.store.Store`;
what they hold is read through ``ledger.queries`` (``projects``, ``tasks``, ``task_history``, ...).

Every write is one transaction, and every change of a task writes its ``task_history``
rows in the same transaction (who or what, when, the field, from, to, why), so the
history never misses a change and a failed write leaves nothing behind. Free text,
inputs and definitions are redacted before they are written. The app's one door to
these methods is ``orchestra.tasks`` (which decides what may change); nothing here
decides a status, it only refuses one ``core.tasks`` does not know.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError

from core.redact import redact
from core.tasks import TASK_STATUSES
from ledger.models import Project, Task, TaskHistory, TaskRun

UTC = timezone.utc
_PROJECTS = Project.__table__
_TASKS = Task.__table__
_HISTORY = TaskHistory.__table__
_TASK_RUNS = TaskRun.__table__
# the fields of a task that a change may set (id, project, created are fixed at creation)
TASK_FIELDS = frozenset({"parent_id", "title", "description", "status", "assignee", "labels", "workflow", "inputs",
                         "definition", "plan", "depends_on"})
_TEXT_FIELDS = ("title", "description", "assignee", "workflow")
_JSON_FIELDS = ("labels", "inputs", "definition", "plan", "depends_on")
MAX_HISTORY_CHARS = 2_000


class TaskConflict(Exception):
    """A task was not in a status the change expected (another writer came first)."""

    def __init__(self, task_id: int, status: str | None):
        self.task_id, self.status = task_id, status
        super().__init__(f"task {task_id} is {status or 'gone'}")


def _clean(value: Any) -> Any:
    """Redacted and JSON-able (strings, lists, dicts of them)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return json.loads(json.dumps(value, default=str))


def _shown(value: Any) -> str | None:
    """A value as the history keeps it: text, JSON for the rest, clipped."""
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    return text if len(text) <= MAX_HISTORY_CHARS else text[:MAX_HISTORY_CHARS] + "..."


def _now(at: datetime | None) -> datetime:
    return (at or datetime.now(UTC)).astimezone(UTC)


class TaskStore:
    """Methods of :class:`ledger.store.Store` for the 0008 tables."""

    # ------------------------------------------------------------ projects

    def create_project(self, name: str, description: str | None = None, *, at: datetime | None = None) -> int:
        """A new project; its id. ValueError naming it when a project of that name exists."""
        at = _now(at)
        try:
            with self._write() as conn:
                return int(conn.execute(insert(_PROJECTS).values(
                    name=name, description=redact(description) if description else None, created=at,
                    updated=at)).inserted_primary_key[0])
        except IntegrityError:
            raise ValueError(f"a project named {name!r} exists already") from None

    # ------------------------------------------------------------ tasks

    def create_task(self, values: Mapping[str, Any], *, actor: str, at: datetime | None = None,
                    reason: str | None = None) -> int:
        """Insert a task (status ``todo`` unless given) and its first history row, in one
        transaction; its id. ``values``: project_id and the fields of TASK_FIELDS."""
        unknown = set(values) - TASK_FIELDS - {"project_id"}
        if unknown:
            raise TypeError(f"create_task: unknown fields {sorted(unknown)}")
        row = self._task_values(values)
        row.setdefault("status", "todo")
        at = _now(at)
        with self._write() as conn:
            task_id = int(conn.execute(insert(_TASKS).values(**row, created=at, updated=at)).inserted_primary_key[0])
            conn.execute(insert(_HISTORY).values(task_id=task_id, at=at, actor=actor, field="created", old=None,
                                                 new=_shown(row["status"]), reason=redact(reason) if reason else None))
        return task_id

    def update_task(self, task_id: int, changes: Mapping[str, Any], *, actor: str, reason: str | None = None,
                    expect_status: Collection[str] | None = None, add_run: str | None = None,
                    at: datetime | None = None) -> dict[str, tuple[Any, Any]]:
        """Change a task in one transaction: the fields that differ, one history row each
        (and ``add_run``, a flow run that now executes it, in ``task_runs``). Returns the
        changes made, ``{field: (old, new)}``. With ``expect_status``, the change is made
        only if the task's status is one of them (compare-and-set): TaskConflict otherwise.
        KeyError for an unknown task."""
        unknown = set(changes) - TASK_FIELDS
        if unknown:
            raise TypeError(f"update_task: unknown fields {sorted(unknown)}")
        new = self._task_values(changes)
        at = _now(at)
        with self._write() as conn:
            current = conn.execute(select(_TASKS).where(_TASKS.c.id == int(task_id))).mappings().first()
            if current is None:
                raise KeyError(f"no task {task_id}")
            if expect_status is not None and current["status"] not in expect_status:
                raise TaskConflict(int(task_id), current["status"])
            made = {f: (current[f], v) for f, v in new.items() if current[f] != v}
            if made:
                conn.execute(update(_TASKS).where(_TASKS.c.id == int(task_id))
                             .values(**{f: v for f, (_, v) in made.items()}, updated=at))
                conn.execute(insert(_HISTORY), [
                    {"task_id": int(task_id), "at": at, "actor": actor, "field": f, "old": _shown(old),
                     "new": _shown(value), "reason": redact(reason) if reason else None}
                    for f, (old, value) in made.items()])
            if add_run is not None:
                conn.execute(insert(_TASK_RUNS).values(task_id=int(task_id), flow_run_id=add_run, actor=actor,
                                                       created=at))
        return made

    @staticmethod
    def _task_values(values: Mapping[str, Any]) -> dict[str, Any]:
        row = dict(values)
        if "status" in row and row["status"] not in TASK_STATUSES:
            raise ValueError(f"task status must be one of {', '.join(TASK_STATUSES)}, got {row['status']!r}")
        for f in _TEXT_FIELDS:
            if isinstance(row.get(f), str):
                row[f] = redact(row[f])
        for f in _JSON_FIELDS:
            if row.get(f) is not None:
                row[f] = _clean(row[f])
        return row
