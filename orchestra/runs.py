"""Running a workflow: what `orchestra run`/`rerun` (services.cli) and `orchestra mcp`
(services.mcp_server) share.

    wf, ref = resolve("hello")                  # a file, a shipped name, or an inline definition
    values = coerce_inputs(wf, {"name": "Ada"})
    ensure_prefect()                            # before Prefect is imported
    report = await run(wf, ref, values)         # the object `orchestra run --json` prints

Everything here except :func:`run` is light: no Prefect import. Errors a user can
cause are ``WorkflowError`` (naming the file or step) or ``ValueError`` (naming the
argument); :func:`ensure_prefect` raises ``RuntimeError`` when no Prefect API can be
reached or started.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from flows.spec import Workflow, WorkflowError, load_workflow, parse_workflow
from services.runtime import workflows_dir

INLINE = "<inline workflow>"
SUFFIXES = (".yaml", ".yml", ".json", ".py")


def shipped() -> list[dict[str, Any]]:
    """The workflows in deployments/workflows: name, description, file, inputs."""
    rows = []
    for path in sorted(p for p in workflows_dir().iterdir() if p.suffix in SUFFIXES and p.is_file()):
        try:
            wf = load_workflow(path)
        except WorkflowError as exc:
            rows.append({"name": path.stem, "description": None, "file": str(path), "error": str(exc)})
            continue
        rows.append({"name": wf.name, "description": wf.description, "file": str(path), "type": wf.type,
                     "steps": [s.id for s in wf.steps],
                     "inputs": {k: v.model_dump(exclude_none=True) for k, v in wf.inputs.items()}})
    return rows


def shipped_file(name: str) -> Path | None:
    """The file of the shipped workflow ``name`` (a plain name, no path), or None."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return None
    for suffix in SUFFIXES:
        candidate = workflows_dir() / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def resolve(workflow: str | Path | dict[str, Any] | Workflow) -> tuple[Workflow, str | dict[str, Any]]:
    """The validated workflow and the reference its flow run loads again.

    ``workflow`` is a file path (.yaml/.yml/.json/.py; relative to the working
    directory), the name of a shipped workflow (``hello``), an inline definition
    (a dict, ours or the `/run-graph` format), or the text of one (YAML or JSON).
    The reference is the file's absolute path, or the definition itself.
    """
    if isinstance(workflow, Workflow):
        return workflow, workflow.model_dump(exclude_defaults=True)
    if isinstance(workflow, dict):
        return parse_workflow(workflow, source=INLINE, default_name="inline"), workflow
    if not isinstance(workflow, (str, Path)):
        raise WorkflowError(INLINE, [f"expected a file path, a workflow name or a definition "
                                     f"(got {type(workflow).__name__})"])
    text = str(workflow).strip()
    if not text:
        raise WorkflowError("<workflow>", ["empty: give a file path, a shipped workflow name or a definition"])
    if "\n" in text or text.startswith("{"):  # the definition itself, as YAML or JSON text
        from flows.spec import _parse_text

        data = _parse_text(text, INLINE, json_only=False)
        if not isinstance(data, dict):
            raise WorkflowError(INLINE, [f"a workflow must be a mapping (got {type(data).__name__})"])
        return parse_workflow(data, source=INLINE, default_name="inline"), data
    path = Path(text).expanduser()
    if not _is_file(path):
        path = shipped_file(text) or path
    if _is_file(path):
        path = path.resolve()
        return load_workflow(path), str(path)
    names = ", ".join(s.stem for s in sorted(workflows_dir().iterdir()) if s.suffix in SUFFIXES) or "none"
    where = "" if path.is_absolute() else f"; relative paths are read from {Path.cwd()}"
    raise WorkflowError(text, [f"no such workflow file, and no shipped workflow by that name "
                               f"(shipped: {names}{where})"])


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def check_model(model: str | None, label: str = "model") -> None:
    if model:
        from agents.base import parse_model

        try:
            parse_model(model)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None


def check_budget(budget: float | None, label: str = "budget_usd") -> None:
    if budget is not None and (math.isnan(budget) or math.isinf(budget) or budget < 0):
        raise ValueError(f"{label}: must be a number of USD >= 0 (got {budget:g})")


def ensure_prefect(echo: Callable[[str], Any] | None = None) -> str | None:
    """Prefect's defaults, then a Prefect API for this process (``PREFECT_API_URL``, else
    Orchestra's local server, started if need be). Call before Prefect is imported.
    RuntimeError when none can be reached or started."""
    from services import prefect_server, runtime

    runtime.configure(quiet_console=True)
    return prefect_server.ensure(echo=echo)


async def run(wf: Workflow, workflow_ref: str | dict[str, Any], values: dict[str, Any], *,
              model: str | None = None, no_cache: bool = False, budget: float | None = None,
              listener: Callable[[str, str, dict], Any] | None = None) -> dict[str, Any]:
    """Run ``wf`` as a Prefect flow run in the running event loop; the report that
    `orchestra run --json` prints (``state`` is the flow run's). ValueError, before
    anything is written, when the run cannot start here (an approval step and no
    Prefect server)."""
    from flows import compile as engine
    from flows.approval import no_server_problem

    if problem := no_server_problem(wf):
        raise ValueError(problem)
    flow_fn = engine.run_workflow.with_options(name=wf.name)
    if listener:
        engine.add_listener(listener)
    try:
        state = await flow_fn(workflow=workflow_ref, inputs=values, model=model, no_cache=no_cache,
                              budget_usd=budget, return_state=True)
    finally:
        if listener:
            engine.remove_listener(listener)
    data = await engine.final_report(state)
    if isinstance(data, dict) and "steps" in data:
        return data
    message = str(data) if isinstance(data, BaseException) else (state.message or state.name)
    return {"workflow": wf.name, "flow_run_id": str(state.state_details.flow_run_id), "state": state.type.value,
            "error": message, "duration_s": 0.0, "cost_usd": 0.0, "input_tokens": 0, "output_tokens": 0, "steps": {}}

