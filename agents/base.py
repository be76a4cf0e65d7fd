"""The agent contract: definitions, results, errors and model strings.

Nothing here imports an LLM SDK, Prefect, Streamlit or SQL code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.redact import redact  # one redactor for the whole project
from core.settings import DEFAULT_MODEL, settings

from .providers import PROVIDERS


class AgentFields(BaseModel):
    """What defines an agent, but its name: the fields of a file in ``agents/*.yaml`` and of
    an inline agent of a workflow (``flows.spec.models.AgentSpec``): one definition for both."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # "provider:model"; None -> default_model()
    instruction: str | None = None
    description: str | None = None
    temperature: float | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)
    capabilities: list[str] = []
    fallback: list[str] = []
    servers: list[str] = []  # MCP servers (by name in the run's map) whose tools the agent may call
    tools: list[str] | None = None  # allow-list "server.tool"; None: every tool of its servers
    max_tool_calls: int = Field(default=8, ge=1)  # per step attempt
    tool_timeout: float = Field(default=60.0, gt=0)  # seconds per tool call
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

    @field_validator("servers")
    @classmethod
    def _check_servers(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a server more than once")
        return value

    @field_validator("tools")
    @classmethod
    def _check_tools(cls, value: list[str] | None) -> list[str] | None:
        for entry in value or []:
            server, dot, tool = entry.partition(".") if isinstance(entry, str) else ("", "", "")
            if not dot or not server or not tool:
                raise ValueError(f"{entry!r} is not server.tool (e.g. time.get_current_time)")
        return value

    @model_validator(mode="after")
    def _tools_need_servers(self) -> "AgentFields":
        for entry in self.tools or []:
            server = entry.partition(".")[0]
            if server not in self.servers:
                raise ValueError(f"tools: {entry!r} names server '{server}', which is not in the agent's servers "
                                 f"({', '.join(self.servers) or 'none'})")
        return self


class AgentConfig(AgentFields):
    """One agent: a file in ``agents/*.yaml`` or an inline definition of a workflow."""

    name: str = Field(min_length=1)

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
    # with tools: the calls this reply asks for (agents.tools.ToolCall) and the assistant
    # message to send back, in the provider's format
    tool_calls: list[Any] = field(default_factory=list)
    message: dict[str, Any] | None = None
    # a call that was several provider requests (fast-agent running its own tool loop):
    # each request's own result, which the ledger keeps as one row each
    rounds: list["AgentResult"] = field(default_factory=list)


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
        self.rounds: list[AgentResult] = []  # requests that succeeded before this failure (fast-agent)
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
