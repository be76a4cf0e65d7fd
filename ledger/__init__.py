"""The ledger: every run, every provider call (tokens, cost, latency, outcome) and every
tool call an agent made; and the work that runs are for (projects, tasks, their history
and runs).

Owns: the SQLAlchemy models (``ledger.models``), the Alembic migrations
(``ledger/migrations``), the write path (``ledger.store.Store``, which satisfies the
engine's ``flows.ports.Ledger``; its task methods in ``ledger.task_store``) and the one
read API, ``ledger.queries``, that the CLI, the dashboard and the MCP server share.
SQLite by default, PostgreSQL for teams.

Never: imports the engine, the agents, Prefect or the app layer; lets a caller
outside this package hold a session, a connection or a table.
"""
