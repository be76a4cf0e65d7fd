"""Who may change what, and the audit log of every change (the app layer's one gate).

    from orchestra import access

    actor = access.Actor("ada", "admin", via="password")    # the dashboard's logged-in user
    actor = access.cli_actor()                                # the machine's user: the owner
    access.require(actor, "run.start", target="hello")        # Forbidden (audited) when not allowed
    result = access.perform(actor, "agent.edit", "reviewer", lambda: write(...),
                            before=old, after=lambda result: new)   # require, change, audit

Roles are ordered: ``viewer`` < ``member`` < ``admin`` < ``owner``; an action needs the
role in :data:`ACTIONS` or a higher one. A viewer reads; a member also runs workflows
(start, approve, cancel) and tasks; an admin also edits agents, limits and
configuration; an owner also manages users.

Every write goes through :func:`perform` (or :func:`require` then :func:`audit`): one
``audit`` row in the ledger per change — who, when, what, before and after (redacted
by the ledger) — and one per refused or failed change. The dashboard's pages and the
CLI call the service functions built on this (``orchestra.users``,
``orchestra.agent_files``, ``orchestra.actions``); nothing writes around them.
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from core.redact import redact

__all__ = ["ACTIONS", "ROLES", "Actor", "Forbidden", "allowed", "audit", "cli_actor", "mcp_actor", "perform",
           "require", "role_at_least"]

ROLES = ("viewer", "member", "admin", "owner")

# action -> the least role that may do it (a new kind of write adds its action here).
ACTIONS: dict[str, str] = {
    "run.start": "member",
    "run.approve": "member",
    "run.cancel": "member",
    "project.create": "member",
    "project.execute": "member",
    "task.create": "member",
    "task.update": "member",
    "task.plan": "member",
    "task.execute": "member",
    "task.cancel": "member",
    "agent.create": "admin",
    "agent.edit": "admin",
    "agent.delete": "admin",
    "agent.restore": "admin",
    "limits.set": "admin",
    "config.edit": "admin",
    "user.add": "owner",
    "user.passwd": "owner",
    "user.role": "owner",
    "user.remove": "owner",
}
VIA = ("cli", "mcp", "password", "oidc", "local")
T = TypeVar("T")


@dataclass(frozen=True)
class Actor:
    """Who acts: a user name, their role and how they were identified (``via``: ``cli``,
    ``mcp``, ``password``, ``oidc``, or ``local``: the dashboard on loopback before any user
    exists)."""

    name: str
    role: str
    via: str = "password"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {', '.join(ROLES)}")
        if self.via not in VIA:
            raise ValueError(f"via {self.via!r} is not one of {', '.join(VIA)}")

    def __str__(self) -> str:
        return f"{self.name} ({self.role})"


class Forbidden(PermissionError):
    """The actor's role may not do the action; the refusal is already in the audit log."""

    def __init__(self, actor: Actor, action: str, needed: str):
        self.actor, self.action, self.needed = actor, action, needed
        super().__init__(f"{actor.name} is a {actor.role}: {action} needs the {needed} role or higher")


def cli_actor() -> Actor:
    """The machine's user running the CLI: the owner (whoever can run `orchestra` here can
    read the ledger's database and the agent files anyway)."""
    try:
        name = getpass.getuser()
    except Exception:  # no user name in the environment (a bare container)
        name = "cli"
    return Actor(name, "owner", via="cli")


def mcp_actor() -> Actor:
    """Whoever reaches ``orchestra mcp``: its stdio client is a process of the machine's user,
    and over HTTP it listens on loopback, or elsewhere only behind ``ORCHESTRA_MCP_TOKEN``
    (whoever holds the token): the owner, named as the machine's user, via ``mcp``."""
    return Actor(cli_actor().name, "owner", via="mcp")


def role_at_least(role: str, needed: str) -> bool:
    return ROLES.index(role) >= ROLES.index(needed)


def _needed(action: str) -> str:
    try:
        return ACTIONS[action]
    except KeyError:
        raise ValueError(f"unknown action {action!r} (known: {', '.join(sorted(ACTIONS))})") from None


def allowed(actor: Actor | None, action: str) -> bool:
    """Whether ``actor`` may do ``action`` (pages use it to show or hide a control)."""
    needed = _needed(action)
    return actor is not None and role_at_least(actor.role, needed)


def _store(store: Any) -> Any:
    if store is not None:
        return store
    from orchestra.runtime import ledger

    return ledger()


def audit(actor: Actor, action: str, target: str | None = None, *, outcome: str = "ok", before: Any = None,
          after: Any = None, detail: str | None = None, store: Any = None) -> int:
    """Write one audit row (the ledger redacts ``before``, ``after`` and ``detail``); its id."""
    if outcome not in ("ok", "refused", "failed"):
        raise ValueError(f"outcome {outcome!r} is not ok, refused or failed")
    return _store(store).record_audit(actor=actor.name, role=actor.role, via=actor.via, action=action,
                                      target=target, outcome=outcome, before=before, after=after, detail=detail)


def require(actor: Actor, action: str, target: str | None = None, *, store: Any = None) -> None:
    """Raise :class:`Forbidden` unless ``actor`` may do ``action``; a refusal is audited."""
    needed = _needed(action)
    if role_at_least(actor.role, needed):
        return
    refusal = Forbidden(actor, action, needed)
    audit(actor, action, target, outcome="refused", detail=str(refusal), store=store)
    raise refusal


def perform(actor: Actor, action: str, target: str | None, change: Callable[[], T], *, before: Any = None,
            after: Any = None, store: Any = None) -> T:
    """Check the role, make the change, audit it; the change's result.

    ``after`` is a value or a function of the change's result. A change that raises is
    audited as ``failed`` (with its one-line, redacted message) and the exception goes on."""
    require(actor, action, target, store=store)
    try:
        result = change()
    except Exception as exc:
        message = redact(str(exc) or type(exc).__name__).strip().splitlines()
        audit(actor, action, target, outcome="failed", before=before, detail=message[0] if message else None,
              store=store)
        raise
    audit(actor, action, target, before=before, after=after(result) if callable(after) else after, store=store)
    return result
