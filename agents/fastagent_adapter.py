"""fast-agent, embedded: any fast-agent model string (``passthrough``, ``playback``,
``openai.gpt-4.1-mini``, ``haiku``, ``generic.llama3.2``, ...).

How it is embedded
------------------
fast-agent keeps process-wide state bound to an event loop (its logging event bus,
its MCP connection manager), so it gets a loop of its own: a daemon thread started
by the first ``fast-agent:`` call, which imports fast-agent there (about 3.5 s, once)
and holds one fast-agent context (``MCPApp``, settings built in code: no
``fastagent.config.yaml`` or ``.env`` is read, no log file or console output).
Calls from any loop or thread are handed to it with ``run_coroutine_threadsafe``.

Per call, fast-agent's own pieces are used: a cached ``Agent`` per (name,
instruction, MCP servers), and a fresh LLM from ``ModelFactory`` per call
(``use_history=False``), so every call is independent and its usage is exactly
the LLM's ``usage_accumulator``. fast-agent's synthetic models (passthrough,
playback, slow) count characters, not tokens: they report 0 tokens and cost 0.

fast-agent's OpenAI/Anthropic providers make an SDK client per request, which reads
``OPENAI_BASE_URL``/``ANTHROPIC_BASE_URL`` from the environment (fast-agent reads the
keys); those clients get ``max_retries=0`` (one call, one request: Orchestra decides
every retry) and share one aiohttp connection pool per SDK.
fast-agent raises SystemExit on some configuration errors: every BaseException
except cancellation becomes an AgentCallError, the process never dies.

Tools: a call with ``tools`` (``agents.tools.ToolUse``) puts its MCP servers into
fast-agent's own MCP configuration (its server registry, generated from Orchestra's
map by :func:`mcp_server_config`: never a file), and fast-agent runs its tool loop.
The agent fast-agent runs (``_OrchestraAgent``) offers only the allow-listed tools,
checks arguments against the tool's schema, bounds each call by ``tool_timeout``,
stops at ``max_tool_calls`` and reports every call back to the caller's event loop
and context (so its Prefect events and logs belong to the caller's task run). Each
provider request of the loop is one of the result's ``rounds``. fast-agent keeps
one connection per server name; the servers of a run are disconnected when its pool
closes (``ToolUse.scope``) and no other open run uses them.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import json
import re
import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from core.redact import mask_secrets

from . import pricing
from .base import AgentCallError, AgentConfig, AgentResult
from .mcp import MCPServerError, MCPServerSpec, resolve_command
from .tools import ToolResult, ToolUse, ToolUseError, arguments_problem, content_text

PROVIDER = "fast-agent"
JSON_INSTRUCTION = "Answer with one JSON object and nothing else."
_SETTINGS: dict[str, Any] = {}  # extra fast-agent settings, see configure()


# fast-agent settings unless configure() says otherwise: quiet, no log file, no telemetry
_BASE_SETTINGS: dict[str, Any] = {
    "default_model": "passthrough",
    "logger": {"type": "none", "level": "error", "progress_display": False, "show_chat": False, "show_tools": False},
    "otel": {"enabled": False},
}


def configure(settings: Mapping[str, Any] | None = None, **fields: Any) -> None:
    """fast-agent ``Settings`` fields merged over Orchestra's defaults (e.g.
    ``FastAgentSettings.fastagent_config()``: ``mcp.servers`` for agents' ``servers``,
    ``logger.show_chat``). Takes effect from the next call: the context is rebuilt."""
    _SETTINGS.clear()
    _SETTINGS.update({**(settings or {}), **fields})
    _runtime.reset()


def _merged(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            value = _merged(merged[key], value)
        merged[key] = value
    return merged


def mcp_server_config(name: str, spec: MCPServerSpec) -> dict[str, Any]:
    """One server of Orchestra's map as fast-agent's MCP configuration reads it (the
    ``mcp.servers.<name>`` entry of ``fastagent.config.yaml``), secrets revealed: hand it to
    fast-agent, never log it."""
    entry: dict[str, Any] = {"name": name, "transport": spec.kind}
    plain = spec.plain()
    if spec.kind == "stdio":
        entry["command"] = resolve_command(spec.command or "")
        entry["args"] = list(spec.args)
        if plain.get("env"):
            entry["env"] = plain["env"]
        if spec.cwd:
            entry["cwd"] = spec.cwd
    else:
        entry["url"] = spec.url
        if plain.get("headers"):
            entry["headers"] = plain["headers"]
    return entry


async def call(
    agent: AgentConfig,
    prompt: str,
    *,
    model: str,
    name: str,
    timeout: float | None = None,
    json_mode: bool = False,
    tools: ToolUse | None = None,
) -> AgentResult:
    """One message to fast-agent model ``name`` (``model`` is "fast-agent:<name>"); with
    ``tools``, fast-agent's tool loop on those servers (see the module docstring)."""
    instruction = agent.instruction or ""
    if json_mode:
        instruction = f"{instruction}\n\n{JSON_INSTRUCTION}".strip()
    started = time.perf_counter()
    scope = _CallScope(tools, asyncio.get_running_loop(), contextvars.copy_context()) if tools else None
    if tools is not None and tools.scope is not None:
        tools.scope.on_close(_releaser(tools.scope))
    future = _runtime.submit(_generate(agent, instruction, name, prompt, model, scope))
    try:
        output, turns, billed = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except asyncio.TimeoutError:
        raise AgentCallError(
            f"{model}: request timed out after {timeout:g} s", provider=PROVIDER, model=model, transient=True
        ) from None
    except (AgentCallError, ToolUseError) as e:
        e.rounds = _rounds(agent, model, getattr(e, "turns", []))
        if isinstance(e, ToolUseError) and getattr(e, "server", None) and tools.scope is not None:
            raise await _diagnose(e, tools) from None
        raise
    latency_ms = (time.perf_counter() - started) * 1000
    rounds = _rounds(agent, model, turns) if len(turns) > 1 else []
    usage = [sum(t[i] for t in turns) for i in range(3)] if turns else [0, 0, 0]
    result = pricing.priced_result(
        output=output, provider=PROVIDER, model=model, price_model=billed, agent=agent.name,
        input_tokens=usage[0], output_tokens=usage[1], cached_tokens=usage[2],
        latency_ms=latency_ms,
    )
    if rounds:  # each request priced on its own; the sum is the call's
        result.cost_usd = sum(r.cost_usd for r in rounds)
        result.priced = all(r.priced for r in rounds)
        result.rounds = rounds
    return result


async def _diagnose(error: ToolUseError, tools: ToolUse) -> ToolUseError:
    """fast-agent says little about a server that did not start (and keeps its stderr to
    itself): start it once through the run's own sessions, which say why."""
    try:
        await tools.scope.connect(error.server)
    except MCPServerError as found:
        return ToolUseError(f"{tools.where}: {found.message}", transient=found.transient)
    return error  # it started this time: fast-agent's word stands


def _rounds(agent: AgentConfig, model: str, turns: list[tuple]) -> list[AgentResult]:
    """One priced result per provider request of fast-agent's loop; a request's latency is the
    time from the previous request or tool call to its answer."""
    out = []
    for input_tokens, output_tokens, cached_tokens, billed, latency_s in turns:
        out.append(pricing.priced_result(
            output="", provider=PROVIDER, model=model, price_model=billed, agent=agent.name,
            input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens,
            latency_ms=latency_s * 1000))
    return out


def _releaser(scope: Any):
    """The close callback of a run's pool: one per pool (the pool keeps each callback once)."""
    key = id(scope)
    if key not in _releasers:
        async def release() -> None:
            _releasers.pop(key, None)
            await asyncio.wrap_future(_runtime.submit(_runtime.release(key)))

        _releasers[key] = release
    return _releasers[key]


_releasers: dict[int, Any] = {}


class _ToolLimit(Exception):
    """Raised in fast-agent's tool loop at max_tool_calls (made a PromptExitError, which
    fast-agent lets through, when fast-agent is imported)."""


class _CallScope:
    """The tool policy of one fast-agent call, seen by ``_OrchestraAgent`` through a context
    variable of the call's task on the fast-agent loop."""

    def __init__(self, use: ToolUse, loop: asyncio.AbstractEventLoop, context: contextvars.Context) -> None:
        self.use = use
        self.loop = loop
        self.context = context
        self.count = 0
        self.marks: list[float] = []  # when each tool call ended (time.time)

    def report(self, result: ToolResult) -> None:
        self.marks.append(time.time())
        if self.use.on_call is not None and not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.use.on_call, result, context=self.context)

    async def call(self, agent: Any, name: str, arguments: dict | None, call_next) -> Any:
        from mcp.types import CallToolResult, TextContent

        started = time.perf_counter()
        found = agent._namespaced_tool_map.get(name)
        server, tool = (found.server_name, found.tool.name) if found else ("", name)
        allowed = found is not None and (self.use.allow is None or (server, tool) in self.use.allow)
        arguments = arguments if arguments is not None else {}
        if allowed and self.count >= self.use.max_calls:
            raise _limit_error(f"{self.use.where}: stopped at max_tool_calls={self.use.max_calls}: after "
                               f"{self.count} tool call(s) the model asked for {server}.{tool} instead of "
                               "answering; raise max_tool_calls or narrow the task")
        self.count += 1
        outcome, text, error, result = "ok", "", None, None
        if not allowed:
            outcome, error = "invalid", f"no tool named {name!r} was offered"
        elif problem := arguments_problem(found.tool.inputSchema, arguments):
            outcome, error = "invalid", f"tool {server}.{tool}: arguments do not match its input schema: {problem}"
        else:
            try:
                result = await asyncio.wait_for(call_next(name, arguments), self.use.timeout)
            except asyncio.TimeoutError:
                outcome = "timeout"
                error = f"tool {server}.{tool}: no answer within {self.use.timeout:g} s (tool_timeout)"
            else:
                text = mask_secrets(content_text(result))
                if result.isError:
                    outcome, error = "error", text or f"tool {server}.{tool} failed"
        self.report(ToolResult(call_id=None, server=server, tool=tool, arguments=arguments, outcome=outcome,
                               text=text or error or "", error=mask_secrets(error) if error else None,
                               duration_s=time.perf_counter() - started))
        if result is not None and not result.isError:
            masked = [b.model_copy(update={"text": mask_secrets(b.text)}) if getattr(b, "type", "") == "text" else b
                      for b in result.content]
            return result.model_copy(update={"content": masked})
        return CallToolResult(isError=True, content=[TextContent(type="text", text=mask_secrets(error or text))])

    def allows(self, agent: Any, name: str) -> bool:
        if self.use.allow is None:
            return True
        found = agent._namespaced_tool_map.get(name)
        return found is not None and (found.server_name, found.tool.name) in self.use.allow


_call_scope: contextvars.ContextVar[_CallScope | None] = contextvars.ContextVar("orchestra_fast_agent_tools",
                                                                                default=None)


def _limit_error(message: str) -> Exception:
    from mcp_agent.core.exceptions import PromptExitError

    class ToolLimit(_ToolLimit, PromptExitError):
        pass

    return ToolLimit(message)


@lru_cache(maxsize=1)
def _agent_class() -> type:
    """fast-agent's Agent with Orchestra's tool policy (the call's ``_CallScope``)."""
    from mcp.types import ListToolsResult
    from mcp_agent.agents.agent import Agent

    class _OrchestraAgent(Agent):
        async def list_tools(self) -> ListToolsResult:
            listed = await super().list_tools()
            scope = _call_scope.get()
            if scope is None:
                return listed
            return ListToolsResult(tools=[t for t in listed.tools if scope.allows(self, t.name)])

        async def call_tool(self, name: str, arguments: dict | None = None) -> Any:
            scope = _call_scope.get()
            if scope is None:
                return await super().call_tool(name, arguments)
            return await scope.call(self, name, arguments, super().call_tool)

    return _OrchestraAgent


# ---- runs on the fast-agent thread ----------------------------------------------------


async def _generate(
    agent: AgentConfig, instruction: str, model_name: str, prompt: str, model: str, scope: _CallScope | None = None
) -> tuple[str, list[tuple], str]:
    """(output, one (input, output, cached tokens, billed model, latency s) per provider
    request, "<provider>.<model>" to price)."""
    llm = None
    started = time.time()  # again just before the loop: the time to make fast-agent's agent is no request's
    if scope is not None:
        _call_scope.set(scope)
    try:
        if prompt.lstrip().startswith("***SAVE_HISTORY"):
            raise ValueError("a prompt starting with ***SAVE_HISTORY (fast-agent: write a file) is refused")
        from mcp_agent.core.prompt import Prompt
        from mcp_agent.core.request_params import RequestParams

        context = await _runtime.context()
        servers = ({n: mcp_server_config(n, s) for n, s in scope.use.servers.items()}
                   if scope is not None else None)
        try:
            fa_agent = await _runtime.agent(agent.name, instruction, tuple(agent.servers), servers,
                                            id(scope.use.scope) if scope is not None and scope.use.scope else None)
        except Exception as e:
            if scope is not None and _is_start_failure(e):  # no request was made: not a failed call
                failed = ToolUseError(f"{scope.use.where}: {_as_call_error(e, model).message.split(': ', 1)[1]}")
                named = re.search(r"'([^']+)'", getattr(e, "message", "") or "")
                failed.server = named.group(1) if named else None
                raise failed from None
            raise
        if scope is not None:
            _check_allow_list(fa_agent, scope.use)
        factory, provider = _factory(model_name)
        params: dict[str, Any] = {"use_history": False}
        if agent.max_tokens is not None:
            params["maxTokens"] = agent.max_tokens
        if agent.temperature is not None and provider != "anthropic":  # anthropic 1.17: no sampling params
            params["temperature"] = agent.temperature
        llm = factory(agent=fa_agent, request_params=RequestParams(**params), context=context)
        started = time.time()
        reply = await llm.generate([Prompt.user(prompt)])
        billed = f"{llm.provider.value}.{llm.default_request_params.model}"
        # after tool calls the reply holds their results too: the answer is the model's last text
        output = reply.last_text() if scope is not None and scope.count else reply.all_text()
        return output, _turns(llm, started, scope), billed
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except BaseException as e:  # SystemExit included: fast-agent must never end the process
        if isinstance(e, ToolUseError):
            error: Exception = e
        elif isinstance(e, _ToolLimit):
            error = ToolUseError(getattr(e, "message", None) or str(e))
        else:
            error = _as_call_error(e, model)
        error.turns = _turns(llm, started, scope) if llm is not None else []
        raise error from None


@lru_cache(maxsize=256)
def _factory(model_name: str) -> tuple[Any, str]:
    """fast-agent's LLM factory for a model string, and the provider it resolves to."""
    from mcp_agent.llm.model_factory import ModelFactory

    provider = ModelFactory.parse_model_string(model_name).provider.value
    return ModelFactory.create_factory(model_name), provider


def _is_start_failure(e: BaseException) -> bool:
    from mcp_agent.core.exceptions import ServerInitializationError

    return isinstance(e, ServerInitializationError)


def _check_allow_list(fa_agent: Any, use: ToolUse) -> None:
    """ToolUseError when the allow-list names a tool its server lacks (as ``Toolbox.open`` says)."""
    if use.allow is None:
        return
    have: dict[str, list[str]] = {}
    for found in fa_agent._namespaced_tool_map.values():
        have.setdefault(found.server_name, []).append(found.tool.name)
    missing = [f"server '{server}' has no tool '{tool}' (it has: {', '.join(sorted(have.get(server, []))) or 'none'})"
               for server, tool in sorted(use.allow) if tool not in have.get(server, [])]
    if missing:
        raise ToolUseError(f"{use.where}: tools: " + "; ".join(missing))


def _turns(llm: Any, started: float, scope: _CallScope | None) -> list[tuple]:
    """Real token usage of each provider request of the call, (input, output, cached tokens,
    billed model, latency s); fast-agent's own models count characters: none."""
    from mcp_agent.llm.provider_types import Provider

    out = []
    since = started
    marks = sorted(scope.marks) if scope is not None else []
    for turn in llm.usage_accumulator.turns:
        if turn.provider == Provider.FAST_AGENT:
            continue
        cache = turn.cache_usage
        input_tokens = turn.input_tokens
        if turn.provider == Provider.ANTHROPIC:  # Anthropic's input_tokens leaves out the cache
            input_tokens += cache.cache_read_tokens + cache.cache_write_tokens
        cached = cache.cache_read_tokens + cache.cache_hit_tokens
        since = max([since, *(m for m in marks if m <= turn.timestamp)])
        out.append((input_tokens, turn.output_tokens, cached, f"{turn.provider.value}.{turn.model}",
                    max(0.0, turn.timestamp - since)))
        since = turn.timestamp
    return out


def _as_call_error(e: BaseException, model: str) -> AgentCallError:
    import anthropic
    import openai
    from mcp_agent.core.exceptions import FastAgentError, ProviderKeyError, ServerInitializationError

    from ._sdk import map_error, missing_key
    from .providers import PROVIDERS

    if isinstance(e, AgentCallError):
        return e
    if isinstance(e, openai.OpenAIError):
        return map_error(e, openai, provider=PROVIDER, model=model, key_var=PROVIDERS["openai"].key_var)
    if isinstance(e, anthropic.AnthropicError):
        return map_error(e, anthropic, provider=PROVIDER, model=model, key_var=PROVIDERS["anthropic"].key_var)
    if isinstance(e, ProviderKeyError) and (var := re.search(r"\b[A-Z][A-Z0-9_]*_(?:API_KEY|TOKEN)\b", e.details)):
        return missing_key(PROVIDER, model, var.group())
    if isinstance(e, ServerInitializationError):  # a server of the agent did not start
        server = re.search(r"'([^']+)'", e.message)
        detail = " ".join(str(e.details or "").split())
        return AgentCallError(f"{model}: MCP server {server.group(0) if server else ''} did not start"
                              + (f": {detail}" if detail else ""), provider=PROVIDER, model=model, transient=False)
    if isinstance(e, FastAgentError):
        detail = f": {e.details}" if e.details else ""
        return AgentCallError(f"{model}: {e.message}{detail}", provider=PROVIDER, model=model, transient=False)
    if isinstance(e, SystemExit):
        return AgentCallError(
            f"{model}: fast-agent exited (code {e.code}); check the model string and fast-agent settings",
            provider=PROVIDER,
            model=model,
            transient=False,
        )
    return AgentCallError(f"{model}: {type(e).__name__}: {e}", provider=PROVIDER, model=model, transient=False)


# ---- the fast-agent thread -------------------------------------------------------------


class _Runtime:
    """A daemon thread running one event loop that owns the fast-agent context.

    Calls run as tasks of that loop. Lifecycle steps (making the context, making an
    agent, which may connect MCP servers, closing) run one at a time in the loop's
    main task: fast-agent's MCP connection manager holds an anyio task group that must
    be entered and left by the same task.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._jobs: asyncio.Queue | None = None
        self._base_context = contextvars.Context()
        self._app: Any = None
        self._agents: dict[tuple, Any] = {}
        self._servers: dict[str, dict] = {}  # server name -> the definition it was connected with

    def submit(self, coro) -> Any:
        """Run ``coro`` on the fast-agent loop; a concurrent.futures.Future of its result.

        The task runs in a copy of the runtime's own context, not the caller's: no
        caller context variable leaks in, and pydantic's generic-model cache (a context
        variable) is shared by all calls instead of being rebuilt per task.
        """
        loop = self._loop
        if loop is None:
            with self._lock:
                if self._loop is None:
                    self._start()
                loop = self._loop
        return self._base_context.copy().run(asyncio.run_coroutine_threadsafe, coro, loop)

    def _start(self) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            try:
                loop.run_until_complete(self._serve(ready))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="orchestra-fast-agent", daemon=True)
        self._thread.start()
        ready.wait()
        self._loop = loop
        atexit.register(self.stop)

    async def _serve(self, ready: threading.Event) -> None:
        """The main task: runs lifecycle jobs until stopped (a None job)."""
        self._jobs = asyncio.Queue()
        ready.set()
        while (job := await self._jobs.get()) is not None:
            make, future = job
            try:
                result = await make()
            except BaseException as e:  # handed to the caller, who converts it
                if not future.done():
                    future.set_exception(e)
            else:
                if not future.done():
                    future.set_result(result)
        await self._close()

    async def _in_main_task(self, make) -> Any:
        future = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((make, future))
        return await future

    async def context(self) -> Any:
        """The fast-agent context, made on first use (imports fast-agent)."""
        if self._app is None:
            await self._in_main_task(self._ensure_app)
        return self._app.context

    async def _ensure_app(self) -> None:
        if self._app is None:
            self._app = await _make_app()
            self._base_context = contextvars.copy_context()  # with the warmed model cache

    async def agent(self, name: str, instruction: str, servers: tuple[str, ...],
                    definitions: dict[str, dict] | None = None, scope: int | None = None) -> Any:
        """fast-agent's Agent for this definition, made once per ``scope`` (a run's pool), its
        MCP servers connected; ``definitions`` enter fast-agent's server registry first."""
        digest = json.dumps(definitions, sort_keys=True, default=str) if definitions else None
        key = (name, instruction, servers, scope, digest)
        agent = self._agents.get(key)
        if agent is None:
            agent = await self._in_main_task(lambda: self._make_agent(key, definitions or {}))
        return agent

    async def _make_agent(self, key: tuple, definitions: dict[str, dict]) -> Any:
        if key not in self._agents:
            from mcp_agent.config import MCPServerSettings
            from mcp_agent.core.agent_types import AgentConfig as FastAgentConfig

            await self._ensure_app()
            name, instruction, servers, _, _ = key
            registry = self._app.context.server_registry.registry
            manager = getattr(self._app.context, "_connection_manager", None)
            for server, entry in definitions.items():
                if self._servers.get(server, entry) != entry and manager is not None:
                    await manager.disconnect_server(server)  # a new definition under that name
                registry[server] = MCPServerSettings(**entry)
                self._servers[server] = entry
            config = FastAgentConfig(name=name, instruction=instruction, servers=list(servers), use_history=False)
            agent = _agent_class()(config=config, context=self._app.context)
            await agent.initialize()
            self._agents[key] = agent
        return self._agents[key]

    async def release(self, scope: int) -> None:
        """Forget the agents of ``scope`` and disconnect the servers no other scope's agents use."""
        await self._in_main_task(lambda: self._release(scope))

    async def _release(self, scope: int) -> None:
        mine = [k for k in self._agents if k[3] == scope]
        for key in mine:
            self._agents.pop(key, None)
        in_use = {s for k in self._agents for s in k[2]}
        manager = getattr(self._app.context, "_connection_manager", None) if self._app is not None else None
        for server in {s for k in mine for s in k[2]} - in_use:
            if manager is not None:
                try:
                    await manager.disconnect_server(server)
                except Exception:
                    pass
            self._servers.pop(server, None)

    async def _close(self) -> None:
        agents, self._agents = self._agents, {}
        app, self._app = self._app, None
        for agent in agents.values():
            try:
                await agent.shutdown()
            except Exception:
                pass
        if app is not None:
            try:
                await app.cleanup()
            except Exception:
                pass
        clients = list(_http_clients.values())
        _http_clients.clear()
        for client in clients:
            try:
                await client.aclose()
            except Exception:
                pass

    def reset(self) -> None:
        """Close the context and agents; the next call builds them again."""
        loop = self._loop
        if loop is not None and threading.current_thread() is not self._thread:
            async def close() -> None:
                await self._in_main_task(self._close)

            asyncio.run_coroutine_threadsafe(close(), loop).result(30)

    def stop(self) -> None:
        """Close fast-agent (its MCP server connections) and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or threading.current_thread() is thread:
            return
        loop.call_soon_threadsafe(self._jobs.put_nowait, None)
        thread.join(10)
        self._loop = self._thread = None


async def _make_app() -> Any:
    """fast-agent's MCPApp with settings made in code, initialised on this loop."""
    from mcp_agent import console
    from mcp_agent.app import MCPApp
    from mcp_agent.config import Settings

    _patch_sdk_clients()
    _warm_stream_models()
    settings = Settings(_env_file=None, **_merged(_BASE_SETTINGS, _SETTINGS))
    logger = settings.logger
    quiet = not (logger.show_chat or logger.show_tools or logger.progress_display)
    for rich_console in (console.console, console.error_console, console.server_console):
        rich_console.quiet = quiet
    app = MCPApp(name="orchestra", settings=settings, human_input_callback=None)
    await app.initialize()
    return app


_http_clients: dict[str, Any] = {}  # one connection pool per SDK for fast-agent's clients


def _patch_sdk_clients() -> None:
    """fast-agent makes a new OpenAI/Anthropic SDK client for every request, with the SDKs'
    default of 2 retries and a connection pool that is never closed. Its provider modules
    get clients with ``max_retries=0`` that share one aiohttp connection pool per SDK. Its
    OpenAI requests leave out an empty ``tools`` list (the API refuses one)."""
    import anthropic
    import openai
    from mcp_agent.llm.providers import augmented_llm_anthropic, augmented_llm_openai

    def shared(sdk) -> Any:
        client = _http_clients.get(sdk.__name__)
        if client is None:
            client = _http_clients[sdk.__name__] = sdk.DefaultAioHttpClient()
        return client

    class AsyncOpenAI(openai.AsyncOpenAI):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(max_retries=0, http_client=shared(openai), **kwargs)

    class AsyncAnthropic(anthropic.AsyncAnthropic):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(max_retries=0, http_client=shared(anthropic), **kwargs)

    augmented_llm_openai.AsyncOpenAI = AsyncOpenAI
    augmented_llm_anthropic.AsyncAnthropic = AsyncAnthropic

    # fast-agent sends `tools: []` for an agent without tools, which the OpenAI API refuses
    # ("empty array"): leave `tools` out then, as the API wants
    llm_class = augmented_llm_openai.OpenAIAugmentedLLM
    if not getattr(llm_class._prepare_api_request, "_orchestra", False):
        original = llm_class._prepare_api_request

        def prepare_api_request(self, messages, tools, request_params):
            arguments = original(self, messages, tools, request_params)
            if not arguments.get("tools"):
                arguments.pop("tools", None)
            return arguments

        prepare_api_request._orchestra = True
        llm_class._prepare_api_request = prepare_api_request


_warm_models: list[Any] = []


def _warm_stream_models() -> None:
    """fast-agent ends every OpenAI stream with the SDK's ``parse_chat_completion``, which
    parametrises ``ParsedChatCompletion[ResponseFormatT]`` and its choice and message.
    pydantic caches parametrised models in a context variable, weakly: in a fresh task
    they were rebuilt, schema and all, on every call. Made here, in the context every
    call's task copies, and held, they are built once: measured against the fake, a
    streamed fast-agent openai call took 17-24 ms of CPU before, 5-6 ms after."""
    from openai.lib._parsing._completions import ResponseFormatT
    from openai.types.chat import ParsedChatCompletion, ParsedChatCompletionMessage, ParsedChoice

    _warm_models[:] = [m[ResponseFormatT] for m in (ParsedChatCompletion, ParsedChoice, ParsedChatCompletionMessage)]


_runtime = _Runtime()
