"""Workflow definitions and their compilation onto Prefect.

`flows.spec` is light (no Prefect import): validation and `orchestra validate`
use it alone. `run_workflow` and the engine are imported on first use.
"""

from flows.spec import Workflow, WorkflowError, load_workflow, parse_workflow

__all__ = ["Workflow", "WorkflowError", "load_workflow", "parse_workflow", "run_workflow"]


def __getattr__(name):
    if name == "run_workflow":
        from flows.compile import run_workflow

        return run_workflow
    raise AttributeError(name)
