"""The agent contract: definitions, results, errors and model strings.

Nothing here imports an LLM SDK, Prefect, Streamlit or SQL code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.redact import redact  # one redactor for the whole project
from core.settings import DEFAULT_MODEL, settings

from .providers import PROVIDERS


class AgentConfig(BaseModel):
    """One agent: a file in ``agents/*.yaml`` or an inline definition of a workflow."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    model: str | None = None  # "provider:model"; None -> default_model()
    instruction: str | None = None
    description: str | None = None
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)
    capabilities: list[str] = []
    fallback: list[str] = []
    servers: list[str] = []  # MCP server names (not runnable yet: workflow validation refuses them)
    credentials: str | None = None  # name of a Prefect ProviderCredentials block
    daily_budget_usd: float | None = Field(default=None, ge=0)

    @field_validator("model")
    @classmethod
    def _check_model(cls, value: str | None) -> str | None:
        if value is not None:
            parse_model(value)
        return value

    @field_validator("fallback")
    @classmethod
    def _check_fallback(cls, value: list[str]) -> list[str]:
        """Fallbacks are agent names, tried in order (see flows.resilience)."""
        return check_fallback_names(value)

    @model_validator(mode="after")
    def _no_self_fallback(self) -> "AgentConfig":
        if self.name in self.fallback:
            raise ValueError(f"fallback cycle: {self.name} -> {self.name} (an agent cannot fall back to itself)")
        return self


@dataclass
class AgentResult:
    """One successful call. ``input_tokens`` counts the whole prompt, cached tokens included."""

    output: str
    provider: str  # "openai" | "anthropic" | "fast-agent"
    model: str  # full "provider:model" string
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cost_usd: float = 0.0
    priced: bool = False
    latency_ms: float = 0.0
    agent: str | None = None


class AgentCallError(Exception):
    """Everything an adapter raises for a failed call.

    ``transient`` is True for what a retry may fix: 429, 5xx, timeouts, connection
    errors. The message is redacted: it never contains an API key.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        model: str,
        transient: bool,
        status_code: int | None = None,
    ) -> None:
        self.message = redact(message)
        self.provider = provider
        self.model = model
        self.transient = transient
        self.status_code = status_code
        super().__init__(self.message)

    def __reduce__(self):  # keyword-only __init__: keep the error picklable (Prefect results)
        return (
            _rebuild_error,
            (self.message, self.provider, self.model, self.transient, self.status_code),
        )


def _rebuild_error(message, provider, model, transient, status_code) -> AgentCallError:
    return AgentCallError(
        message, provider=provider, model=model, transient=transient, status_code=status_code
    )


@lru_cache(maxsize=1024)
def parse_model(model: str) -> tuple[str, str]:
    """``"openai:gpt-4.1"`` -> ``("openai", "gpt-4.1")``; ValueError naming the string otherwise."""
    provider, sep, name = model.partition(":") if isinstance(model, str) else ("", "", "")
    provider, name = provider.strip(), name.strip()
    if not sep or provider not in PROVIDERS or not name:
        if not isinstance(model, str):
            problem = "is not a string"
        elif not sep:
            problem = "has no provider"
        elif provider not in PROVIDERS:
            problem = f"has an unknown provider {provider!r}"
        else:
            problem = "has an empty model name"
        raise ValueError(
            f"invalid model {model!r}: it {problem}; write provider:model with provider one of "
            f"{', '.join(PROVIDERS)} (e.g. openai:gpt-4.1-mini, anthropic:claude-sonnet-4-0, "
            f"fast-agent:passthrough)"
        )
    return provider, name


def check_fallback_names(names: list[str]) -> list[str]:
    """``fallback:`` entries: agent names, each once. A model string is a mistake worth naming."""
    seen: set[str] = set()
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ValueError("fallback entries must be agent names (non-empty strings)")
        provider = name.partition(":")[0].strip()
        if ":" in name and provider in PROVIDERS:
            raise ValueError(
                f"fallback names agents, not models: {name!r} is a model string; define an agent "
                f"with that model (in agents/*.yaml or the workflow's agents:) and name the agent here"
            )
        if name in seen:
            raise ValueError(f"fallback names agent {name!r} twice")
        seen.add(name)
    return names


def default_model() -> str:
    """The ``default_model`` setting (``ORCHESTRA_DEFAULT_MODEL``), else ``fast-agent:passthrough``."""
    return settings().default_model
