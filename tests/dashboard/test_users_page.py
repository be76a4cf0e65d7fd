"""The Users page (owners): the table, add, role, password and removal through
orchestra.users, each audited; bad input a message with nothing written; an owner's own
user not offered for a change."""

from __future__ import annotations

import pytest

from ledger import queries
from orchestra import users
from tests.dashboard.test_dashboard import texts
from tests.dashboard.test_login_and_roles import PASSWORD, ROLE_USERS, as_user, team  # noqa: F401

PAGE = "views/users.py"
NEW_PASSWORD = "a brand new passphrase"


def click(at, label: str):
    (button,) = [b for b in at.button if b.label == label]
    return button.click().run()


def messages(at, kind: str) -> list[str]:
    return [m.value for m in getattr(at, kind)]


def test_the_users_page_is_for_owners_and_shows_no_hash(team):  # noqa: F811
    _, agents = team
    at = as_user("oz", PAGE, agents)
    assert [t.value for t in at.title] == ["Users"]
    table = at.dataframe[0].value
    assert sorted(table["name"]) == sorted(ROLE_USERS)
    assert dict(zip(table["name"], table["role"])) == ROLE_USERS
    assert set(table["login"]) == {"password"}
    assert "argon2" not in texts(at)
    for name in ("ada", "mia", "vic"):  # not in their navigation: the default page instead
        other = as_user(name, PAGE, agents)
        assert [t.value for t in other.title] != ["Users"], name


def test_an_owner_adds_a_user_who_can_then_log_in_and_the_password_is_not_sent_back(team):  # noqa: F811
    store, agents = team
    at = as_user("oz", PAGE, agents)
    at.text_input(key="add_name").set_value("bea")
    at.selectbox(key="add_role").set_value("member")
    at.text_input(key="add_password").set_value(NEW_PASSWORD)
    click(at, "Add user")
    assert not at.exception, [e.value for e in at.exception]
    assert messages(at, "success") == ["Added bea as member."]
    assert users.authenticate("bea", NEW_PASSWORD, store=store).role == "member"
    assert NEW_PASSWORD not in texts(at)
    assert "bea" in list(at.dataframe[0].value["name"])
    (added,) = [r for r in queries.audit(store, action="user.add") if r["target"] == "bea"]
    assert (added["actor"], added["via"], added["outcome"]) == ("oz", "password", "ok")
    assert NEW_PASSWORD not in str(added)


def test_a_single_sign_on_user_has_no_password(team):  # noqa: F811
    store, agents = team
    at = as_user("oz", PAGE, agents)
    at.text_input(key="add_name").set_value("eve@example.com")
    at.checkbox(key="add_oidc_only").check()
    click(at, "Add user")
    assert messages(at, "success") == ["Added eve@example.com as viewer."]
    row = queries.credentials(store, "eve@example.com")
    assert row["role"] == "viewer" and row["password_hash"] is None
    table = at.dataframe[0].value
    assert dict(zip(table["name"], table["login"]))["eve@example.com"] == "single sign-on"


@pytest.mark.parametrize(("name", "password", "says"), [
    ("bea", "short", "at least 8 characters"),
    ("no spaces allowed", PASSWORD, "user name 'no spaces allowed'"),
    ("mia", PASSWORD, "user 'mia' already exists"),
])
def test_bad_input_is_a_message_naming_it_and_nothing_is_written(team, name, password, says):  # noqa: F811
    store, agents = team
    before = queries.users(store)
    at = as_user("oz", PAGE, agents)
    at.text_input(key="add_name").set_value(name)
    at.text_input(key="add_password").set_value(password)
    click(at, "Add user")
    assert not at.exception
    (error,) = messages(at, "error")
    assert error.startswith("**Not added:**") and says in error, error
    assert queries.users(store) == before
    assert not messages(at, "success")


def test_an_owner_changes_a_role_and_a_password_and_removes_only_with_confirmation(team):  # noqa: F811
    store, agents = team
    at = as_user("oz", PAGE, agents)
    choices = at.selectbox(key="change_user").options
    assert "oz" not in choices and sorted(choices) == ["ada", "mia", "vic"]
    assert any("Your own user (oz)" in c.value for c in at.caption)

    at.selectbox(key="change_user").set_value("mia").run()
    at.selectbox(key="change_role").set_value("admin")
    click(at, "Change role")
    assert messages(at, "success") == ["mia is now admin, from their next click."]
    assert queries.credentials(store, "mia")["role"] == "admin"

    at.text_input(key="change_password").set_value(NEW_PASSWORD)
    click(at, "Set password")
    assert messages(at, "success")[0].startswith("mia's password is changed")
    assert users.authenticate("mia", NEW_PASSWORD, store=store).name == "mia"
    with pytest.raises(users.LoginFailed):
        users.authenticate("mia", PASSWORD, store=store)

    at.text_input(key="remove_confirm").set_value("mi")
    click(at, "Remove user")
    assert messages(at, "error") == ["**Not removed:** type `mia` exactly to confirm."]
    assert queries.credentials(store, "mia") is not None
    at.text_input(key="remove_confirm").set_value("mia")
    click(at, "Remove user")
    assert messages(at, "success") == ["Removed mia: their open sessions have ended."]
    assert queries.credentials(store, "mia") is None
    assert "mia" not in list(at.dataframe[0].value["name"])

    done = [(r["action"], r["target"], r["actor"]) for r in queries.audit(store, action="user.")
            if r["actor"] == "oz"]
    assert sorted(done) == [("user.passwd", "mia", "oz"), ("user.remove", "mia", "oz"), ("user.role", "mia", "oz")]
