"""The workflow definition: models, loading (YAML, JSON, ``/run-graph``, Python),
cross-checks and inputs. Light: no Prefect import, so ``orchestra validate`` uses it alone.

    wf = load_workflow("deployments/workflows/code-review.yaml")   # WorkflowError on any problem
    values = coerce_inputs(wf, {"code": "..."})
"""

from flows.errors import WorkflowError
from flows.spec.inputs import coerce_inputs
from flows.spec.loading import load_workflow, parse_text, parse_workflow
from flows.spec.models import AgentSpec, ApprovalSpec, InputSpec, RouteSpec, Step, Workflow
from flows.spec.run_graph import from_run_graph

__all__ = [
    "AgentSpec",
    "ApprovalSpec",
    "InputSpec",
    "RouteSpec",
    "Step",
    "Workflow",
    "WorkflowError",
    "coerce_inputs",
    "from_run_graph",
    "load_workflow",
    "parse_text",
    "parse_workflow",
]
