"""The login cookie is HttpOnly: the page carries a single-use grant, never the session
token, and the server's session route (dashboard.auth.session_endpoint, served by
dashboard/server.py) trades the grant for the cookie or clears it. The browser's side
is in test_browser.py."""

from __future__ import annotations

import json
import re

import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from dashboard import auth
from orchestra import users
from tests.dashboard.test_dashboard import texts
from tests.dashboard.test_login_and_roles import log_in, team  # noqa: F401

GRANT = re.compile(r"grant\W+([A-Za-z0-9_-]{40,})")  # in the page's script (escaped in the protobuf's text)


@pytest.fixture
def route():
    app = Starlette(routes=[Route(auth.session_path(), auth.session_endpoint, methods=["POST", "DELETE"])])
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def post(client, grant) -> object:
    return client.post(auth.session_path(), content=json.dumps({"grant": grant}),
                       headers={"Content-Type": "application/json"})


def test_a_login_hands_the_page_a_grant_that_the_route_trades_once_for_an_httponly_cookie(team, route):  # noqa: F811
    store, _ = team
    at = log_in("mia")
    assert [t.value for t in at.title] == ["Overview"]
    page = texts(at)
    (grant,) = GRANT.findall(page)
    assert "document.cookie" not in page and auth.session_path() in page

    answer = post(route, grant)
    assert answer.status_code == 204
    header = answer.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/" in header
    assert f"Max-Age={users.SESSION_HOURS * 3600}" in header
    token = answer.cookies["orchestra_session"]
    assert token not in page  # the token never went through the page
    assert users.session_actor(token, store=store).name == "mia"

    again = post(route, grant)  # single use
    assert again.status_code == 400 and "set-cookie" not in again.headers


@pytest.mark.parametrize("grant", ["not-a-grant", None, 42, ""])
def test_an_unknown_grant_sets_no_cookie(route, grant):
    answer = post(route, grant)
    assert answer.status_code == 400 and "set-cookie" not in answer.headers
    assert answer.json() == {"error": "unknown, used or expired grant"}


def test_a_body_that_is_not_json_sets_no_cookie(route):
    answer = route.post(auth.session_path(), content=b"grant=x")
    assert answer.status_code == 400 and "set-cookie" not in answer.headers


def test_an_expired_grant_sets_no_cookie(route, monkeypatch):
    grant = auth._grant("a-token")
    monkeypatch.setattr(auth.time, "monotonic", lambda: 10**12)  # long after GRANT_SECONDS
    assert post(route, grant).status_code == 400


def test_a_logout_asks_the_route_to_clear_the_cookie(route):
    route.cookies.set("orchestra_session", "whatever")
    answer = route.delete(auth.session_path())
    assert answer.status_code == 204
    header = answer.headers["set-cookie"]
    assert header.startswith('orchestra_session=""') and "Max-Age=0" in header and "HttpOnly" in header
