"""Alembic environment of the Orchestra ledger.

Where the database comes from, first match wins:

1. ``config.attributes["connection"]`` -- an open SQLAlchemy connection, as passed
   by ``Store.migrate()``; it may already be inside a transaction, which then
   also covers the migration (the caller commits);
2. ``alembic -x url=...``;
3. ``sqlalchemy.url`` set on the Config (escaped for configparser);
4. ``ledger.db.resolve_url()``: ``$ORCHESTRA_DB_URL`` or the default SQLite store.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from ledger.db import make_engine, resolve_url
from ledger.migrations import VERSION_TABLE
from ledger.models import Base

config = context.config
target_metadata = Base.metadata

if config.config_file_name and not config.attributes.get("connection") \
        and config.attributes.get("configure_logging", True):
    # Only for the alembic command line; never reconfigure an application's logging.
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _configure(**kwargs) -> None:
    connection = kwargs.get("connection")
    dialect = connection.dialect.name if connection is not None else kwargs.get("dialect_name")
    context.configure(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=dialect == "sqlite",  # SQLite can only ALTER via table copies
        compare_type=True,
        **kwargs,
    )


def _url():
    x = context.get_x_argument(as_dictionary=True)
    return resolve_url(x.get("url") or config.get_main_option("sqlalchemy.url") or None)


def run_migrations_offline() -> None:
    url = _url()
    _configure(url=url, literal_binds=True, dialect_opts={"paramstyle": "named"},
               dialect_name=url.get_backend_name())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
