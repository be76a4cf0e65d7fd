"""The app's environment: where things are, Prefect's defaults, and the ledger.

Call :func:`configure` before Prefect is imported (it only sets defaults: anything
the user set in the environment wins).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from core.redact import install_log_redaction
from core.settings import settings

__all__ = ["REPO_ROOT", "configure", "is_loopback", "ledger", "ledger_url", "orchestra_home", "workflows_dir"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def orchestra_home() -> Path:
    """The ``home`` setting (``ORCHESTRA_HOME``, default ``~/.orchestra``), created."""
    return settings().home_dir()


def workflows_dir() -> Path:
    return REPO_ROOT / "deployments" / "workflows"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address: what the servers
    without a login (the dashboard, MCP over HTTP without a token) listen on."""
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def configure(quiet_console: bool = False) -> None:
    """Set Prefect's defaults for Orchestra's use, and mask secrets in every log record of
    this process. Call before `import prefect`."""
    install_log_redaction()
    defaults = {
        # The ephemeral server needs 12-14 s to migrate a new database here; 20 s is tight.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Task results (the step cache) live beside the ledger.
        "PREFECT_LOCAL_STORAGE_PATH": str(orchestra_home() / "results"),
    }
    if quiet_console:
        # Logs still reach the Prefect API (and UI); the terminal shows Orchestra's own table.
        defaults["PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL"] = "WARNING"
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    refresh_prefect_settings()


def refresh_prefect_settings() -> None:
    """Make an already imported Prefect read the environment again: it reads its settings
    once, at import, and a check that imported it before this process chose its API
    would otherwise leave it on an ephemeral server of its own (Prefect's own hook)."""
    if "prefect.context" in sys.modules:
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()


def ledger_url() -> str | None:
    """The ledger's URL: the ``db_url`` setting, else the URL in the ``OrchestraStore``
    block the ``store_block`` setting names, else None (SQLite in the home folder)."""
    current = settings()
    if current.db_url or not current.store_block:
        return current.db_url
    return _block_url(current.store_block)


@functools.lru_cache(maxsize=8)
def _block_url(name: str) -> str:
    from blocks.store import OrchestraStore

    try:
        return OrchestraStore.load(name, _sync=True).url()
    except Exception as exc:  # ValueError for a missing block; anything else from the API
        raise RuntimeError(f"ORCHESTRA_STORE_BLOCK={name}: cannot read that OrchestraStore block from the "
                           f"Prefect API ({type(exc).__name__}); save it (`OrchestraStore(database_url=...)"
                           f".save('{name}')`) or set ORCHESTRA_DB_URL instead") from None


def ledger():
    """The app's ledger (``ledger.store.Store``), one per URL per process."""
    from ledger.store import get_store

    return get_store(ledger_url())
