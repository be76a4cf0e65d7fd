"""Which workflow to run, with what: resolving a workflow reference and checking a
run's inputs and options before anything runs or is written (``orchestra.runs``,
the CLI, the MCP server and the deployment flow all start here).

    request = prepare("hello", {"name": "Ada"})   # a file, a shipped name, or an inline definition

Light: no Prefect import. Errors a user can cause are ``WorkflowError`` (naming the
file or step) or ``ValueError`` (naming the argument).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.redact import redact_data
from flows.spec import Workflow, WorkflowError, coerce_inputs, load_workflow, parse_text, parse_workflow
from orchestra.runtime import ledger, workflows_dir

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
        data = parse_text(text, INLINE)
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
    raise WorkflowError(text, [f"no workflow file or shipped workflow by that name "
                               f"(shipped: {names}{where})"])


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def check_model(model: str | None, label: str = "model") -> None:
    if model is not None:
        from agents.base import parse_model

        try:
            parse_model(model)
        except ValueError as exc:
            raise ValueError(f"{label}: {exc}") from None


def check_budget(budget: float | None, label: str = "budget_usd") -> None:
    if budget is not None and (math.isnan(budget) or math.isinf(budget) or budget < 0):
        raise ValueError(f"{label}: must be a number of USD >= 0 (got {budget:g})")


@dataclass
class RunRequest:
    """A validated run: the workflow, what its flow run loads again, typed inputs, options."""

    wf: Workflow
    ref: str | dict[str, Any]
    values: dict[str, Any]
    model: str | None = None
    no_cache: bool = False
    budget: float | None = None


def prepare(workflow: Any, inputs: dict[str, Any] | None = None, *, model: str | None = None,
            no_cache: bool = False, budget: float | None = None, model_label: str = "model",
            budget_label: str = "budget_usd") -> RunRequest:
    """Everything checked before anything runs or is written; WorkflowError or ValueError."""
    wf, ref = resolve(workflow)
    # a key typed into an input never becomes a flow-run parameter (nor reaches a provider)
    values = redact_data(coerce_inputs(wf, inputs or {}))
    check_model(model, model_label)
    check_budget(budget, budget_label)
    check_parameter_size(wf, ref, values)
    return RunRequest(wf, ref, values, model=model, no_cache=no_cache, budget=budget)


def check_parameter_size(wf: Workflow, ref: str | dict[str, Any], values: dict[str, Any]) -> None:
    """A run's parameters must fit in what Prefect keeps on a flow run
    (``PREFECT_SERVER_API_MAX_PARAMETER_SIZE``, 512 KiB by default): WorkflowError naming
    the largest input and the limit, before anything is sent."""
    from prefect.settings import get_current_settings

    limit = get_current_settings().server.api.max_parameter_size
    if not limit:
        return
    sizes = {name: len(json.dumps(v, default=str)) for name, v in values.items()}
    total = len(json.dumps({"workflow": ref, "inputs": values}, default=str))
    if total <= limit:
        return
    largest = max(sizes, key=sizes.get) if sizes else None
    detail = (f"input '{largest}' is {sizes[largest]:,} bytes as JSON; " if largest else "")
    raise WorkflowError(wf.source or wf.name, [
        f"{detail}the run's parameters would be {total:,} bytes, more than the {limit:,} Prefect keeps on a "
        "flow run (PREFECT_SERVER_API_MAX_PARAMETER_SIZE): pass large data as a file path or a URL instead"])


def rerun_request(run_id: str, *, model: str | None = None, budget: float | None = None) -> RunRequest:
    """The request that runs a recorded run again: its workflow, inputs, model and budget
    (``model``/``budget`` override them). ValueError naming the run when it cannot."""
    from ledger import queries

    row = queries.run(ledger(), run_id)
    if row is None:
        raise ValueError(f"no run {run_id!r} in the ledger (see `orchestra runs`)")
    ref = row.get("workflow_ref")
    if not ref:
        raise ValueError(f"run {run_id} was recorded without its workflow definition; run the file again "
                         "with `orchestra run FILE`")
    try:
        if ref.lstrip().startswith("{"):
            workflow_ref: str | dict = json.loads(ref)
            wf = parse_workflow(workflow_ref, source=f"<workflow of run {run_id}>", default_name=row["workflow"])
        else:
            workflow_ref = ref
            wf = load_workflow(Path(ref))
        values = coerce_inputs(wf, row.get("inputs") or {})
    except WorkflowError as exc:
        raise ValueError(f"rerun {run_id}: {exc}") from None
    model = model or row.get("model_override")
    check_model(model, "--model")
    check_budget(budget, "--budget")
    return RunRequest(wf, workflow_ref, values, model=model,
                      budget=budget if budget is not None else row.get("budget_usd"))
