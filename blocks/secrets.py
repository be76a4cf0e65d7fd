"""What ``secret('NAME')`` in an MCP server's ``headers`` or ``env`` reads: the one order.

1. the environment variable ``NAME`` (no API call);
2. the Prefect ``Secret`` block ``NAME`` (block names are lowercase letters, digits and
   dashes: ``secret('search-token')``), when a Prefect API is configured.

The value is registered with ``core.redact`` as it is read, so logs, the ledger and
messages mask it from then on. No message here contains a value.
"""

from __future__ import annotations

import os
import re

from core.redact import register_secret

__all__ = ["SecretNotFound", "aread_secret"]

BLOCK_NAME = re.compile(r"^[a-z0-9-]+$")


class SecretNotFound(ValueError):
    """Neither place holds the secret; the message names both."""


async def aread_secret(name: str) -> str:
    """The value of secret ``name`` (see the module docstring); SecretNotFound otherwise."""
    value = os.environ.get(name)
    if value:
        register_secret(value)
        return value
    looked = [f"no environment variable {name}"]
    if BLOCK_NAME.match(name):
        found, why = await _from_block(name)
        if found is not None:
            register_secret(found)
            return found
        looked.append(why)
    else:
        looked.append("not a Prefect block name (lowercase letters, digits, dashes), so no Secret block looked up")
    raise SecretNotFound(f"secret('{name}'): " + "; ".join(looked))


async def _from_block(name: str) -> tuple[str | None, str]:
    from prefect.blocks.system import Secret
    from prefect.exceptions import ObjectNotFound
    from prefect.settings import get_current_settings

    if not get_current_settings().api.url:
        return None, "no Prefect API configured (PREFECT_API_URL) to read a Secret block from"
    try:
        block = await Secret.aload(name)
    except ValueError as exc:
        if isinstance(exc.__cause__, ObjectNotFound):
            return None, f"no Prefect Secret block '{name}'"
        return None, f"the Prefect Secret block '{name}' could not be read ({type(exc).__name__})"
    except Exception as exc:  # noqa: BLE001 - the API is down, ...: say so, never the details
        return None, f"the Prefect Secret block '{name}' could not be read ({type(exc).__name__})"
    value = block.get()
    if not isinstance(value, str):
        return None, f"the Prefect Secret block '{name}' does not hold a string"
    return value, ""
