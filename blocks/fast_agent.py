"""`FastAgentSettings`: what fast-agent needs to run an Orchestra agent.

Its `mcp_servers` join every run's map of MCP servers (after the workflow's own and
`agents/mcp_servers.yaml`), for every provider, when the `fast_agent_block` setting
names the block; the engine reads it when a run starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    HttpUrl,
    SecretStr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from prefect.blocks.core import Block, schema_extra

from agents.fastagent_adapter import mcp_server_config
from agents.mcp import MCPServerSpec
from blocks._meta import BLOCK_CONFIG, prefect_logo


class MCPServer(MCPServerSpec):
    """One MCP server (the format of ``agents.mcp.MCPServerSpec``) with its `env` and
    `headers` values kept secret."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    transport: Literal["stdio", "sse", "http"] | None = Field(
        default=None,
        description="How to talk to the server: `stdio` starts `command`, `http` (streamable HTTP) and `sse` "
                    "connect to `url`. Default: stdio with a command, http with a url.",
    )
    command: str | None = Field(
        default=None,
        description="Program that starts a stdio server, e.g. `uvx` or `npx`.",
    )
    args: list[str] = Field(
        default_factory=list,
        description="Arguments for `command`.",
    )
    env: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Environment variables for the server process; every value is kept secret.",
    )
    cwd: str | None = Field(
        default=None,
        description="Working directory of a stdio server.",
    )
    url: str | None = Field(
        default=None,
        description="Endpoint of an `http` or `sse` server.",
    )
    headers: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="HTTP headers for an `http` or `sse` server (e.g. Authorization); every value is kept secret.",
    )

    def revealed(self, mode: str = "python") -> dict[str, Any]:
        """This server as plain data with `env` and `headers` values revealed."""
        data = self.model_dump(mode=mode)
        data["env"] = {k: v.get_secret_value() for k, v in self.env.items()}
        data["headers"] = {k: v.get_secret_value() for k, v in self.headers.items()}
        return data


def _fast_agent_schema_extra(schema: dict[str, Any], model: type[Block]) -> None:
    schema_extra(schema, model)
    # Prefect masks secret fields by dotted path, and a `*` only as the tail of a
    # path. `env`/`headers` sit under a key chosen by the user
    # (mcp_servers.<server>.env.<VAR>), which no fixed path reaches, so the whole
    # `mcp_servers` tree is declared secret: the server never hands it out
    # unmasked, while `FastAgentSettings.load()` still gets every value.
    secrets = [s for s in schema.get("secret_fields", []) if not s.startswith("mcp_servers.")]
    schema["secret_fields"] = [*secrets, "mcp_servers.*"]


class FastAgentSettings(Block):
    """
    Settings for fast-agent models used by Orchestra agents (`fast-agent:<model>`):
    the default model, the MCP servers agents may use, logging and console output.

    Attributes:
        default_model: fast-agent model string for agents that name none.
        mcp_servers: MCP servers by name.
        logger_level: Minimum level fast-agent logs.
        show_chat: Print the chat on the console.
        show_tools: Print MCP tool calls on the console.
        progress_display: Show fast-agent's live progress display.

    Example:
        ```python
        from blocks import FastAgentSettings

        FastAgentSettings(
            default_model="passthrough",
            mcp_servers={
                "fetch": {"command": "uvx", "args": ["mcp-server-fetch"]},
                "github": {"transport": "http", "url": "https://example.com/mcp",
                           "headers": {"Authorization": "Bearer ..."}},
            },
        ).save("BLOCK_NAME", overwrite=True)

        fast_agent_settings_block = FastAgentSettings.load("BLOCK_NAME")
        settings = fast_agent_settings_block.fastagent_config()
        ```
    """

    model_config = ConfigDict(**BLOCK_CONFIG, json_schema_extra=_fast_agent_schema_extra)

    _block_type_name = "Orchestra Fast-Agent Settings"
    _block_type_slug = "orchestra-fast-agent-settings"
    _logo_url = prefect_logo("terminal.png")
    _documentation_url = HttpUrl("https://fast-agent.ai/")
    _description = (
        "fast-agent settings for Orchestra agents: default model, MCP servers"
        " (environment and header values kept secret), logging and console output."
    )

    default_model: str = Field(
        default="passthrough",
        description=(
            "fast-agent model string for agents that name none, e.g. `passthrough`"
            " (echoes, needs no network), `playback`, `sonnet` or `openai.gpt-4.1-mini`."
        ),
    )
    mcp_servers: dict[str, MCPServer] = Field(
        default_factory=dict,
        title="MCP servers",
        description="MCP servers by name, as agents list them in `servers:`.",
    )
    logger_level: Literal["debug", "info", "warning", "error"] = Field(
        default="warning",
        description="Minimum level of fast-agent's own log.",
    )
    show_chat: bool = Field(
        default=False,
        description="Print each user/assistant message on the console (off for unattended runs).",
    )
    show_tools: bool = Field(
        default=False,
        description="Print each MCP tool call on the console.",
    )
    progress_display: bool = Field(
        default=False,
        description="Show fast-agent's live progress display on the console.",
    )

    @model_serializer(mode="wrap")
    def ser_model(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        # Prefect's secret-revealing walk (used when the block is saved) caches
        # results by id() of temporary dicts; with several MCP servers an id is
        # reused and one server's data replaces another's. Reveal the servers
        # here instead, deterministically.
        data = super().ser_model(handler, info)
        if isinstance(data, dict) and info.context and info.context.get("include_secrets") is True:
            mode = "json" if info.mode == "json" else "python"
            data["mcp_servers"] = {name: server.revealed(mode) for name, server in self.mcp_servers.items()}
        return data

    def fastagent_config(self) -> dict[str, Any]:
        """These settings as the mapping fast-agent's `Settings` model reads
        (the shape of `fastagent.config.yaml` merged with its secrets file).
        Secret values are revealed: hand the result to fast-agent, never log it."""
        servers = {name: mcp_server_config(name, server) for name, server in self.mcp_servers.items()}
        return {
            "default_model": self.default_model,
            "mcp": {"servers": servers},
            "logger": {
                "level": self.logger_level,
                "show_chat": self.show_chat,
                "show_tools": self.show_tools,
                "progress_display": self.progress_display,
            },
        }
