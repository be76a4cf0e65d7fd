"""Agent files edited safely: a diff before saving, a version per save, restore and delete,
each checked against the actor's role and audited (``orchestra.access``).

    plan = agent_files.preview(agent, folder, overwrite=True)   # Plan: file, old, new, diff
    agent_files.save(actor, agent, folder, overwrite=True, expected=plan.old)
    agent_files.history("reviewer")                              # versions, newest first
    agent_files.restore(actor, "reviewer", 2, folder)
    agent_files.delete(actor, "reviewer", folder)

The files stay the source of truth (``agents/*.yaml``, read by the engine); the ledger
keeps each saved text (``agent_versions``) so any version can be restored, a deleted
agent included. A file's own formatting and comments are kept
(``agents.registry.agent_text``, ruamel.yaml round-trip). The ledger is written before
the file: with the database unreachable nothing is written at all.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.base import AgentConfig
from agents.registry import AGENTS_DIR, AgentFileError, agent_file, agent_text, write_agent_text
from ledger import queries
from orchestra import access
from orchestra.access import Actor

__all__ = ["AgentConflict", "AgentFileError", "Plan", "delete", "diff", "history", "preview", "restore", "save", "version_text"]


class AgentConflict(ValueError):
    """The file changed on disk after its diff was shown: nothing was written."""


@dataclass(frozen=True)
class Plan:
    name: str
    file: Path
    old: str | None  # the file's text now (None: a new agent)
    new: str
    diff: str  # unified diff, "" when nothing changes

    @property
    def changed(self) -> bool:
        return self.old != self.new


def _store(store: Any) -> Any:
    if store is not None:
        return store
    from orchestra.runtime import ledger

    return ledger()


def _folder(folder: str | Path | None) -> Path:
    return Path(folder) if folder else AGENTS_DIR


def diff(old: str | None, new: str | None, name: str) -> str:
    return "".join(difflib.unified_diff((old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True),
                                        fromfile=f"{name} (now)" if old is not None else "/dev/null",
                                        tofile=f"{name} (saved)" if new is not None else "/dev/null"))


def _fields(text: str | None, name: str) -> dict[str, Any] | None:
    """An agent file's fields, for the audit row's before/after."""
    if text is None:
        return None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {"text": text[:2000]}
    return {"name": name, **data} if isinstance(data, dict) else {"text": text[:2000]}


def preview(agent: AgentConfig, folder: str | Path | None = None, *, overwrite: bool = False) -> Plan:
    """What :func:`save` would write. AgentFileError naming the field when it cannot."""
    target, old, new = agent_text(agent, _folder(folder), overwrite=overwrite)
    return Plan(agent.name, target, old, new, diff(old, new, target.name))


def _baseline(store: Any, name: str, file: Path, text: str | None) -> None:
    """The first time Orchestra saves over an agent, the file as it was becomes version 1."""
    if text is not None and not queries.agent_versions(store, name):
        store.add_agent_version(agent=name, file=file.name, text=text, action="import", actor="(file)")


def save(actor: Actor, agent: AgentConfig, folder: str | Path | None = None, *, overwrite: bool = False,
         expected: str | None = None, store: Any = None) -> Plan:
    """Create or edit an agent file (``agent.create`` / ``agent.edit``). With ``expected``
    (the old text the person saw in the diff), a file changed since is an AgentConflict."""
    store = _store(store)
    folder = _folder(folder)
    existing = agent_file(agent.name, folder)
    action = "agent.edit" if existing is not None else "agent.create"
    access.require(actor, action, agent.name, store=store)
    plan = preview(agent, folder, overwrite=overwrite)
    if expected is not None and plan.old != expected:
        raise AgentConflict(f"{plan.file.name} changed on disk since its diff was shown: review the changes again")

    def change() -> Plan:
        _baseline(store, agent.name, plan.file, plan.old)
        write_agent_text(plan.file, plan.new)
        store.add_agent_version(agent=agent.name, file=plan.file.name, text=plan.new,
                                action="create" if plan.old is None else "edit", actor=actor.name)
        return plan

    return access.perform(actor, action, agent.name, change, before=_fields(plan.old, agent.name),
                          after=_fields(plan.new, agent.name), store=store)


def history(name: str, *, store: Any = None) -> list[dict[str, Any]]:
    """The saved versions of an agent, newest first (``ledger.queries.agent_versions``)."""
    return queries.agent_versions(_store(store), name)


def version_text(name: str, version: int, *, store: Any = None) -> str | None:
    found = queries.agent_version(_store(store), name, version)
    return None if found is None else found["text"]


def restore(actor: Actor, name: str, version: int, folder: str | Path | None = None, *,
            store: Any = None) -> Plan:
    """Write version ``version`` of agent ``name`` back to its file (a deleted agent
    comes back: its ``delete`` version holds the text it had); the restore is a new version. ValueError naming what is missing."""
    store = _store(store)
    folder = _folder(folder)
    access.require(actor, "agent.restore", name, store=store)
    found = queries.agent_version(store, name, version)
    if found is None or found["text"] is None:
        raise ValueError(f"agent {name!r} has no saved version {version} to restore")
    existing = agent_file(name, folder)
    target = existing or folder / found["file"]
    old = existing.read_text(encoding="utf-8") if existing is not None else None
    plan = Plan(name, target, old, found["text"], diff(old, found["text"], target.name))

    def change() -> Plan:
        _baseline(store, name, target, old)
        write_agent_text(target, plan.new)
        store.add_agent_version(agent=name, file=target.name, text=plan.new, action="restore", actor=actor.name)
        return plan

    return access.perform(actor, "agent.restore", name, change, before=_fields(old, name),
                          after={"version": version, **(_fields(plan.new, name) or {})}, store=store)


def delete(actor: Actor, name: str, folder: str | Path | None = None, *, store: Any = None) -> Path:
    """Remove an agent's file (``agent.delete``); its last text stays a version that
    :func:`restore` brings back. ValueError when there is no such agent."""
    store = _store(store)
    folder = _folder(folder)
    access.require(actor, "agent.delete", name, store=store)
    path = agent_file(name, folder)
    if path is None:
        raise ValueError(f"no agent named {name!r} in {folder}")
    text = path.read_text(encoding="utf-8")

    def change() -> Path:
        _baseline(store, name, path, text)
        store.add_agent_version(agent=name, file=path.name, text=text, action="delete", actor=actor.name)
        path.unlink()
        return path

    return access.perform(actor, "agent.delete", name, change, before=_fields(text, name), store=store)

