"""The workflow definition: pydantic models, loading and validation.

A workflow comes from YAML, JSON (ours or the AI Orchestra service's `/run-graph`
format), a Python file that defines `workflow`, or a dict. Every problem is
reported at once, each with its location, in one `WorkflowError`.
"""

from __future__ import annotations

import graphlib
import json
import re
import runpy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from flows import templates

__all__ = [
    "AgentSpec",
    "ApprovalSpec",
    "InputSpec",
    "RouteSpec",
    "Step",
    "Workflow",
    "WorkflowError",
    "load_workflow",
    "parse_workflow",
    "coerce_inputs",
]

STEP_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
WORKFLOW_NAME = re.compile(r"^[a-z0-9-]+$")
RUN_GRAPH_ROLES_HINT = "frontend, backend, qa, debugger, coordinator"


class WorkflowError(Exception):
    """Everything wrong with a workflow definition, each with its location."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: invalid workflow" if len(self.problems) > 1 else f"{self.source}:"
        if len(self.problems) == 1:
            return f"{head} {self.problems[0]}"
        return head + "".join(f"\n  - {p}" for p in self.problems)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


InputType = Literal["string", "number", "integer", "boolean", "object", "array"]


class InputSpec(_Model):
    type: InputType = "string"
    description: str | None = None
    default: Any = None
    required: bool | None = None

    @property
    def is_required(self) -> bool:
        return self.required if self.required is not None else self.default is None


class AgentSpec(_Model):
    """An inline agent definition (the same fields as agents/*.yaml, name from the key)."""

    model: str | None = None
    instruction: str | None = None
    description: str | None = None
    temperature: float | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    capabilities: list[str] = []
    fallback: list[str] = []
    servers: list[str] = []
    credentials: str | None = None
    daily_budget_usd: float | None = Field(default=None, ge=0)

    @field_validator("fallback")
    @classmethod
    def _fallback(cls, value: list[str]) -> list[str]:
        from agents.base import check_fallback_names

        return check_fallback_names(value)


class ApprovalSpec(_Model):
    """`approval: {message, timeout}`: pause the flow run until someone approves or rejects.

    The message is a template (it sees inputs and upstream outputs, like a prompt);
    `timeout` is in seconds. A step with `approval` and no `prompt` is a pure gate."""

    message: str = "Approve to continue?"
    timeout: float = Field(default=3600, gt=0)


class RouteSpec(_Model):
    """`agent: {capabilities: [...], strategy: ...}`: pick an agent by what it can do."""

    capabilities: list[str] = Field(min_length=1)
    strategy: Literal["cheapest", "fastest", "least_loaded", "round_robin", "llm"] = "cheapest"


class Step(_Model):
    id: str
    prompt: str | None = None  # required unless the step is an approval gate
    agent: str | RouteSpec | None = None
    depends_on: list[str] = []
    retries: int = Field(default=2, ge=0, le=20)
    timeout: float | None = Field(default=None, gt=0)
    when: str | None = None
    for_each: str | None = None
    output_schema: dict[str, Any] | None = None
    approval: ApprovalSpec | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not STEP_ID.match(value):
            raise ValueError("must be letters, digits, '_' or '-'")
        return value


class Workflow(_Model):
    name: str
    description: str | None = None
    type: Literal["graph", "sequential", "parallel"] = "graph"
    inputs: dict[str, InputSpec] = {}
    agents: dict[str, AgentSpec] = {}
    steps: list[Step] = Field(min_length=1)
    budget_usd: float | None = Field(default=None, ge=0)
    source: str | None = Field(default=None, exclude=True)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not WORKFLOW_NAME.match(value):
            raise ValueError("must match [a-z0-9-]+ (lowercase letters, digits and dashes)")
        return value

    # -- the DAG ---------------------------------------------------------
    def dependencies(self) -> dict[str, list[str]]:
        """Each step's upstream steps, after the workflow type is applied."""
        if self.type == "sequential":
            ids = [s.id for s in self.steps]
            return {sid: ([ids[i - 1]] if i else []) for i, sid in enumerate(ids)}
        if self.type == "parallel":
            return {s.id: [] for s in self.steps}
        return {s.id: list(s.depends_on) for s in self.steps}

    def step(self, step_id: str) -> Step:
        for s in self.steps:
            if s.id == step_id:
                return s
        raise KeyError(step_id)

    def order(self) -> list[str]:
        return list(graphlib.TopologicalSorter(self.dependencies()).static_order())

    def upstream(self, step_id: str) -> set[str]:
        deps = self.dependencies()
        seen: set[str] = set()
        stack = list(deps[step_id])
        while stack:
            sid = stack.pop()
            if sid not in seen:
                seen.add(sid)
                stack.extend(deps.get(sid, []))
        return seen

    def mermaid(self) -> str:
        lines = ["flowchart TD"]
        for s in self.steps:
            label = s.id if s.agent is None else f"{s.id}<br/>{_agent_label(s.agent)}"
            lines.append(f'    {_mid(s.id)}["{label}"]')
        for sid, deps in self.dependencies().items():
            for d in deps:
                lines.append(f"    {_mid(d)} --> {_mid(sid)}")
        return "\n".join(lines)


def _agent_label(agent: str | RouteSpec) -> str:
    if isinstance(agent, RouteSpec):
        return f"route: {', '.join(agent.capabilities)} ({agent.strategy})"
    return agent


def _mid(step_id: str) -> str:
    return "s_" + re.sub(r"[^A-Za-z0-9_]", "_", step_id)


# ---------------------------------------------------------------------------
# loading


def load_workflow(path: str | Path) -> Workflow:
    """Read and validate a workflow file (.yaml/.yml/.json/.py)."""
    path = Path(path)
    source = str(path)
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
        data = _parse_text(text, source, json_only=suffix == ".json")
    return parse_workflow(data, source=source, default_name=_slug(path.stem))


def _parse_text(text: str, source: str, json_only: bool) -> Any:
    if json_only:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowError(source, [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowError(source, [f"{where}invalid YAML: {problem}"]) from None


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
        if "tasks" in data and "steps" not in data:
            data = from_run_graph(data, source=source, default_name=default_name)
        data = dict(data)
        data.setdefault("name", default_name)
        try:
            workflow = Workflow.model_validate(data)
        except ValidationError as exc:
            raise WorkflowError(source, _pydantic_problems(exc, data)) from None
    workflow.source = source
    problems = _check(workflow, registry)
    if problems:
        raise WorkflowError(source, problems)
    return workflow


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


def _check(wf: Workflow, registry: dict[str, Any] | None) -> list[str]:
    from agents.base import parse_model

    problems: list[str] = []
    ids = [s.id for s in wf.steps]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    for d in dupes:
        problems.append(f"step '{d}': the id is used more than once")
    known = set(ids)

    if wf.type == "parallel":
        for s in wf.steps:
            if s.depends_on:
                problems.append(f"step '{s.id}': depends_on is not allowed in a parallel workflow")
    for s in wf.steps:
        for d in s.depends_on:
            if d not in known:
                problems.append(f"step '{s.id}': depends_on names unknown step '{d}'")
            elif d == s.id:
                problems.append(f"step '{s.id}': depends on itself")
    if problems:
        return problems

    try:
        wf.order()
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        return [f"cycle between steps: {' -> '.join(cycle)}"]

    # agents: inline definitions, then the file registry
    for name, spec in wf.agents.items():
        if spec.model:
            try:
                parse_model(spec.model)
            except ValueError as exc:
                problems.append(f"agent '{name}': {exc}")
    agent_names = set(wf.agents)
    reg = registry
    for s in wf.steps:
        if isinstance(s.agent, str) and s.agent not in agent_names:
            if reg is None:
                reg = _registry()
            if s.agent not in reg:
                problems.append(f"step '{s.id}': unknown agent '{s.agent}' (not in the workflow's agents: nor in agents/*.yaml)")
        if s.prompt is None and s.approval is None:
            problems.append(f"step '{s.id}': prompt: required field is missing")
    problems.extend(_agent_problems(wf, reg))

    # templates: syntax and references
    deps = wf.dependencies()
    for s in wf.steps:
        upstream = wf.upstream(s.id)
        extra = {"item", "index"} if s.for_each else set()
        if wf.type == "sequential" and deps[s.id]:
            extra |= {"previous"}
        fields = [("prompt", s.prompt, False)] if s.prompt is not None else []
        if s.approval is not None:
            fields.append(("approval.message", s.approval.message, False))
        if s.when:
            fields.append(("when", s.when, True))
        if s.for_each:
            fields.append(("for_each", s.for_each, True))
        for field, text, is_expr in fields:
            try:
                free, paths = templates.references(text, expression=is_expr)
            except templates.TemplateError as exc:
                problems.append(f"step '{s.id}': {field}: {exc}")
                continue
            scope_extra = extra if field == "prompt" else set()
            for name in sorted(free - {"inputs", "steps"} - scope_extra - _JINJA_GLOBALS):
                problems.append(f"step '{s.id}': {field}: unknown name '{name}' (templates see inputs, steps"
                                + (", item, index" if s.for_each and field == "prompt" else "")
                                + (", previous" if "previous" in scope_extra else "") + ")")
            for root, key, attr in paths:
                if root == "inputs":
                    if key is not None and key not in wf.inputs:
                        problems.append(f"step '{s.id}': {field}: unknown input '{key}'")
                elif key is not None:
                    if key not in known:
                        problems.append(f"step '{s.id}': {field}: unknown step '{key}'")
                    elif key not in upstream:
                        problems.append(f"step '{s.id}': {field}: uses step '{key}', which is not upstream of it (add it to depends_on)")
                    elif attr is not None and attr != "output":
                        problems.append(f"step '{s.id}': {field}: step '{key}' has no field '{attr}' (only 'output')")
        if s.output_schema is not None:
            problems.extend(f"step '{s.id}': output_schema: {p}" for p in _schema_problems(s.output_schema))
    return problems


def _agent_problems(wf: Workflow, reg: dict[str, Any] | None) -> list[str]:
    """Fallbacks name known agents and form no cycle; routed steps need capabilities some agent has."""
    uses_registry = any(isinstance(s.agent, RouteSpec) for s in wf.steps) or any(
        f not in wf.agents for spec in wf.agents.values() for f in spec.fallback) or any(
        isinstance(s.agent, str) and s.agent not in wf.agents for s in wf.steps)
    if reg is None and uses_registry:
        reg = _registry()
    reg = reg or {}
    # name -> (fallback names, capabilities); the workflow's agents shadow the registry's
    agents: dict[str, tuple[list[str], list[str]]] = {n: (list(a.fallback), list(a.capabilities)) for n, a in reg.items()}
    agents.update({n: (list(a.fallback), list(a.capabilities)) for n, a in wf.agents.items()})
    problems: list[str] = []

    # the agents this workflow can reach: its own, those its steps name, and their fallbacks
    roots = list(wf.agents) + [s.agent for s in wf.steps if isinstance(s.agent, str) and s.agent in agents]
    seen: list[str] = []
    stack = list(roots)
    while stack:
        name = stack.pop(0)
        if name in seen or name not in agents:
            continue
        seen.append(name)
        for f in agents[name][0]:
            if f not in agents:
                problems.append(f"agent '{name}': fallback names unknown agent '{f}' "
                                "(not in the workflow's agents: nor in agents/*.yaml)")
            else:
                stack.append(f)
    reported: set[frozenset[str]] = set()
    for name in seen:
        cycle = _fallback_cycle(name, agents)
        if cycle and frozenset(cycle) not in reported:
            reported.add(frozenset(cycle))
            problems.append(f"agent '{name}': fallback cycle {' -> '.join(cycle + [cycle[0]])}")

    known_caps = sorted({c for _, caps in agents.values() for c in caps})
    for s in wf.steps:
        if not isinstance(s.agent, RouteSpec):
            continue
        unknown = [c for c in s.agent.capabilities if c not in known_caps]
        if unknown:
            problems.append(f"step '{s.id}': agent: unknown capability " + ", ".join(repr(c) for c in unknown)
                            + f" (no agent declares it; known: {', '.join(known_caps) or 'none'})")
        elif not any(set(s.agent.capabilities) <= set(caps) for _, caps in agents.values()):
            problems.append(f"step '{s.id}': agent: no single agent has all of the capabilities "
                            f"{', '.join(s.agent.capabilities)}")
    return problems


def _fallback_cycle(start: str, agents: dict[str, tuple[list[str], list[str]]]) -> list[str] | None:
    """The agents of a fallback cycle through ``start`` (in order), or None."""
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return path[path.index(name):] if name == start else None
        if name not in agents:
            return None
        path.append(name)
        for f in agents[name][0]:
            found = visit(f)
            if found:
                return found
        path.pop()
        return None

    return visit(start)


_JINJA_GLOBALS = {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "true", "false", "none", "True", "False", "None", "loop"}


def _schema_problems(schema: dict) -> list[str]:
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return [f"not a valid JSON Schema: {exc.message}"]
    return []


def _registry() -> dict[str, Any]:
    from agents.registry import load_registry

    return load_registry()


# ---------------------------------------------------------------------------
# the AI Orchestra service's /run-graph format


def from_run_graph(data: dict, *, source: str, default_name: str) -> dict:
    """{"workflow_type", "tasks": [{agent_id, agent_role, input_data: {task}, depends_on}]} -> our format."""
    problems: list[str] = []
    wtype = data.get("workflow_type", "graph")
    if wtype not in ("graph", "sequential", "parallel"):
        problems.append(f"workflow_type: must be graph, sequential or parallel (got {wtype!r})")
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise WorkflowError(source, problems + ["tasks: must be a non-empty list"])
    allowed = {"workflow_type", "tasks", "name", "description", "inputs"}
    for key in sorted(set(data) - allowed):
        problems.append(f"{key}: unknown field")
    registry = None
    steps = []
    previous = None
    for i, task in enumerate(tasks):
        where = f"tasks[{i}]"
        if not isinstance(task, dict):
            problems.append(f"{where}: must be an object")
            continue
        sid = str(task.get("agent_id", "")).strip()
        if not sid:
            problems.append(f"{where}: agent_id is required")
            continue
        where = f"task '{sid}'"
        role = task.get("agent_role")
        if not role:
            problems.append(f"{where}: agent_role is required")
        else:
            registry = registry if registry is not None else _registry()
            if role not in registry:
                problems.append(f"{where}: unknown agent_role '{role}' (known: {', '.join(sorted(registry))})")
        input_data = task.get("input_data") or {}
        if not isinstance(input_data, dict) or not isinstance(input_data.get("task"), str):
            problems.append(f"{where}: input_data.task must be a string")
            continue
        depends = [str(d) for d in (task.get("depends_on") or [])]
        if wtype == "sequential":
            context = [previous] if previous else []
        elif wtype == "parallel":
            context = []
        else:
            context = depends
        prompt = _raw(input_data["task"])
        extra = {k: v for k, v in input_data.items() if k != "task"}
        if extra:
            prompt += "\n\nInput data:\n" + _raw(json.dumps(extra, indent=2, ensure_ascii=False))
        for dep in context:
            prompt += f"\n\nOutput of task {dep}:\n{{{{ steps['{dep}'].output }}}}"
        step: dict[str, Any] = {"id": sid, "agent": role, "prompt": prompt}
        if wtype == "graph":
            step["depends_on"] = depends
        steps.append(step)
        previous = sid
    if problems:
        raise WorkflowError(source, problems)
    return {
        "name": data.get("name") or default_name,
        "description": data.get("description") or "Submitted in the /run-graph format",
        "type": wtype,
        "inputs": data.get("inputs") or {},
        "steps": steps,
    }


def _raw(text: str) -> str:
    """Literal text inside a template."""
    if "{" not in text and "%" not in text:
        return text
    return "{% raw %}" + text.replace("{% endraw %}", "{% endraw %}{{ '{% endraw %}' }}{% raw %}") + "{% endraw %}"


# ---------------------------------------------------------------------------
# inputs


def coerce_inputs(wf: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    """Apply defaults and declared types to `-i key=value` pairs (strings) or typed values."""
    problems = []
    values: dict[str, Any] = {}
    for key in given:
        if key not in wf.inputs:
            known = ", ".join(sorted(wf.inputs)) or "none"
            problems.append(f"unknown input '{key}' (declared inputs: {known})")
    for name, spec in wf.inputs.items():
        if name in given:
            try:
                values[name] = _coerce(given[name], spec.type)
            except ValueError as exc:
                problems.append(f"input '{name}': {exc}")
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.is_required:
            problems.append(f"input '{name}' is required (set it with -i {name}=...)")
        else:
            values[name] = None
    if problems:
        raise WorkflowError(wf.source or wf.name, problems)
    return values


def _coerce(value: Any, kind: str) -> Any:
    if not isinstance(value, str):
        ok = {
            "string": isinstance(value, str),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
        }[kind]
        if not ok:
            raise ValueError(f"expected {kind}, got {type(value).__name__}")
        return value
    try:
        if kind == "string":
            return value
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            low = value.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        parsed = json.loads(value)
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"expected {kind}, got {value!r}") from None
    if kind == "object" and not isinstance(parsed, dict) or kind == "array" and not isinstance(parsed, list):
        raise ValueError(f"expected a JSON {kind}, got {value!r}")
    return parsed
