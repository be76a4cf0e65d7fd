"""What the modules of MCP tools share (``orchestra.mcp_server``, ``orchestra.mcp_tasks``).

* :func:`tool` / :func:`resource`: declare a tool or a resource (the arguments of
  FastMCP's own decorators); :func:`build` makes a FastMCP server with every one
  declared, so that stdio and streamable HTTP (with its bearer-token auth) serve the
  same tools.
* :func:`user_errors`: errors a user can cause become one clear ``ToolError``
  (``isError``), never a traceback; secrets masked.
* :func:`prepare_engine`: a Prefect API for this process, then the engine imported (once).
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from contextlib import contextmanager
from typing import Annotated, Any, Callable, Iterator

import anyio
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from core.redact import redact
from core.settings import settings
from flows.spec import WorkflowError

__all__ = ["READ_ONLY", "WRITES", "WorkflowArg", "build", "jsonable", "prepare_engine", "prepare_engine_now", "resource", "tool",
           "user_errors"]

log = logging.getLogger("orchestra.mcp")

READ_ONLY = ToolAnnotations(readOnlyHint=True, openWorldHint=False)
WRITES = ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=False)

WorkflowArg = Annotated[
    str | dict[str, Any],
    Field(description="A workflow file path (.yaml/.yml/.json/.py; relative paths are read from the server's "
                      "working directory), the name of a shipped workflow (see orchestra://workflows), or an "
                      "inline definition: an object with name/steps/... (or the /run-graph format), or its "
                      "YAML/JSON text."),
]

_TOOLS: list[tuple[Callable[..., Any], dict[str, Any]]] = []
_RESOURCES: list[tuple[Callable[..., Any], str, dict[str, Any]]] = []


def tool(**kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a tool (``FastMCP.tool``'s arguments: title, description, annotations, ...)."""
    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        _TOOLS.append((fn, kwargs))
        return fn
    return declare


def resource(uri: str, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare a resource (``FastMCP.resource``'s arguments)."""
    def declare(fn: Callable[..., Any]) -> Callable[..., Any]:
        _RESOURCES.append((fn, uri, kwargs))
        return fn
    return declare


def build(instructions: str, **options: Any) -> FastMCP:
    """A FastMCP server named ``orchestra`` with every declared tool and resource;
    ``options`` are FastMCP's (``auth``, ``token_verifier``, ``transport_security``...)."""
    with warnings.catch_warnings():  # pydantic-settings' IncompleteFieldDefinitionWarning on FastMCP's own Settings
        warnings.simplefilter("ignore")
        server = FastMCP("orchestra", instructions=instructions, log_level="WARNING", **options)
    for fn, kwargs in _TOOLS:
        server.tool(**kwargs)(fn)
    for fn, uri, kwargs in _RESOURCES:
        server.resource(uri, **kwargs)(fn)
    return server


@contextmanager
def user_errors(what: str) -> Iterator[None]:
    """Errors a user can cause -> one clear ToolError; anything else -> one redacted line."""
    try:
        yield
    except ToolError:
        raise
    except (WorkflowError, ValueError) as exc:
        raise ToolError(redact(str(exc))) from None
    except RuntimeError as exc:
        raise ToolError(redact(f"{what}: {exc}")) from None
    except Exception as exc:
        message = redact(f"{what}: {type(exc).__name__}: {exc}")
        log.error("%s", message)
        if settings().debug:
            log.error("traceback", exc_info=True)
        raise ToolError(message) from None


def jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


_engine_lock = threading.Lock()
_engine_ready = False


def prepare_engine_now() -> None:
    """A Prefect API for this process, then the engine imported: once (blocking)."""
    global _engine_ready
    from orchestra import runs

    with _engine_lock:
        if _engine_ready:
            return
        try:
            runs.ensure_prefect(echo=lambda m: log.warning("%s", m))
        except RuntimeError as exc:
            raise RuntimeError(f"Prefect: {exc}") from None
        import flows.engine  # noqa: F401
        import orchestra.flow  # noqa: F401

        _engine_ready = True


async def prepare_engine() -> None:
    if not _engine_ready:
        await anyio.to_thread.run_sync(prepare_engine_now)
