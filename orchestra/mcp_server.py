"""`orchestra mcp`: Orchestra as an MCP server (the official `mcp` SDK's FastMCP), over
stdio, or streamable HTTP with ``orchestra mcp --http [--host 127.0.0.1] [--port 8765]``.

The tools are the `orchestra` commands, returning what their ``--json`` prints (the
task tools, ``create_task`` ... ``execute_workflows_for_project``, are in
``orchestra.mcp_tasks``):

| tool | CLI |
| --- | --- |
| ``run_workflow(workflow, inputs, model, no_cache, budget_usd)`` | ``orchestra run --json`` |
| ``validate_workflow(workflow)`` -> ``{ok, errors, ...}`` | ``orchestra validate`` |
| ``workflow_graph(workflow)`` -> Mermaid text | ``orchestra graph`` |
| ``list_runs(limit, workflow)``, ``get_run(flow_run_id)`` | ``orchestra runs --json`` |
| ``costs(by)`` | ``orchestra costs --by ... --json`` |
| ``list_agents()``, ``show_agent(name)`` | ``orchestra agents list --json`` / ``show`` |

``workflow`` is a file path, the name of a shipped workflow (``hello``), or an inline
definition (an object, or its YAML/JSON text). Resources: ``orchestra://workflows``
(the shipped workflows), ``orchestra://workflows/{name}`` (one's definition) and
``orchestra://runs/{flow_run_id}`` (a run from the ledger, with its calls).

Errors a user can cause come back as MCP tool errors (``isError``) with one message
naming the file, step or argument; never a traceback, and secrets are masked. A run
that fails is not a tool error: its report says ``"state": "FAILED"`` and why.

Stdout belongs to the protocol: :func:`main` keeps the real stdout for it and points
file descriptor 1 at stderr, so nothing else (Prefect, rich, fast-agent, a child
process) can write a stray line into the JSON-RPC stream.

Over HTTP, with the ``mcp_token`` setting (``ORCHESTRA_MCP_TOKEN``) set, every request
without ``Authorization: Bearer <that token>`` is refused with 401 by the SDK's own
bearer-auth middleware; without it the server listens on a loopback address only (and
refuses requests whose Host or Origin is not loopback: DNS rebinding). The token is
never logged or shown.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys
import threading
from typing import Annotated, Any, Literal

import anyio
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import Field

from core.redact import redact
from core.settings import settings
from flows.spec import WorkflowError
from orchestra import mcp_tasks  # noqa: F401  (declares the task tools)
from orchestra import runs as runner
from orchestra.mcp_common import (READ_ONLY, WorkflowArg, build, jsonable, prepare_engine, prepare_engine_now,
                                  resource, tool, user_errors)

log = logging.getLogger("orchestra.mcp")

INSTRUCTIONS = """Orchestra runs AI-agent workflows (DAGs of LLM steps) as Prefect flow runs and keeps a
cost ledger. Read orchestra://workflows for the shipped workflows; run one with run_workflow
(a shipped name like "hello", a file path, or an inline definition); check a definition with
validate_workflow; query past runs and spending with list_runs, get_run and costs.
Work items are tasks: create_project, create_task, create_workflow_from_task (shows the workflow
a task will run), execute_task_workflow (returns at once), get_workflow_status (state, steps,
progress, cost), get_task; a whole project with create_workflows_for_project and
execute_workflows_for_project."""
DEFAULT_HTTP_PORT = 8765


class _OneRecord(logging.Formatter):
    """``orchestra mcp: LEVEL logger: message``, secrets masked, no traceback (Prefect logs a
    failed step with its traceback; the message already says what failed) unless ORCHESTRA_DEBUG."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"orchestra mcp: {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info and settings().debug:
            text += "\n" + self.formatException(record.exc_info)
        return redact(text)


def _stderr_logging() -> None:
    """Warnings and errors on stderr, one plain line each (not FastMCP's rich INFO log, which
    Prefect's flow-run loggers would fill through propagation)."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(_OneRecord())
        root.addHandler(handler)
        root.setLevel(logging.WARNING)


_stderr_logging()

_user_errors = user_errors
_jsonable = jsonable
_prepare_engine = prepare_engine
_prepare_engine_now = prepare_engine_now


# ---------------------------------------------------------------------------
# running


def _warm_up() -> None:
    """Import the engine (and start fast-agent when the default model is one of its) in the
    background, so that the first run_workflow does not wait for it. Only when the Prefect API
    is known already: starting Orchestra's local server waits for a run that needs it."""
    try:
        from orchestra import prefect_server

        if not (os.environ.get("PREFECT_API_URL") or settings().prefect == "ephemeral"
                or prefect_server.status()):
            return
        _prepare_engine_now()
        from agents.base import default_model

        if default_model().startswith("fast-agent:"):
            from agents import call_agent
            from agents.base import AgentConfig

            asyncio.run(call_agent(AgentConfig(name="warm-up"), "ok", model="fast-agent:passthrough"))
    except Exception as exc:  # the first run will say what is wrong
        log.debug("warm-up: %s", redact(str(exc)))


async def _note_run(request: Any) -> None:
    """``run.start`` checked and audited as the MCP server's actor (``orchestra.actions.note_run``)."""
    import anyio

    from orchestra import access, actions

    await anyio.to_thread.run_sync(lambda: actions.note_run(access.mcp_actor(), request))


@tool(title="Run a workflow",
          annotations=ToolAnnotations(readOnlyHint=False, destructiveHint=False, openWorldHint=True))
async def run_workflow(
    workflow: WorkflowArg,
    inputs: Annotated[dict[str, Any], Field(description="The workflow's inputs by name (typed values or "
                                                        "strings as with `-i key=value`); defaults apply")] = {},
    model: Annotated[str | None, Field(description="Use this model for every agent, e.g. openai:gpt-4.1-mini, "
                                                   "anthropic:claude-sonnet-4-0, fast-agent:passthrough")] = None,
    no_cache: Annotated[bool, Field(description="Call every provider again; take nothing from the step cache")] = False,
    budget_usd: Annotated[float | None, Field(description="Most this run may spend, in USD (overrides the "
                                                          "workflow's budget_usd)")] = None,
) -> dict[str, Any]:
    """Run a workflow as a Prefect flow run and wait for it. Returns what `orchestra run --json` prints:
    workflow, flow_run_id, state (COMPLETED or FAILED), duration_s, cost_usd, tokens, and per step its
    state, agent, model, output, tokens, cost, attempts and cached flag. A failed run is a result with
    state FAILED and the steps' errors, not a tool error."""
    with _user_errors("run_workflow"):
        request = runner.prepare(workflow, inputs, model=model, no_cache=no_cache, budget=budget_usd)
        await _prepare_engine()
        await _note_run(request)
        report = await runner.run(request)
        return _jsonable(report)


# ---------------------------------------------------------------------------
# definitions


@tool(title="Validate a workflow", annotations=READ_ONLY)
def validate_workflow(workflow: WorkflowArg) -> dict[str, Any]:
    """Check a workflow definition without running it. Returns {ok, workflow, source, steps, errors,
    warnings}: every problem at once, each naming its file and step or line; warnings do not make
    it invalid (a container step and no Dagger engine configured)."""
    try:
        wf, _ = runner.resolve(workflow)
    except WorkflowError as exc:
        return {"ok": False, "workflow": None, "source": exc.source, "steps": [],
                "errors": [redact(f"{exc.source}: {p}") for p in exc.problems], "warnings": []}
    return {"ok": True, "workflow": wf.name, "source": wf.source, "type": wf.type,
            "steps": [s.id for s in wf.steps], "errors": [],
            "warnings": [redact(f"{wf.source}: {w}") for w in wf.warnings]}


@tool(title="A workflow's DAG as Mermaid", annotations=READ_ONLY)
def workflow_graph(workflow: WorkflowArg) -> str:
    """The workflow's DAG as a Mermaid flowchart (what `orchestra graph` prints)."""
    with _user_errors("workflow_graph"):
        wf, _ = runner.resolve(workflow)
        return wf.mermaid()


# ---------------------------------------------------------------------------
# the ledger


def _store():
    from orchestra.runtime import ledger

    return ledger()


@tool(title="Recent runs", annotations=READ_ONLY)
def list_runs(
    limit: Annotated[int, Field(ge=1, le=1000, description="How many, newest first")] = 20,
    workflow: Annotated[str | None, Field(description="Only runs of this workflow (its name)")] = None,
) -> dict[str, Any]:
    """Recent runs from the ledger, newest first: {runs: [{flow_run_id, workflow, state, cost_usd,
    started, ...}]} (what `orchestra runs --json` prints)."""
    with _user_errors("list_runs"):
        from ledger import queries

        return {"runs": _jsonable(queries.runs(_store(), limit=limit, workflow=workflow))}


@tool(title="One run", annotations=READ_ONLY)
def get_run(flow_run_id: Annotated[str, Field(description="A flow_run_id from list_runs or run_workflow")]) -> dict[str, Any]:
    """One run from the ledger with its totals, inputs and every agent call (step, agent, model,
    tokens, cost, latency, error)."""
    with _user_errors("get_run"):
        from ledger import queries

        row = queries.run(_store(), flow_run_id.strip())
        if row is None:
            raise ToolError(f"no run {flow_run_id!r} in the ledger (see list_runs)")
        return _jsonable(row)


@tool(title="Cost totals", annotations=READ_ONLY)
def costs(
    by: Annotated[Literal["model", "agent", "workflow", "day"], Field(description="Group by")] = "model",
) -> dict[str, Any]:
    """Calls, tokens and cost from the ledger grouped by model, agent, workflow or day:
    {by, total_cost_usd, rows: [{<by>, calls, input_tokens, output_tokens, cost_usd}]}
    (what `orchestra costs --json` prints as rows)."""
    with _user_errors("costs"):
        from ledger import queries

        rows = _jsonable(queries.cost_groups(_store(), by))
        return {"by": by, "total_cost_usd": round(sum(r["cost_usd"] for r in rows), 10), "rows": rows}


# ---------------------------------------------------------------------------
# agents


def _registry() -> dict[str, Any]:
    from agents.registry import load_registry

    return load_registry()


@tool(title="The agents", annotations=READ_ONLY)
def list_agents() -> dict[str, Any]:
    """The agent registry (agents/*.yaml): {agents: [{name, model, capabilities, description}]}."""
    from agents.base import default_model

    with _user_errors("list_agents"):
        return {"agents": [{"name": a.name, "model": a.model or f"(default: {default_model()})",
                            "capabilities": a.capabilities, "description": a.description or ""}
                           for a in _registry().values()]}


@tool(title="One agent", annotations=READ_ONLY)
def show_agent(name: Annotated[str, Field(description="An agent name from list_agents")]) -> dict[str, Any]:
    """One agent's definition (model, instruction, temperature, capabilities, fallback, ...)."""
    with _user_errors("show_agent"):
        reg = _registry()
        if name not in reg:
            raise ToolError(f"unknown agent {name!r} (known: {', '.join(sorted(reg))})")
        return _jsonable(reg[name].model_dump(exclude_none=True))


# ---------------------------------------------------------------------------
# resources


@resource("orchestra://workflows", name="workflows", title="Shipped workflows", mime_type="application/json",
              description="The workflows that ship with Orchestra (deployments/workflows): name, description, "
                          "type, steps, inputs. Pass a name to run_workflow.")
def workflows_resource() -> str:
    return json.dumps(runner.shipped(), indent=2)


@resource("orchestra://workflows/{name}", name="workflow", title="A shipped workflow's definition",
              mime_type="application/yaml", description="The definition file of one shipped workflow.")
def workflow_resource(name: str) -> str:
    path = runner.shipped_file(name) if re.fullmatch(r"[A-Za-z0-9_-]+", name) else None
    if path is None:
        raise ValueError(f"no shipped workflow {name!r} (see orchestra://workflows)")
    return path.read_text(encoding="utf-8")


@resource("orchestra://runs/{flow_run_id}", name="run", title="A run from the ledger",
              mime_type="application/json", description="One run with its totals, inputs and agent calls.")
def run_resource(flow_run_id: str) -> str:
    from ledger import queries

    row = queries.run(_store(), flow_run_id)
    if row is None:
        raise ValueError(f"no run {flow_run_id!r} in the ledger")
    return json.dumps(row, default=str, indent=2)


# ---------------------------------------------------------------------------
# serving


mcp: FastMCP = build(INSTRUCTIONS)  # every declared tool and resource, served over stdio


def _claim_stdout():
    """Keep the real stdout for the protocol; point fd 1 (and so sys.stdout, print, rich,
    child processes) at stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    return open(protocol_fd, "w", encoding="utf-8", newline="\n", closefd=True)


class _PipeLines:
    """stdin's lines read by the event loop itself (a pipe, non-blocking), so that a signal
    can end the server while it waits for input: the SDK's default reads in a worker thread
    that no cancellation interrupts and that the interpreter waits for at exit."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader

    @classmethod
    async def open(cls) -> _PipeLines | None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 26)  # one JSON-RPC message a line
        pipe = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
        try:
            await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
        except (OSError, ValueError):  # stdin is a regular file: the SDK's reader will do
            pipe.close()
            return None
        return cls(reader)

    def __aiter__(self) -> _PipeLines:
        return self

    async def __anext__(self) -> str:
        line = await self.reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8")


async def _serve(protocol_out) -> None:
    import signal

    from mcp.server.stdio import stdio_server

    server = mcp._mcp_server  # what FastMCP.run_stdio_async runs, on our stdout
    stdin = await _PipeLines.open()

    async def stop_on_signal(scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for _ in signals:
                scope.cancel()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signal, tg.cancel_scope)
        async with stdio_server(stdin=stdin, stdout=anyio.wrap_file(protocol_out)) as (read, write):
            await server.run(read, write, server.create_initialization_options())
        tg.cancel_scope.cancel()  # stdin closed: the client is gone


class _StaticToken:
    """The SDK's TokenVerifier for one shared bearer token (compared in constant time)."""

    def __init__(self, token: str):
        self._expected = token.encode()

    async def verify_token(self, token: str):
        import hmac

        from mcp.server.auth.provider import AccessToken

        if hmac.compare_digest(token.strip().encode(), self._expected):
            return AccessToken(token="***", client_id="orchestra-mcp-client", scopes=[])
        return None


def http_app(host: str, token: str | None):
    """The streamable HTTP app (``/mcp``) with every tool: the bearer token required when
    given; on a loopback host, requests with a non-loopback Host or Origin refused."""
    from mcp.server.auth.settings import AuthSettings
    from mcp.server.transport_security import TransportSecuritySettings

    from orchestra.runtime import is_loopback

    options: dict[str, Any] = {}
    if token:
        options.update(auth=AuthSettings(issuer_url=f"http://{_url_host(host)}", resource_server_url=None),
                       token_verifier=_StaticToken(token))
    if is_loopback(host):
        local = ["127.0.0.1", "localhost", "[::1]"]
        options["transport_security"] = TransportSecuritySettings(
            enable_dns_rebinding_protection=True, allowed_hosts=[f"{h}:*" for h in local],
            allowed_origins=[f"http://{h}:*" for h in local])
    return build(INSTRUCTIONS, **options).streamable_http_app()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def serve_http(host: str, port: int) -> None:
    """Serve the tools over streamable HTTP on ``host:port`` until SIGINT/SIGTERM. SystemExit
    2 (a message on stderr) on a non-loopback host without the ``mcp_token`` setting."""
    import contextlib
    import signal

    import uvicorn

    from orchestra.runtime import is_loopback

    secret = settings().mcp_token
    token = secret.get_secret_value().strip() if secret is not None else None
    if not token and not is_loopback(host):
        print(f"orchestra mcp: --host {host} is not a loopback address: set ORCHESTRA_MCP_TOKEN (a bearer token "
              "every client must send) to serve MCP on it", file=sys.stderr)
        sys.exit(2)
    app = http_app(host, token)

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            """SIGTERM/SIGINT end the server gracefully and the process with 0 (uvicorn's own
            handling raises the signal again once it has stopped)."""
            def stop(*_: Any) -> None:
                self.should_exit = True

            previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.servers and self.servers[0].sockets:
                bound = self.servers[0].sockets[0].getsockname()[1]
                how = "a bearer token (ORCHESTRA_MCP_TOKEN) is required" if token else "no token: loopback only"
                print(f"orchestra mcp: streamable HTTP on http://{_url_host(host)}:{bound}/mcp ({how})",
                      file=sys.stderr, flush=True)

    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                                   lifespan="on", timeout_graceful_shutdown=5))
    server.run()
    if not server.started:
        print(f"orchestra mcp: could not listen on {host}:{port} (see above)", file=sys.stderr)
        sys.exit(1)


def main(http: bool = False, host: str = "127.0.0.1", port: int = DEFAULT_HTTP_PORT) -> None:
    """Serve MCP over stdio until stdin closes or SIGTERM/SIGINT (or, with ``http``, over
    streamable HTTP on ``host:port``); then exit 0 (the ledger flushed)."""
    from core.settings import SettingsError
    from orchestra import runtime

    try:
        runtime.configure(quiet_console=True)  # before Prefect is imported, on first run
    except SettingsError as exc:
        print(f"orchestra mcp: {redact(str(exc))}", file=sys.stderr)
        sys.exit(2)
    if http:
        if settings().mcp_warmup:
            threading.Thread(target=_warm_up, name="orchestra-mcp-warm-up", daemon=True).start()
        serve_http(host, port)
        return
    protocol_out = _claim_stdout()
    if settings().mcp_warmup:
        threading.Thread(target=_warm_up, name="orchestra-mcp-warm-up", daemon=True).start()
    try:
        anyio.run(_serve, protocol_out)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # a signal in the middle of a run, a broken pipe: no traceback
        if type(exc).__name__ == "TerminationSignal":  # Prefect's, for a SIGTERM during a flow run
            return
        if settings().debug:
            raise
        print(f"orchestra mcp: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
