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
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import re
import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from . import pricing
from .base import AgentCallError, AgentConfig, AgentResult

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


async def call(
    agent: AgentConfig,
    prompt: str,
    *,
    model: str,
    name: str,
    timeout: float | None = None,
    json_mode: bool = False,
) -> AgentResult:
    """One message to fast-agent model ``name`` (``model`` is "fast-agent:<name>")."""
    instruction = agent.instruction or ""
    if json_mode:
        instruction = f"{instruction}\n\n{JSON_INSTRUCTION}".strip()
    started = time.perf_counter()
    future = _runtime.submit(_generate(agent, instruction, name, prompt, model))
    try:
        output, usage, billed = await asyncio.wait_for(asyncio.wrap_future(future), timeout)
    except asyncio.TimeoutError:
        raise AgentCallError(
            f"{model}: request timed out after {timeout:g} s", provider=PROVIDER, model=model, transient=True
        ) from None
    latency_ms = (time.perf_counter() - started) * 1000
    input_tokens, output_tokens, cached_tokens = usage
    return pricing.priced_result(
        output=output, provider=PROVIDER, model=model, price_model=billed, agent=agent.name,
        input_tokens=input_tokens, output_tokens=output_tokens, cached_tokens=cached_tokens,
        latency_ms=latency_ms,
    )


# ---- runs on the fast-agent thread ----------------------------------------------------


async def _generate(
    agent: AgentConfig, instruction: str, model_name: str, prompt: str, model: str
) -> tuple[str, tuple[int, int, int], str]:
    """(output, (input, output, cached tokens), "<provider>.<model>" to price)."""
    try:
        if prompt.lstrip().startswith("***SAVE_HISTORY"):
            raise ValueError("a prompt starting with ***SAVE_HISTORY (fast-agent: write a file) is refused")
        from mcp_agent.core.prompt import Prompt
        from mcp_agent.core.request_params import RequestParams

        context = await _runtime.context()
        fa_agent = await _runtime.agent(agent.name, instruction, tuple(agent.servers))
        factory, provider = _factory(model_name)
        params: dict[str, Any] = {"use_history": False}
        if agent.max_tokens is not None:
            params["maxTokens"] = agent.max_tokens
        if agent.temperature is not None and provider != "anthropic":  # anthropic 1.17: no sampling params
            params["temperature"] = agent.temperature
        llm = factory(agent=fa_agent, request_params=RequestParams(**params), context=context)
        reply = await llm.generate([Prompt.user(prompt)])
        return reply.all_text(), _usage(llm), f"{llm.provider.value}.{llm.default_request_params.model}"
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except BaseException as e:  # SystemExit included: fast-agent must never end the process
        raise _as_call_error(e, model) from None


@lru_cache(maxsize=256)
def _factory(model_name: str) -> tuple[Any, str]:
    """fast-agent's LLM factory for a model string, and the provider it resolves to."""
    from mcp_agent.llm.model_factory import ModelFactory

    provider = ModelFactory.parse_model_string(model_name).provider.value
    return ModelFactory.create_factory(model_name), provider


def _usage(llm: Any) -> tuple[int, int, int]:
    """Real token usage of the call; fast-agent's own models count characters: 0."""
    from mcp_agent.llm.provider_types import Provider

    input_tokens = output_tokens = cached = 0
    for turn in llm.usage_accumulator.turns:
        if turn.provider == Provider.FAST_AGENT:
            continue
        cache = turn.cache_usage
        input_tokens += turn.input_tokens
        if turn.provider == Provider.ANTHROPIC:  # Anthropic's input_tokens leaves out the cache
            input_tokens += cache.cache_read_tokens + cache.cache_write_tokens
        output_tokens += turn.output_tokens
        cached += cache.cache_read_tokens + cache.cache_hit_tokens
    return input_tokens, output_tokens, cached


def _as_call_error(e: BaseException, model: str) -> AgentCallError:
    import anthropic
    import openai
    from mcp_agent.core.exceptions import FastAgentError, ProviderKeyError

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

    async def agent(self, name: str, instruction: str, servers: tuple[str, ...]) -> Any:
        """fast-agent's Agent for this definition, made once (its MCP servers connected)."""
        key = (name, instruction, servers)
        agent = self._agents.get(key)
        if agent is None:
            agent = await self._in_main_task(lambda: self._make_agent(key))
        return agent

    async def _make_agent(self, key: tuple) -> Any:
        if key not in self._agents:
            from mcp_agent.agents.agent import Agent
            from mcp_agent.core.agent_types import AgentConfig as FastAgentConfig

            await self._ensure_app()
            name, instruction, servers = key
            config = FastAgentConfig(name=name, instruction=instruction, servers=list(servers), use_history=False)
            agent = Agent(config=config, context=self._app.context)
            await agent.initialize()
            self._agents[key] = agent
        return self._agents[key]

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
    get clients with ``max_retries=0`` that share one aiohttp connection pool per SDK (and
    that never send an empty ``tools`` list)."""
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
            # fast-agent 0.2.36 sends `tools: []` when an agent has no MCP tools, which the
            # OpenAI API refuses (400 empty_array): leave the field out instead.
            completions = self.chat.completions
            create = completions.create

            async def create_without_empty_tools(*args: Any, **fields: Any) -> Any:
                if fields.get("tools") == []:
                    fields.pop("tools")
                    fields.pop("parallel_tool_calls", None)
                return await create(*args, **fields)

            completions.create = create_without_empty_tools

    class AsyncAnthropic(anthropic.AsyncAnthropic):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(max_retries=0, http_client=shared(anthropic), **kwargs)

    augmented_llm_openai.AsyncOpenAI = AsyncOpenAI
    augmented_llm_anthropic.AsyncAnthropic = AsyncAnthropic


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
