"""The kinds of step: one module per kind, each implementing ``flows.steps.base.StepKind``.

Owns: what a kind of step does (agent: a provider call, or a tool loop on MCP servers,
with fallbacks, routing and schema repair; approval: a pause of the flow run;
container: a command in a container on a Dagger engine; command: a process on the
worker in a bubblewrap sandbox), and what they need: the Dagger engine's resolution
and connection (``engines``), the sandbox (``sandbox``), the workflow's repository
(``repository``). A step's kind is the field it sets (``prompt``, ``approval``,
``container``, ``command``); the engine asks :func:`kind` for it.

Never: imports the engine or ``flows.spec`` at run time (the spec's validator calls
the kinds, so the kinds read steps by their fields), SQL or the app layer.
"""

from __future__ import annotations

import importlib

from flows.steps.base import BaseKind, Prepared, StepContext, StepKind, StepReport, StepResult

__all__ = ["KINDS", "kind", "BaseKind", "Prepared", "StepContext", "StepKind", "StepReport", "StepResult"]

# kind -> "module:class"; a new kind is one module and one entry here (and its field in
# flows.spec.models.STEP_FIELDS)
IMPLEMENTATIONS = {
    "agent": "flows.steps.agent:AgentKind",
    "approval": "flows.steps.approval:ApprovalKind",
    "container": "flows.steps.container:ContainerKind",
    "command": "flows.steps.command:CommandKind",
}
KINDS: dict[str, StepKind] = {}


def kind(name: str) -> StepKind:
    """The kind ``name`` ("agent", "approval", "container", "command"), its module
    imported on first use."""
    found = KINDS.get(name)
    if found is None:
        module, _, cls = IMPLEMENTATIONS[name].partition(":")
        found = KINDS[name] = getattr(importlib.import_module(module), cls)()
    return found
