"""Orchestra's Prefect block types: configuration and secrets, no control flow.

Owns: the four block types (ProviderCredentials, FastAgentSettings, DaggerEngine,
OrchestraStore; `prefect block register -m blocks` registers them) and the one
resolution order of an agent's API key (`blocks.credentials`: the block the agent
names, the SDK's environment variable, then `<provider>-default`).

Never: imports the engine, the ledger or the app layer; holds a secret outside a
SecretStr; puts a secret in a message or a `repr`. It reads the provider table
(`agents.providers`) for which variables and kinds of key each provider has.
"""

from blocks.dagger_engine import DaggerEngine
from blocks.fast_agent import FastAgentSettings, MCPServer
from blocks.providers import ProviderCredentials
from blocks.store import OrchestraStore

__all__ = ["DaggerEngine", "FastAgentSettings", "MCPServer", "OrchestraStore", "ProviderCredentials"]
