"""The app layer: what a user or a deployment drives.

Owns: running a workflow (``orchestra.workflows`` checks a request, ``orchestra.runs``
runs it, ``orchestra.flow`` is the Prefect flow every run is, locally and on workers),
the app's environment (``orchestra.runtime``: paths, Prefect's defaults, the ledger it
hands the engine), the local Prefect server (``orchestra.prefect_server``), tasks and
projects (``orchestra.tasks``: every task write through ``tasks.write``; the planner,
``orchestra.planner``; a project's execution as a flow run, ``orchestra.task_flow``), the
``orchestra`` CLI (``orchestra.cli``, one sub-app per concern) and the MCP server
(``orchestra.mcp_server`` over stdio or streamable HTTP, its task tools in
``orchestra.mcp_tasks``, what they share in ``orchestra.mcp_common``).

Never: holds SQL (it reads the ledger through ``ledger.queries``) or business logic
of the engine; a command that fails prints one line and exits 0/1/2, never a traceback.
"""
