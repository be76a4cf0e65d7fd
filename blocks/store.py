"""`OrchestraStore`: where Orchestra's ledger lives (a SQLAlchemy URL)."""

from __future__ import annotations

from pydantic import Field, HttpUrl, SecretStr, field_validator

from prefect.blocks.core import Block

from blocks._meta import BLOCK_CONFIG, prefect_logo


def _parse(url: str):
    from sqlalchemy.engine import make_url  # lazy: only when a URL is handled

    return make_url(url)


class OrchestraStore(Block):
    """
    The database of Orchestra's ledger (runs, calls, costs, agents), typically a
    team's PostgreSQL. The whole URL is secret because it carries the password.

    Attributes:
        database_url: SQLAlchemy URL of the store.

    Example:
        ```python
        from blocks import OrchestraStore

        OrchestraStore(
            database_url="postgresql+psycopg2://orchestra:PASSWORD@db.internal:5432/orchestra"
        ).save("BLOCK_NAME", overwrite=True)

        orchestra_store_block = OrchestraStore.load("BLOCK_NAME")
        print(orchestra_store_block.redacted_url())  # ...orchestra:***@db.internal...
        engine_url = orchestra_store_block.url()
        ```
    """

    model_config = BLOCK_CONFIG

    _block_type_name = "Orchestra Store"
    _block_type_slug = "orchestra-store"
    _logo_url = prefect_logo("sqlalchemy.png")
    _documentation_url = HttpUrl("https://docs.sqlalchemy.org/en/20/core/engines.html#database-urls")
    _description = (
        "The database of Orchestra's cost ledger (runs, calls, agents), as a"
        " SQLAlchemy URL; the URL is kept secret because it carries the password."
    )

    database_url: SecretStr = Field(
        default=...,
        title="Database URL",
        description=(
            "SQLAlchemy URL of the store, e.g."
            " `postgresql+psycopg2://user:password@host:5432/orchestra`; stored encrypted."
        ),
    )

    @field_validator("database_url")
    @classmethod
    def _is_sqlalchemy_url(cls, value: SecretStr) -> SecretStr:
        # The message never quotes the value: it carries a password.
        try:
            _parse(value.get_secret_value().strip())
        except Exception:
            raise ValueError(
                "database_url is not a SQLAlchemy URL (expected dialect[+driver]://user:password@host:port/database)"
            ) from None
        return SecretStr(value.get_secret_value().strip())

    def url(self) -> str:
        """The full URL, password included: for `create_engine`, never for logs."""
        return self.database_url.get_secret_value()

    def redacted_url(self) -> str:
        """The URL with the password (and any password/secret/token query
        parameter, as libpq accepts) replaced by `***`, safe to show."""
        parsed = _parse(self.url())
        masked = {
            key: "***"
            for key in parsed.query
            if any(word in key.lower() for word in ("password", "secret", "token"))
        }
        if masked:
            parsed = parsed.update_query_dict(masked)
        # SQLAlchemy percent-encodes the query's "***"; show it as typed.
        return parsed.render_as_string(hide_password=True).replace("=%2A%2A%2A", "=***")
