"""Orchestra services: the one API shared by the CLI, the dashboard and the MCP server.

``services.store`` is the ledger (runs and calls, SQLAlchemy + Alembic); import
it directly.  ``Store``, ``CallRecord`` and ``get_store`` are also available
here, imported on first access so that ``import services`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Store", "CallRecord", "get_store"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from services import store

        return getattr(store, name)
    raise AttributeError(f"module 'services' has no attribute {name!r}")
