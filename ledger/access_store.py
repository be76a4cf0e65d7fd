"""The write path of the access tables (revision 0010), mixed into :class:`ledger.store.Store`;
what they hold is read through ``ledger.queries`` (``users``, ``audit``, ``agent_versions``).

* users: a name, a role and an argon2 hash made by the app layer (``orchestra.users``);
  this module never sees a password;
* audit: one row per change or refused change; ``before``/``after`` are redacted
  (``core.redact``) and clipped here, whatever the caller passes;
* agent versions: the whole text of an agent file at each save, numbered per agent.

Which role may do what is not decided here: ``orchestra.access`` decides, then writes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from core.redact import redact
from ledger.models import AgentVersion, AuditEntry, User

UTC = timezone.utc
MAX_AUDIT_JSON = 50_000
MAX_AGENT_TEXT = 200_000
_USERS = User.__table__
_AUDIT = AuditEntry.__table__
_VERSIONS = AgentVersion.__table__


class UserExists(ValueError):
    """``add_user`` of a name that is taken."""


def _clean(value: Any) -> Any:
    """A before/after value as stored: JSON, every string redacted, at most MAX_AUDIT_JSON."""
    if value is None:
        return None

    def walk(v: Any) -> Any:
        if isinstance(v, str):
            return redact(v)
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return v

    clean = walk(json.loads(json.dumps(value, default=str)))
    dumped = json.dumps(clean)
    if len(dumped) > MAX_AUDIT_JSON:
        return {"clipped": dumped[:MAX_AUDIT_JSON] + f"... [{len(dumped) - MAX_AUDIT_JSON} chars truncated]"}
    return clean


class AccessStore:
    """Methods of :class:`ledger.store.Store` for the 0010 tables."""

    # ------------------------------------------------------------ users

    def add_user(self, name: str, role: str, password_hash: str | None) -> None:
        """Insert a user; :class:`UserExists` when the name is taken."""
        now = datetime.now(UTC)
        try:
            with self._write() as conn:
                if conn.execute(select(_USERS.c.name).where(_USERS.c.name == name)).first():
                    raise UserExists(f"user {name!r} already exists")
                conn.execute(insert(_USERS).values(name=name, role=role, password_hash=password_hash,
                                                   created=now, updated=now))
        except IntegrityError:  # a concurrent add of the same name
            raise UserExists(f"user {name!r} already exists") from None

    def update_user(self, name: str, *, role: str | None = None, password_hash: str | None = None) -> bool:
        """Change a user's role and/or hash; False when there is no such user."""
        values: dict[str, Any] = {"updated": datetime.now(UTC)}
        if role is not None:
            values["role"] = role
        if password_hash is not None:
            values["password_hash"] = password_hash
        with self._write() as conn:
            return conn.execute(update(_USERS).where(_USERS.c.name == name).values(**values)).rowcount == 1

    def remove_user(self, name: str) -> bool:
        with self._write() as conn:
            return conn.execute(delete(_USERS).where(_USERS.c.name == name)).rowcount == 1

    # ------------------------------------------------------------ audit

    def record_audit(self, *, actor: str, role: str, via: str, action: str, outcome: str,
                     target: str | None = None, before: Any = None, after: Any = None,
                     detail: str | None = None, at: datetime | None = None) -> int:
        """One audit row, written at once (not queued): a change is not done until it is audited."""
        with self._write() as conn:
            result = conn.execute(insert(_AUDIT).values(
                at=at or datetime.now(UTC), actor=actor, role=role, via=via, action=action,
                target=redact(target)[:400] if target else None, outcome=outcome,
                before=_clean(before), after=_clean(after),
                detail=redact(detail)[:2000] if detail else None,
            ))
            return int(result.inserted_primary_key[0])

    # ------------------------------------------------------------ agent versions

    def add_agent_version(self, *, agent: str, file: str, text: str | None, action: str, actor: str) -> int:
        """Keep one version of an agent file (its whole text; None for a deletion of a file
        that could not be read); returns its number (1, 2, ... per agent)."""
        clipped = None if text is None else text[:MAX_AGENT_TEXT]
        for _ in range(5):  # a concurrent save took the number: take the next one
            try:
                with self._write() as conn:
                    last = conn.execute(select(func.max(_VERSIONS.c.version))
                                        .where(_VERSIONS.c.agent == agent)).scalar()
                    version = int(last or 0) + 1
                    conn.execute(insert(_VERSIONS).values(agent=agent, version=version, action=action, file=file,
                                                          text=clipped, actor=actor, created=datetime.now(UTC)))
                return version
            except IntegrityError:
                continue
        raise RuntimeError(f"could not number a new version of agent {agent!r}")
