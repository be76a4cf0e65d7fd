"""pytest fixtures for server mode, shared by every test module that declares
``pytest_plugins = ["tests.support.prefect_server_fixture"]`` (one instance per session).

``prefect_stack``: `prefect server start` on SQLite (what a newcomer runs) on a
free loopback port in a temporary PREFECT_HOME, the `orchestra` process work
pool, every deployment of prefect.yaml (`prefect --no-prompt deploy --all` from
the repository root), the OpenAI wire fake at 200 ms, and one process worker
whose flow runs write the ledger to a temporary SQLite file.

``pg_stack``: the same on PostgreSQL, the team setup of docs/scaling.md: the
Prefect server's database (asyncpg) and the ledger (psycopg2) are two databases
of the throw-away cluster of tests/support/pg.py; only the code-review deployment.
Skipped when PostgreSQL is unavailable. The load test runs here: a SQLite-backed
Prefect server stalls on its write lock under many concurrent flow runs.

Each worker runs at most 4 flow runs at once: 20 Python processes starting
together on 2 cores starve the server. Everything is stopped by PID at the end
of the session. ORCHESTRA_KEEP_SERVER_HOME=1 keeps the logs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.prefect_stack import WORKER_LIMIT, PgStack, Stack, start_stack

# On PostgreSQL the worker and its flow runs retry a 503 10 times, not Prefect's default 5.
RETRIES = {"PREFECT_CLIENT_MAX_RETRIES": "10"}


def _cleanup(home: Path) -> None:
    if os.environ.get("ORCHESTRA_KEEP_SERVER_HOME"):
        print(f"\nserver-mode files kept in {home}")
    else:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def prefect_stack() -> Stack:
    """The app Orchestra's local server runs (orchestra.prefect_app) on SQLite, a process
    worker; no client-retry workaround: the local server's SQLite transactions queue."""
    home = Path(tempfile.mkdtemp(prefix="orchestra-server-mode-"))
    stack = start_stack(home, worker_limit=WORKER_LIMIT, local_server=True)
    try:
        yield stack
    finally:
        stack.stop()
        _cleanup(home)


@pytest.fixture(scope="session")
def pg_stack() -> PgStack:
    from tests.support.pg import create_database, drop_database, postgres_unavailable_reason, postgres_url

    server = postgres_url()
    if server is None:
        pytest.skip(f"PostgreSQL unavailable: {postgres_unavailable_reason()}")
    names = ("orchestra_e2e_prefect", "orchestra_e2e_ledger")
    prefect_db = create_database(server, names[0]).replace("postgresql+psycopg2://", "postgresql+asyncpg://")
    ledger_db = create_database(server, names[1])
    home = Path(tempfile.mkdtemp(prefix="orchestra-pg-stack-"))
    try:
        stack = start_stack(home, server_env={"PREFECT_API_DATABASE_CONNECTION_URL": prefect_db},
                            ledger_url=ledger_db, deployments=("code-review",), worker_limit=WORKER_LIMIT,
                            worker_env=RETRIES)
    except BaseException:
        _cleanup(home)
        raise
    try:
        yield PgStack(stack=stack, prefect_db_url=prefect_db)
    finally:
        stack.stop()
        _cleanup(home)
        for name in names:
            try:
                drop_database(server, name)
            except Exception:  # noqa: BLE001 - the cluster goes away at exit anyway
                pass
