"""Who is using the dashboard: the login gate every page passes first.

* Users exist in the ledger (``orchestra users add``): a person logs in with a name and
  password (``orchestra.users.authenticate``: a failed login waits and never says which
  part was wrong), or through the OIDC provider of Streamlit's ``[auth]`` secrets
  (``st.login``), whose identity takes its user's role (``orchestra.users.oidc_actor``).
* A password login lasts across reloads and new tabs for ``orchestra.users.SESSION_HOURS``:
  a signed cookie (``orchestra_session``: name, expiry, a fingerprint of the password
  hash, HMAC with a key in the home folder; never the password), re-checked on each new
  page load. Logging out, a new password or removing the user ends it. The cookie is
  ``HttpOnly`` (no script of the page can read it): the page hands the browser a
  single-use grant, valid for ``GRANT_SECONDS``, which the browser posts to
  :data:`SESSION_ROUTE`, a route of the dashboard's server (``dashboard/server.py``), whose
  answer sets the cookie; a logout asks the same route to clear it.
* No user yet and the server listens on loopback only (``orchestra dashboard``'s
  default): the machine's user, as the owner, like the CLI. On any other address
  the page refuses until a user exists.

The role is read again on every rerun, so ``orchestra users role`` / ``remove`` take
effect at once. Pages ask :func:`actor` and ``orchestra.access.allowed`` what to show;
the service functions check the role again before any write.
"""

from __future__ import annotations

import getpass
import json
import secrets
import threading
import time

import streamlit as st

from orchestra import users
from orchestra.access import Actor

__all__ = ["GRANT_SECONDS", "SESSION_ROUTE", "actor", "gate", "logout", "oidc_configured", "session_endpoint",
           "session_path"]

_KEY = "actor"
COOKIE = "orchestra_session"
SESSION_ROUTE = "_orchestra/session"
GRANT_SECONDS = 60.0
_grants: dict[str, tuple[str, float]] = {}  # grant -> (session token, deadline): this process's server
_grants_lock = threading.Lock()


def actor() -> Actor | None:
    """The logged-in actor of this session (after :func:`gate`)."""
    found = st.session_state.get(_KEY)
    return found if isinstance(found, Actor) else None


def oidc_configured() -> bool:
    """Whether Streamlit's secrets hold an ``[auth]`` section (``st.login`` can be used)."""
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def _loopback_only() -> bool:
    from orchestra.runtime import is_loopback

    return is_loopback(st.get_option("server.address") or "")


def _local_owner() -> Actor:
    try:
        name = getpass.getuser()
    except Exception:
        name = "local"
    return Actor(name, "owner", via="local")


def _refresh(current: Actor) -> Actor | None:
    """The session's actor as the ledger knows it now (role changes, removals)."""
    if current.via == "oidc":
        return users.oidc_actor(current.name)
    if current.via == "local":
        return None  # re-decided by the gate on every run
    from ledger import queries
    from orchestra.runtime import ledger

    row = queries.credentials(ledger(), current.name)
    return None if row is None or not row["password_hash"] else Actor(row["name"], row["role"], via="password")


def gate() -> Actor:
    """The actor of this run of the page, or a login form and ``st.stop()``."""
    oidc = oidc_configured()
    if oidc and getattr(st.user, "is_logged_in", False):
        identity = str(st.user.get("email") or st.user.get("sub") or "")
        who = users.oidc_actor(identity)
        if who is None:
            st.error(f"**{identity or 'This account'} has no access to this dashboard.** Ask its owner to add "
                     "you (`orchestra users add NAME --role viewer --no-password`).", icon=":material/block:")
            st.button("Log out", on_click=st.logout)
            st.stop()
        st.session_state[_KEY] = who
        return who
    current = actor()
    if current is None and not st.session_state.get("logged_out"):  # a reload, a new tab: the signed
        # session cookie of a password login (read from the page's request, so not after a logout)
        token = st.context.cookies.get(COOKIE)
        restored = users.session_actor(token) if isinstance(token, str) else None
        if restored is not None:
            st.session_state[_KEY] = current = restored
    if current is not None and current.via != "local":
        fresh = _refresh(current)
        if fresh is not None:
            st.session_state[_KEY] = fresh
            _write_cookie()
            return fresh
        st.session_state.pop(_KEY, None)
    if not users.any_users():
        if not oidc and _loopback_only():
            st.session_state[_KEY] = who = _local_owner()
            return who
        if not oidc:
            st.error("**No dashboard user exists yet**, and this server listens beyond loopback: add one first "
                     "(`orchestra users add NAME --role owner`), or run `orchestra dashboard` (127.0.0.1).",
                     icon=":material/lock:")
            st.stop()
    _login_form(oidc)
    st.stop()
    raise AssertionError("unreachable")  # pragma: no cover


def _login_form(oidc: bool) -> None:
    _write_cookie()  # after a logout: the browser drops its session cookie
    _, middle, _ = st.columns([1, 1.2, 1])
    with middle:
        st.title("Orchestra")
        st.caption("Log in to see the ledger, runs and agents.")
        if oidc:
            if st.button("Log in with single sign-on", type="primary", icon=":material/login:", width="stretch",
                         key="login_oidc"):
                st.login()  # to the provider, back at /oauth2callback, then st.user is the identity
        with st.form("login", border=True):
            name = st.text_input("User name", key="login_name", autocomplete="username")
            password = st.text_input("Password", type="password", key="login_password",
                                     autocomplete="current-password")
            submitted = st.form_submit_button("Log in", type="secondary" if oidc else "primary", width="stretch")
        if submitted:
            try:
                who = users.authenticate(name, password)
            except users.LoginFailed as exc:
                st.error(f"**Not logged in:** {exc}.", icon=":material/lock:")
            else:
                st.session_state[_KEY] = who
                st.session_state["set_session_cookie"] = users.session_token(who)
                st.session_state.pop("logged_out", None)
                st.session_state.pop("login_password", None)
                st.rerun()


def session_path() -> str:
    """Where the server's session route listens: :data:`SESSION_ROUTE` under ``server.baseUrlPath``."""
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}/{SESSION_ROUTE}" if base else f"/{SESSION_ROUTE}"


def _grant(token: str) -> str:
    """A single-use grant the browser trades for ``token``'s cookie within GRANT_SECONDS."""
    now = time.monotonic()
    grant = secrets.token_urlsafe(32)
    with _grants_lock:
        for stale in [g for g, (_, deadline) in _grants.items() if deadline < now]:
            del _grants[stale]
        _grants[grant] = (token, now + GRANT_SECONDS)
    return grant


def _redeem(grant: object) -> str | None:
    with _grants_lock:
        found = _grants.pop(grant, None) if isinstance(grant, str) else None
    return found[0] if found is not None and found[1] >= time.monotonic() else None


async def session_endpoint(request):
    """The server's session route (a Starlette endpoint): ``POST {"grant": ...}`` sets the
    session cookie of that grant (HttpOnly, SameSite=Strict; 400 for an unknown, used or
    expired grant), ``DELETE`` clears it."""
    from starlette.responses import JSONResponse, Response

    cookie = {"path": "/", "secure": request.url.scheme == "https", "httponly": True, "samesite": "strict"}
    if request.method == "DELETE":
        response = Response(status_code=204)
        response.delete_cookie(COOKIE, **cookie)
        return response
    try:
        grant = (await request.json()).get("grant")
    except (ValueError, AttributeError):
        grant = None
    token = _redeem(grant)
    if token is None:
        return JSONResponse({"error": "unknown, used or expired grant"}, status_code=400)
    response = Response(status_code=204)
    response.set_cookie(COOKIE, token, max_age=users.SESSION_HOURS * 3600, **cookie)
    return response


def _write_cookie() -> None:
    """Have the browser set the session cookie made at login (once), or drop it: a request
    to the server's session route, which answers with the cookie (HttpOnly)."""
    token = st.session_state.pop("set_session_cookie", None)
    if token is None:
        return
    path = json.dumps(session_path())
    if token:
        body = json.dumps(json.dumps({"grant": _grant(token)}))
        call = f"fetch({path}, {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: {body}}})"
    else:
        call = f"fetch({path}, {{method: 'DELETE'}})"
    st.html(f"<script>{call};</script>", unsafe_allow_javascript=True, width=1)


def logout() -> None:
    who = actor()
    st.session_state.pop(_KEY, None)
    st.session_state["set_session_cookie"] = ""  # the next run tells the browser to drop it
    st.session_state["logged_out"] = True
    if who is not None and who.via == "oidc":
        st.logout()
