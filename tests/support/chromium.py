"""Headless Chromium driven over the DevTools protocol (websockets), for the tests that
look at a page as a person would: the dashboard and the Prefect UI."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

#: How long Chromium may take to open its DevTools endpoint on a loaded machine.
CHROMIUM_START_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_or_skip() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        pytest.skip("Chromium is not installed (CI installs it: apt-get install chromium)")
    pytest.importorskip("websockets")
    return found


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(url)


def stop(*procs: subprocess.Popen | None) -> None:
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


class Tab:
    """One Chromium tab: navigate, evaluate JavaScript, wait for text, screenshot."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params):
        self.n += 1
        my = self.n
        await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == my:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def js(self, expression: str):
        r = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return r.get("result", {}).get("value")

    async def text(self) -> str:
        return await self.js("document.body ? document.body.innerText : ''") or ""

    async def streamlit_errors(self) -> int:
        """How many exceptions and error alerts the Streamlit page shows."""
        return await self.js("document.querySelectorAll('[data-testid=\"stException\"], "
                             "[data-testid=\"stAlertContentError\"]').length")

    async def wait_for(self, wants: list[str], charts: int = 0, timeout: float = 45.0, streamlit: bool = True) -> str:
        """Wait until every text in ``wants`` is shown and ``charts`` plotly charts are drawn
        (and, on a Streamlit page, the script has finished); the page's text."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            state = await self.js(
                "(() => ({text: document.body ? document.body.innerText : '',"
                " charts: document.querySelectorAll('.js-plotly-plot .main-svg').length,"
                " running: !!document.querySelector('[data-testid=\"stStatusWidget\"]')}))()") or {}
            text = state.get("text", "")
            if all(w in text for w in wants) and state.get("charts", 0) >= charts and not (
                    streamlit and state.get("running")):
                return text
            await asyncio.sleep(0.2)
        raise AssertionError(f"did not show {wants} with {charts} charts; page text:\n{text[:3000]}")

    async def load(self, url: str, wants: list[str], charts: int = 0, timeout: float = 45.0,
                   streamlit: bool = True) -> str:
        await self.call("Page.navigate", url=url)
        return await self.wait_for(wants, charts, timeout, streamlit)

    async def type_into(self, selector: str, value: str, timeout: float = 15.0) -> None:
        """Focus an input and type ``value`` as keystrokes (React sees real input events).
        Waits for the input: a page's text can show a moment before its widgets mount, and
        keystrokes sent before then go nowhere."""
        deadline = time.monotonic() + timeout
        while not await self.js(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                                "if (e) { e.focus(); return document.activeElement === e } return false })()"):
            if time.monotonic() > deadline:
                raise AssertionError(f"no input {selector} to type into; page text:\n{(await self.text())[:2000]}")
            await asyncio.sleep(0.1)
        await self.call("Input.insertText", text=value)

    async def click_button(self, label: str) -> bool:
        """Click the button labelled ``label`` (after its icon, if it has one)."""
        return bool(await self.js(
            "(() => { const b = [...document.querySelectorAll('button')].find(b => b.innerText.trim() == "
            f"{json.dumps(label)} || b.innerText.trim().endsWith('\\n' + {json.dumps(label)})); "
            "if (b) { b.click(); return true } return false })()"))

    async def screenshot(self, path: Path, width: int = 1440) -> None:
        height = await self.js(
            "Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], "
            "[data-testid=\"stMainBlockContainer\"]')].map(e => e.scrollHeight), 900)")
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=int(height) + 40,
                        deviceScaleFactor=1, mobile=False)
        await asyncio.sleep(0.8)
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))
        await self.call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1,
                        mobile=False)


@contextlib.asynccontextmanager
async def browser(tmp: Path, width: int = 1440) -> AsyncIterator[Tab]:
    """A headless Chromium with one tab at ``width`` × 1000 px; stopped at the end."""
    import websockets

    chromium = chromium_or_skip()
    port = free_port()
    proc = subprocess.Popen(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
         f"--user-data-dir={tempfile.mkdtemp(dir=tmp)}", f"--remote-debugging-port={port}",
         f"--window-size={width},1000", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # A loaded two-core machine can take well over 15 s to bring Chromium's
        # DevTools endpoint up; wait on a deadline and say why if it never comes.
        tabs = None
        deadline = time.monotonic() + CHROMIUM_START_S
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2) as r:
                    tabs = json.load(r)
                if any(t.get("type") == "page" for t in tabs):
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        assert tabs, (f"Chromium did not open its DevTools port within {CHROMIUM_START_S:.0f} s"
                      f" (exit code {proc.poll()})")
        ws_url = next(t for t in tabs if t["type"] == "page")["webSocketDebuggerUrl"]
        async with websockets.connect(ws_url, max_size=50_000_000) as ws:
            tab = Tab(ws)
            await tab.call("Page.enable")
            await tab.call("Emulation.setDeviceMetricsOverride", width=width, height=1000, deviceScaleFactor=1,
                           mobile=False)
            yield tab
    finally:
        stop(proc)
