"""Agents: who answers a step and what it costs.

Owns: agent definitions and the file registry (``agents/*.yaml``), the provider
table (``agents.providers``: one ``ProviderSpec`` per provider), one adapter per
provider behind ``call_agent``, pricing (genai-prices), circuit breakers and
capability routing.

Never: imports Prefect, SQL, the engine or the app layer; reads a setting other than
through ``core.settings``. Importing this package imports no LLM SDK: each adapter
(and its SDK) is imported the first time its provider is called; fast-agent, which
takes seconds to import, only when a ``fast-agent:`` model is called.
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
from .providers import spec
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

_adapters: dict[str, object] = {}


def _adapter(provider: str):
    adapter = _adapters.get(provider)
    if adapter is None:
        adapter = _adapters[provider] = importlib.import_module(spec(provider).adapter)
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
    credentials = {"api_key": api_key, "base_url": base_url} if api_key and spec(provider).key_var else {}
    return await _adapter(provider).call(
        agent, prompt, model=model, name=name, timeout=timeout, json_mode=json_mode, **credentials
    )
