"""Who is using the dashboard: the login gate every page passes first.

* Users exist in the ledger (``orchestra users add``): a person logs in with a name and
  password (``orchestra.users.authenticate``: a failed login waits and never says which
  part was wrong), or through the OIDC provider of Streamlit's ``[auth]`` secrets
  (``st.login``), whose identity takes its user's role (``orchestra.users.oidc_actor``).
* A password login lasts across reloads and new tabs for ``orchestra.users.SESSION_HOURS``:
  a signed cookie (``orchestra_session``: name, expiry, a fingerprint of the password
  hash, HMAC with a key in the home folder; never the password), re-checked on each new
  page load. Logging out, a new password or removing the user ends it.
* No user yet and the server listens on loopback only (``orchestra dashboard``'s
  default): the machine's user, as the owner, like the CLI. On any other address
  the page refuses until a user exists.

The role is read again on every rerun, so ``orchestra users role`` / ``remove`` take
effect at once. Pages ask :func:`actor` and ``orchestra.access.allowed`` what to show;
the service functions check the role again before any write.
"""

from __future__ import annotations

import getpass
import streamlit as st

from orchestra import users
from orchestra.access import Actor

__all__ = ["actor", "gate", "logout", "oidc_configured"]

_KEY = "actor"
COOKIE = "orchestra_session"


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


def _write_cookie() -> None:
    """Hand the browser the session cookie made at login (once), or the order to drop it."""
    token = st.session_state.pop("set_session_cookie", None)
    if token is None:
        return
    age = users.SESSION_HOURS * 3600 if token else 0
    st.html(f"<script>document.cookie = '{COOKIE}={token}; Max-Age={age}; Path=/; SameSite=Strict';</script>",
            unsafe_allow_javascript=True, width=1)


def logout() -> None:
    who = actor()
    st.session_state.pop(_KEY, None)
    st.session_state["set_session_cookie"] = ""  # the next run tells the browser to drop it
    st.session_state["logged_out"] = True
    if who is not None and who.via == "oidc":
        st.logout()
