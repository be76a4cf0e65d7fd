"""MCP servers: how one is written (:class:`MCPServerSpec`), the shared map
(``agents/mcp_servers.yaml``) and the sessions of one run (:class:`MCPPool`), on the
official ``mcp`` client (stdio, streamable HTTP, SSE).

A run opens each server it needs once, the first time a step's agent needs it, and
keeps the session until :meth:`MCPPool.aclose` (the engine calls it when the run ends).
Each session lives in a task of its own: the SDK's transports are anyio context
managers that must be entered and left by the same task, and a session is shared by
every step of the run, whichever task asks first. A server that fails to start is not
remembered: the next attempt tries again (a retry of a transient failure must not find
the failure cached). A stdio server's stderr goes to a temporary file, and a failed
start quotes its last lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core.redact import redact

__all__ = ["MCPServerSpec", "MCPPool", "MCPServerError", "Connection", "SERVER_NAME", "SERVERS_FILE",
           "load_servers", "resolve_command"]

SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,40}$")  # it prefixes tool names the providers must accept
SERVERS_FILE = Path(__file__).resolve().parent / "mcp_servers.yaml"
STDERR_TAIL_LINES = 5
STDERR_TAIL_CHARS = 800


class MCPServerSpec(BaseModel):
    """One MCP server, as a workflow's ``mcp_servers:``, ``agents/mcp_servers.yaml`` and the
    ``FastAgentSettings`` block write it: ``command`` (+ ``args``, ``env``, ``cwd``) starts a
    stdio server; ``url`` (+ ``headers``) reaches a streamable HTTP one, or an SSE one with
    ``transport: sse``. ``env`` and ``headers`` values may be ``{{ secret('NAME') }}``
    templates (rendered by the engine, never logged)."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    transport: Literal["stdio", "http", "sse"] | None = None  # None: stdio with a command, http with a url
    command: str | None = None
    args: list[str] = []
    env: dict[str, Any] = {}
    cwd: str | None = None
    url: str | None = None
    headers: dict[str, Any] = {}

    @model_validator(mode="after")
    def _one_endpoint(self) -> MCPServerSpec:
        if self.transport is None and bool(self.command) == bool(self.url):
            raise ValueError("give either a command (a stdio server) or a url (a streamable HTTP server)"
                             if not self.command else "has both a command and a url: give one")
        if self.kind == "stdio":
            if not self.command:
                raise ValueError("an MCP server with transport 'stdio' needs a command")
            if self.url or self.headers:
                raise ValueError("url and headers are for http/sse servers, not stdio ones")
        else:
            if not self.url:
                raise ValueError(f"an MCP server with transport {self.kind!r} needs a url")
            if not str(self.url).startswith(("http://", "https://")):
                raise ValueError("url must start with http:// or https://")
            if self.command or self.args or self.env or self.cwd:
                raise ValueError("command, args, env and cwd are for stdio servers, not http/sse ones")
        return self

    @property
    def kind(self) -> str:
        """``stdio``, ``http`` or ``sse``."""
        return self.transport or ("stdio" if self.command else "http")

    def describe(self) -> str:
        """How it is reached, for messages: the command line or the URL (never env or headers)."""
        if self.kind == "stdio":
            return "stdio: " + " ".join([self.command or "", *self.args])
        return f"{self.kind}: {self.url}"

    def plain(self) -> dict[str, Any]:
        """Plain data, secret values revealed (a block's ``SecretStr``): for a hash or a client."""
        data = self.model_dump(exclude_defaults=True)
        for key in ("env", "headers"):
            if key in data:
                data[key] = {k: _reveal(v) for k, v in getattr(self, key).items()}
        return data


def _reveal(value: Any) -> str:
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else str(value)


def load_servers(path: str | Path | None = None) -> dict[str, MCPServerSpec]:
    """The shared map, ``agents/mcp_servers.yaml`` by default (a missing or empty file: none).
    ValueError naming the file and the server."""
    path = Path(path) if path is not None else SERVERS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ValueError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of server names to servers (command: ... or url: ...)")
    servers, problems = {}, []
    for name, entry in data.items():
        if not isinstance(name, str) or not SERVER_NAME.match(name):
            problems.append(f"server {name!r}: a name is 1-40 letters, digits, '_' or '-'")
            continue
        try:
            servers[name] = MCPServerSpec.model_validate(entry)
        except ValidationError as e:
            problems.extend(f"server '{name}': {spec_problem(err)}" for err in e.errors())
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    return servers


def spec_problem(err: dict) -> str:
    """One pydantic error of an MCPServerSpec as a short phrase."""
    field = ".".join(str(p) for p in err["loc"])
    message = "unknown field" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
    return f"{field}: {message}" if field else message


def resolve_command(command: str) -> str:
    """A stdio server's program: as given when it is a path, else found on PATH, else the
    console script of that name beside this Python (its virtualenv's ``bin/``), so tools
    installed next to Orchestra start without an activated virtualenv."""
    if os.sep in command or (os.altsep and os.altsep in command):
        return command
    found = shutil.which(command)
    if found:
        return found
    beside = Path(sys.executable).parent / command
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return command


# ---------------------------------------------------------------------------
# the sessions of a run


class MCPServerError(Exception):
    """A server that cannot be used (it did not start, refused the connection, or is gone).
    The message names the server and how it is reached, is redacted, and for a stdio server
    quotes the end of its stderr. ``transient``: a retry may help (an HTTP server that could
    not be reached, or answered 5xx)."""

    def __init__(self, message: str, *, server: str, transient: bool = False) -> None:
        self.message = redact(message)
        self.server = server
        self.transient = transient
        super().__init__(self.message)


@dataclass
class Connection:
    """An initialised session and the tools its server listed."""

    server: str
    spec: MCPServerSpec
    session: Any  # mcp.ClientSession
    tools: list[Any]  # mcp.types.Tool
    stderr: Any = None

    async def call(self, tool: str, arguments: dict[str, Any], timeout: float | None) -> Any:
        """``tools/call``; McpError (code 408) when ``timeout`` seconds pass without an answer."""
        read_timeout = timedelta(seconds=timeout) if timeout else None
        return await self.session.call_tool(tool, arguments, read_timeout_seconds=read_timeout)

    def stderr_tail(self) -> str:
        return _tail(self.stderr)


Resolver = Callable[[str, MCPServerSpec], Awaitable[MCPServerSpec]]


class MCPPool:
    """The MCP sessions of one run, one per server, opened on first use.

    ``servers`` is the run's map; ``resolve(name, spec)`` renders a server's templates
    (its secrets) the first time it is needed. ``start_timeout`` bounds a server's start
    (the process or connection, ``initialize`` and ``tools/list``)."""

    def __init__(self, servers: Mapping[str, MCPServerSpec], *, resolve: Resolver | None = None,
                 start_timeout: float = 30.0) -> None:
        self.servers = dict(servers)
        self._resolve = resolve
        self.start_timeout = start_timeout
        self._specs: dict[str, asyncio.Future] = {}
        self._opening: dict[str, asyncio.Future] = {}
        self._holders: list[asyncio.Task] = []
        self._closing: asyncio.Event | None = None
        self._on_close: list[Callable[[], Awaitable[None]]] = []
        self.closed = False

    def __contains__(self, name: object) -> bool:
        return name in self.servers

    async def spec(self, name: str) -> MCPServerSpec:
        """The server's spec with its templates rendered (once per run)."""
        if name not in self.servers:
            raise MCPServerError(f"no MCP server '{name}' (defined: {', '.join(sorted(self.servers)) or 'none'})",
                                 server=name)
        found = self._specs.get(name)
        if found is None or _failed(found):
            found = self._specs[name] = asyncio.ensure_future(self._render(name))
            found.add_done_callback(_retrieve)
        return await asyncio.shield(found)

    async def _render(self, name: str) -> MCPServerSpec:
        spec = self.servers[name]
        return await self._resolve(name, spec) if self._resolve is not None else spec

    async def connect(self, name: str) -> Connection:
        """The server's session, started the first time (MCPServerError if it cannot be)."""
        if self.closed:
            raise MCPServerError(f"MCP server '{name}': the run's sessions are closed", server=name)
        opening = self._opening.get(name)
        if opening is None or _failed(opening):
            spec = await self.spec(name)
            opening = self._opening.get(name)
            if opening is None or _failed(opening):
                opening = self._opening[name] = asyncio.get_running_loop().create_future()
                opening.add_done_callback(_retrieve)
                if self._closing is None:
                    self._closing = asyncio.Event()
                # a clean context: the holder outlives the step that first asked for the server
                self._holders.append(asyncio.get_running_loop().create_task(
                    self._hold(name, spec, opening), name=f"mcp-{name}", context=contextvars.Context()))
        return await asyncio.shield(opening)

    def on_close(self, callback: Callable[[], Awaitable[None]]) -> None:
        """``await callback()`` when the pool closes (fast-agent's agents of the run, for one)."""
        if callback not in self._on_close:
            self._on_close.append(callback)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Close every session (a stdio server's process ends) and run the close callbacks."""
        self.closed = True
        if self._closing is not None:
            self._closing.set()
        if self._holders:
            done, pending = await asyncio.wait(self._holders, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=timeout)
        for callback in self._on_close:
            with contextlib.suppress(Exception):
                await callback()
        self._holders.clear()
        self._on_close.clear()

    async def _hold(self, name: str, spec: MCPServerSpec, ready: asyncio.Future) -> None:
        """Open the session, hand it over, keep it until the pool closes: all in this task
        (a start that takes longer than ``start_timeout`` cancels the task, which unwinds
        the transport where it was entered)."""
        errlog = tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace") if spec.kind == "stdio" else None
        task = asyncio.current_task()
        timed_out = False

        def too_slow() -> None:
            nonlocal timed_out
            if not ready.done():
                timed_out = True
                task.cancel()

        timer = asyncio.get_running_loop().call_later(self.start_timeout, too_slow)
        try:
            async with contextlib.AsyncExitStack() as stack:
                from mcp import ClientSession

                read, write = await stack.enter_async_context(_transport(spec, errlog))
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                tools = await _list_tools(session)
                timer.cancel()
                ready.set_result(Connection(server=name, spec=spec, session=session, tools=tools, stderr=errlog))
                await self._closing.wait()
        except BaseException as exc:  # noqa: BLE001 - reported to whoever waits for the server
            if not ready.done():
                if timed_out:
                    exc = TimeoutError()
                ready.set_exception(_start_error(name, spec, exc, errlog, self.start_timeout))
        finally:
            timer.cancel()
            if errlog is not None:
                errlog.close()


def _failed(future: asyncio.Future) -> bool:
    """Done without a result: a failure is not kept, the next use tries again."""
    return future.done() and (future.cancelled() or future.exception() is not None)


def _retrieve(future: asyncio.Future) -> None:
    """Mark a failure as seen (whoever waited for it was told, or gave up waiting)."""
    if not future.cancelled():
        future.exception()


@contextlib.asynccontextmanager
async def _transport(spec: MCPServerSpec, errlog: Any):
    """(read, write) streams of the SDK's client transport for ``spec``."""
    if spec.kind == "stdio":
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        params = StdioServerParameters(command=resolve_command(spec.command or ""), args=list(spec.args),
                                       env={k: _reveal(v) for k, v in spec.env.items()} or None, cwd=spec.cwd)
        async with stdio_client(params, errlog=errlog) as (read, write):
            yield read, write
    elif spec.kind == "sse":
        from mcp.client.sse import sse_client

        async with sse_client(spec.url, headers=_headers(spec)) as (read, write):
            yield read, write
    else:
        from mcp.client.streamable_http import streamablehttp_client

        async with streamablehttp_client(spec.url, headers=_headers(spec)) as (read, write, _):
            yield read, write


def _headers(spec: MCPServerSpec) -> dict[str, str] | None:
    return {k: _reveal(v) for k, v in spec.headers.items()} or None


async def _list_tools(session: Any) -> list[Any]:
    tools, cursor = [], None
    while True:
        page = await session.list_tools(cursor)
        tools.extend(page.tools)
        cursor = page.nextCursor
        if not cursor:
            return tools


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def _tail(errlog: Any) -> str:
    if errlog is None or errlog.closed:
        return ""
    try:
        errlog.flush()
        errlog.seek(0)
        lines = [line.rstrip() for line in errlog.read().splitlines() if line.strip()]
    except (OSError, ValueError):
        return ""
    return " | ".join(lines[-STDERR_TAIL_LINES:])[-STDERR_TAIL_CHARS:]


def _start_error(name: str, spec: MCPServerSpec, exc: BaseException, errlog: Any,
                 start_timeout: float) -> MCPServerError:
    """Why ``name`` did not start, in one sentence, from what the SDK raised."""
    import httpx

    leaves = _leaves(exc)
    transient = False
    reason = None
    for leaf in leaves:  # the most telling cause first
        if isinstance(leaf, httpx.HTTPStatusError):
            status = leaf.response.status_code
            reason = f"HTTP {status} {leaf.response.reason_phrase}".rstrip()
            if status in (401, 403):
                reason += " (check its headers: a missing or wrong token?)"
            transient = status >= 500 or status == 429
            break
        if isinstance(leaf, (httpx.ConnectError, httpx.ConnectTimeout)):
            reason, transient = f"cannot connect ({type(leaf).__name__}: {leaf})", True
            break
        if isinstance(leaf, (TimeoutError, asyncio.TimeoutError)):
            reason = f"no answer to initialize within {start_timeout:g} s"
            transient = spec.kind != "stdio"
            break
        if isinstance(leaf, FileNotFoundError) and spec.kind == "stdio":
            reason = f"command not found: {spec.command}"
            break
        if isinstance(leaf, PermissionError) and spec.kind == "stdio":
            reason = f"command not executable: {spec.command}"
            break
    if reason is None:
        leaf = next((e for e in leaves if not isinstance(e, asyncio.CancelledError)), leaves[0])
        text = str(leaf) or type(leaf).__name__
        reason = text[0].lower() + text[1:] if text else type(leaf).__name__
        if isinstance(leaf, asyncio.CancelledError):
            reason = "cancelled while starting"
    message = f"MCP server '{name}' ({spec.describe()}) did not start: {reason}"
    tail = _tail(errlog)
    if tail:
        message += f"; its stderr ends with: {tail}"
    elif spec.kind == "stdio":
        message += "; it wrote nothing to stderr"
    return MCPServerError(message, server=name, transient=transient)
