"""Anthropic Messages through the official SDK (``AsyncAnthropic``), non-streaming.

``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL`` are read by the SDK itself. One client
per (running loop, base URL, key) on the SDK's aiohttp transport, ``max_retries=0``
(see openai_adapter for the CPU numbers behind the transport choice).

With tools (``agents.tools.converse``): called with a ``Conversation``, the request sends
its messages and tools and the result carries the reply's ``tool_use`` blocks and the
assistant message to send back; :data:`TOOL_FORMAT` offers tools with their
``input_schema`` and answers the calls of one reply with one user message of
``tool_result`` blocks (``is_error`` for a failed call).

The Messages API of this SDK (anthropic 1.17) has no sampling parameters, so an
agent's ``temperature`` does not apply here. ``json_mode`` adds an instruction to
the system prompt.
"""

from __future__ import annotations

import time

import anthropic

from . import pricing
from ._sdk import cached_client, client_key, in_flight, map_error, missing_key
from .base import AgentConfig, AgentResult
from .providers import PROVIDERS
from .tools import Conversation, Tool, ToolCall, ToolResult

SPEC = PROVIDERS["anthropic"]
PROVIDER = SPEC.name
KEY_VAR = SPEC.key_var
DEFAULT_MAX_TOKENS = 1024
JSON_INSTRUCTION = "Answer with one JSON object and nothing else."

DEFAULT_BASE_URL = SPEC.default_base_url


def _make_client(model: str, api_key: str | None = None, base_url: str | None = None) -> anthropic.AsyncAnthropic:
    explicit = {"api_key": api_key, "base_url": base_url or DEFAULT_BASE_URL} if api_key else {}
    try:
        client = anthropic.AsyncAnthropic(max_retries=0, http_client=anthropic.DefaultAioHttpClient(), **explicit)
    except anthropic.AnthropicError as e:  # e.g. ANTHROPIC_PROFILE names a missing profile
        raise missing_key(PROVIDER, model, KEY_VAR, str(e)) from None
    # Without any credentials the SDK only complains when it sends a request.
    if client.api_key is None and client.auth_token is None and client.credentials is None:
        raise missing_key(PROVIDER, model, KEY_VAR)
    return client


class _ToolFormat:
    """Tools with their ``input_schema``; one user message of ``tool_result`` blocks answers a reply's calls."""

    @staticmethod
    def tools(tools: list[Tool]) -> list[dict]:
        return [{"name": t.wire, "description": t.description, "input_schema": t.schema} for t in tools]

    @staticmethod
    def results(calls: list[ToolCall], results: list[ToolResult]) -> list[dict]:
        return [{"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": c.id, "is_error": not r.ok,
             "content": [{"type": "text", "text": r.text or "(no output)"}]}
            for c, r in zip(calls, results)]}]


TOOL_FORMAT = _ToolFormat()


async def call(
    agent: AgentConfig,
    prompt: str,
    *,
    model: str,
    name: str,
    timeout: float | None = None,
    json_mode: bool = False,
    api_key: str | None = None,
    base_url: str | None = None,
    conversation: Conversation | None = None,
) -> AgentResult:
    """One Messages request of ``prompt`` (or of ``conversation``) to ``name`` (``model`` is
    "anthropic:<name>")."""
    key = client_key(SPEC, api_key, base_url)
    client = await cached_client(key, lambda: _make_client(model, api_key, base_url))

    kwargs: dict = {
        "model": name,
        "max_tokens": agent.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": (list(conversation.messages) if conversation is not None
                     else [{"role": "user", "content": prompt}]),
    }
    if conversation is not None and conversation.tools:
        kwargs["tools"] = conversation.tools
    system = "\n\n".join(s for s in (agent.instruction, JSON_INSTRUCTION if json_mode else None) if s)
    if system:
        kwargs["system"] = system
    if timeout is not None:
        kwargs["timeout"] = timeout

    try:
        # past here a pooled connection is free: the timeout is the request's
        async with in_flight(key, anthropic.DEFAULT_CONNECTION_LIMITS.max_connections):
            started = time.perf_counter()
            message = await client.messages.create(**kwargs)
    except anthropic.AnthropicError as e:
        # no chaining: SDK messages may echo the key, and tracebacks end up in logs
        raise map_error(e, anthropic, provider=PROVIDER, model=model, key_var=KEY_VAR) from None
    latency_ms = (time.perf_counter() - started) * 1000

    output = "".join(block.text for block in message.content if block.type == "text")
    usage = message.usage
    cache_read = usage.cache_read_input_tokens or 0
    cache_write = usage.cache_creation_input_tokens or 0
    # Anthropic's input_tokens leaves out the cached part; AgentResult counts the whole prompt.
    input_tokens = usage.input_tokens + cache_read + cache_write
    result = pricing.priced_result(
        output=output, provider=PROVIDER, model=model, price_model=name, agent=agent.name,
        input_tokens=input_tokens, output_tokens=usage.output_tokens, cached_tokens=cache_read,
        cache_write_tokens=cache_write, latency_ms=latency_ms,
    )
    if conversation is not None:
        result.tool_calls = [ToolCall(id=b.id, name=b.name, arguments=b.input)
                             for b in message.content if b.type == "tool_use"]
        result.message = {"role": "assistant",
                          "content": [b.model_dump(exclude_none=True) for b in message.content]}
    return result
