"""Every ``ORCHESTRA_*`` setting in one typed object (pydantic-settings), read once.

    from core.settings import settings
    settings().home              # Path: $ORCHESTRA_HOME or ~/.orchestra (created on first use)
    settings().breaker_threshold

The environment is read the first time :func:`settings` is called and kept for the
life of the process; :func:`reload_settings` reads it again (the tests do, after
changing a variable). A value that does not parse is a :class:`SettingsError`
naming the variable and what it expects, never a silent fallback to the default.

Provider variables (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``, ...) are not settings:
the SDKs read them, and ``agents.providers`` names them.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "settings", "reload_settings", "DEFAULT_MODEL"]

DEFAULT_MODEL = "fast-agent:passthrough"
MIN_TOKEN_CHARS = 16


class SettingsError(ValueError):
    """An ``ORCHESTRA_*`` variable whose value does not parse; the message names it."""


class Settings(BaseSettings):
    """Orchestra's settings; each field is the variable ``ORCHESTRA_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="ORCHESTRA_", case_sensitive=False, extra="ignore",
                                      validate_default=True)

    # where things live
    home: Path = Field(default=Path("~/.orchestra"), description="Orchestra's folder: ledger, results, local server")
    db_url: str | None = Field(default=None, description="SQLAlchemy URL of the ledger (default: SQLite in home)")
    store_block: str | None = Field(default=None, description="Name of an OrchestraStore block holding the ledger URL")

    # models
    default_model: str = Field(default=DEFAULT_MODEL, description="Model of agents that name none")
    router_model: str | None = Field(default=None, description="Model of `strategy: llm` routing (default: default_model)")
    routing_window: float = Field(default=300.0, ge=0, description="Seconds of ledger history least_loaded counts")
    fast_agent_block: str | None = Field(default=None, description="Name of a FastAgentSettings block to apply")

    # Prefect
    prefect: Literal["local", "ephemeral"] = Field(default="local", description="local: Orchestra's own server")
    server_port: int = Field(default=4200, ge=1, le=65535, description="Preferred port of the local Prefect server")
    server_idle_minutes: float = Field(default=60.0, gt=0, description="The local server stops after this idle time")

    # self-healing
    retry_delay: float = Field(default=1.0, ge=0, description="Backoff factor (s) of a step's retries")
    breaker_threshold: int = Field(default=5, ge=1, description="Consecutive transient failures that open a breaker")
    breaker_cooldown: float = Field(default=30.0, ge=0, description="Seconds an open breaker waits before a probe")
    breaker_ttl: float = Field(default=2.0, ge=0, description="Seconds a process trusts its cached breaker state")
    limiter: Literal["auto", "local", "prefect"] = Field(default="auto", description="Where provider limits apply")
    budget_max_tokens: int = Field(default=4096, ge=1, description="Output cap of a call while a budget applies")
    approval_poll: float = Field(default=5.0, ge=0.1, description="Seconds between checks of a paused approval")
    cancel_poll: float = Field(default=1.0, gt=0, description="Seconds between checks for a cancellation")
    heartbeat: float = Field(default=10.0, gt=0, description="Seconds between a running run's heartbeats")
    reap_after: float = Field(default=45.0, gt=0,
                              description="Seconds without a heartbeat after which a run is taken as crashed")

    # what input may cost (workflow files, templates)
    max_workflow_bytes: int = Field(default=1_000_000, ge=1, description="Largest workflow document read")
    max_document_depth: int = Field(default=64, ge=2, description="Deepest nesting of a workflow document")
    max_document_nodes: int = Field(default=100_000, ge=10,
                                    description="Most values a workflow document may hold, YAML aliases expanded")
    template_timeout: float = Field(default=5.0, gt=0, description="Seconds one template may take to render")
    template_max_chars: int = Field(default=1_000_000, ge=1, description="Largest text a template may render")

    # container steps (Dagger)
    dagger_block: str | None = Field(default=None, description="Name of a DaggerEngine block: how container steps "
                                                               "reach a Dagger engine")
    dagger_connect_timeout: float = Field(default=30.0, gt=0, description="Seconds a container step waits for the "
                                                                          "Dagger connection to open")

    # tool use
    mcp_start_timeout: float = Field(default=30.0, gt=0,
                                     description="Seconds an MCP server an agent uses may take to start")

    # tasks and projects (orchestra.tasks)
    planner: str | None = Field(default=None, description="The planner of tasks without a workflow: an agent "
                                                         "name in agents/ or a model string (default: the "
                                                         "`planner` agent if agents/ has one, else none)")
    project_concurrency: int = Field(default=4, ge=1, le=100,
                                     description="Task runs of one project in flight at once")

    # the dashboard's login
    login_delay: float = Field(default=1.0, ge=0, description="Seconds a failed dashboard login waits before it answers")
    oidc_role: Literal["none", "viewer", "member", "admin"] = Field(
        default="viewer", description="Role of an OIDC identity without a user of its name (none: refused)")

    # the MCP server and diagnostics
    mcp_warmup: bool = Field(default=True, description="`orchestra mcp` imports the engine in the background")
    mcp_token: SecretStr | None = Field(default=None, description="Bearer token `orchestra mcp --http` requires")
    max_task_runs: int = Field(default=1000, ge=1, description="Step task runs one flow run holds at once "
                               "(for_each items included); the rest wait before their task run starts")
    call_events: bool = Field(default=True, description="Emit an orchestra.agent.call / .container.exec / "
                              ".command.exec Prefect event for every attempt (automations match on them)")
    completed_task_logs: bool = Field(default=False, description="Ship Prefect's per-task-run \"Finished in state "
                                      "Completed()\" INFO line to the API (a log row per step on the server)")
    debug: bool = Field(default=False, description="Show tracebacks instead of one-line errors")

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("db_url", "store_block", "router_model", "fast_agent_block", "dagger_block", "planner",
                     "mcp_token", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("mcp_token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_TOKEN_CHARS:
            raise ValueError(f"must be at least {MIN_TOKEN_CHARS} characters (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("default_model", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        return DEFAULT_MODEL if isinstance(value, str) and not value.strip() else value

    @field_validator("limiter", "prefect", "oidc_role", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    def home_dir(self) -> Path:
        """``home``, created if need be."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home


_lock = threading.Lock()
_current: Settings | None = None


def _load() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            value = err.get("input")
            secret = Settings.model_fields.get(field) is not None and Settings.model_fields[field].annotation in (
                SecretStr, SecretStr | None)
            shown = (f" (got {value!r})" if not secret and isinstance(value, (str, int, float))
                     and len(str(value)) < 80 else "")
            problems.append(f"ORCHESTRA_{field.upper()}: {err['msg'].removeprefix('Value error, ')}{shown}")
        raise SettingsError("; ".join(problems)) from None


def settings() -> Settings:
    """The settings of this process (read from the environment the first time)."""
    global _current
    current = _current
    if current is None:
        with _lock:
            if _current is None:
                _current = _load()
            current = _current
    return current


def reload_settings() -> Settings:
    """Read the environment again (after a variable changed)."""
    global _current
    with _lock:
        _current = None
    return settings()
