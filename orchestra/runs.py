"""Running a workflow: the one use case that `orchestra run`/`rerun` (orchestra.cli),
`orchestra mcp` (orchestra.mcp_server) and deployments (orchestra.flow) share.

    request = prepare("hello", {"name": "Ada"})   # a file, a shipped name, or an inline definition
    ensure_prefect()                               # before Prefect is imported
    report = await run(request)                    # the object `orchestra run --json` prints
    flow_run_id = await start(request)             # or: in the background, its id at once
    await cancel(flow_run_id)                      # CANCELLING on the Prefect API

Everything here except :func:`run` is light: no Prefect import. Errors a user can
cause are ``WorkflowError`` (naming the file or step) or ``ValueError`` (naming the
argument); :func:`ensure_prefect` raises ``RuntimeError`` when no Prefect API can be
reached or started.
"""

from __future__ import annotations

from typing import Any, Callable

from orchestra.workflows import (RunRequest, check_budget, check_model, prepare, rerun_request, resolve,
                                 shipped, shipped_file)

__all__ = ["RunRequest", "cancel", "check_budget", "check_model", "ensure_prefect", "interrupted", "prepare",
           "rerun_request", "resolve", "run", "shipped", "shipped_file", "start", "start_flow"]


def ensure_prefect(echo: Callable[[str], Any] | None = None) -> str | None:
    """Prefect's defaults, then a Prefect API for this process (``PREFECT_API_URL``, else
    Orchestra's local server, started if need be). Call before Prefect is imported.
    RuntimeError when none can be reached or started."""
    from orchestra import prefect_server, runtime

    runtime.configure(quiet_console=True)
    return prefect_server.ensure(echo=echo)


async def run(request: RunRequest, *, listener: Callable[[str, str, dict], Any] | None = None) -> dict[str, Any]:
    """Run a request as a Prefect flow run in the running event loop; the report that
    `orchestra run --json` prints (``state`` is the flow run's). ValueError, before
    anything is written, when the run cannot start here (an approval step and no
    Prefect server)."""
    from flows import engine, progress
    from flows.steps.approval import no_server_problem
    from orchestra.flow import run_workflow

    wf = request.wf
    if problem := no_server_problem(wf):
        raise ValueError(problem)
    flow_fn = run_workflow.with_options(name=wf.name)
    if listener:
        progress.add_listener(listener)
    interrupts = _on_interrupt()
    try:
        state = await flow_fn(workflow=request.ref, inputs=request.values, model=request.model,
                              no_cache=request.no_cache, budget_usd=request.budget, return_state=True)
    finally:
        interrupts()
        if listener:
            progress.remove_listener(listener)
    data = await engine.final_report(state)
    if isinstance(data, dict) and "steps" in data:
        return data
    message = str(data) if isinstance(data, BaseException) else (state.message or state.name)
    return {"workflow": wf.name, "flow_run_id": str(state.state_details.flow_run_id), "state": state.type.value,
            "error": message, "duration_s": 0.0, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, "steps": {}}


_interrupted = False


def interrupted() -> bool:
    """Whether Ctrl-C cancelled a run of this process (the CLI then exits 130)."""
    return _interrupted


def _on_interrupt() -> Callable[[], None]:
    """The first Ctrl-C (SIGINT) cancels the running flow runs of this process, which then
    end CANCELLED with what they spent; a second one stops the process at once. Returns
    the function that puts the old handling back."""
    import asyncio
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()

    def first() -> None:
        global _interrupted
        from flows import supervision

        _interrupted = True
        loop.remove_signal_handler(signal.SIGINT)  # the next Ctrl-C is Python's own
        supervision.cancel("interrupted (Ctrl-C)")

    try:
        loop.add_signal_handler(signal.SIGINT, first)
    except (NotImplementedError, RuntimeError):
        return lambda: None
    return lambda: loop.remove_signal_handler(signal.SIGINT)


async def start(request: RunRequest, *, tags: list[str] | None = None,
                on_created: Callable[[str], Any] | None = None) -> str:
    """Start ``request`` as a flow run that goes on in its own process; its flow-run id at
    once (the ledger and the Prefect UI follow it from there).

    The flow run is created on the Prefect API first, then executed by Prefect's own
    engine entrypoint (``python -m prefect.engine <id>``, as a worker runs it) with
    ``orchestra/flow.py:run_workflow`` as its flow, in a new session so that it outlives
    the caller. Its output goes to ``<home>/runs/<id>.log``. Needs a Prefect API (the
    local server or ``PREFECT_API_URL``): call :func:`ensure_prefect` first. ValueError
    when the run cannot start here (an approval step and no Prefect server).

    ``on_created(flow_run_id)`` is called between the two: when it raises, the flow run
    is set CANCELLED (never executed) and the exception propagates."""
    from flows.steps.approval import no_server_problem
    from orchestra.flow import run_workflow

    wf = request.wf
    if problem := no_server_problem(wf):
        raise ValueError(problem)
    parameters = {"workflow": request.ref, "inputs": request.values, "model": request.model,
                  "no_cache": request.no_cache, "budget_usd": request.budget}
    return await start_flow(run_workflow.with_options(name=wf.name), parameters,
                            entrypoint="orchestra/flow.py:run_workflow", tags=tags, on_created=on_created)


async def start_flow(flow_fn: Any, parameters: dict[str, Any], *, entrypoint: str, tags: list[str] | None = None,
                     on_created: Callable[[str], Any] | None = None) -> str:
    """Create a flow run of ``flow_fn`` (a Prefect flow defined at ``entrypoint``,
    ``path.py:name`` from the repository root) and execute it in a process of its own,
    as :func:`start` does; its id at once."""
    import os
    import subprocess
    import sys

    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings
    from prefect.states import Cancelled, Pending

    from orchestra.runtime import REPO_ROOT, orchestra_home

    async with get_client() as client:
        flow_run = await client.create_flow_run(flow_fn, parameters=parameters, state=Pending(), tags=tags or [])
        if on_created is not None:
            try:
                on_created(str(flow_run.id))
            except BaseException as exc:
                await client.set_flow_run_state(flow_run.id, Cancelled(message=f"not started: {exc}"), force=True)
                raise
    logs = orchestra_home() / "runs"
    logs.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(PREFECT__FLOW_RUN_ID=str(flow_run.id), PREFECT__FLOW_ENTRYPOINT=entrypoint,
               PREFECT_API_URL=str(get_current_settings().api.url))
    with open(logs / f"{flow_run.id}.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "prefect.engine", str(flow_run.id)], cwd=str(REPO_ROOT), env=env,
                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return str(flow_run.id)


async def cancel(flow_run_id: str, *, by: str | None = None) -> dict[str, Any]:
    """Ask Prefect to cancel a flow run: its state becomes CANCELLING on the API and the
    run's own watcher (``flows.supervision``) or its worker stops it within seconds; a
    final run is left as it is (then ``state == previous``). ValueError naming the run
    when it is not a flow run on the API. Returns ``{flow_run_id, state, previous}``."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.states import Cancelling

    try:
        run_id = UUID(str(flow_run_id).strip())
    except ValueError:
        raise ValueError(f"{flow_run_id!r} is not a flow run id (a UUID)") from None
    async with get_client() as client:
        try:
            run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ValueError(f"no flow run {flow_run_id} on the Prefect server") from None
        previous = run.state.type.value if run.state else None
        if run.state is not None and run.state.is_final():
            return {"flow_run_id": str(run_id), "state": previous, "previous": previous}
        result = await client.set_flow_run_state(run_id, Cancelling(message=f"cancelled by {by or 'request'}"),
                                                 force=True)
    return {"flow_run_id": str(run_id), "state": result.state.type.value if result.state else "CANCELLING",
            "previous": previous}
