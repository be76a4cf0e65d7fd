"""The workflow definition as pydantic models (no loading, no cross-checks)."""

from __future__ import annotations

import graphlib
import posixpath
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from agents.base import AgentFields
from agents.mcp import SERVER_NAME, MCPServerSpec

__all__ = ["AgentSpec", "ApprovalSpec", "CommandSpec", "ContainerSpec", "InputSpec", "RouteSpec", "Step", "Workflow",
           "STEP_FIELDS", "STEP_ID", "WORKFLOW_NAME", "IMAGE_REF"]

STEP_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
WORKFLOW_NAME = re.compile(r"^[a-z0-9-]+$")
# the field that makes a step of each kind (flows.steps has one kind per entry)
STEP_FIELDS = {"prompt": "agent", "approval": "approval", "container": "container", "command": "command"}
# an OCI image reference: [registry[:port]/]path[:tag][@digest] (the distribution/reference grammar)
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*" \
          r"|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?"
IMAGE_REF = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::[\w][\w.-]{{0,127}})?"
                       r"(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CACHE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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


class AgentSpec(AgentFields):
    """An inline agent definition: the fields of agents/*.yaml (``agents.base.AgentFields``),
    its name from the key."""


class ApprovalSpec(_Model):
    """`approval: {message, timeout}`: pause the flow run until someone approves or rejects.

    The message is a template (it sees inputs and upstream outputs, like a prompt);
    `timeout` is in seconds. The step's output is the approver's reason, or "approved"."""

    message: str = "Approve to continue?"
    timeout: float = Field(default=3600, gt=0)


def _container_path(value: str, what: str) -> str:
    """An absolute path inside the container that does not climb (``..``)."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValueError(f"{what} {value!r} must be an absolute path inside the container (/...)")
    if ".." in value.split("/"):
        raise ValueError(f"{what} {value!r} must not contain '..'")
    return posixpath.normpath(value)


def _repo_path(value: str, what: str) -> str:
    """A path relative to the repository that stays in it (no absolute path, no ``..``)."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a path relative to the repository (got an empty one)")
    if value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value):
        raise ValueError(f"{what} {value!r} is an absolute host path: give a path relative to the repository")
    if ".." in re.split(r"[\\/]", value):
        raise ValueError(f"{what} {value!r} leaves the repository ('..')")
    return posixpath.normpath(value)


def _env_names(env: dict[str, str], what: str) -> dict[str, str]:
    for name in env:
        if not ENV_NAME.match(name):
            raise ValueError(f"{what} {name!r} is not a variable name (letters, digits, '_'; not first a digit)")
    return env


class _Process(_Model):
    """What a container and a command step share: what to run and its environment."""

    run: list[str] | None = Field(default=None, min_length=1)  # argv (templates allowed in each item)
    script: str | None = None  # or a shell script, run by /bin/sh -c
    env: dict[str, str] = {}  # values may be templates

    @field_validator("run", mode="before")
    @classmethod
    def _argv(cls, value: object) -> object:
        if value is not None and not isinstance(value, list):
            raise ValueError("must be a list of strings (the argv, e.g. [python, -m, pytest]); "
                             "use `script:` for a shell command line")
        return value

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        return _env_names(value, "env: variable")

    @model_validator(mode="after")
    def _one_of_run_and_script(self):
        if (self.run is None) == (self.script is None):
            raise ValueError("give exactly one of `run` (an argv list) and `script` (a shell script)")
        return self


class ContainerSpec(_Process):
    """`container:`: one command in a container of ``image``, on a Dagger engine."""

    image: str
    secrets: list[str] = []  # Prefect Secret blocks or environment variables, by name
    workdir: str | None = None  # absolute, in the container
    mounts: dict[str, str] = {}  # repository-relative host path -> container path (read-only)
    outputs: list[str] = []  # container files exported to the run's folder
    cache: dict[str, str] = {}  # cache volume name -> container path

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the image name is empty")
        if not IMAGE_REF.match(value):
            raise ValueError(f"{value!r} is not an image reference (e.g. python:3.12-slim, "
                             "ghcr.io/org/tool:1.2, name@sha256:<digest>; lowercase names)")
        return value

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: list[str]) -> list[str]:
        for name in value:
            if not ENV_NAME.match(name):
                raise ValueError(f"secret {name!r} is not a variable name (letters, digits, '_')")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        return None if value is None else _container_path(value, "workdir")

    @field_validator("mounts")
    @classmethod
    def _mounts(cls, value: dict[str, str]) -> dict[str, str]:
        out = {}
        for host, path in value.items():
            target = _container_path(path, f"mount {host!r} ->")
            if target == "/":
                raise ValueError(f"mount {host!r} -> '/': a mount cannot replace the container's root")
            out[_repo_path(host, "mount")] = target
        return out

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, value: list[str]) -> list[str]:
        out = [_container_path(p, "output") for p in value]
        if "/" in out:
            raise ValueError("output '/' is not a file")
        return out

    @field_validator("cache")
    @classmethod
    def _cache(cls, value: dict[str, str]) -> dict[str, str]:
        for name, path in value.items():
            if not CACHE_NAME.match(name):
                raise ValueError(f"cache {name!r}: a cache name is letters, digits, '.', '_', '-'")
        return {name: _container_path(path, f"cache {name!r} ->") for name, path in value.items()}

    @model_validator(mode="after")
    def _secrets_are_not_env(self):
        both = sorted(set(self.secrets) & set(self.env))
        if both:
            raise ValueError(f"{', '.join(both)}: in both env and secrets (a variable is one or the other)")
        return self


class CommandSpec(_Process):
    """`command:`: a process on the worker, in a bubblewrap sandbox unless `sandbox: false`."""

    workdir: str | None = None  # relative to the repository (default: the repository)
    network: bool = False
    sandbox: bool = True

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        return None if value is None else _repo_path(value, "workdir")


class RouteSpec(_Model):
    """`agent: {capabilities: [...], strategy: ...}`: pick an agent by what it can do."""

    capabilities: list[str] = Field(min_length=1)
    strategy: Literal["cheapest", "fastest", "least_loaded", "round_robin", "llm"] = "cheapest"


class Step(_Model):
    id: str
    prompt: str | None = None  # an agent step
    approval: ApprovalSpec | None = None  # an approval step
    container: ContainerSpec | None = None  # a container step (Dagger)
    command: CommandSpec | None = None  # a command step (on the worker, sandboxed)
    allow_failure: bool = False  # container/command: a non-zero exit completes the step (exit_code kept)
    agent: str | RouteSpec | None = None
    depends_on: list[str] = []
    retries: int = Field(default=2, ge=0, le=20)
    timeout: float | None = Field(default=None, gt=0)
    when: str | None = None
    for_each: str | None = None
    # at most this many of a for_each step's items run at once (None: all of them);
    # provider limits (orchestra limits) still apply on top
    max_concurrency: int | None = Field(default=None, ge=1)
    output_schema: dict[str, Any] | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not STEP_ID.match(value):
            raise ValueError("must be letters, digits, '_' or '-'")
        return value

    @property
    def kinds(self) -> list[str]:
        """The kinds this step's fields ask for (a valid step has exactly one)."""
        return [kind for f, kind in STEP_FIELDS.items() if getattr(self, f) is not None]

    @property
    def kind(self) -> str:
        """``agent`` (a ``prompt``), ``approval``, ``container`` or ``command``; validation
        guarantees exactly one."""
        found = self.kinds
        return found[0] if found else "agent"


class Workflow(_Model):
    name: str
    description: str | None = None
    type: Literal["graph", "sequential", "parallel"] = "graph"
    inputs: dict[str, InputSpec] = {}
    agents: dict[str, AgentSpec] = {}
    mcp_servers: dict[str, MCPServerSpec] = {}  # MCP servers its agents may name in `servers:`
    steps: list[Step] = Field(min_length=1)
    budget_usd: float | None = Field(default=None, ge=0)
    metadata: dict[str, Any] = {}  # kept on the run (ledger, flow-run tags) and in its report
    source: str | None = Field(default=None, exclude=True)
    _warnings: list[str] = PrivateAttr(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        """What validation found worth saying that does not make the workflow invalid
        (a container step and no engine configured); ``orchestra validate`` prints them."""
        return self._warnings

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not WORKFLOW_NAME.match(value):
            raise ValueError("must match [a-z0-9-]+ (lowercase letters, digits and dashes)")
        return value

    @field_validator("mcp_servers", mode="before")
    @classmethod
    def _server_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not SERVER_NAME.match(name):
                    raise ValueError(f"server {name!r}: a name is 1-40 letters, digits, '_' or '-' "
                                     "(it prefixes the tool names a model sees)")
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
            if s.container is not None:
                label = f"{s.id}<br/>container: {s.container.image}"
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
