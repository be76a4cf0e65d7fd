"""Orchestra's Prefect block types: configuration and secrets, no control flow.

`prefect block register -m blocks` registers the four types exported here.
`blocks.credentials` resolves an agent's API key (block, environment, default block).
"""

from blocks.dagger_engine import DaggerEngine
from blocks.fast_agent import FastAgentSettings, MCPServer
from blocks.providers import ProviderCredentials
from blocks.store import OrchestraStore

__all__ = ["DaggerEngine", "FastAgentSettings", "MCPServer", "OrchestraStore", "ProviderCredentials"]
