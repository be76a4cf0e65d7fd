"""``run_workflow``: the Prefect flow every Orchestra run is, locally and on workers.

It is the deployments' entrypoint (``prefect.yaml``: ``orchestra/flow.py:run_workflow``)
and what ``orchestra.runs.run`` calls in-process. It resolves the workflow (a shipped
name, a path, an inline definition, ours or ``/run-graph``), checks the inputs, tags
the flow run with the workflow's ``metadata``, and hands the run to the engine with
the app's ledger (the engine reads the ``FastAgentSettings`` block the settings name).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from core.redact import install_log_redaction
from flows import engine
from flows.spec import WorkflowError
from orchestra import runtime, workflows

__all__ = ["run_workflow", "metadata_tags"]

install_log_redaction()  # a worker's flow-run process imports this module first


def metadata_tags(metadata: dict[str, Any]) -> list[str]:
    """Flow-run tags for a workflow's scalar ``metadata`` values (``key:value``)."""
    return [f"{k}:{v}"[:100] for k, v in metadata.items() if isinstance(v, (str, int, float, bool))]


async def _tag(metadata: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    tags = metadata_tags(metadata)
    if ctx is None or ctx.flow_run is None or not tags:
        return
    try:
        async with get_client() as client:
            await client.update_flow_run(ctx.flow_run.id, tags=sorted(set(ctx.flow_run.tags) | set(tags)))
    except Exception as exc:  # tags are a convenience: never fail a run on them
        get_run_logger().warning("could not tag the flow run with its metadata: %s", exc)


@flow(name="run_workflow", persist_result=False, validate_parameters=False)
async def run_workflow(
    workflow: str | dict[str, Any],
    inputs: dict[str, Any] | None = None,
    model: str | None = None,
    no_cache: bool = False,
    budget_usd: float | None = None,
) -> dict[str, Any]:
    """Run an Orchestra workflow: a shipped name, a path, or an inline definition
    (ours or the AI Orchestra `/run-graph` JSON format). `budget_usd` overrides the
    workflow's own budget."""
    try:
        request = workflows.prepare(workflow, inputs, model=model, no_cache=no_cache, budget=budget_usd)
    except (WorkflowError, ValueError) as exc:
        get_run_logger().error(str(exc))
        return Failed(message=str(exc))
    try:
        ledger = runtime.ledger()
    except RuntimeError as exc:  # a setting that names a block that cannot be read
        get_run_logger().error(str(exc))
        return Failed(message=str(exc))
    if request.wf.metadata:
        await _tag(request.wf.metadata)
    return await engine.execute(request.wf, request.values, ledger=ledger, model=model,
                                no_cache=no_cache, budget_usd=budget_usd)
