"""Shared machinery of the wire-protocol fakes.

A fake is a real aiohttp server on loopback. It runs either in a background thread
(``with OpenAIFake() as fake: ...``) or as a subprocess (``python -m
tests.fakes.openai_server --port 0``, which prints ``READY http://127.0.0.1:PORT``).

Subclasses only speak their protocol: they add routes, shape replies and error
bodies. Everything else (knobs, faults, latency, request log, key check, control
endpoints, start/stop, tool scripts) lives here. The request path is kept cheap on
purpose: no logging, no pydantic, one ``json.loads`` and one ``json.dumps`` per request
(and a couple more per tool call asked).

Tool calls: the TOOL_SCRIPT directive
-------------------------------------
The conversation itself drives tool calls, so a test (or the engine under test) needs
no side channel. A system or user message may hold one line::

    TOOL_SCRIPT: [[{"tool": "add", "arguments": {"a": 2, "b": 3}}],
                  [{"tool": "echo", "arguments": {"text": "x"}}, {"tool": "lookup", "arguments": {"key": "alpha"}}]]

(one line in the prompt; wrapped here). The JSON is a list of rounds:

- a round is a non-empty list of calls ``{"tool": NAME, "arguments": {...}}``
  (``arguments`` defaults to ``{}``; other keys are an error). Several calls in one
  round = parallel tool calls in one assistant message;
- or an object ``{"text": "Let me check.", "calls": [...]}``: the same, with assistant
  text before the calls (OpenAI ``content``, Anthropic a text block before tool_use);
- the last element may be the string ``"forever"``: the round before it is asked
  again on every later request, so the conversation never ends by itself (to test a
  ``max_tool_calls`` stop). ``[round, "forever"]`` asks for ``round`` forever.

The fake counts the assistant tool-call rounds already in the conversation (OpenAI:
assistant messages with ``tool_calls``; Anthropic: assistant messages with ``tool_use``
blocks) and answers with round number ``count``. When the rounds are used up, or the
request says ``tool_choice`` none, it answers with the final text::

    final: <result 1> | <result 2> | ...

the text of every tool result in the conversation, in order (``final: `` if none).
The first directive found wins (system first, then messages in order); tool results
are never searched. With a script the ``reply`` knob is not used; without one the fake
answers text as before, even when the request offers tools.

Tool names: the script's name must be offered by the request (OpenAI ``tools[].function
.name``, Anthropic ``tools[].name``), either exactly or as the part after the last
``__`` of an offered name (``math__add`` answers ``add``); the call then uses the offered
name. Not offered, offered twice, or a malformed script: HTTP 400 in the provider's
error shape, naming the tool. The fakes also check, like the real APIs, that tool
names match ``^[a-zA-Z0-9_-]{1,64}$`` and that every tool call of an assistant message
is answered by a tool result right after it (and no result answers nothing).

Usage stays deterministic, words counted as tokens: input = words of the system text,
every message's text, every tool result's text and, for every tool call in the
history, the words of ``"<name> <arguments JSON>"``; output = words of the reply text
plus the same count for each call asked. So the next round's input is this round's
input + output + the words of the new results. Tool definitions are not counted.

The request log (``fake.requests``) has, per request, besides path/body/status/usage/t:
``round`` (tool-call rounds already in the conversation), ``tool_calls`` (the calls this
reply asked for: ``{"id", "name", "arguments"}``; ``[]`` for a text reply or an error)
and ``tool_results`` (the results this request brought, those after the last assistant
message: ``{"id", "text", "is_error"}``). Faults, latency and the key check apply to
tool-call rounds exactly as to any request (a fault is decided before the script).
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
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import web

FAULT_WORDS = ("timeout", "drop")
DEFAULT_FAULT_KINDS = [429, 500, "timeout", "drop"]
_KNOBS = (
    "latency_ms", "faults", "fault_rate", "fault_kinds", "seed", "reply",
    "slow_seconds", "require_key",
)
_PIECES = re.compile(r"\S*\s*")
_SCRIPT_LINE = re.compile(r"^[ \t]*TOOL_SCRIPT:[ \t]*(.*?)[ \t]*$", re.M)
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
FOREVER = "forever"


def text_of(content: Any) -> str:
    """Text of a message content: a str, or a list of parts/blocks with ``text``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def texts_of(content: Any) -> list[str]:
    """Each text of a message content separately: a str, or the ``text`` of each part/block."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def count_words(text: str) -> int:
    return len(text.split())


def split_text(text: str, max_pieces: int = 16) -> list[str]:
    """Split a reply into stream deltas whose concatenation is exactly ``text``."""
    words = [p for p in _PIECES.findall(text) if p]
    if len(words) <= 1:
        return [text]
    size = -(-len(words) // max_pieces)
    return ["".join(words[i:i + size]) for i in range(0, len(words), size)]


def split_json(text: str, pieces: int = 3) -> list[str]:
    """Split a JSON string into stream fragments (several when it is long enough)."""
    size = max(1, -(-len(text) // pieces))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def call_words(name: str, arguments_json: str) -> int:
    """Tokens of one tool call, asked or in the history: the words of ``name arguments``."""
    return count_words(name) + count_words(arguments_json)


class RequestError(ValueError):
    """A request the real API would refuse with HTTP 400; ``param`` for OpenAI's error body."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class Reply:
    """What the fake answers: text, and the tool calls asked (``{"id", "name", "arguments"}``)."""

    text: str
    calls: list[dict] = field(default_factory=list)

    @property
    def output_words(self) -> int:
        return count_words(self.text) + sum(call_words(c["name"], json.dumps(c["arguments"])) for c in self.calls)


@dataclass
class History:
    """The tool side of a conversation: rounds asked so far, every result, the new results."""

    rounds: int = 0
    results: list[dict] = field(default_factory=list)
    new_results: list[dict] = field(default_factory=list)


def find_script(texts: list[str]) -> str | None:
    for text in texts:
        m = _SCRIPT_LINE.search(text)
        if m:
            return m.group(1)
    return None


def parse_script(raw: str) -> tuple[list[dict], bool]:
    """``TOOL_SCRIPT`` JSON -> (rounds as ``{"text", "calls"}``, forever)."""
    def bad(why: str) -> RequestError:
        return RequestError(f"Bad TOOL_SCRIPT (fake): {why}. Expected a JSON list of rounds, each a list of "
                            '{"tool": NAME, "arguments": {...}} or {"text": ..., "calls": [...]}, optionally '
                            'ending with "forever".')
    try:
        script = json.loads(raw)
    except ValueError as e:
        raise bad(f"not JSON ({e})") from None
    if not isinstance(script, list):
        raise bad("not a list")
    forever = bool(script) and script[-1] == FOREVER
    if forever:
        script = script[:-1]
        if not script:
            raise bad('"forever" needs a round before it')
    rounds = []
    for n, r in enumerate(script):
        text = ""
        if isinstance(r, dict):
            if set(r) - {"text", "calls"} or not isinstance(r.get("text", ""), str):
                raise bad(f"round {n} must have only \"text\" (a string) and \"calls\"")
            text, r = r.get("text", ""), r.get("calls")
        if r == FOREVER:
            raise bad('"forever" must be the last element')
        if not isinstance(r, list) or not r:
            raise bad(f"round {n} is not a non-empty list of calls")
        calls = []
        for c in r:
            if (not isinstance(c, dict) or not isinstance(c.get("tool"), str) or set(c) - {"tool", "arguments"}
                    or not isinstance(c.get("arguments", {}), dict)):
                raise bad(f"round {n} has a bad call {json.dumps(c)}")
            calls.append({"tool": c["tool"], "arguments": c.get("arguments", {})})
        rounds.append({"text": text, "calls": calls})
    return rounds, forever


def resolve_tool(tool: str, offered: list[str]) -> str:
    """The offered name for a scripted ``tool``: itself, or the one ending in ``__<tool>``."""
    if tool in offered:
        return tool
    matches = [name for name in offered if name.rsplit("__", 1)[-1] == tool]
    if len(matches) == 1:
        return matches[0]
    listed = ", ".join(offered) if offered else "none"
    if matches:
        raise RequestError(f"TOOL_SCRIPT asks for tool {tool!r}, which matches several offered tools: "
                           f"{', '.join(matches)} (fake); name it in full.", "tools")
    raise RequestError(f"TOOL_SCRIPT asks for tool {tool!r} but the request offers no tool {tool!r} or "
                       f"'<server>__{tool}' (offered: {listed}) (fake).", "tools")


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
        """One dict per API request: path, body, status (int, "drop" or "timeout"), usage, t,
        round, tool_calls, tool_results (see the module docstring)."""
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

    def error_body(self, status: int, message: str, param: str | None = None) -> dict:
        raise NotImplementedError

    def success(self, body: dict, reply: Reply, usage: dict) -> tuple[web.Response, bool]:
        """The response for ``reply``; the bool says whether usage was reported to the client."""
        raise NotImplementedError

    def offered_tools(self, body: dict) -> list[str]:
        """Names of the tools the request offers; ``RequestError`` for a malformed list."""
        raise NotImplementedError

    def history(self, body: dict) -> History:
        """Tool rounds and results of the conversation; ``RequestError`` where the real API refuses it."""
        raise NotImplementedError

    def tool_choice_none(self, body: dict) -> bool:
        raise NotImplementedError

    def new_call_id(self) -> str:
        raise NotImplementedError

    def script_texts(self, body: dict) -> list[str]:
        """Where a TOOL_SCRIPT may stand: the system text, then system/user messages in order."""
        texts = texts_of(body.get("system"))
        for m in body.get("messages") or []:
            if isinstance(m, dict) and m.get("role") in ("system", "developer", "user"):
                texts += texts_of(m.get("content"))
        return texts

    def plan(self, body: dict, history: History) -> Reply:
        """Decide the reply: text, or the next round of a TOOL_SCRIPT (see the module docstring)."""
        offered = self.offered_tools(body)
        raw = find_script(self.script_texts(body))
        if raw is None:
            return Reply(self._next_reply(body))
        rounds, forever = parse_script(raw)
        n = history.rounds
        if self.tool_choice_none(body) or (n >= len(rounds) and not forever):
            return Reply("final: " + " | ".join(r["text"] for r in history.results))
        step = rounds[min(n, len(rounds) - 1)]
        calls = [{"id": self.new_call_id(), "name": resolve_tool(c["tool"], offered), "arguments": c["arguments"]}
                 for c in step["calls"]]
        return Reply(step["text"], calls)

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
            if not isinstance(m, dict):
                continue
            content = m.get("content")
            n += count_words(text_of(content))
            for call in m.get("tool_calls") or []:  # OpenAI assistant tool calls
                fn = (call.get("function") or {}) if isinstance(call, dict) else {}
                n += call_words(str(fn.get("name", "")), str(fn.get("arguments", "")))
            for block in content if isinstance(content, list) else []:  # Anthropic blocks
                if not isinstance(block, dict):
                    continue
                if block.get("type") == "tool_use":
                    n += call_words(str(block.get("name", "")), json.dumps(block.get("input", {})))
                elif block.get("type") == "tool_result":
                    n += count_words(text_of(block.get("content")))
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

    def error(self, status: int, message: str | None = None, param: str | None = None) -> web.Response:
        message = message or {401: "Invalid API key (fake).", 429: "Rate limit reached (fake).",
                              400: "Invalid request (fake)."}.get(status, f"Fake error {status}.")
        headers = {"retry-after": "0"} if status == 429 else None
        return web.json_response(self.error_body(status, message, param), status=status, headers=headers)

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        """The shared pipeline of every API request: log, key, fault, latency, reply."""
        entry: dict = {"path": request.path, "body": None, "status": None, "usage": None, "t": time.monotonic(),
                       "round": None, "tool_calls": [], "tool_results": []}
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
        history: History | None = None
        refused: RequestError | None = None
        if body is not None:
            try:
                history = self.history(body)
                entry["round"], entry["tool_results"] = history.rounds, history.new_results
            except RequestError as e:
                refused = e
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
        try:
            if refused is not None:
                raise refused
            reply = self.plan(body, history)
        except RequestError as e:
            entry["status"] = 400
            return self.error(400, str(e), e.param)
        entry["tool_calls"] = reply.calls
        usage = {"input_tokens": self.input_words(body), "output_tokens": reply.output_words}
        response, reported = self.success(body, reply, usage)
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
            # a deep accept queue: a 1,000-item fan-out opens its connections at once (aiohttp's default
            # backlog of 128 drops SYNs, and the client's connect timeout then fires)
            await web.TCPSite(self._runner, self.host, self.port, reuse_address=True, backlog=4096).start()
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
