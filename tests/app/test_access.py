"""Roles, users and the audit log: the app layer's gate (orchestra.access, orchestra.users)
on a real SQLite ledger, and `orchestra users` / `orchestra audit` as a user runs them."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ledger import queries
from ledger.store import Store
from orchestra import access, users
from orchestra.access import Actor, Forbidden

ROOT = Path(__file__).resolve().parents[2]
ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]
OWNER = Actor("olga", "owner", via="cli")
VIEWER = Actor("vic", "viewer")
MEMBER = Actor("mia", "member")
ADMIN = Actor("ada", "admin")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_LOGIN_DELAY", "0")
    s = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield s
    s.close()


def test_roles_are_ordered_and_every_action_names_a_role():
    assert access.ROLES == ("viewer", "member", "admin", "owner")
    assert set(access.ACTIONS.values()) <= set(access.ROLES)
    assert not access.allowed(VIEWER, "run.start") and access.allowed(MEMBER, "run.start")
    assert not access.allowed(MEMBER, "agent.edit") and access.allowed(ADMIN, "agent.edit")
    assert access.allowed(ADMIN, "limits.set") and not access.allowed(ADMIN, "user.add")
    assert access.allowed(OWNER, "user.add") and not access.allowed(None, "run.start")
    with pytest.raises(ValueError, match="unknown action 'agent.explode'"):
        access.allowed(OWNER, "agent.explode")
    with pytest.raises(ValueError, match="role 'god'"):
        Actor("x", "god")
    assert access.cli_actor().role == "owner" and access.cli_actor().via == "cli"


def test_a_refused_write_is_audited_and_nothing_changes(store):
    changed = []
    with pytest.raises(Forbidden, match="vic is a viewer: agent.edit needs the admin role"):
        access.perform(VIEWER, "agent.edit", "reviewer", lambda: changed.append(1), store=store)
    assert changed == []
    (row,) = queries.audit(store)
    assert (row["actor"], row["role"], row["action"], row["target"], row["outcome"]) == (
        "vic", "viewer", "agent.edit", "reviewer", "refused")
    assert "needs the admin role" in row["detail"]


def test_perform_audits_before_and_after_redacted_and_failures(store):
    secret = "sk-proj-AuditSecret0123456789abc"
    result = access.perform(ADMIN, "limits.set", "openai", lambda: 42, before={"rpm": None},
                            after=lambda r: {"rpm": r, "note": f"key {secret}"}, store=store)
    assert result == 42

    def broken():
        raise OSError(f"disk full writing api_key={secret}")

    with pytest.raises(OSError):
        access.perform(ADMIN, "limits.set", "anthropic", broken, store=store)
    failed, ok = queries.audit(store)
    assert (ok["outcome"], ok["before"], ok["after"]["rpm"]) == ("ok", {"rpm": None}, 42)
    assert failed["outcome"] == "failed" and "disk full" in failed["detail"]
    assert secret not in json.dumps([ok, failed])
    assert [r["target"] for r in queries.audit(store, outcome="ok")] == ["openai"]
    assert len(queries.audit(store, action="limits.")) == 2 and queries.audit(store, action="limits") == []


def test_users_add_login_passwd_remove(store):
    users.add(OWNER, "ada", "admin", "correct horse", store=store)
    assert users.list_users(store=store) == [
        {"name": "ada", "role": "admin", "password": True, "created": users.list_users(store=store)[0]["created"],
         "updated": users.list_users(store=store)[0]["updated"]}]
    stored = queries.credentials(store, "ada")["password_hash"]
    assert stored.startswith("$argon2id$") and "correct horse" not in stored

    actor = users.authenticate("ada", "correct horse", store=store)
    assert actor == Actor("ada", "admin", via="password")
    for name, password in (("ada", "wrong horse"), ("nobody", "correct horse"), ("", "")):
        with pytest.raises(users.LoginFailed) as caught:
            users.authenticate(name, password, store=store)
        assert str(caught.value) == "wrong user name or password"

    users.passwd(OWNER, "ada", "battery staple", store=store)
    with pytest.raises(users.LoginFailed):
        users.authenticate("ada", "correct horse", store=store)
    assert users.authenticate("ada", "battery staple", store=store).role == "admin"
    users.set_role(OWNER, "ada", "member", store=store)
    assert users.authenticate("ada", "battery staple", store=store).role == "member"
    users.remove(OWNER, "ada", store=store)
    assert users.list_users(store=store) == []

    log = queries.audit(store, limit=None)
    assert [r["action"] for r in log if r["outcome"] == "ok"][::-1] == [
        "user.add", "login", "user.passwd", "login", "user.role", "login", "user.remove"]
    assert sum(r["action"] == "login" and r["outcome"] == "refused" for r in log) == 4
    assert "correct horse" not in json.dumps(log) and "battery staple" not in json.dumps(log)


def test_user_mistakes_are_clear_and_write_nothing(store):
    with pytest.raises(users.UserError, match="role 'boss'"):
        users.add(OWNER, "ada", "boss", "correct horse", store=store)
    with pytest.raises(users.UserError, match="at least 8 characters"):
        users.add(OWNER, "ada", "admin", "short", store=store)
    with pytest.raises(users.UserError, match="user name 'a b'"):
        users.add(OWNER, "a b", "admin", "correct horse", store=store)
    users.add(OWNER, "ada", "admin", "correct horse", store=store)
    with pytest.raises(users.UserError, match="user 'ada' already exists"):
        users.add(OWNER, "ada", "viewer", "correct horse", store=store)
    with pytest.raises(users.UserError, match="no user 'bob'"):
        users.passwd(OWNER, "bob", "correct horse", store=store)
    assert [u["role"] for u in users.list_users(store=store)] == ["admin"]
    with pytest.raises(Forbidden):  # an admin is not an owner
        users.add(ADMIN, "eve", "owner", "correct horse", store=store)
    assert [u["name"] for u in users.list_users(store=store)] == ["ada"]
    assert queries.audit(store, action="user.add", outcome="refused")[0]["actor"] == "ada"


def test_oidc_identities_take_the_role_of_their_user_or_the_setting(store, monkeypatch):
    users.add(OWNER, "ada@example.com", "admin", None, store=store)
    assert users.oidc_actor("ada@example.com", store=store) == Actor("ada@example.com", "admin", via="oidc")
    assert users.oidc_actor("bob@example.com", store=store) == Actor("bob@example.com", "viewer", via="oidc")
    monkeypatch.setenv("ORCHESTRA_OIDC_ROLE", "none")
    assert users.oidc_actor("bob@example.com", store=store) is None
    with pytest.raises(users.LoginFailed):  # an OIDC-only user has no password to log in with
        users.authenticate("ada@example.com", "", store=store)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(ORCHESTRA_HOME=str(tmp_path), ORCHESTRA_DB_URL=f"sqlite:///{tmp_path / 'ledger.db'}", COLUMNS="200")

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*ORCHESTRA, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=120, input=stdin)

    run.env = env
    return run


def test_users_and_audit_commands(cli):
    assert cli("users", "add", "ada", "--role", "admin", "--password-stdin", stdin="correct horse\n").returncode == 0
    proc = cli("users", "add", "ada", "--role", "admin", "--password-stdin", stdin="correct horse\n")
    assert proc.returncode == 2 and "user 'ada' already exists" in proc.stderr and "Traceback" not in proc.stderr
    proc = cli("users", "add", "bob", "--role", "king", "--password-stdin", stdin="correct horse\n")
    assert proc.returncode == 2 and "--role 'king'" in proc.stderr
    proc = cli("users", "add", "bob", "--role", "viewer", "--password-stdin", stdin="short\n")
    assert proc.returncode == 2 and "at least 8 characters" in proc.stderr
    proc = cli("users", "add", "bob", "--role", "viewer")  # no terminal: it says how instead of hanging
    assert proc.returncode == 2 and "--password-stdin" in proc.stderr
    assert cli("users", "passwd", "ada", "--password-stdin", stdin="battery staple\n").returncode == 0
    assert cli("users", "role", "ada", "owner").returncode == 0

    listed = json.loads(cli("users", "list", "--json").stdout)
    assert [(u["name"], u["role"], u["password"]) for u in listed] == [("ada", "owner", True)]
    row = next(line for line in cli("users", "list").stdout.splitlines() if "ada" in line)
    assert "password" in row and "True" not in row  # the table says how the user logs in
    log = json.loads(cli("audit", "--json").stdout)
    assert [(r["action"], r["outcome"], r["via"]) for r in log] == [
        ("user.role", "ok", "cli"), ("user.passwd", "ok", "cli"), ("user.add", "failed", "cli"),
        ("user.add", "ok", "cli")]  # the second `add ada` failed: audited, nothing changed
    assert log[0]["before"] == {"role": "admin"} and log[0]["after"] == {"role": "owner"}
    text = cli("audit").stdout
    assert "user.passwd" in text and "battery" not in text and "correct horse" not in text
    assert cli("users", "remove", "ada").returncode == 0
    proc = cli("users", "remove", "ada")
    assert proc.returncode == 2 and "no user 'ada'" in proc.stderr


def _listening(port: int) -> list[str]:
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(addr)
    return found


def test_dashboard_listens_on_every_interface_once_a_user_exists(cli):
    proc = cli("dashboard", "--host", "0.0.0.0", "--port", "1")
    assert proc.returncode == 2 and "no dashboard user exists" in proc.stderr
    assert cli("users", "add", "ada", "--role", "owner", "--password-stdin", stdin="correct horse\n").returncode == 0
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([*ORCHESTRA, "dashboard", "--host", "0.0.0.0", "--port", str(port)], cwd=ROOT,
                              env=cli.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _listening(port) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        assert "00000000" in _listening(port), _listening(port)  # 0.0.0.0
    finally:
        os.killpg(server.pid, 15)
        server.wait(30)


def test_a_session_token_keeps_a_login_until_it_expires_or_the_password_changes(store, tmp_path, monkeypatch):
    import base64

    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))
    users.add(OWNER, "ada", "admin", "correct horse", store=store)
    ada = users.authenticate("ada", "correct horse", store=store)
    token = users.session_token(ada, store=store)
    assert "correct horse" not in base64.urlsafe_b64decode(token).decode()
    assert users.session_actor(token, store=store) == ada
    users.set_role(OWNER, "ada", "viewer", store=store)
    assert users.session_actor(token, store=store).role == "viewer"  # the role of now
    assert users.session_actor(token, store=store, now=time.time() + users.SESSION_HOURS * 3600 + 1) is None
    name, expires, fingerprint, mac = base64.urlsafe_b64decode(token).decode().split("|")
    forged = base64.urlsafe_b64encode(f"ada|{int(expires) + 999}|{fingerprint}|{mac}".encode()).decode()
    assert users.session_actor(forged, store=store) is None and users.session_actor("garbage", store=store) is None
    users.passwd(OWNER, "ada", "battery staple", store=store)
    assert users.session_actor(token, store=store) is None  # a new password ends every session
    assert oct((tmp_path / "home" / "dashboard-session.key").stat().st_mode & 0o777) == "0o600"
