"""The real dashboard (``streamlit run``) in headless Chromium at 1440 px: a password login
(a wrong password first), the Overview's figures, a RUNNING run's page followed live until
it completes; and a single sign-on through Streamlit's ``st.login`` against the OIDC double."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from core.steps import StepState
from ledger.store import Store
from orchestra import users
from orchestra.access import Actor
from tests.dashboard.test_dashboard_data import SECRET, seed_ledger
from tests.dashboard.test_run_page import RUN, T0
from tests.dashboard.test_run_page import seed as seed_run
from tests.support.chromium import browser, chromium_or_skip, free_port, stop, wait_http

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[2]
OWNER = Actor("olga", "owner", via="cli")
PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new passphrase"


def serve(tmp_path: Path, db: Path, *extra: str, port: int | None = None) -> tuple[subprocess.Popen, str]:
    port = port or free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST", "PREFECT_API", "OPENAI_", "ANTHROPIC_", "STREAMLIT_"))}
    env.update(ORCHESTRA_DB_URL=f"sqlite:///{db}", ORCHESTRA_HOME=str(tmp_path / "home"), ORCHESTRA_LOGIN_DELAY="0",
               STREAMLIT_BROWSER_GATHER_USAGE_STATS="false")
    log = (tmp_path / "streamlit.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/server.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
         "--client.toolbarMode", "viewer", *extra],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60, server)
    return server, f"http://127.0.0.1:{port}"


async def session_cookies(tab, held: bool, wait: float = 10.0) -> tuple[list[dict], str]:
    """The browser's orchestra_session cookies once there is one (``held``) or none (the
    page's request to set or clear it answered; at most ``wait`` s), and ``document.cookie``
    as the page's scripts see it."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        found = [c for c in (await tab.call("Network.getAllCookies"))["cookies"] if c["name"] == "orchestra_session"]
        if bool(found) == held or asyncio.get_running_loop().time() > deadline:
            return found, await tab.js("document.cookie")
        await asyncio.sleep(0.2)


def test_log_in_then_the_overview_and_a_running_run_followed_live(tmp_path, monkeypatch):
    chromium_or_skip()
    db = tmp_path / "ledger.db"
    store = Store(f"sqlite:///{db}")
    seed_ledger(store)
    seed_run(store, state="RUNNING")
    users.add(OWNER, "ada", "owner", PASSWORD, store=store)
    shots = Path(os.environ.get("ORCHESTRA_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    server, base = serve(tmp_path, db)

    cookies: dict[str, tuple[list[dict], str]] = {}
    cleared: dict[str, str] = {}

    async def drive() -> dict[str, str]:
        pages: dict[str, str] = {}
        async with browser(tmp_path) as tab:
            await tab.load(base + "/", ["User name", "Password"])
            await tab.type_into("input[aria-label='User name']", "ada")
            await tab.type_into("input[type='password']", "not the password")
            await tab.click_button("Log in")
            pages["refused"] = await tab.wait_for(["wrong user name or password"])
            await tab.js("document.querySelector(\"input[type='password']\").select()")
            await tab.type_into("input[type='password']", PASSWORD)
            await tab.click_button("Log in")
            pages["overview"] = await tab.wait_for(["Recent runs", "Provider calls", "Latest run:", "ada"],
                                                   charts=1, timeout=60)
            cookies["logged in"] = await session_cookies(tab, held=True)
            await asyncio.sleep(1.0)
            await tab.screenshot(shots / "overview.png")
            await tab.js("[...document.querySelectorAll('a')].find(a => a.innerText.trim().endsWith('Runs')).click()")
            await tab.wait_for(["fan-review", "following live", "DAG", "Timeline"], charts=2, timeout=60)
            await tab.js("[...document.querySelectorAll('a')].find(a => a.innerText.includes(\"own page\")).click()")
            pages["running"] = await tab.wait_for(["RUNNING", "following live", "2 / 5"], charts=2, timeout=60)
            await asyncio.sleep(1.0)
            await tab.screenshot(shots / "run.png")
            for name, state in (("fan", "COMPLETED"), ("summary", "COMPLETED"), ("ship", "COMPLETED")):
                store.record_step(StepState(RUN, name, state, at=T0 + timedelta(seconds=5)))
            store.finish_run(flow_run_id=RUN, state="COMPLETED", ended=T0 + timedelta(seconds=6))
            # no reload; " · ended " shows only once the run's own row is final: the steps'
            # "5 / 5" can show one poll before it
            pages["finished"] = await tab.wait_for(["COMPLETED", "5 / 5", " · ended "], charts=2, timeout=60)
            # a reload (or a link opened in a new tab) keeps the login: the signed session cookie
            pages["reloaded"] = await tab.load(base + "/costs", ["Costs", "Top model:", "Latency", "Log out"],
                                               charts=6, timeout=60)
            # an owner adds a user; the password field is empty again once the form is sent
            await tab.load(base + "/users", ["Users", "Add a user", "ada"], timeout=60)
            await tab.type_into("input[aria-label='User name']", "bea")
            await tab.type_into("input[aria-label='Password']", NEW_PASSWORD)
            assert await tab.click_button("Add user")
            pages["users"] = await tab.wait_for(["Added bea as viewer.", "bea"], timeout=60)
            for _ in range(100):  # the form's widgets mount again after the page's rerun
                cleared["password"] = await tab.js("document.querySelector(\"input[aria-label='Password']\")?.value")
                if cleared["password"] is not None:
                    break
                await asyncio.sleep(0.1)
            await tab.screenshot(shots / "users.png")
            assert await tab.click_button("Log out")
            await tab.wait_for(["User name"])
            cookies["logged out"] = await session_cookies(tab, held=False)
            pages["logged out"] = await tab.load(base + "/costs", ["User name", "Password"], timeout=60)
        return pages

    try:
        pages = asyncio.run(asyncio.wait_for(drive(), 240))
    finally:
        stop(server)
        store.close()
    assert "Recent runs" not in pages["refused"]
    for name, text in pages.items():
        assert "Traceback" not in text and SECRET not in text and PASSWORD not in text, name
    assert "following live" not in pages["finished"]
    assert "User name" not in pages["reloaded"] and "Top model:" not in pages["logged out"]
    # the session cookie is HttpOnly: the browser holds it, the page's scripts cannot read it
    (held,), seen_by_scripts = cookies["logged in"]
    assert held["httpOnly"] and held["sameSite"] == "Strict" and held["path"] == "/"
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path / "home"))  # the server's session key
    assert users.session_actor(held["value"], store=store).name == "ada"
    assert "orchestra_session" not in seen_by_scripts
    assert cookies["logged out"][0] == [] and "orchestra_session" not in cookies["logged out"][1]
    assert (shots / "overview.png").stat().st_size > 20_000 and (shots / "run.png").stat().st_size > 20_000
    assert users.authenticate("bea", NEW_PASSWORD, store=store).role == "viewer"
    assert cleared["password"] == "" and NEW_PASSWORD not in pages["users"]


def test_single_sign_on_through_the_oidc_double(tmp_path):
    chromium_or_skip()
    from tests.fakes.oidc_server import OIDCFake

    db = tmp_path / "ledger.db"
    store = Store(f"sqlite:///{db}")
    seed_ledger(store)
    users.add(OWNER, "ada@example.com", "admin", None, store=store)
    port = free_port()
    with OIDCFake(email="ada@example.com") as idp:
        secrets_file = tmp_path / "secrets.toml"
        secrets_file.write_text(
            "[auth]\n"
            f'redirect_uri = "http://127.0.0.1:{port}/oauth2callback"\n'
            'cookie_secret = "a-long-random-cookie-secret-for-the-test-0123456789"\n'
            f'client_id = "{idp.client_id}"\n'
            f'client_secret = "{idp.client_secret}"\n'
            f'server_metadata_url = "{idp.metadata_url}"\n')
        server = None
        try:
            server, base = serve(tmp_path, db, "--secrets.files", str(secrets_file), port=port)

            async def drive() -> tuple[str, str]:
                async with browser(tmp_path) as tab:
                    await tab.load(base + "/", ["Log in with single sign-on"])
                    await tab.click_button("Log in with single sign-on")
                    text = await tab.wait_for(["Overview", "ada@example.com", "admin", "Recent runs"], charts=1,
                                              timeout=60)
                    again = await tab.load(base + "/costs", ["Costs", "ada@example.com"], timeout=60)  # a reload
                    return text, again

            try:
                text, again = asyncio.run(asyncio.wait_for(drive(), 180))
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nOIDC requests: {idp.requests}") from None
        finally:
            stop(server)
            store.close()
        paths = [r["path"] for r in idp.requests]
    assert "authorize" in paths and "token" in paths and "jwks" in paths
    assert "Signed in by single sign-on" in text and "User name" not in again
    assert idp.client_secret not in text + again
