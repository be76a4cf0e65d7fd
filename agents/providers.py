"""What Orchestra knows about each provider, written once.

Breakers, pricing, credentials, the adapters, the dashboard and the CLI all read
this table. Adding a provider is one adapter module (with an async ``call``, see
``agents.openai_adapter``) and one :class:`ProviderSpec` entry here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ProviderSpec", "PROVIDERS", "SPECS", "spec", "CREDENTIALS_BLOCK"]

CREDENTIALS_BLOCK = "orchestra-provider-credentials"  # the ProviderCredentials block type (blocks.providers)


@dataclass(frozen=True)
class ProviderSpec:
    """One provider: the ``<name>:`` prefix of a model string."""

    name: str
    label: str
    adapter: str  # module with ``async def call(agent, prompt, *, model, name, ...)``
    key_var: str | None = None  # the SDK's API-key variable; None: no key needed
    base_url_var: str | None = None  # the SDK's base-URL variable
    default_base_url: str | None = None  # the public endpoint
    free_models: frozenset[str] = frozenset()  # models that never reach a paid API
    # ProviderCredentials ``provider`` values that may serve this provider's models
    credential_kinds: tuple[str, ...] = ()
    credentials_block: str | None = None  # block type slug that holds its keys

    def base_url(self) -> str:
        """The endpoint calls go to: the base-URL variable, else the public one, else "local"."""
        if self.base_url_var and os.environ.get(self.base_url_var, "").strip():
            return os.environ[self.base_url_var].strip().rstrip("/")
        return (self.default_base_url or "local").rstrip("/")

    def key_set(self) -> bool:
        return bool(self.key_var and os.environ.get(self.key_var, "").strip())


SPECS: tuple[ProviderSpec, ...] = (
    ProviderSpec(
        name="openai", label="OpenAI (and any compatible server)", adapter="agents.openai_adapter",
        key_var="OPENAI_API_KEY", base_url_var="OPENAI_BASE_URL", default_base_url="https://api.openai.com/v1",
        credential_kinds=("openai", "openai-compatible"), credentials_block=CREDENTIALS_BLOCK,
    ),
    ProviderSpec(
        name="anthropic", label="Anthropic", adapter="agents.anthropic_adapter",
        key_var="ANTHROPIC_API_KEY", base_url_var="ANTHROPIC_BASE_URL", default_base_url="https://api.anthropic.com",
        credential_kinds=("anthropic",), credentials_block=CREDENTIALS_BLOCK,
    ),
    ProviderSpec(
        name="fast-agent", label="fast-agent (embedded)", adapter="agents.fastagent_adapter",
        free_models=frozenset({"passthrough", "playback", "slow"}),
    ),
)
PROVIDERS: dict[str, ProviderSpec] = {s.name: s for s in SPECS}


def spec(provider: str) -> ProviderSpec:
    """The spec of ``provider``; KeyError naming the known ones."""
    try:
        return PROVIDERS[provider]
    except KeyError:
        raise KeyError(f"unknown provider {provider!r} (one of {', '.join(PROVIDERS)})") from None
