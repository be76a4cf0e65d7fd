"""An MCP server at the wire, built on the official ``mcp`` SDK (FastMCP).

Run alone::

    python -m tests.fakes.mcp_server --transport stdio [--log PATH] [--name NAME]
    python -m tests.fakes.mcp_server --transport http --port 0 [--log PATH] [--require-token T]
        # prints ``READY http://127.0.0.1:PORT/mcp`` once it accepts (streamable HTTP)
    python -m tests.fakes.mcp_server --crash-on-start     # one line on stderr, exit 3

Or from a test::

    with MCPFake("stdio") as fake:            # nothing runs yet: the client starts it
        async with stdio_client(fake.params) as (r, w): ...
    with MCPFake("http") as fake:             # uvicorn in a thread of this process
        async with streamablehttp_client(fake.url) as (r, w, _): ...
    with MCPFake("http", process=True) as fake:   # the same as a subprocess
        fake.url, fake.pid
    fake.calls                                # the ledger: one dict per tool call

Tools (deterministic): ``add(a, b) -> int``, ``echo(text) -> str``, ``lookup(key) -> str``
(a fixed table, ``LOOKUP``; an unknown key is a tool error), ``fail(message)`` (always a
tool error with that message), ``sleep(seconds) -> str`` and ``secret_echo(token) -> str``
(echoes its argument, for redaction tests). Tool errors come back to the client as
``isError`` results, as FastMCP words them: ``Error executing tool fail: <message>``.

Every tool call received, unknown tools and bad arguments included, is appended to the
``--log`` file as one JSON line, written before the result is sent::

    {"server": NAME, "pid": PID, "transport": "stdio"|"http", "tool": ..., "arguments": {...},
     "ok": true|false, "result": TEXT|null, "error": TEXT|null}

A call cancelled by the client logs ``"error": "cancelled"``. ``--require-token T`` (http):
a request without ``Authorization: Bearer T`` gets HTTP 401 and never reaches MCP.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any, Iterator

import anyio
import uvicorn
from mcp import StdioServerParameters
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError

REPO = Path(__file__).resolve().parents[2]
LOOKUP = {"alpha": "first letter", "beta": "second letter", "gamma": "third letter"}
TOOLS = ("add", "echo", "lookup", "fail", "sleep", "secret_echo")
CRASH_MESSAGE = "fake MCP server: crashing on start as asked (--crash-on-start)"
CRASH_EXIT = 3


def read_log(path: str | os.PathLike) -> list[dict]:
    """The ledger a server wrote (``[]`` if it wrote nothing yet)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _text(result: Any) -> str:
    """Text of what FastMCP's ``call_tool`` returns (content blocks, maybe with structured output)."""
    if isinstance(result, tuple):
        result = result[0]
    if isinstance(result, dict):
        return json.dumps(result)
    return "".join(getattr(block, "text", "") for block in result or [])


class _LoggingMCP(FastMCP):
    """FastMCP that writes one ledger line per tool call."""

    def __init__(self, name: str, log: str | os.PathLike | None, transport: str) -> None:
        with warnings.catch_warnings():  # pydantic-settings on mcp 1.10's Settings.lifespan: noise only
            warnings.filterwarnings("ignore", message="Field 'lifespan' has an incomplete definition")
            super().__init__(name, log_level="WARNING", warn_on_duplicate_tools=False)
        self._ledger_path, self._transport = log, transport
        self._ledger_lock = threading.Lock()

    def _record(self, tool: str, arguments: dict, ok: bool, result: str | None, error: str | None) -> None:
        if self._ledger_path is None:
            return
        line = json.dumps({"server": self.name, "pid": os.getpid(), "transport": self._transport, "tool": tool,
                           "arguments": arguments, "ok": ok, "result": result, "error": error}) + "\n"
        with self._ledger_lock, open(self._ledger_path, "a", encoding="utf-8") as f:
            f.write(line)

    async def call_tool(self, name: str, arguments: dict[str, Any]):
        try:
            result = await super().call_tool(name, arguments)
        except Exception as e:
            self._record(name, arguments, False, None, str(e))
            raise
        except BaseException:
            self._record(name, arguments, False, None, "cancelled")
            raise
        self._record(name, arguments, True, _text(result), None)
        return result


def build_server(*, name: str = "fake", log: str | os.PathLike | None = None, transport: str = "stdio") -> FastMCP:
    """A fresh FastMCP server with the fake's tools (one per run: its HTTP session manager runs once)."""
    mcp = _LoggingMCP(name, log, transport)

    @mcp.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @mcp.tool(description="Return the text unchanged.")
    def echo(text: str) -> str:
        return text

    @mcp.tool(description=f"Look a key up in a fixed table ({', '.join(LOOKUP)}); other keys are an error.")
    def lookup(key: str) -> str:
        if key not in LOOKUP:
            raise ToolError(f"unknown key {key!r}")
        return LOOKUP[key]

    @mcp.tool(description="Always fails with the given message.")
    def fail(message: str) -> str:
        raise ToolError(message)

    @mcp.tool(description="Sleep for the given number of seconds, then say so.")
    async def sleep(seconds: float) -> str:
        await anyio.sleep(seconds)
        return f"slept {seconds:g}"

    @mcp.tool(description="Echo a secret token back (callers must redact it in their records).")
    def secret_echo(token: str) -> str:
        return token

    return mcp


# ---- streamable HTTP ---------------------------------------------------------------


class _QuietSessionEnd(logging.Filter):
    """mcp 1.10 logs a ClosedResourceError traceback whenever a client ends its HTTP session."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], anyio.ClosedResourceError))


_session_end_filter = _QuietSessionEnd()


class _Front:
    """ASGI middleware: serve ``/mcp`` itself (FastMCP mounts ``/mcp/`` and would answer 307)
    and, with a token, answer 401 to HTTP requests without ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str | None) -> None:
        self.app, self.expected = app, f"bearer {token}".encode() if token else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == "/mcp":
            scope = {**scope, "path": "/mcp/", "raw_path": b"/mcp/"}
        if scope["type"] == "http" and self.expected is not None:
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            scheme, _, token = got.partition(b" ")
            if not hmac.compare_digest(scheme.lower() + b" " + token.strip(), self.expected):
                body = json.dumps({"error": "invalid_token",
                                   "error_description": "missing or wrong bearer token (fake)"}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"www-authenticate", b'Bearer error="invalid_token"')]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


class _Uvicorn(uvicorn.Server):
    """uvicorn that reports its port once it accepts and leaves signals to its owner."""

    def __init__(self, config: uvicorn.Config, on_ready: Any) -> None:
        super().__init__(config)
        self.on_ready = on_ready

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_ready(self.servers[0].sockets[0].getsockname()[1])


def http_server(*, host: str = "127.0.0.1", port: int = 0, name: str = "fake", log: str | os.PathLike | None = None,
                require_token: str | None = None, on_ready: Any = lambda port: None) -> _Uvicorn:
    logger = logging.getLogger("mcp.server.streamable_http")
    if _session_end_filter not in logger.filters:
        logger.addFilter(_session_end_filter)
    app = _Front(build_server(name=name, log=log, transport="http").streamable_http_app(), require_token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=1)
    return _Uvicorn(config, on_ready)


# ---- test helper -------------------------------------------------------------------


class MCPFake:
    """The fake MCP server for a test; see the module docstring.

    ``transport="stdio"``: ``params`` (``StdioServerParameters``) for ``stdio_client``, which
    starts the server. ``transport="http"``: serves on ``url`` while the ``with`` lasts, in a
    thread (default) or, with ``process=True``, as ``python -m tests.fakes.mcp_server``
    (``pid``). ``calls`` reads the ledger: ``log`` if given, else a temporary file.
    """

    def __init__(self, transport: str = "http", *, log: str | os.PathLike | None = None, name: str = "fake",
                 require_token: str | None = None, process: bool = False, host: str = "127.0.0.1",
                 port: int = 0, crash_on_start: bool = False) -> None:
        if transport not in ("stdio", "http"):
            raise ValueError("transport must be 'stdio' or 'http'")
        self.transport, self.name, self.require_token = transport, name, require_token
        self.process_mode, self.host, self.port, self.crash_on_start = process, host, port, crash_on_start
        self._own_log = log is None
        if log is None:
            fd, log = tempfile.mkstemp(prefix="mcp-fake-", suffix=".jsonl")
            os.close(fd)
        self.log = Path(log)
        self._final_calls: list[dict] | None = None
        self._server: _Uvicorn | None = None
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.returncode: int | None = None
        self._stderr_tail = ""

    # what a client needs

    def args(self) -> list[str]:
        """Command-line arguments of ``python -m tests.fakes.mcp_server`` for this fake."""
        a = ["-m", "tests.fakes.mcp_server", "--transport", self.transport, "--name", self.name, "--log", str(self.log)]
        if self.transport == "http":
            a += ["--host", self.host, "--port", str(self.port)]
        if self.require_token:
            a += ["--require-token", self.require_token]
        if self.crash_on_start:
            a.append("--crash-on-start")
        return a

    @property
    def params(self) -> StdioServerParameters:
        return StdioServerParameters(command=sys.executable, args=self.args(), cwd=str(REPO),
                                     env={**os.environ, "PYTHONPATH": str(REPO)})

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/mcp"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.require_token}"} if self.require_token else {}

    @property
    def calls(self) -> list[dict]:
        return list(self._final_calls) if self._final_calls is not None else read_log(self.log)

    # lifecycle

    def start(self) -> "MCPFake":
        if self.transport == "stdio":
            return self
        if self.process_mode:
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        ready = threading.Event()
        errors: list[BaseException] = []

        def on_ready(port: int) -> None:
            self.port = port
            ready.set()

        self._server = http_server(host=self.host, port=self.port, name=self.name, log=self.log,
                                   require_token=self.require_token, on_ready=on_ready)

        def run() -> None:
            try:
                asyncio.run(self._server.serve())
            except BaseException as e:  # SystemExit from a failed startup too
                errors.append(e)
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name=f"mcp-fake-{self.name}", daemon=True)
        self._thread.start()
        if not ready.wait(30) or errors or not self._server.started:
            self.stop()
            raise RuntimeError("MCP fake failed to start") from (errors[0] if errors else None)
        self.pid = os.getpid()

    def _start_process(self) -> None:
        self._proc = subprocess.Popen([sys.executable, *self.args()], cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        line = self._proc.stdout.readline().strip()
        if not line.startswith("READY "):
            self.stop()
            raise RuntimeError(f"MCP fake did not start: {line!r} {self._stderr_tail}")
        url = line.split()[1]
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])
        self.pid = self._proc.pid

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(10)
        self._server = self._thread = None
        if self._proc is not None:
            proc, self._proc = self._proc, None
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            self.returncode = proc.returncode
            self._stderr_tail = proc.stderr.read()[-2000:]
            proc.stdout.close()
            proc.stderr.close()
        if self._own_log and self._final_calls is None:
            self._final_calls = read_log(self.log)
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> "MCPFake":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ---- command line ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.fakes.mcp_server", description="fake MCP server (FastMCP)")
    p.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--name", default="fake", help="the server name it reports (default: fake)")
    p.add_argument("--log", default=None, help="append one JSON line per tool call to this file")
    p.add_argument("--require-token", default=None, help="http: answer 401 without 'Authorization: Bearer T'")
    p.add_argument("--crash-on-start", action="store_true", help=f"write one line to stderr, exit {CRASH_EXIT}")
    a = p.parse_args(argv)
    if a.crash_on_start:
        print(CRASH_MESSAGE, file=sys.stderr, flush=True)
        sys.exit(CRASH_EXIT)
    if a.require_token and a.transport != "http":
        p.error("--require-token needs --transport http")
    if a.transport == "stdio":
        anyio.run(build_server(name=a.name, log=a.log, transport="stdio").run_stdio_async)
        return

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def ready(port: int) -> None:
            print(f"READY http://{a.host}:{port}/mcp", flush=True)

        server = http_server(host=a.host, port=a.port, name=a.name, log=a.log, require_token=a.require_token,
                             on_ready=ready)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        await server.serve()

    asyncio.run(run())


if __name__ == "__main__":
    main()
