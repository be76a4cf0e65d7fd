"""Which Dagger engine a container step uses, and the run's one connection to it.

Where the engine is, first match wins:

1. the ``DaggerEngine`` block named by the ``dagger_block`` setting
   (``ORCHESTRA_DAGGER_BLOCK``): its session port and token, or its ``cli_bin`` /
   ``runner_host`` (the dagger CLI starts or finds the engine);
2. ``DAGGER_SESSION_PORT`` + ``DAGGER_SESSION_TOKEN``: a session that is already open
   (``dagger run orchestra run ...`` sets them);
3. ``_EXPERIMENTAL_DAGGER_CLI_BIN``: the dagger CLI to start a session with;
4. ``dagger`` on the worker's PATH.

None of them: :class:`EngineError` at once, saying what to set or install. The
dagger-io SDK would otherwise download its CLI, and nothing may be downloaded here.

The connection (:func:`connect`) is the SDK's own ``dagger.Connection`` with
``Retry(execute=False)`` (the SDK would silently send a dropped request again, which
could run a command twice: Prefect's retries decide instead) and the block's
``timeout_seconds`` as the request timeout. The SDK reads the engine's variables from
the environment while it connects; a block's are put there for that moment only
(the token never reaches a log or a message). The dagger CLI's log (when the SDK starts
one) goes to the Prefect logs of the steps using the engine (:class:`EngineLog`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from core.settings import settings

__all__ = ["EngineTarget", "EngineError", "EngineLog", "ENGINE_VARIABLES", "NO_ENGINE", "configured", "resolve",
           "connect", "engine_log"]

ENGINE_VARIABLES = ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN",
                    "_EXPERIMENTAL_DAGGER_RUNNER_HOST")
NO_ENGINE = ("no Dagger engine is configured: run under `dagger run orchestra run ...` (it sets "
             "DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN), set ORCHESTRA_DAGGER_BLOCK to the name of a "
             "DaggerEngine block, set _EXPERIMENTAL_DAGGER_CLI_BIN to a dagger CLI, or install the dagger CLI "
             "on the worker's PATH (https://docs.dagger.io/install); Orchestra never downloads it")

log = logging.getLogger("orchestra.dagger")


class EngineError(Exception):
    """No engine is configured, or its configuration is wrong (never transient)."""


@dataclass(frozen=True)
class EngineTarget:
    """How to reach one engine. ``address`` names it (messages, the breaker key) and
    never holds a token; ``env`` is every ``ENGINE_VARIABLES`` value the SDK must see
    while it connects (absent: unset then)."""

    source: str
    address: str
    env: dict[str, str] = field(repr=False)
    timeout: float | None = None  # of one request (the block's timeout_seconds)


def configured() -> str | None:
    """What would configure an engine, without loading a block (``orchestra validate``):
    a description, or None when nothing does."""
    if settings().dagger_block:
        return f"DaggerEngine block '{settings().dagger_block}' (ORCHESTRA_DAGGER_BLOCK)"
    if os.environ.get("DAGGER_SESSION_PORT"):
        return "DAGGER_SESSION_PORT"
    if os.environ.get("_EXPERIMENTAL_DAGGER_CLI_BIN"):
        return "_EXPERIMENTAL_DAGGER_CLI_BIN"
    if shutil.which("dagger"):
        return "dagger on PATH"
    return None


async def resolve() -> EngineTarget:
    """The engine container steps use now (see the module docstring); EngineError."""
    name = settings().dagger_block
    if name:
        return await _from_block(name)
    env = {k: v for k in ENGINE_VARIABLES if (v := os.environ.get(k))}
    if env.get("DAGGER_SESSION_PORT"):
        return _session(env, env["DAGGER_SESSION_PORT"], env.get("DAGGER_SESSION_TOKEN"), "DAGGER_SESSION_PORT",
                        "DAGGER_SESSION_TOKEN")
    env.pop("DAGGER_SESSION_TOKEN", None)
    return _cli(env, env.get("_EXPERIMENTAL_DAGGER_CLI_BIN"), "_EXPERIMENTAL_DAGGER_CLI_BIN", None)


async def _from_block(name: str) -> EngineTarget:
    from blocks.dagger_engine import DaggerEngine

    where = f"DaggerEngine block '{name}' (ORCHESTRA_DAGGER_BLOCK)"
    try:
        block = await DaggerEngine.aload(name)
    except ValueError as exc:  # no such block, or one that does not validate
        raise EngineError(f"{where}: cannot load it: {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # the Prefect API is unreachable
        raise EngineError(f"{where}: cannot load it: {type(exc).__name__}: {exc}") from None
    env = block.engine_env()
    timeout = block.timeout_seconds
    if "DAGGER_SESSION_PORT" in env:
        return _session(env, env["DAGGER_SESSION_PORT"], env.get("DAGGER_SESSION_TOKEN"), f"{where}: session_port",
                        f"{where}: session_token", timeout=timeout)
    return _cli(env, env.get("_EXPERIMENTAL_DAGGER_CLI_BIN"), f"{where}: cli_bin", where, timeout=timeout)


def _session(env: dict[str, str], port: str, token: str | None, port_name: str, token_name: str,
             timeout: float | None = None) -> EngineTarget:
    if not token:
        raise EngineError(f"{port_name} is set but {token_name} is not: a Dagger session needs both")
    try:
        number = int(port)
        if not 1 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise EngineError(f"{port_name} must be a port number (1-65535), got {port!r}") from None
    keep = {"DAGGER_SESSION_PORT": str(number), "DAGGER_SESSION_TOKEN": token}
    return EngineTarget(source=port_name, address=f"session 127.0.0.1:{number}", env=keep, timeout=timeout)


def _cli(env: dict[str, str], cli_bin: str | None, cli_name: str, block: str | None,
         timeout: float | None = None) -> EngineTarget:
    runner = env.get("_EXPERIMENTAL_DAGGER_RUNNER_HOST")
    if cli_bin:
        if not (os.path.isfile(cli_bin) and os.access(cli_bin, os.X_OK)):
            raise EngineError(f"{cli_name}: {cli_bin!r} is not an executable file (the dagger CLI)")
        source = cli_name
    else:
        cli_bin = shutil.which("dagger")
        if cli_bin is None:
            if block is not None:
                raise EngineError(f"{block} sets neither a session nor a dagger CLI, and there is no dagger on "
                                  f"PATH{' (runner_host needs the dagger CLI)' if runner else ''}: set the "
                                  "block's session_port/session_token or cli_bin, or install the dagger CLI "
                                  "(https://docs.dagger.io/install)")
            raise EngineError(NO_ENGINE)
        source = "dagger on PATH"
    keep = {"_EXPERIMENTAL_DAGGER_CLI_BIN": cli_bin}
    if runner:
        keep["_EXPERIMENTAL_DAGGER_RUNNER_HOST"] = runner
    return EngineTarget(source=source, address=runner or f"local engine of {cli_bin}", env=keep, timeout=timeout)


@contextlib.contextmanager
def _engine_environment(env: dict[str, str]) -> Iterator[None]:
    """``ENGINE_VARIABLES`` as ``env`` says while the SDK connects, then as they were."""
    saved = {k: os.environ.get(k) for k in ENGINE_VARIABLES}
    try:
        for k in ENGINE_VARIABLES:
            if k in env:
                os.environ[k] = env[k]
            else:
                os.environ.pop(k, None)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.asynccontextmanager
async def connect(target: EngineTarget):
    """An SDK client of ``target`` (``dagger.Client``), closed on exit."""
    import dagger

    cfg = dagger.Config(retry=dagger.Retry(execute=False), timeout=dagger.Timeout(target.timeout, connect=10.0),
                        log_output=engine_log())
    conn = dagger.Connection(cfg)
    with _engine_environment(target.env):
        client = await conn.__aenter__()
    try:
        yield client
    finally:
        await conn.close()


class EngineLog(io.TextIOBase):
    """A text stream (the SDK's ``log_output``) whose lines go to the loggers of the
    steps using the engine now (:meth:`attach`), or to ``orchestra.dagger`` when none is.
    The dagger CLI writes it from a thread of the SDK's."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._loggers: list[Any] = []
        self._partial = ""

    @contextlib.contextmanager
    def attach(self, logger: Any) -> Iterator[None]:
        with self._lock:
            self._loggers.append(logger)
        try:
            yield
        finally:
            with self._lock:
                self._loggers.remove(logger)

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        from core.redact import redact

        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            targets = list(self._loggers) or [log]
        for line in lines:
            if line.strip():
                for logger in targets:
                    logger.info("dagger: %s", redact(line.rstrip()))
        return len(text)


_log = EngineLog()


def engine_log() -> EngineLog:
    """The process's one engine log stream (see :class:`EngineLog`)."""
    return _log
