"""`ProviderCredentials`: an API key (and endpoint) for one LLM provider."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, HttpUrl, SecretStr, field_validator

from prefect.blocks.core import Block

from blocks._meta import BLOCK_CONFIG, prefect_logo

from agents.providers import SPECS

# every provider that takes a key, and the kinds of key each accepts (agents.providers)
Provider = Literal[tuple(kind for spec in SPECS for kind in spec.credential_kinds)]  # type: ignore[valid-type]


class ProviderCredentials(Block):
    """
    An API key and endpoint for one LLM provider: OpenAI, Anthropic, or any server
    that speaks the OpenAI API (vLLM, Ollama, llama.cpp) with `openai-compatible`.

    An agent names one with `credentials: <block name>`; without it Orchestra uses
    the SDK's environment variable, then a block named `<provider>-default`.

    Attributes:
        api_key: The provider API key.
        provider: Which API the key is for.
        base_url: Endpoint of the API; empty means the provider's public endpoint.
        organization: OpenAI organization ID.

    Example:
        ```python
        from blocks import ProviderCredentials

        ProviderCredentials(
            provider="openai-compatible",
            api_key="sk-local",
            base_url="http://127.0.0.1:8000/v1",
        ).save("BLOCK_NAME", overwrite=True)

        provider_credentials_block = ProviderCredentials.load("BLOCK_NAME")
        provider_credentials_block.api_key.get_secret_value()
        ```
    """

    model_config = BLOCK_CONFIG

    _block_type_name = "Orchestra Provider Credentials"
    _block_type_slug = "orchestra-provider-credentials"
    _logo_url = prefect_logo("secret.png")
    _documentation_url = HttpUrl("https://docs.prefect.io/latest/develop/blocks")
    _description = (
        "An API key and endpoint for an LLM provider used by Orchestra agents:"
        " OpenAI, Anthropic or an OpenAI-compatible server. The latter covers vLLM,"
        " Ollama and llama.cpp servers."
    )

    api_key: SecretStr = Field(
        default=...,
        title="API key",
        description="The provider API key; stored encrypted and never shown after saving.",
    )
    provider: Provider = Field(
        default=...,
        description=(
            "Which API the key is for: `openai`, `anthropic`, or `openai-compatible`"
            " (any server speaking the OpenAI API, used by `openai:` models)."
        ),
    )
    base_url: str | None = Field(
        default=None,
        title="Base URL",
        description=(
            "Endpoint of the API, e.g. `http://127.0.0.1:11434/v1` for Ollama;"
            " empty means the provider's public endpoint."
        ),
        examples=["https://api.openai.com/v1", "http://127.0.0.1:8000/v1"],
    )
    organization: str | None = Field(
        default=None,
        description="OpenAI organization ID sent with each request; empty for none.",
    )

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("api_key must not be empty")
        return value

    @field_validator("base_url", "organization", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("base_url must start with http:// or https://")
        return value
