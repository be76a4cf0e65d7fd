"""`orchestra users add|list|passwd|role|remove` and `orchestra audit`.

The CLI acts as the owner (``orchestra.access.cli_actor``): whoever runs it on this
machine can read the ledger's database anyway. Every change is audited.
"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from orchestra.cli.common import emit, fail, ledger, out

ROLE_HELP = "viewer | member | admin | owner"


def register(app: typer.Typer) -> None:
    users_app = typer.Typer(no_args_is_help=True, help="The dashboard's users and their roles.")
    users_app.command("add")(users_add)
    users_app.command("list")(users_list)
    users_app.command("passwd")(users_passwd)
    users_app.command("role")(users_role)
    users_app.command("remove")(users_remove)
    app.add_typer(users_app, name="users")
    app.command("audit")(audit)


def _password(from_stdin: bool, prompt: str = "Password") -> str:
    if from_stdin:
        line = sys.stdin.readline()
        if not line:
            raise fail("--password-stdin: standard input is empty")
        return line.rstrip("\r\n")
    if not sys.stdin.isatty():
        raise fail("no terminal to prompt for the password: pass --password-stdin and pipe it in")
    return typer.prompt(prompt, hide_input=True, confirmation_prompt=True)


def _do(change) -> None:
    from orchestra.users import UserError

    try:
        change()
    except UserError as exc:
        raise fail(str(exc)) from None


def users_add(
    name: str = typer.Argument(..., help="User name (an e-mail for someone who logs in through OIDC)"),
    role: str = typer.Option(..., "--role", help=ROLE_HELP),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input"),
    no_password: bool = typer.Option(False, "--no-password", help="OIDC only: no local password"),
) -> None:
    """Add a dashboard user (the password is prompted for, or read with --password-stdin)."""
    from orchestra import users
    from orchestra.access import ROLES, cli_actor

    if role not in ROLES:
        raise fail(f"--role {role!r}: one of {ROLE_HELP}")
    store = ledger()
    password = None if no_password else _password(password_stdin)
    _do(lambda: users.add(cli_actor(), name, role, password, store=store))
    out.print(f"added {name} ({role})", markup=False)


def users_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """The dashboard's users (never their passwords)."""
    from orchestra import users

    rows = users.list_users(store=ledger())
    if not as_json:  # JSON keeps "password": true/false
        rows = [{**r, "login": "password" if r["password"] else "single sign-on"} for r in rows]
    emit(rows, as_json, "users", [("name", "name"), ("role", "role"), ("login", "logs in with"),
                                  ("created", "created"), ("updated", "updated")])


def users_passwd(
    name: str = typer.Argument(...),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input"),
) -> None:
    """Set a user's password."""
    from orchestra import users
    from orchestra.access import cli_actor

    store = ledger()
    password = _password(password_stdin, "New password")
    _do(lambda: users.passwd(cli_actor(), name, password, store=store))
    out.print(f"password of {name} changed", markup=False)


def users_role(name: str = typer.Argument(...), role: str = typer.Argument(..., help=ROLE_HELP)) -> None:
    """Change a user's role."""
    from orchestra import users
    from orchestra.access import cli_actor

    store = ledger()
    _do(lambda: users.set_role(cli_actor(), name, role, store=store))
    out.print(f"{name} is now {role}", markup=False)


def users_remove(name: str = typer.Argument(...)) -> None:
    """Remove a user."""
    from orchestra import users
    from orchestra.access import cli_actor

    store = ledger()
    _do(lambda: users.remove(cli_actor(), name, store=store))
    out.print(f"removed {name}", markup=False)


def audit(
    as_json: bool = typer.Option(False, "--json"),
    limit: int = typer.Option(100, "--limit", min=1),
    actor: Optional[str] = typer.Option(None, "--actor", help="Only this user's rows"),
    action: Optional[str] = typer.Option(None, "--action", help="An action (agent.edit) or a prefix (agent.)"),
    outcome: Optional[str] = typer.Option(None, "--outcome", help="ok | refused | failed"),
) -> None:
    """The audit log, newest first: who changed what, and what was refused."""
    from ledger import queries

    if outcome not in (None, "ok", "refused", "failed"):
        raise fail(f"--outcome {outcome!r}: one of ok, refused, failed")
    rows = queries.audit(ledger(), limit=limit, actor=actor, action=action, outcome=outcome)
    if as_json:
        emit(rows, True, "", [])
        return
    emit(rows, False, "audit", [("at", "at (UTC)"), ("actor", "actor"), ("role", "role"), ("via", "via"),
                                ("action", "action"), ("target", "target"), ("outcome", "outcome"),
                                ("detail", "detail")])
