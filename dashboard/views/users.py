"""Users (owners): who may log in to the dashboard and with which role; add a user, change
a user's role or password, remove one. Every change goes through ``orchestra.users`` (the
role checked again, audited), as ``orchestra users`` does. An owner's own user is not
offered for a change here: another owner or the CLI changes it, so nobody locks
themselves out."""

from collections.abc import Callable

import streamlit as st

from dashboard import auth, ui
from dashboard import data as dd
from orchestra import access, users
from orchestra.access import ROLES

st.title("Users")
st.caption("Who may log in, and what their role allows: viewers read, members also run workflows and tasks, "
           "admins also edit agents and limits and read the audit log, owners also manage users. "
           "`orchestra users` on the server does the same; every change is in the audit log.")
actor = auth.actor()
store = dd.store_for()
rows = dd.user_rows(store)

if rows:
    ui.table(rows, ["name", "role", "login", "created", "updated"], key="users_table",
             column_config={"name": st.column_config.TextColumn("User"),
                            "role": st.column_config.TextColumn("Role"),
                            "login": st.column_config.TextColumn("Logs in with"),
                            "created": st.column_config.DatetimeColumn("Added (UTC)", format="YYYY-MM-DD HH:mm"),
                            "updated": st.column_config.DatetimeColumn("Changed (UTC)", format="YYYY-MM-DD HH:mm")})
else:
    st.info("No user yet: the dashboard is open to this machine's user, as owner, on 127.0.0.1 only. Once the "
            "first user exists every page asks for a login, so add yourself as an owner first.",
            icon=":material/group:")

done = st.session_state.pop("users_done", None)
if done:
    st.success(done, icon=":material/check:")


def attempt(what: str, change: Callable[[], object], message: str) -> None:
    """One change through orchestra.users: a refusal or bad input is a message and nothing
    is written; done, the page reruns with ``message``."""
    try:
        change()
    except (users.UserError, access.Forbidden) as exc:
        st.error(f"**{what}:** {exc}", icon=":material/error:")
    else:
        st.session_state["users_done"] = message
        st.rerun()


if not access.allowed(actor, "user.add"):
    st.caption(f"You are a {actor.role if actor else 'visitor'}: managing users needs the owner role.")
    st.stop()

st.subheader("Add a user")
with st.form("user_add", border=True, clear_on_submit=True):
    c = st.columns([2, 1, 2])
    name = c[0].text_input("User name", key="add_name", placeholder="ada, or ada@example.com for single sign-on")
    role = c[1].selectbox("Role", ROLES, key="add_role")
    password = c[2].text_input("Password", key="add_password", type="password",
                               placeholder=f"at least {users.MIN_PASSWORD} characters")
    oidc_only = st.checkbox("No password: single sign-on only", key="add_oidc_only",
                            help="The user signs in through the identity provider, under the e-mail it gives.")
    if st.form_submit_button("Add user", type="primary", icon=":material/person_add:"):
        attempt("Not added", lambda: users.add(actor, name, role, None if oidc_only else password, store=store),
                f"Added {name.strip()} as {role}.")

others = [r["name"] for r in rows if r["name"] != actor.name]
if not others:
    st.stop()
st.subheader("Change a user")
if len(others) < len(rows):
    st.caption(f"Your own user ({actor.name}) is changed by another owner or with `orchestra users`.")
who = st.selectbox("User", others, key="change_user")
current = next(r for r in rows if r["name"] == who)
left, middle, right = st.columns(3, gap="large")
with left, st.form("user_role", border=True):
    new_role = st.selectbox("Role", ROLES, index=ROLES.index(current["role"]), key="change_role")
    if st.form_submit_button("Change role", icon=":material/manage_accounts:"):
        if new_role == current["role"]:
            st.info(f"{who} is {new_role} already: nothing changed.", icon=":material/info:")
        else:
            attempt("Role not changed", lambda: users.set_role(actor, who, new_role, store=store),
                    f"{who} is now {new_role}, from their next click.")
with middle, st.form("user_password", border=True, clear_on_submit=True):
    new_password = st.text_input("New password", key="change_password", type="password",
                                 placeholder=f"at least {users.MIN_PASSWORD} characters")
    if st.form_submit_button("Set password", icon=":material/key:"):
        attempt("Password not set", lambda: users.passwd(actor, who, new_password, store=store),
                f"{who}'s password is changed: their open sessions have ended.")
with right, st.form("user_remove", border=True, clear_on_submit=True):
    confirm = st.text_input(f"Type `{who}` to remove them", key="remove_confirm")
    if st.form_submit_button("Remove user", icon=":material/person_remove:"):
        if confirm.strip() != who:
            st.error(f"**Not removed:** type `{who}` exactly to confirm.", icon=":material/error:")
        else:
            attempt("Not removed", lambda: users.remove(actor, who, store=store),
                    f"Removed {who}: their open sessions have ended.")
