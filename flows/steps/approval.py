"""Approval steps: `approval: {message, timeout}` pauses the flow run until someone
approves or rejects it.

The pause is Prefect's (`apause_flow_run(wait_for_input=...)`): the flow run goes to
PAUSED and the Prefect UI shows the message and a form (`approved`, `reason`);
`orchestra approve RUN_ID [--reject --reason ...]` answers the same form. Approved:
the step completes with the reason, or "approved". Rejected, or no answer within
`timeout` seconds: the step fails with that reason, so the run fails. Steps already
running elsewhere in the graph keep running during the pause. The step runs in the
flow itself (a pause of the flow run), not as a task run.

Pausing needs a Prefect server that another process can reach: in Prefect's
ephemeral mode a run with an approval step fails before anything is written.
The `approval_poll` setting (`ORCHESTRA_APPROVAL_POLL`) sets how often (seconds)
the paused run checks for an answer (default 5).
"""

from __future__ import annotations

import math
from typing import Any
from uuid import UUID

import functools

import anyio

from core.settings import settings
from flows import progress, templates
from flows.context import current_run
from flows.errors import StepError
from flows.steps.base import BaseKind, Prepared, StepContext


PAUSE_GRACE = 60  # seconds the server keeps a pause open after our own deadline


@functools.cache
def approval_input() -> type:
    """The form of a paused approval step (a Prefect ``RunInput``; made on first use, so
    that validating a workflow imports no Prefect)."""
    from prefect.input import RunInput

    class ApprovalInput(RunInput):
        approved: bool = True
        reason: str = ""

    return ApprovalInput


def approval_steps(wf: Any) -> list[str]:
    return [s.id for s in wf.steps if getattr(s, "approval", None) is not None]


def no_server_problem(wf: Any) -> str | None:
    """A message when ``wf`` has approval steps and no Prefect server is configured."""
    steps = approval_steps(wf)
    if not steps:
        return None
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return None
    return (f"step '{steps[0]}': an approval step needs a Prefect server to pause on, and this run uses "
            "Prefect's ephemeral mode; set PREFECT_API_URL (or unset ORCHESTRA_PREFECT=ephemeral so that "
            "`orchestra` starts its local server)")


class ApprovalKind(BaseKind):
    name = "approval"
    outputs = ("output",)

    def validate(self, step: Any, wf: Any, registry: dict[str, Any]) -> list[str]:
        problems = []
        for field in ("agent", "for_each", "output_schema"):
            if getattr(step, field) is not None:
                problems.append(f"step '{step.id}': {field}: not allowed on an approval step (it calls no agent)")
        if step.allow_failure:
            problems.append(f"step '{step.id}': allow_failure: only container and command steps have an exit code")
        return problems

    def templates(self, step: Any) -> list[tuple[str, str]]:
        return [("approval.message", step.approval.message)]

    async def prepare(self, step: Any, ctx: StepContext) -> Prepared:
        return Prepared(done=True, output=await gate(step, ctx.values),
                        prompt=templates.render(step.approval.message, ctx.values))


async def gate(step: Any, context: dict) -> str:
    """Pause for ``step``'s approval; the approver's reason (or "approved"). Raises
    StepError on a rejection or a timeout."""
    from prefect import get_run_logger
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import apause_flow_run

    spec = step.approval
    try:
        message = templates.render(spec.message, context)
    except templates.TemplateError as exc:
        raise StepError(f"step '{step.id}': approval.message: {exc}") from None
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else "<flow run id>"
    logger = get_run_logger()
    logger.warning("step %s waits for approval: %s -- approve in the Prefect UI or with `orchestra approve %s` "
                   "(or `--reject --reason ...`)", step.id, message, run_id)
    run = current_run()
    if run is not None:
        run.step_changed(step.id, "PAUSED", {"message": message, "flow_run_id": run_id})
    else:
        progress.notify(step.id, "PAUSED", {"message": message, "flow_run_id": run_id})
    form = approval_input().with_initial_data(description=f"Step `{step.id}`: {message}", approved=True, reason="")
    timeout = spec.timeout
    try:
        # Our deadline, not Prefect's: once a pause expires on the server, the run can only
        # go to a Failed state of the server's making, and this step's reason would be lost.
        with anyio.fail_after(timeout):
            answer = await apause_flow_run(wait_for_input=form, timeout=int(math.ceil(timeout)) + PAUSE_GRACE,
                                           poll_interval=settings().approval_poll, key=f"approval-{step.id}")
    except (TimeoutError, FlowPauseTimeout):
        await _back_to_running()
        raise StepError(f"step '{step.id}': approval timed out after {timeout:g} s (nobody approved: {message})") from None
    if not answer.approved:
        raise StepError(f"step '{step.id}': rejected by the approver: {answer.reason or 'no reason given'}")
    logger.info("step %s approved%s", step.id, f": {answer.reason}" if answer.reason else "")
    return answer.reason or "approved"


async def _back_to_running() -> None:
    """Leave the pause (nobody answered) so that the run ends in its own Failed state."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return
    try:
        async with get_client() as client:
            await client.set_flow_run_state(ctx.flow_run.id, Running(), force=True)
    except Exception:  # the server's pause timeout will end the run instead
        pass


async def answer(flow_run_id: str, *, approved: bool, reason: str = "") -> None:
    """Resume a paused approval step (``orchestra approve``). ValueError with a clear
    message when the run does not exist or is not paused."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound
    from prefect.flow_runs import aresume_flow_run

    try:
        run_id = UUID(flow_run_id)
    except ValueError:
        raise ValueError(f"{flow_run_id!r} is not a flow run id (a UUID)") from None
    async with get_client() as client:
        try:
            run = await client.read_flow_run(run_id)
        except ObjectNotFound:
            raise ValueError(f"no flow run {flow_run_id} on the Prefect server") from None
    if run.state is None or not run.state.is_paused():
        state = run.state.name if run.state else "no state"
        raise ValueError(f"flow run {flow_run_id} is not waiting for an approval (state: {state})")
    try:
        await aresume_flow_run(run_id, run_input={"approved": approved, "reason": reason})
    except Exception as exc:  # e.g. the pause expired meanwhile
        raise ValueError(f"flow run {flow_run_id}: cannot resume: {exc}") from None
