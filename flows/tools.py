"""The MCP servers of a run: its map, its secrets, its sessions, and the FastAgentSettings block.

A run's map of servers is, for each name, the first of: the workflow's `mcp_servers:`,
the shared `agents/mcp_servers.yaml`, and the `mcp_servers` of the `FastAgentSettings`
block the `fast_agent_block` setting names (``ORCHESTRA_FAST_AGENT_BLOCK``; the engine
reads that block when a run starts, and applies its fast-agent settings). Validation
knows the first two; a name only the block defines is checked when the run starts.

The run's sessions (``agents.mcp.MCPPool``) live on its ``RunState``: opened when an
agent first needs a server, closed when the run ends (``flows.engine.execute``). A
server's `headers` and `env` templates are rendered then, each ``secret('NAME')`` read
through ``blocks.secrets`` (the environment variable, else the Prefect Secret block)
and masked from then on; a block's values are taken as they are.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from agents.mcp import MCPPool, MCPServerError, MCPServerSpec, load_servers
from core.settings import settings
from flows import templates

__all__ = ["ServerEntry", "static_map", "run_map", "pool", "digest", "template_problems", "fast_agent_block"]


@dataclass(frozen=True)
class ServerEntry:
    """One server of a run's map and where it was defined."""

    spec: MCPServerSpec
    source: str  # "the workflow", "agents/mcp_servers.yaml", "FastAgentSettings block 'x'"
    templated: bool = True  # env/headers values are templates (a block's are literal values)


def static_map(wf: Any, shared: dict[str, MCPServerSpec] | None = None) -> dict[str, ServerEntry]:
    """The servers a workflow's agents may name, known without the Prefect API: its own and
    the shared file's. ValueError naming the shared file when it is broken."""
    found: dict[str, ServerEntry] = {}
    for name, spec in (wf.mcp_servers or {}).items():
        found[name] = ServerEntry(spec, "the workflow")
    for name, spec in (load_servers() if shared is None else shared).items():
        found.setdefault(name, ServerEntry(spec, "agents/mcp_servers.yaml"))
    return found


async def run_map(wf: Any) -> dict[str, ServerEntry]:
    """The run's whole map: the static one, then the block's servers (read now, and its
    fast-agent settings applied). RuntimeError/ValueError naming the setting or the file."""
    found = static_map(wf)
    block_name, servers = await fast_agent_block()
    for name, spec in servers.items():
        found.setdefault(name, ServerEntry(spec, f"FastAgentSettings block '{block_name}'", templated=False))
    return found


def pool(servers: dict[str, ServerEntry]) -> MCPPool:
    """The run's sessions over ``servers``: templates rendered and secrets read on first use."""

    async def resolve(name: str, spec: MCPServerSpec) -> MCPServerSpec:
        entry = servers[name]
        if not entry.templated:
            return spec
        return await _render(name, spec)

    return MCPPool({n: e.spec for n, e in servers.items()}, resolve=resolve,
                   start_timeout=settings().mcp_start_timeout)


async def _render(name: str, spec: MCPServerSpec) -> MCPServerSpec:
    from blocks.secrets import SecretNotFound, aread_secret

    values: dict[str, str] = {}
    rendered: dict[str, dict[str, str]] = {}
    for field in ("env", "headers"):
        rendered[field] = {}
        for key, source in getattr(spec, field).items():
            text = str(source)
            try:
                for secret in templates.secret_names(text):
                    if secret not in values:
                        values[secret] = await aread_secret(secret)
                rendered[field][key] = templates.render_secrets(text, values)
            except (SecretNotFound, templates.TemplateError) as exc:
                raise MCPServerError(f"MCP server '{name}': {field}.{key}: {exc}", server=name) from None
    return spec.model_copy(update=rendered)


def template_problems(name: str, spec: MCPServerSpec) -> list[str]:
    """Problems of a server's `env` and `headers` templates (validation), each naming it."""
    problems = []
    for field in ("env", "headers"):
        for key, value in getattr(spec, field).items():
            if not isinstance(value, str):
                problems.append(f"mcp_servers: server '{name}': {field}.{key}: must be a string")
                continue
            try:
                templates.secret_names(value)
            except templates.TemplateError as exc:
                problems.append(f"mcp_servers: server '{name}': {field}.{key}: {exc}")
    return problems


def digest(servers: dict[str, ServerEntry] | None, names: list[str]) -> str:
    """What decides an agent's tools for the step cache: its servers' definitions (as
    written: a template, not the secret it reads; a block's values hashed, never kept)."""
    material = {n: servers[n].spec.plain() if servers and n in servers else None for n in names}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------
# the FastAgentSettings block

_applied_fast_agent: dict | None = None


async def fast_agent_block() -> tuple[str | None, dict[str, MCPServerSpec]]:
    """The ``FastAgentSettings`` block the ``fast_agent_block`` setting names: its settings
    applied to the embedded fast-agent (rebuilt only when the block changed) and its MCP
    servers returned, with the block's name. ``(None, {})`` without the setting.
    RuntimeError naming the setting when the block cannot be read."""
    global _applied_fast_agent
    name = settings().fast_agent_block
    if not name:
        return None, {}
    from blocks.fast_agent import FastAgentSettings

    try:
        block = await FastAgentSettings.aload(name)
    except Exception as exc:
        raise RuntimeError(f"ORCHESTRA_FAST_AGENT_BLOCK={name}: cannot read that FastAgentSettings block from the "
                           f"Prefect API ({type(exc).__name__}); save it or unset the setting") from None
    config = block.fastagent_config()
    if config != _applied_fast_agent:
        from agents import fastagent_adapter

        fastagent_adapter.configure(config)
        _applied_fast_agent = config
    return name, dict(block.mcp_servers)
