"""Reading a workflow: YAML, JSON (ours or ``/run-graph``), a Python file, or a dict.

Every problem is reported at once in one ``WorkflowError``: a schema error (an
unknown field, a wrong type) does not hide the cross-checks, which run on the
document with the offending fields left out. A valid workflow carries what is worth
saying without refusing it in ``Workflow.warnings``.
"""

from __future__ import annotations

import copy
import re
import runpy
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flows.errors import WorkflowError
from flows.spec.documents import check_document, parse_text
from flows.spec.models import Workflow
from flows.spec.run_graph import from_run_graph, is_run_graph
from flows.spec.validation import check, warnings

__all__ = ["load_workflow", "parse_workflow", "parse_text"]


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow file (.yaml/.yml/.json/.py)."""
    path = Path(path)
    source = str(path)
    if path.is_dir():
        raise WorkflowError(source, ["is a folder, not a workflow file (.yaml, .yml, .json or .py)"])
    if not path.is_file():
        raise WorkflowError(source, ["no such file"])
    suffix = path.suffix.lower()
    if suffix == ".py":
        data = _load_python(path)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise WorkflowError(source, [f"cannot read: {exc}"]) from None
        data = parse_text(text, source, json_only=suffix == ".json")
    return parse_workflow(data, source=source, default_name=_slug(path.stem))


def _load_python(path: Path) -> Any:
    try:
        namespace = runpy.run_path(str(path), run_name="orchestra_workflow")
    except Exception as exc:  # user code: report, never a traceback
        raise WorkflowError(str(path), [f"error while executing: {type(exc).__name__}: {exc}"]) from None
    for key in ("workflow", "WORKFLOW"):
        if key in namespace:
            value = namespace[key]
            return value.model_dump() if isinstance(value, Workflow) else value
    raise WorkflowError(str(path), ["a Python workflow must define `workflow` (a flows.Workflow or a dict)"])


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug or "workflow"


def parse_workflow(data: Any, *, source: str = "<workflow>", default_name: str = "workflow",
                   registry: dict[str, Any] | None = None) -> Workflow:
    """Validate a parsed document (ours or `/run-graph`) into a Workflow."""
    if isinstance(data, Workflow):
        workflow = data
    else:
        if not isinstance(data, dict):
            raise WorkflowError(source, ["a workflow must be a mapping (got %s)" % type(data).__name__])
        check_document(data, source)  # an inline definition (a dict from the API) has the file's limits
        if is_run_graph(data):
            data = from_run_graph(data, source=source, default_name=default_name,
                                  registry=registry if registry is not None else _registry())
        data = dict(data)
        data.setdefault("name", default_name)
        try:
            workflow = Workflow.model_validate(data)
        except ValidationError as exc:
            raise WorkflowError(source, _all_problems(exc, data, registry)) from None
    workflow.source = source
    problems = check(workflow, registry)
    if problems:
        raise WorkflowError(source, problems)
    workflow.warnings[:] = warnings(workflow)
    return workflow


def _all_problems(exc: ValidationError, data: dict, registry: dict[str, Any] | None) -> list[str]:
    """The schema's problems, then the cross-checks' on the document without the fields
    the schema refused (when what is left validates)."""
    problems = _pydantic_problems(exc, data)
    repaired = copy.deepcopy(data)
    error = exc
    for _ in range(5):
        if any(e["type"] == "missing" for e in error.errors()):
            return problems  # a required field is missing: the rest cannot be checked reliably
        if not all(_drop(repaired, e["loc"]) for e in sorted(error.errors(), key=lambda e: len(e["loc"]),
                                                              reverse=True)):
            return problems
        try:
            workflow = Workflow.model_validate(repaired)
        except ValidationError as again:
            error = again
            continue
        return problems + [p for p in check(workflow, registry) if p not in problems]
    return problems


def _drop(data: dict, loc: tuple) -> bool:
    """Remove the deepest mapping key on ``loc`` (the field the schema refused); False
    when nothing below the top level can be removed."""
    parent: Any = None
    key: Any = None
    current: Any = data
    for part in loc:
        if isinstance(current, dict) and isinstance(part, str) and part in current:
            parent, key, current = current, part, current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        else:
            break
    if parent is None or parent is data and key in ("steps", "name"):
        return False
    if any(parent is data.get(top) for top in ("agents", "inputs", "mcp_servers") if isinstance(data.get(top), dict)):
        return False  # a whole definition would go: the cross-checks would report it as unknown
    parent.pop(key, None)
    return True


def _pydantic_problems(exc: ValidationError, data: dict) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = list(err["loc"])
        where = []
        # steps.2.depends_on -> step 'summary' (steps[2]): depends_on
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            steps = data.get("steps") or []
            sid = steps[loc[1]].get("id") if loc[1] < len(steps) and isinstance(steps[loc[1]], dict) else None
            where.append(f"step '{sid}'" if sid else f"steps[{loc[1]}]")
            loc = loc[2:]
        elif len(loc) >= 2 and loc[0] in ("agents", "inputs"):
            where.append(f"{loc[0][:-1]} '{loc[1]}'")
            loc = loc[2:]
        loc = [str(p) for p in loc if not (isinstance(p, str) and p in ("str", "RouteSpec", "function-after[_id(), str]"))]
        field = ".".join(loc)
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        prefix = " ".join(where)
        problems.append(f"{prefix + ': ' if prefix else ''}{field + ': ' if field else ''}{msg}")
    return list(dict.fromkeys(problems))


def _registry() -> dict[str, Any]:
    from agents.registry import load_registry

    return load_registry()
