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

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "SettingsError", "settings", "reload_settings", "DEFAULT_MODEL"]

DEFAULT_MODEL = "fast-agent:passthrough"


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

    # the dashboard's login
    login_delay: float = Field(default=1.0, ge=0, description="Seconds a failed dashboard login waits before it answers")
    oidc_role: Literal["none", "viewer", "member", "admin"] = Field(
        default="viewer", description="Role of an OIDC identity without a user of its name (none: refused)")

    # the MCP server and diagnostics
    mcp_warmup: bool = Field(default=True, description="`orchestra mcp` imports the engine in the background")
    debug: bool = Field(default=False, description="Show tracebacks instead of one-line errors")

    @field_validator("home")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("db_url", "store_block", "router_model", "fast_agent_block", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

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
            shown = f" (got {value!r})" if isinstance(value, (str, int, float)) and len(str(value)) < 80 else ""
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
