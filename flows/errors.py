"""The errors the engine and the step kinds raise; nothing imports the engine to raise one."""

from __future__ import annotations

__all__ = ["StepError", "WorkflowError"]


class WorkflowError(Exception):
    """Everything wrong with a workflow definition, each with its location (file, step, field)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(self.render())

    def render(self) -> str:
        head = f"{self.source}: invalid workflow" if len(self.problems) > 1 else f"{self.source}:"
        if len(self.problems) == 1:
            return f"{head} {self.problems[0]}"
        return head + "".join(f"\n  - {p}" for p in self.problems)


class StepError(Exception):
    """A step attempt that failed; ``transient`` decides whether Prefect retries it.
    ``details``: kind-specific fields the step's report keeps though it failed (a
    container's ``exit_code``)."""

    def __init__(self, message: str, transient: bool = False, details: dict | None = None):
        super().__init__(message)
        self.transient = transient
        self.details = details or {}
