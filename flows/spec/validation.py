"""Cross-checks of a workflow: the DAG, agents and fallbacks, templates, and each step
kind's own rules (``flows.steps``). Every problem is collected, each located."""

from __future__ import annotations

import graphlib
import re
from typing import Any

from flows import steps as step_kinds
from flows import templates
from flows.spec.inputs import coerce_value
from flows.spec.models import STEP_FIELDS, RouteSpec, Workflow

INPUT_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

__all__ = ["check", "warnings", "schema_problems", "JINJA_GLOBALS"]

JINJA_GLOBALS = {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "true", "false", "none", "True",
                 "False", "None", "loop"}


def check(wf: Workflow, registry: dict[str, Any] | None) -> list[str]:
    """Every problem of ``wf`` (empty: valid). ``registry`` is agents/*.yaml, or None to
    load it when a step names an agent the workflow does not define."""
    problems: list[str] = []
    ids = [s.id for s in wf.steps]
    for d in sorted({i for i in ids if ids.count(i) > 1}):
        problems.append(f"step '{d}': the id is used more than once")
    known = set(ids)
    if wf.type == "parallel":
        for s in wf.steps:
            if s.depends_on:
                problems.append(f"step '{s.id}': depends_on is not allowed in a parallel workflow")
    for s in wf.steps:
        if s.max_concurrency is not None and s.for_each is None:
            problems.append(f"step '{s.id}': max_concurrency: needs for_each (it bounds how many of the "
                            "step's items run at once)")
        for d in s.depends_on:
            if d not in known:
                problems.append(f"step '{s.id}': depends_on names unknown step '{d}'")
            elif d == s.id:
                problems.append(f"step '{s.id}': depends on itself")
    for name, spec in wf.inputs.items():
        if not INPUT_NAME.match(name):
            problems.append(f"input '{name}': the name must be letters, digits and '_' (not starting with a digit): "
                            "it is a template name (inputs.<name>) and a `-i <name>=value` key")
        if spec.default is not None:
            try:
                coerce_value(spec.default, spec.type)
            except ValueError as exc:
                problems.append(f"input '{name}': default: {exc}")
    if problems:
        return problems
    try:
        wf.order()
    except graphlib.CycleError as exc:
        return [f"cycle between steps: {' -> '.join(exc.args[1])}"]

    reg = registry if registry is not None else (_registry() if _needs_registry(wf) else {})
    names = [f"`{f}`" for f in STEP_FIELDS]
    fields = ", ".join(names[:-1]) + f" or {names[-1]}"
    kinds: dict[str, Any] = {}
    for s in wf.steps:
        asked = s.kinds
        if len(asked) != 1:
            which = ", ".join(f"`{f}`" for f, k in STEP_FIELDS.items() if k in asked)
            problems.append(f"step '{s.id}': a step has exactly one of {fields}"
                            + (f" (this one has {which})" if asked else " (this one has none)"))
            continue
        kinds[s.id] = step_kinds.kind(s.kind)
        problems.extend(kinds[s.id].validate(s, wf, reg))
    problems.extend(_agent_problems(wf, reg))
    problems.extend(_template_problems(wf, kinds))
    for s in wf.steps:
        if s.output_schema is not None:
            problems.extend(f"step '{s.id}': output_schema: {p}" for p in schema_problems(s.output_schema))
    return problems


def warnings(wf: Workflow) -> list[str]:
    """What is worth saying about a valid ``wf`` without refusing it (each step kind's
    ``warnings``: a container step and no engine configured)."""
    found: list[str] = []
    for s in wf.steps:
        found.extend(step_kinds.kind(s.kind).warnings(s, wf))
    return found


def _needs_registry(wf: Workflow) -> bool:
    return (any(isinstance(s.agent, RouteSpec) for s in wf.steps)
            or any(f not in wf.agents for spec in wf.agents.values() for f in spec.fallback)
            or any(isinstance(s.agent, str) and s.agent not in wf.agents for s in wf.steps))


def _template_problems(wf: Workflow, kinds: dict[str, Any]) -> list[str]:
    problems: list[str] = []
    known = {s.id for s in wf.steps}
    deps = wf.dependencies()
    for s in wf.steps:
        kind = kinds.get(s.id)
        if kind is None:
            continue
        upstream = wf.upstream(s.id)
        extra = {"item", "index"} if s.for_each else set()
        if wf.type == "sequential" and deps[s.id]:
            extra |= {"previous"}
        fields = [(f, text, False) for f, text in kind.templates(s)]
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
            scope_extra = extra if field not in ("when", "for_each") else set()
            for name in sorted(free - {"inputs", "steps"} - scope_extra - JINJA_GLOBALS):
                problems.append(f"step '{s.id}': {field}: unknown name '{name}' (templates see inputs, steps"
                                + (", item, index" if s.for_each and "item" in scope_extra else "")
                                + (", previous" if "previous" in scope_extra else "") + ")")
            for root, key, attr in paths:
                if key == templates.DYNAMIC:
                    what = "step" if root == "steps" else "input"
                    problems.append(f"step '{s.id}': {field}: {root}[...] with a computed key cannot be checked; name "
                                    f"the {what} itself ({root}.<name> or {root}['<name>'])")
                elif root == "inputs":
                    if key is not None and key not in wf.inputs:
                        problems.append(f"step '{s.id}': {field}: unknown input '{key}'")
                elif key is not None:
                    if key not in known:
                        problems.append(f"step '{s.id}': {field}: unknown step '{key}'")
                    elif key not in upstream:
                        problems.append(f"step '{s.id}': {field}: uses step '{key}', which is not upstream of it "
                                        "(add it to depends_on)")
                    elif attr is not None and key in kinds and attr not in kinds[key].outputs:
                        offered = ", ".join(f"'{o}'" for o in kinds[key].outputs)
                        problems.append(f"step '{s.id}': {field}: step '{key}' has no field '{attr}' (only {offered})")
    return problems


def _agent_problems(wf: Workflow, reg: dict[str, Any]) -> list[str]:
    """Fallbacks name known agents and form no cycle; routed steps need capabilities some agent has."""
    # name -> (fallback names, capabilities); the workflow's agents shadow the registry's
    agents: dict[str, tuple[list[str], list[str]]] = {n: (list(a.fallback), list(a.capabilities)) for n, a in reg.items()}
    agents.update({n: (list(a.fallback), list(a.capabilities)) for n, a in wf.agents.items()})
    problems: list[str] = []
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
    reachable = list(seen) + [n for s in wf.steps if isinstance(s.agent, RouteSpec)
                              for n, (_, caps) in agents.items() if set(s.agent.capabilities) <= set(caps)]
    problems.extend(_server_problems(wf, reg, [n for n in dict.fromkeys(reachable) if n in agents]))
    return problems


def _server_problems(wf: Workflow, reg: dict[str, Any], names: list[str]) -> list[str]:
    """MCP servers: the workflow's own are well formed; every server an agent this workflow
    can reach names is defined (the workflow's `mcp_servers:` or agents/mcp_servers.yaml;
    with a FastAgentSettings block configured, a name only it may define is checked when
    the run starts, when the block is read). Whether an allow-listed tool exists is only
    known once the server runs: the step fails then."""
    from agents.mcp import SERVERS_FILE, load_servers
    from core.settings import settings
    from flows import tools

    problems: list[str] = []
    for name, spec in wf.mcp_servers.items():
        problems.extend(tools.template_problems(name, spec))
    try:
        shared = load_servers()
    except ValueError as exc:
        return problems + [str(exc)]
    for name, spec in shared.items():
        problems.extend(p.replace("mcp_servers:", f"{SERVERS_FILE.name}:", 1) for p in tools.template_problems(name, spec))
    known = tools.static_map(wf, shared)
    deferred = bool(settings().fast_agent_block)
    for name in names:
        servers = wf.agents[name].servers if name in wf.agents else reg[name].servers
        for server in servers:
            if server not in known and not deferred:
                problems.append(f"agent '{name}': servers: unknown MCP server '{server}' (not in the workflow's "
                                f"mcp_servers: nor in agents/{SERVERS_FILE.name}; defined: "
                                f"{', '.join(sorted(known)) or 'none'})")
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


_REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


def _outside_refs(schema: object) -> list[str]:
    found: list[str] = []
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _REF_KEYS and isinstance(value, str) and not value.startswith("#"):
                    found.append(value)
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)
    return found


def schema_problems(schema: dict) -> list[str]:
    import jsonschema

    problems = [f"$ref {ref!r} points outside the schema: only in-document references (#/...) are allowed, "
                "nothing is fetched" for ref in _outside_refs(schema)]
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        problems.append(f"not a valid JSON Schema: {exc.message}")
    return problems


def _registry() -> dict[str, Any]:
    from agents.registry import load_registry

    return load_registry()
