"""Tool use: the tools an agent may call in one step attempt (:class:`Toolbox`), the one
tool loop the OpenAI and Anthropic adapters share (:func:`converse`), and what a
fast-agent call needs to run the same servers itself (:class:`ToolUse`).

The loop sends the conversation with the tools in the provider's format; when the reply
asks for tool calls it runs them (in parallel, each on the server's session of the run),
answers every call with its result and sends again, until a reply asks for none: that
reply is the answer. Calls that would go past ``max_tool_calls`` stop it with a
:class:`ToolUseError` instead. Each request is one ``send(conversation)`` of the caller
(one provider request: one ledger row), each tool call one ``on_call(ToolResult)``.

A tool that raises, does not answer within ``tool_timeout``, or is asked with arguments
that fail its input schema (checked here: the server never sees them) answers the model
with an error it can act on; the step goes on. What a provider needs is a small
:class:`ToolFormat` per SDK (each adapter's ``TOOL_FORMAT``); the adapters read the calls
out of their reply (``AgentResult.tool_calls``, ``AgentResult.message``).

Tool names as the model sees them are ``<server>__<tool>`` (OpenAI allows
``^[a-zA-Z0-9_-]{1,64}$``: other characters become ``_``, a longer name is shortened with
a hash); an allow-list names tools as ``server.tool``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from core.redact import mask_secrets

from .mcp import Connection, MCPPool, MCPServerError, MCPServerSpec

if TYPE_CHECKING:
    from .base import AgentConfig, AgentResult

__all__ = ["Tool", "ToolCall", "ToolResult", "ToolUseError", "Toolbox", "ToolUse", "ToolFormat", "Conversation",
           "converse", "parse_allow", "arguments_problem", "content_text", "wire_name"]

_NOT_WIRE = re.compile(r"[^a-zA-Z0-9_-]")
MAX_WIRE = 64


@dataclass(frozen=True)
class Tool:
    """One tool of one server, as offered to a model."""

    server: str
    name: str
    description: str
    schema: dict[str, Any]
    wire: str  # the name the model calls it by

    @property
    def qualified(self) -> str:
        return f"{self.server}.{self.name}"


@dataclass(frozen=True)
class ToolCall:
    """A call the model asked for: its id, the tool's wire name, its arguments (an object,
    or the text the model sent when it is not JSON)."""

    id: str
    name: str
    arguments: Any


@dataclass
class ToolResult:
    """What became of one call (``core.calls.ToolCallRecord.from_result`` makes its ledger row)."""

    call_id: str | None
    server: str
    tool: str
    arguments: Any
    outcome: str  # core.calls.TOOL_OUTCOMES
    text: str  # what the model reads
    error: str | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


class ToolUseError(Exception):
    """A step attempt that cannot go on with its tools (a server that does not start, an
    allow-list naming a tool its server lacks, ``max_tool_calls`` reached). ``rounds``: the
    model round trips made before (their usage is real and is recorded)."""

    def __init__(self, message: str, *, transient: bool = False, rounds: list[AgentResult] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.rounds = list(rounds or [])


def wire_name(server: str, tool: str, taken: Iterable[str] = ()) -> str:
    """``<server>__<tool>`` in the characters providers accept, unique among ``taken``."""
    name = _NOT_WIRE.sub("_", f"{server}__{tool}")
    if len(name) > MAX_WIRE or name in set(taken):
        digest = hashlib.sha1(f"{server}.{tool}".encode()).hexdigest()[:8]
        name = f"{name[:MAX_WIRE - 9]}_{digest}"
    return name


def parse_allow(entries: list[str] | None) -> frozenset[tuple[str, str]] | None:
    """An allow-list (``["time.get_current_time"]``) as (server, tool) pairs; None: every tool."""
    if entries is None:
        return None
    pairs = []
    for entry in entries:
        server, _, tool = entry.partition(".")
        pairs.append((server, tool))
    return frozenset(pairs)


_validators: dict[str, Any] = {}


def arguments_problem(schema: dict[str, Any] | None, arguments: Any) -> str | None:
    """Why ``arguments`` fail the tool's input schema (None: they pass, or there is no usable schema)."""
    import jsonschema

    if not isinstance(arguments, dict):
        return f"arguments must be a JSON object, got {type(arguments).__name__}"
    if not schema:
        return None
    key = json.dumps(schema, sort_keys=True, default=str)
    validator = _validators.get(key)
    if validator is None:
        try:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
        except jsonschema.SchemaError:
            return None  # the server's schema is broken: let the server judge the arguments
        validator = _validators.setdefault(key, cls(schema))
    error = jsonschema.exceptions.best_match(validator.iter_errors(arguments))
    if error is None:
        return None
    path = "/".join(str(p) for p in error.absolute_path)
    return error.message + (f" at /{path}" if path else "")


def content_text(result: Any) -> str:
    """The text of an MCP ``CallToolResult`` for a model: its text blocks, embedded text
    resources, a note for other content; the structured content when there is nothing else."""
    parts = []
    for block in getattr(result, "content", None) or []:
        kind = getattr(block, "type", None)
        if kind == "text":
            parts.append(block.text)
        elif kind == "resource":
            resource = block.resource
            parts.append(getattr(resource, "text", None) or f"[resource {resource.uri}]")
        elif kind == "resource_link":
            parts.append(f"[resource {block.uri}]")
        else:
            parts.append(f"[{kind} content]")
    if not parts and getattr(result, "structuredContent", None) is not None:
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return "\n".join(parts)


def _timeout_code() -> int:
    import httpx

    return httpx.codes.REQUEST_TIMEOUT  # what mcp's session raises McpError with on a read timeout


class Toolbox:
    """The tools one agent may call in one step attempt, on its servers' sessions of the run.

    ``where`` names the step and agent in messages; ``on_call`` hears every call made."""

    def __init__(self, tools: list[Tool], connections: dict[str, Connection], *, where: str, timeout: float,
                 on_call: Callable[[ToolResult], None] | None = None) -> None:
        self.tools = tools
        self.connections = connections
        self.where = where
        self.timeout = timeout
        self.on_call = on_call
        self._by_wire = {t.wire: t for t in tools}

    @classmethod
    async def open(cls, pool: MCPPool, agent: AgentConfig, *, where: str,
                   on_call: Callable[[ToolResult], None] | None = None) -> Toolbox:
        """Connect the agent's servers (each once per run), list their tools, apply its allow-list.
        ToolUseError naming the step, server and tool when that cannot be done."""
        found = await asyncio.gather(*(pool.connect(s) for s in agent.servers), return_exceptions=True)
        for item in found:
            if isinstance(item, MCPServerError):
                raise ToolUseError(f"{where}: {item.message}", transient=item.transient)
            if isinstance(item, BaseException):
                raise item
        connections: dict[str, Connection] = {c.server: c for c in found}
        allow = parse_allow(agent.tools)
        missing = []
        if allow is not None:
            for server, tool in sorted(allow):
                names = [t.name for t in connections[server].tools]
                if tool not in names:
                    missing.append(f"server '{server}' has no tool '{tool}' (it has: {', '.join(sorted(names)) or 'none'})")
        if missing:
            raise ToolUseError(f"{where}: tools: " + "; ".join(missing))
        tools: list[Tool] = []
        for server in agent.servers:
            for t in connections[server].tools:
                if allow is None or (server, t.name) in allow:
                    wire = wire_name(server, t.name, (x.wire for x in tools))
                    tools.append(Tool(server=server, name=t.name, description=t.description or "",
                                      schema=dict(t.inputSchema or {"type": "object"}), wire=wire))
        return cls(tools, connections, where=where, timeout=agent.tool_timeout, on_call=on_call)

    async def call(self, call: ToolCall) -> ToolResult:
        """Run one call; every failure becomes a result the model reads (``on_call`` hears it)."""
        started = time.perf_counter()
        tool = self._by_wire.get(call.name)
        server, name = (tool.server, tool.name) if tool else ("", call.name)
        arguments = call.arguments
        outcome, text, error = "ok", "", None
        try:
            if tool is None:
                offered = ", ".join(self._by_wire) or "none"
                outcome, error = "invalid", f"no tool named {call.name!r} was offered (offered: {offered})"
            else:
                if isinstance(arguments, str):
                    try:
                        arguments = json.loads(arguments) if arguments.strip() else {}
                    except ValueError as e:
                        outcome, error = "invalid", f"tool {tool.qualified}: its arguments are not JSON ({e})"
                if outcome == "ok" and (problem := arguments_problem(tool.schema, arguments)):
                    outcome, error = "invalid", f"tool {tool.qualified}: arguments do not match its input schema: {problem}"
            if outcome == "ok":
                outcome, text, error = await self._run(tool, arguments)
        except asyncio.CancelledError:
            outcome, error = "cancelled", f"tool {server}.{name}: the step attempt ended while it ran"
            self._report(call, server, name, arguments, outcome, error, error, started)
            raise
        if error is not None and not text:
            text = error
        return self._report(call, server, name, arguments, outcome, text, error, started)

    async def _run(self, tool: Tool, arguments: dict) -> tuple[str, str, str | None]:
        from mcp.shared.exceptions import McpError

        connection = self.connections[tool.server]
        try:
            result = await connection.call(tool.name, arguments, self.timeout)
        except McpError as e:
            if e.error.code == _timeout_code():
                return "timeout", "", f"tool {tool.qualified}: no answer within {self.timeout:g} s (tool_timeout)"
            return "error", "", f"tool {tool.qualified}: MCP server '{tool.server}' answered with an error: {e.error.message}"
        except Exception as e:  # noqa: BLE001 - the session or the server is gone: the model hears it
            message = f"tool {tool.qualified}: MCP server '{tool.server}' failed the call ({type(e).__name__}: {e})"
            if tail := connection.stderr_tail():
                message += f"; its stderr ends with: {tail}"
            return "error", "", message
        text = content_text(result)
        if result.isError:
            return "error", text, text or f"tool {tool.qualified} failed"
        return "ok", text, None

    def _report(self, call: ToolCall, server: str, name: str, arguments: Any, outcome: str, text: str,
                error: str | None, started: float) -> ToolResult:
        result = ToolResult(call_id=call.id, server=server, tool=name, arguments=arguments, outcome=outcome,
                            text=mask_secrets(text), error=mask_secrets(error) if error else None,
                            duration_s=time.perf_counter() - started)
        if self.on_call is not None:
            self.on_call(result)
        return result


# ---------------------------------------------------------------------------
# the loop


class ToolFormat(Protocol):
    """One SDK's shape of tools and results (each tool-capable adapter's ``TOOL_FORMAT``)."""

    def tools(self, tools: list[Tool]) -> list[dict[str, Any]]: ...

    def results(self, calls: list[ToolCall], results: list[ToolResult]) -> list[dict[str, Any]]: ...


@dataclass
class Conversation:
    """The messages so far (the system prompt is the adapter's) and the tools offered, in
    the provider's own format; an adapter called with one sends it as it is."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)

    def text(self) -> str:
        """Everything sent, as text: what a budget bounds the next request's prompt by."""
        return json.dumps([self.messages, self.tools], ensure_ascii=False, default=str)


async def converse(fmt: ToolFormat, prompt: str, *, toolbox: Toolbox,
                   send: Callable[[Conversation], Awaitable[AgentResult]], max_tool_calls: int,
                   where: str) -> list[AgentResult]:
    """The tool loop (see the module docstring); every round trip's result, the answer last."""
    conversation = Conversation(messages=[{"role": "user", "content": prompt}], tools=fmt.tools(toolbox.tools))
    rounds: list[AgentResult] = []
    made = 0
    while True:
        result = await send(conversation)
        rounds.append(result)
        calls = list(result.tool_calls)
        if not calls:
            return rounds
        if made + len(calls) > max_tool_calls:
            asked = ", ".join(toolbox._by_wire[c.name].qualified if c.name in toolbox._by_wire else c.name
                              for c in calls)
            raise ToolUseError(f"{where}: stopped at max_tool_calls={max_tool_calls}: after {made} tool call(s) "
                               f"the model asked for {len(calls)} more ({asked}) instead of answering; raise "
                               "max_tool_calls or narrow the task", rounds=rounds)
        results = await asyncio.gather(*(toolbox.call(c) for c in calls))
        made += len(calls)
        conversation.messages.append(result.message)
        conversation.messages.extend(fmt.results(calls, list(results)))


# ---------------------------------------------------------------------------
# fast-agent


@dataclass
class ToolUse:
    """A fast-agent call's tools: fast-agent starts ``servers`` itself (from its MCP
    configuration, generated from them) and runs its own loop; the adapter applies the
    allow-list, ``max_calls`` and ``timeout`` and reports each call to ``on_call``.
    ``scope`` owns fast-agent's connections: they close with it (the run's pool)."""

    servers: dict[str, MCPServerSpec]
    allow: frozenset[tuple[str, str]] | None
    max_calls: int
    timeout: float
    where: str
    on_call: Callable[[ToolResult], None] | None = None
    scope: MCPPool | None = None

    @classmethod
    async def for_agent(cls, pool: MCPPool, agent: AgentConfig, *, where: str,
                        on_call: Callable[[ToolResult], None] | None = None) -> ToolUse:
        specs = {}
        for server in agent.servers:
            try:
                specs[server] = await pool.spec(server)
            except MCPServerError as e:
                raise ToolUseError(f"{where}: {e.message}", transient=e.transient) from None
        return cls(servers=specs, allow=parse_allow(agent.tools), max_calls=agent.max_tool_calls,
                   timeout=agent.tool_timeout, where=where, on_call=on_call, scope=pool)
