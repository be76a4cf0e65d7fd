"""`DaggerEngine`: how Orchestra's container steps reach a Dagger engine."""

from __future__ import annotations

from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator

from prefect.blocks.core import Block

from blocks._meta import BLOCK_CONFIG, prefect_logo


class DaggerEngine(Block):
    """
    How to reach a Dagger engine: an existing session (`dagger run` sets
    `DAGGER_SESSION_PORT` and `DAGGER_SESSION_TOKEN`), or an engine the SDK
    provisions, optionally on another host (`runner_host`) or with a given CLI.

    Attributes:
        session_port: Port of a running Dagger session on 127.0.0.1.
        session_token: Token of that session.
        runner_host: Where the SDK finds or starts the engine.
        cli_bin: Path of the `dagger` CLI the SDK should use.
        timeout_seconds: Longest a single request to the engine may take.

    Example:
        ```python
        from blocks import DaggerEngine

        DaggerEngine(runner_host="tcp://dagger.internal:8080").save("BLOCK_NAME", overwrite=True)

        dagger_engine_block = DaggerEngine.load("BLOCK_NAME")
        env = dagger_engine_block.engine_env()  # for the process that runs the Dagger SDK
        ```
    """

    model_config = BLOCK_CONFIG

    _block_type_name = "Orchestra Dagger Engine"
    _block_type_slug = "orchestra-dagger-engine"
    _logo_url = prefect_logo("docker.png")
    _documentation_url = HttpUrl("https://docs.dagger.io/")
    _description = (
        "How Orchestra's container steps reach a Dagger engine: an existing session"
        " (port and token), a remote or custom runner host, or a specific dagger CLI."
    )

    session_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of a running Dagger session on 127.0.0.1 (DAGGER_SESSION_PORT); needs `session_token`.",
    )
    session_token: SecretStr | None = Field(
        default=None,
        description="Token of that session (DAGGER_SESSION_TOKEN); stored encrypted.",
    )
    runner_host: str | None = Field(
        default=None,
        description=(
            "Where the SDK finds or starts the engine (_EXPERIMENTAL_DAGGER_RUNNER_HOST),"
            " e.g. `tcp://host:8080`, `unix:///run/dagger/engine.sock` or"
            " `docker-container://dagger-engine`."
        ),
    )
    cli_bin: str | None = Field(
        default=None,
        title="CLI binary",
        description="Path of the `dagger` CLI to use instead of downloading one (_EXPERIMENTAL_DAGGER_CLI_BIN).",
    )
    timeout_seconds: float | None = Field(
        default=600.0,
        gt=0,
        description="Longest a single request to the engine may take, in seconds; empty means no limit.",
    )

    @field_validator("runner_host", "cli_bin", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip() or None
        return value

    @field_validator("runner_host")
    @classmethod
    def _has_scheme(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError("runner_host must be a URL such as tcp://host:port or unix:///path")
        return value

    @model_validator(mode="after")
    def _port_and_token_together(self) -> "DaggerEngine":
        if (self.session_port is None) != (self.session_token is None):
            raise ValueError("session_port and session_token are set together or not at all")
        return self

    def engine_env(self) -> dict[str, str]:
        """The environment variables the Dagger SDK reads, for the set fields only.
        The session token is revealed: pass the result to a process, never log it."""
        env: dict[str, str] = {}
        if self.session_port is not None and self.session_token is not None:
            env["DAGGER_SESSION_PORT"] = str(self.session_port)
            env["DAGGER_SESSION_TOKEN"] = self.session_token.get_secret_value()
        if self.runner_host:
            env["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] = self.runner_host
        if self.cli_bin:
            env["_EXPERIMENTAL_DAGGER_CLI_BIN"] = self.cli_bin
        return env
