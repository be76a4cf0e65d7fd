"""Process-wide defaults, applied before Prefect is imported.

Only defaults: anything the user set in the environment wins.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def orchestra_home() -> Path:
    home = Path(os.environ.get("ORCHESTRA_HOME") or Path.home() / ".orchestra").expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home


def configure(quiet_console: bool = False) -> None:
    """Set Prefect's defaults for Orchestra's use. Call before `import prefect`."""
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


def workflows_dir() -> Path:
    return REPO_ROOT / "deployments" / "workflows"
