"""Agents: who answers a step and what it costs.

Owns: agent definitions and the file registry (``agents/*.yaml``), the provider
table (``agents.providers``: one ``ProviderSpec`` per provider), one adapter per
provider behind ``call_agent``, pricing (genai-prices), circuit breakers and
capability routing; tool use: MCP servers and the sessions of a run (``agents.mcp``,
the shared map ``agents/mcp_servers.yaml``) and the one tool loop the OpenAI and
Anthropic adapters share (``agents.tools``).

Never: imports Prefect, SQL, the engine or the app layer; reads a setting other than
through ``core.settings``. Importing this package imports no LLM SDK: each adapter
(and its SDK) is imported the first time its provider is called; fast-agent, which
takes seconds to import, only when a ``fast-agent:`` model is called.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import (
    PROVIDERS,
    AgentCallError,
    AgentConfig,
    AgentResult,
    default_model,
    parse_model,
)
from .providers import spec
from .registry import load_registry

__all__ = [
    "PROVIDERS",
    "AgentCallError",
    "AgentConfig",
    "AgentResult",
    "call_agent",
    "default_model",
    "tool_format",
    "load_registry",
    "parse_model",
]

_adapters: dict[str, object] = {}


def _adapter(provider: str):
    adapter = _adapters.get(provider)
    if adapter is None:
        adapter = _adapters[provider] = importlib.import_module(spec(provider).adapter)
    return adapter


def tool_format(provider: str):
    """The provider's ``agents.tools.ToolFormat`` when ``agents.tools.converse`` drives its
    tool calls (openai, anthropic); None when the provider runs its own loop (fast-agent)."""
    return getattr(_adapter(provider), "TOOL_FORMAT", None)


async def call_agent(
    agent: AgentConfig,
    prompt: str,
    *,
    model: str | None = None,
    timeout: float | None = None,
    json_mode: bool = False,
    api_key: str | None = None,
    base_url: str | None = None,
    conversation: Any = None,
    tools: Any = None,
) -> AgentResult:
    """Send ``prompt`` to ``agent`` once: one attempt, one request at the provider.

    ``conversation`` (``agents.tools.Conversation``, for a provider with a ``tool_format``)
    is sent instead of ``prompt``: one round trip of the tool loop. ``tools``
    (``agents.tools.ToolUse``, for fast-agent) lets the call run its own tool loop: several
    requests, each in ``AgentResult.rounds``.

    ``model`` overrides the agent's model; with neither, ``default_model()`` is used.
    ``timeout`` (seconds) bounds the request. ``json_mode`` asks for one JSON object.
    ``api_key``/``base_url`` (resolved by the caller, e.g. from a Prefect
    ProviderCredentials block) replace the SDK's environment variables for
    ``openai:``/``anthropic:`` models.
    Raises AgentCallError for every failure, an invalid model string included
    (``transient=False``); ``transient`` says whether a retry may help.
    """
    model = model or agent.model or default_model()
    try:
        provider, name = parse_model(model)
    except (ValueError, TypeError) as e:
        raise AgentCallError(
            f"agent {agent.name!r}: {e}",
            provider=model.partition(":")[0] if isinstance(model, str) else "",
            model=str(model),
            transient=False,
        ) from None
    extra: dict[str, Any] = {"api_key": api_key, "base_url": base_url} if api_key and spec(provider).key_var else {}
    if conversation is not None:
        extra["conversation"] = conversation
    if tools is not None:
        extra["tools"] = tools
    return await _adapter(provider).call(
        agent, prompt, model=model, name=name, timeout=timeout, json_mode=json_mode, **extra
    )
