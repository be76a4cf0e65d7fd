"""Workflows as Prefect flow runs.

Owns: the workflow definition (``flows.spec``: models, loading, ``/run-graph``,
validation), sandboxed templates, the step kinds (``flows.steps``: agent, approval,
container on a Dagger engine, command in a bubblewrap sandbox), the engine
(``flows.engine``: one task run per step attempt), what a run's steps share
(``flows.resources``), the self-healing around each call (resilience, budgets,
provider limits) and a run's MCP servers (``flows.tools``: the map, its secrets, the
sessions a run holds).

Never: imports SQL or the app layer (``orchestra``, ``ledger``, ``dashboard``): the
engine is handed a ledger that satisfies ``flows.ports.Ledger``. Importing
``flows`` or ``flows.spec`` imports no Prefect.
"""

__all__ = ["Workflow", "WorkflowError", "load_workflow", "parse_workflow"]


def __getattr__(name):  # `from flows import Workflow` in a Python workflow file
    if name in __all__:
        import flows.spec

        return getattr(flows.spec, name)
    raise AttributeError(name)
