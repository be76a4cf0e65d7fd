"""The app Orchestra's local Prefect server runs: Prefect's own ``create_app`` (API, UI
and background services), with one change for its SQLite database under load.

Prefect's server opens its SQLite transactions DEFERRED; when two writers meet, the one
that read first cannot upgrade its lock, SQLite answers "database is locked" at once
(its busy timeout does not apply to that case) and the API answers 503. A burst of
deployment runs then loses runs whose clients ran out of retries (1 to 3 of 20 here,
``bench/load.py``). Here every transaction of the server's SQLite engine begins
IMMEDIATE: writers queue on the database's lock (Prefect sets a 60 s busy timeout)
instead of failing. PostgreSQL is untouched.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["create_app"]


def _immediate_sqlite_transactions() -> None:
    from prefect.server.database import configurations as conf

    if getattr(conf.AioSqliteConfiguration, "_orchestra_immediate", False):
        return

    @contextlib.asynccontextmanager
    async def begin_transaction(self: Any, session: Any, with_for_update: bool = False):
        token = conf.SQLITE_BEGIN_MODE.set("IMMEDIATE")
        try:
            async with session.begin() as transaction:
                yield transaction
        finally:
            conf.SQLITE_BEGIN_MODE.reset(token)

    conf.AioSqliteConfiguration.begin_transaction = begin_transaction
    conf.AioSqliteConfiguration._orchestra_immediate = True


def create_app() -> Any:
    """For ``uvicorn --factory orchestra.prefect_app:create_app``."""
    _immediate_sqlite_transactions()
    from prefect.server.api.server import create_app as prefect_create_app

    return prefect_create_app()
