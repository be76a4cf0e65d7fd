"""Shared machinery of the wire-protocol fakes.

A fake is a real aiohttp server on loopback. It runs either in a background thread
(``with OpenAIFake() as fake: ...``) or as a subprocess (``python -m
tests.fakes.openai_server --port 0``, which prints ``READY http://127.0.0.1:PORT``).

Subclasses only speak their protocol: they add routes, shape replies and error
bodies. Everything else (knobs, faults, latency, request log, key check, control
endpoints, start/stop) lives here. The request path is kept cheap on purpose: no
logging, no pydantic, one ``json.loads`` and one ``json.dumps`` per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Callable

from aiohttp import web

FAULT_WORDS = ("timeout", "drop")
DEFAULT_FAULT_KINDS = [429, 500, "timeout", "drop"]
_KNOBS = (
    "latency_ms", "faults", "fault_rate", "fault_kinds", "seed", "reply",
    "slow_seconds", "require_key",
)
_PIECES = re.compile(r"\S*\s*")


def text_of(content: Any) -> str:
    """Text of a message content: a str, or a list of parts/blocks with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_words(text: str) -> int:
    return len(text.split())


def split_text(text: str, max_pieces: int = 16) -> list[str]:
    """Split a reply into stream deltas whose concatenation is exactly ``text``."""
    words = [p for p in _PIECES.findall(text) if p]
    if len(words) <= 1:
        return [text]
    size = -(-len(words) // max_pieces)
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]


def _check_fault(fault: Any) -> Any:
    if fault is None or fault in FAULT_WORDS or (isinstance(fault, int) and not isinstance(fault, bool) and 400 <= fault <= 599):
        return fault
    raise ValueError(f"bad fault {fault!r}: use None, an HTTP status 400-599, 'timeout' or 'drop'")


class FakeServer:
    """Base of ``OpenAIFake`` and ``AnthropicFake``; see the module docstring."""

    name = "fake"
    api_prefix = ""          # appended to ``url`` to make ``base_url``

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, **knobs: Any) -> None:
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._log: list[dict] = []
        self.latency_ms = 0.0
        self.slow_seconds = 30.0
        self.require_key: str | None = None
        self._reply: Any = None
        self._reply_index = 0
        self._rng = random.Random()
        self._clear_faults()
        self.configure(**knobs)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None

    # ---- knobs ---------------------------------------------------------------------

    def _clear_faults(self) -> None:
        self._faults: deque = deque()
        self.fault_rate = 0.0
        self.fault_kinds: list = list(DEFAULT_FAULT_KINDS)

    def configure(self, **knobs: Any) -> None:
        """Set any of: latency_ms, faults, fault_rate, fault_kinds, seed, reply,
        slow_seconds, require_key. ``faults`` replaces the fault queue."""
        unknown = set(knobs) - set(_KNOBS)
        if unknown:
            raise TypeError(f"unknown fake setting(s): {', '.join(sorted(unknown))}")
        reply = knobs.get("reply")
        if "reply" in knobs and not (reply is None or isinstance(reply, str) or callable(reply)
                                     or (isinstance(reply, list) and reply and all(isinstance(r, str) for r in reply))):
            raise ValueError("reply must be None, a str, a non-empty list of str or a callable(body) -> str")
        with self._lock:
            if "latency_ms" in knobs:
                self.latency_ms = float(knobs["latency_ms"] or 0)
            if "slow_seconds" in knobs:
                self.slow_seconds = float(knobs["slow_seconds"])
            if "faults" in knobs:
                self._faults = deque(_check_fault(f) for f in knobs["faults"] or [])
            if "fault_rate" in knobs:
                self.fault_rate = float(knobs["fault_rate"] or 0)
            if "fault_kinds" in knobs:
                self.fault_kinds = [_check_fault(f) for f in knobs["fault_kinds"]]
            if "seed" in knobs:
                self._rng = random.Random(knobs["seed"])
            if "reply" in knobs:
                self._reply, self._reply_index = reply, 0
            if "require_key" in knobs:
                self.require_key = knobs["require_key"] or None

    def reset(self) -> None:
        """Clear the request log and every fault setting (queue, fault_rate, fault_kinds)."""
        with self._lock:
            self._log.clear()
            self._clear_faults()

    @property
    def requests(self) -> list[dict]:
        """One dict per API request: path, body, status (int, "drop" or "timeout"), usage, t."""
        with self._lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        return len(self._log)

    def _next_fault(self) -> Any:
        with self._lock:
            if self._faults:
                return self._faults.popleft()
            if self.fault_rate and self.fault_kinds and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.fault_kinds)
        return None

    def _next_reply(self, body: dict) -> str:
        reply = self._reply
        if reply is None:
            return "echo: " + self.last_user_text(body)[:200]
        if isinstance(reply, str):
            return reply
        if isinstance(reply, list):
            with self._lock:
                i = self._reply_index
                self._reply_index = min(i + 1, len(reply) - 1)
            return reply[i]
        return str(reply(body))

    # ---- protocol hooks (subclasses) -----------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict:
        raise NotImplementedError

    def success(self, body: dict, text: str, usage: dict) -> tuple[web.Response, bool]:
        """The reply for ``text``; the bool says whether usage was reported to the client."""
        raise NotImplementedError

    @staticmethod
    def last_user_text(body: dict) -> str:
        for m in reversed(body.get("messages") or []):
            if isinstance(m, dict) and m.get("role") == "user":
                return text_of(m.get("content"))
        return ""

    @staticmethod
    def input_words(body: dict) -> int:
        n = count_words(text_of(body.get("system")))
        for m in body.get("messages") or []:
            if isinstance(m, dict):
                n += count_words(text_of(m.get("content")))
        return n

    # ---- request path --------------------------------------------------------------

    def _key(self, request: web.Request) -> str:
        key = request.headers.get("x-api-key", "")
        if not key:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
        return key

    def _key_ok(self, request: web.Request) -> bool:
        key = self._key(request)
        return bool(key) and (self.require_key is None or key == self.require_key)

    def error(self, status: int, message: str | None = None) -> web.Response:
        message = message or {401: "Invalid API key (fake).", 429: "Rate limit reached (fake).",
                              400: "Invalid request (fake)."}.get(status, f"Fake error {status}.")
        headers = {"retry-after": "0"} if status == 429 else None
        return web.json_response(self.error_body(status, message), status=status, headers=headers)

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        """The shared pipeline of every API request: log, key, fault, latency, reply."""
        entry: dict = {"path": request.path, "body": None, "status": None, "usage": None, "t": time.monotonic()}
        with self._lock:
            self._log.append(entry)
        fault = self._next_fault()
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise ValueError
            entry["body"] = body
        except ValueError:
            body = None
        if not self._key_ok(request):
            fault = 401
        elif body is None and fault is None:
            fault = 400
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if fault == "drop":
            entry["status"] = "drop"
            if request.transport is not None:
                request.transport.abort()
            return web.Response()  # never written: the connection is gone
        if fault == "timeout":
            entry["status"] = "timeout"
            try:
                await asyncio.wait_for(self._stopping.wait(), self.slow_seconds)
            except asyncio.TimeoutError:
                pass
            fault = None
        if fault is not None:
            if entry["status"] is None:
                entry["status"] = fault
            return self.error(fault, "Invalid JSON body." if body is None and fault == 400 else None)
        text = self._next_reply(body)
        usage = {"input_tokens": self.input_words(body), "output_tokens": count_words(text)}
        response, reported = self.success(body, text, usage)
        if entry["status"] is None:
            entry["status"] = response.status
        if reported:
            entry["usage"] = usage
        return response

    async def _models(self, request: web.Request) -> web.Response:
        if not self._key_ok(request):
            return self.error(401)
        return web.json_response(self.models_body())

    def models_body(self) -> dict:
        raise NotImplementedError

    # ---- control endpoints ---------------------------------------------------------

    async def _ctl_config(self, request: web.Request) -> web.Response:
        try:
            knobs = await request.json()
            if not isinstance(knobs, dict):
                raise ValueError("expected a JSON object")
            self.configure(**knobs)
        except (ValueError, TypeError) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=400)
        return web.json_response({"ok": True})

    async def _ctl_requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def _ctl_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    # ---- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + self.api_prefix

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/_fake/config", self._ctl_config)
        app.router.add_get("/_fake/requests", self._ctl_requests)
        app.router.add_post("/_fake/reset", self._ctl_reset)
        self.add_routes(app)
        return app

    async def serve(self, on_ready: Callable[[], None] | None = None) -> None:
        """Listen, call ``on_ready``, serve until ``stop()``/a signal, then clean up."""
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(self.make_app(), access_log=None, handle_signals=False,
                                     shutdown_timeout=0.25)
        await self._runner.setup()
        try:
            await web.TCPSite(self._runner, self.host, self.port, reuse_address=True).start()
            self.port = self._runner.addresses[0][1]
            if on_ready:
                on_ready()
            await self._stopping.wait()
        finally:
            await self._runner.cleanup()

    def start(self) -> "FakeServer":
        if self._thread is not None:
            raise RuntimeError(f"{self.name} fake already started")
        ready = threading.Event()
        errors: list[BaseException] = []
        self._loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self.serve(ready.set))
            except BaseException as e:  # reported to start()
                errors.append(e)
            finally:
                _cancel_all(self._loop)
                self._loop.close()
                ready.set()

        self._thread = threading.Thread(target=run, name=f"{self.name}-fake", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            self.stop()
            raise RuntimeError(f"{self.name} fake failed to start") from (errors[0] if errors else None)
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        if not loop.is_closed() and self._stopping is not None:
            try:
                loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # loop closed meanwhile
                pass
        thread.join(5)
        self._thread = None

    def __enter__(self) -> "FakeServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _cancel_all(loop: asyncio.AbstractEventLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def main(cls: type[FakeServer], argv: list[str] | None = None) -> None:
    """``python -m tests.fakes.<provider>_server``: serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(prog=f"python -m tests.fakes.{cls.name}_server",
                                description=f"{cls.name} wire-protocol fake")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--latency-ms", type=float, default=0)
    p.add_argument("--fault-rate", type=float, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--slow-seconds", type=float, default=30)
    a = p.parse_args(argv)
    fake = cls(host=a.host, port=a.port, latency_ms=a.latency_ms, fault_rate=a.fault_rate,
               seed=a.seed, slow_seconds=a.slow_seconds)

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def ready() -> None:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, fake._stopping.set)
            print(f"READY {fake.url}", flush=True)

        await fake.serve(ready)

    asyncio.run(run())
    sys.stdout.flush()
