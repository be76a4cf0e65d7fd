"""Agents: definitions, the registry (``agents/*.yaml``), one adapter per provider, pricing.

``call_agent`` is the one entry point for a call. Importing this package imports no
LLM SDK: each adapter (and its SDK) is imported the first time its provider is called;
fast-agent, which takes seconds to import, only when a ``fast-agent:`` model is called.
"""

from __future__ import annotations

import importlib

from .base import (
    PROVIDERS,
    AgentCallError,
    AgentConfig,
    AgentResult,
    default_model,
    parse_model,
)
from .registry import load_registry

__all__ = [
    "PROVIDERS",
    "AgentCallError",
    "AgentConfig",
    "AgentResult",
    "call_agent",
    "default_model",
    "load_registry",
    "parse_model",
]

_ADAPTER_MODULES = {
    "openai": "agents.openai_adapter",
    "anthropic": "agents.anthropic_adapter",
    "fast-agent": "agents.fastagent_adapter",
}
_adapters: dict[str, object] = {}


def _adapter(provider: str):
    adapter = _adapters.get(provider)
    if adapter is None:
        adapter = _adapters[provider] = importlib.import_module(_ADAPTER_MODULES[provider])
    return adapter


async def call_agent(
    agent: AgentConfig,
    prompt: str,
    *,
    model: str | None = None,
    timeout: float | None = None,
    json_mode: bool = False,
    api_key: str | None = None,
    base_url: str | None = None,
) -> AgentResult:
    """Send ``prompt`` to ``agent`` once: one attempt, one request at the provider.

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
    credentials = {"api_key": api_key, "base_url": base_url} if api_key and provider != "fast-agent" else {}
    return await _adapter(provider).call(
        agent, prompt, model=model, name=name, timeout=timeout, json_mode=json_mode, **credentials
    )
