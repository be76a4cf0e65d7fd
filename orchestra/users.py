"""The dashboard's users: local accounts with argon2-hashed passwords, and logins.

    users.add(actor, "ada", "admin", password)    # owner only; audited
    users.passwd(actor, "ada", new_password)
    users.remove(actor, "ada")
    users.authenticate("ada", password)          # an access.Actor, or LoginFailed after a delay
    users.oidc_actor("ada@example.com")          # the role of an identity from st.login

Passwords are hashed with argon2id (argon2-cffi's ``PasswordHasher`` defaults) and
never stored, logged or audited; only the hash is kept in the ledger. A failed login
waits ``login_delay`` seconds (``ORCHESTRA_LOGIN_DELAY``) and says only "wrong user
name or password", whichever part was wrong (an unknown name costs a hash check too).
"""

from __future__ import annotations

import re
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.settings import settings
from ledger import queries
from ledger.store import UserExists
from orchestra import access
from orchestra.access import ROLES, Actor

__all__ = ["LoginFailed", "UserError", "add", "any_users", "authenticate", "list_users", "oidc_actor", "passwd",
           "remove", "session_actor", "session_token", "set_role", "MIN_PASSWORD", "SESSION_HOURS"]

MIN_PASSWORD = 8
SESSION_HOURS = 12  # a dashboard login lasts this long in its browser
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,199}$")
_HASHER = PasswordHasher()
_DUMMY = _HASHER.hash("not-a-password: unknown names take as long as known ones")
LOGIN_FAILED = "wrong user name or password"


class UserError(ValueError):
    """A user operation that cannot be done as asked (the message names the argument)."""


class LoginFailed(PermissionError):
    """A login that did not succeed; the message never says which part was wrong."""

    def __init__(self) -> None:
        super().__init__(LOGIN_FAILED)


def _store(store: Any) -> Any:
    if store is not None:
        return store
    from orchestra.runtime import ledger

    return ledger()


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise UserError(f"user name {name!r}: use 1-200 letters, digits and . _ @ + - (starting with a letter "
                        "or digit)")
    return name


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
    return role


def _check_password(password: str | None) -> str:
    if password is None or len(password) < MIN_PASSWORD:
        raise UserError(f"a password needs at least {MIN_PASSWORD} characters")
    if password != password.strip() or "\n" in password:
        raise UserError("password: no leading or trailing spaces, no line breaks")
    return password


def any_users(store: Any = None) -> bool:
    return queries.user_count(_store(store)) > 0


def list_users(store: Any = None) -> list[dict[str, Any]]:
    """name, role, password (set or not), created, updated: never a hash."""
    return queries.users(_store(store))


def add(actor: Actor, name: str, role: str, password: str | None, *, store: Any = None) -> dict[str, Any]:
    """Add a user (owner only). ``password=None`` makes an OIDC-only user (they log in
    through the identity provider, under the name the provider gives as their e-mail)."""
    store = _store(store)
    name, role = _check_name(name), _check_role(role)
    hashed = None if password is None else _HASHER.hash(_check_password(password))

    def change() -> None:
        try:
            store.add_user(name, role, hashed)
        except UserExists:
            raise UserError(f"user {name!r} already exists (change it with `orchestra users passwd` or "
                            "remove it first)") from None

    access.perform(actor, "user.add", name, change, after={"name": name, "role": role,
                                                           "password": "set" if hashed else "none"}, store=store)
    return {"name": name, "role": role}


def _existing(store: Any, name: str) -> dict[str, Any]:
    row = queries.credentials(store, name)
    if row is None:
        raise UserError(f"no user {name!r} (see `orchestra users list`)")
    return row


def passwd(actor: Actor, name: str, password: str, *, store: Any = None) -> None:
    store = _store(store)
    name = _check_name(name)
    hashed = _HASHER.hash(_check_password(password))
    access.require(actor, "user.passwd", name, store=store)
    _existing(store, name)
    access.perform(actor, "user.passwd", name, lambda: store.update_user(name, password_hash=hashed),
                   after={"password": "changed"}, store=store)


def set_role(actor: Actor, name: str, role: str, *, store: Any = None) -> None:
    store = _store(store)
    name, role = _check_name(name), _check_role(role)
    access.require(actor, "user.role", name, store=store)
    old = _existing(store, name)
    access.perform(actor, "user.role", name, lambda: store.update_user(name, role=role),
                   before={"role": old["role"]}, after={"role": role}, store=store)


def remove(actor: Actor, name: str, *, store: Any = None) -> None:
    store = _store(store)
    name = _check_name(name)
    access.require(actor, "user.remove", name, store=store)
    old = _existing(store, name)
    access.perform(actor, "user.remove", name, lambda: store.remove_user(name),
                   before={"name": name, "role": old["role"]}, store=store)


def authenticate(name: str, password: str, *, store: Any = None) -> Actor:
    """The user's :class:`access.Actor` when the password is theirs; else, after
    ``login_delay`` seconds, :class:`LoginFailed`. Both outcomes are audited."""
    store = _store(store)
    name = (name or "").strip()
    row = queries.credentials(store, name) if name else None
    stored = row["password_hash"] if row and row["password_hash"] else None
    try:
        ok = _HASHER.verify(stored or _DUMMY, password or "") and stored is not None
    except (VerificationError, InvalidHashError):
        ok = False
    if not ok:
        role = row["role"] if row else "viewer"
        access.audit(Actor(name[:200] or "(empty)", role), "login", name[:200] or None, outcome="refused",
                     detail=LOGIN_FAILED, store=store)
        time.sleep(settings().login_delay)
        raise LoginFailed()
    actor = Actor(row["name"], row["role"], via="password")
    if _HASHER.check_needs_rehash(stored):
        store.update_user(row["name"], password_hash=_HASHER.hash(password))
    access.audit(actor, "login", actor.name, store=store)
    return actor


# --------------------------------------------------------------------------- dashboard sessions


def _session_key() -> bytes:
    """The dashboard's session-signing key: 32 random bytes in ``<home>/dashboard-session.key``
    (0600), made on first use. Deleting the file logs every browser out."""
    import os
    import secrets

    from orchestra.runtime import orchestra_home

    path = orchestra_home() / "dashboard-session.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key.hex())
        return key


def _mac(payload: str) -> str:
    import hashlib
    import hmac

    return hmac.new(_session_key(), payload.encode(), hashlib.sha256).hexdigest()


def session_token(actor: Actor, *, store: Any = None, now: float | None = None) -> str:
    """A signed token that keeps ``actor`` (a password login) logged in across reloads for
    SESSION_HOURS: name, expiry and a fingerprint of the password hash (a new password
    ends every session), HMAC-SHA256 with the key in the home folder. Never the password."""
    import base64
    import hashlib

    row = queries.credentials(_store(store), actor.name) or {}
    expires = int((now or time.time()) + SESSION_HOURS * 3600)
    fingerprint = hashlib.sha256((row.get("password_hash") or "").encode()).hexdigest()[:16]
    payload = f"{actor.name}|{expires}|{fingerprint}"
    return base64.urlsafe_b64encode(f"{payload}|{_mac(payload)}".encode()).decode()


def session_actor(token: str | None, *, store: Any = None, now: float | None = None) -> Actor | None:
    """The actor a :func:`session_token` stands for, with the role the ledger gives them
    now; None for a token that is forged, expired, of a removed user or an old password."""
    import base64
    import binascii
    import hashlib
    import hmac

    if not token:
        return None
    try:
        name, expires, fingerprint, mac = base64.urlsafe_b64decode(token.encode()).decode().split("|")
        expired = int(expires) < (now or time.time())
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    if expired or not hmac.compare_digest(mac, _mac(f"{name}|{expires}|{fingerprint}")):
        return None
    row = queries.credentials(_store(store), name)
    if row is None or not row["password_hash"]:
        return None
    if hashlib.sha256(row["password_hash"].encode()).hexdigest()[:16] != fingerprint:
        return None
    return Actor(row["name"], row["role"], via="password")


def oidc_actor(identity: str, *, store: Any = None) -> Actor | None:
    """The actor for an identity the OIDC provider vouched for (its e-mail, else its
    subject): the user of that name's role, else the ``oidc_role`` setting
    (``ORCHESTRA_OIDC_ROLE``, default viewer); None when that setting is ``none``."""
    store = _store(store)
    row = queries.credentials(store, identity) if identity else None
    if row is not None:
        return Actor(row["name"], row["role"], via="oidc")
    role = settings().oidc_role
    return None if role == "none" or not identity else Actor(identity[:200], role, via="oidc")
