"""What a call costs, from genai-prices. An unknown model costs 0 and is unpriced, never an error.

``input_tokens`` is the whole prompt, cached tokens included (genai-prices' convention;
the adapters convert Anthropic's usage to it).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from genai_prices import Usage, data_snapshot
from genai_prices.types import ModelPrice

if TYPE_CHECKING:
    from .base import AgentResult

from .providers import PROVIDERS

# fast-agent models that never call a provider
FREE_FAST_AGENT_MODELS = PROVIDERS["fast-agent"].free_models
_REASONING_SUFFIXES = (".low", ".medium", ".high")
# fast-agent provider prefix -> genai-prices provider id (None: nothing to price, e.g. a local server)
_FAST_AGENT_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "google": "google",
    "googleoai": "google",
    "deepseek": "deepseek",
    "openrouter": "openrouter",
    "azure": "azure",
    "generic": None,
    "tensorzero": None,
    "aliyun": None,
}

_FREE = "free"


def fast_agent_target(model: str) -> tuple[str | None, str] | str | None:
    """Provider and model that a fast-agent model string bills to.

    ``"openai.gpt-4.1-mini"`` -> ``("openai", "gpt-4.1-mini")``; ``"gpt-4.1"`` -> ``(None,
    "gpt-4.1")`` (genai-prices finds the provider); ``"passthrough"`` -> ``"free"``;
    ``"generic.llama3.2"`` (a local server) -> None.
    Aliases (``haiku``, ``sonnet``) are not resolved here: the fast-agent adapter prices
    with the model that fast-agent actually used.
    """
    name = model.strip().removeprefix("fast-agent.")
    for suffix in _REASONING_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    if name in FREE_FAST_AGENT_MODELS:
        return _FREE
    prefix, dot, rest = name.partition(".")
    if dot and prefix in _FAST_AGENT_PROVIDERS:
        provider_id = _FAST_AGENT_PROVIDERS[prefix]
        return (provider_id, rest) if provider_id else None
    return None, name


@lru_cache(maxsize=512)
def _lookup(provider: str, model: str, snapshot_id: int) -> Any:
    """(genai provider, model info), ``"free"``, or None when unknown. Cached per model."""
    provider_id: str | None = provider
    if provider == "fast-agent":
        target = fast_agent_target(model)
        if target is None or target == _FREE:
            return target
        provider_id, model = target
    try:
        return data_snapshot.get_snapshot().find_provider_model(model, None, provider_id, None)
    except (LookupError, ValueError):
        return None


@lru_cache(maxsize=4096)
def _memo_price(provider: str, model: str, snapshot_id: int, tokens: tuple[int, int, int, int]) -> float:
    return _calc(*_lookup(provider, model, snapshot_id), tokens)


def _calc(provider_info: Any, model_info: Any, tokens: tuple[int, int, int, int]) -> float:
    input_tokens, output_tokens, cached_tokens, cache_write_tokens = tokens
    usage = Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cached_tokens or None,
        cache_write_tokens=cache_write_tokens or None,
    )
    return float(model_info.calc_price(usage, provider_info).total_price)


def price(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    *,
    cache_write_tokens: int = 0,
) -> tuple[float, bool]:
    """(cost in USD, priced). Unknown provider or model -> ``(0.0, False)``; free fast-agent
    models (passthrough, playback, slow) -> ``(0.0, True)``."""
    snapshot_id = id(data_snapshot.get_snapshot())
    found = _lookup(provider, model, snapshot_id)
    if found is None:
        return 0.0, False
    if found == _FREE:
        return 0.0, True
    provider_info, model_info = found
    tokens = (max(input_tokens, 0), max(output_tokens, 0), max(cached_tokens, 0), max(cache_write_tokens, 0))
    try:
        if isinstance(model_info.prices, ModelPrice):  # no time-dependent prices: memoise
            return _memo_price(provider, model, snapshot_id, tokens), True
        return _calc(provider_info, model_info, tokens), True
    except (LookupError, ValueError, ArithmeticError):  # e.g. usage the price table cannot handle
        return 0.0, False


def worst_case_cost(provider: str, model: str, prompt_tokens: int, max_tokens: int) -> float:
    """The most a call can cost: the whole prompt uncached and ``max_tokens`` of output (0.0 if unknown)."""
    return price(provider, model, prompt_tokens, max_tokens)[0]


def priced_result(
    *,
    output: str,
    provider: str,
    model: str,
    price_model: str,
    agent: str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
    cache_write_tokens: int = 0,
    latency_ms: float = 0.0,
) -> AgentResult:
    """The adapters' one way to finish a call: price the usage and build the AgentResult.

    ``model`` is the full "provider:model" string; ``price_model`` the name genai-prices
    knows it by under ``provider``.
    """
    from .base import AgentResult

    cost, priced = price(provider, price_model, input_tokens, output_tokens, cached_tokens,
                         cache_write_tokens=cache_write_tokens)
    return AgentResult(output=output, provider=provider, model=model, input_tokens=input_tokens,
                       output_tokens=output_tokens, cached_tokens=cached_tokens, cost_usd=cost,
                       priced=priced, latency_ms=latency_ms, agent=agent)

