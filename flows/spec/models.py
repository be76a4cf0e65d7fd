"""The workflow definition as pydantic models (no loading, no cross-checks)."""

from __future__ import annotations

import graphlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agents.base import AgentFields
from agents.mcp import SERVER_NAME, MCPServerSpec

__all__ = ["AgentSpec", "ApprovalSpec", "InputSpec", "RouteSpec", "Step", "Workflow", "STEP_FIELDS",
           "STEP_ID", "WORKFLOW_NAME"]

STEP_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")
WORKFLOW_NAME = re.compile(r"^[a-z0-9-]+$")
# the field that makes a step of each kind (flows.steps has one kind per entry)
STEP_FIELDS = {"prompt": "agent", "approval": "approval"}


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


class RouteSpec(_Model):
    """`agent: {capabilities: [...], strategy: ...}`: pick an agent by what it can do."""

    capabilities: list[str] = Field(min_length=1)
    strategy: Literal["cheapest", "fastest", "least_loaded", "round_robin", "llm"] = "cheapest"


class Step(_Model):
    id: str
    prompt: str | None = None  # an agent step
    approval: ApprovalSpec | None = None  # an approval step
    agent: str | RouteSpec | None = None
    depends_on: list[str] = []
    retries: int = Field(default=2, ge=0, le=20)
    timeout: float | None = Field(default=None, gt=0)
    when: str | None = None
    for_each: str | None = None
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
        """``agent`` (a ``prompt``) or ``approval``; validation guarantees exactly one."""
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
