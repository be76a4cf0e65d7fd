"""Command steps (``command:``): a process on the worker, in a bubblewrap sandbox.

    - id: lint
      command:
        run: [ruff, check, --no-cache, .]   # or script: "..."
        env: {}                             # values may be templates
        workdir: examples/ci-sample         # relative to the repository (default: the repository)
        network: false                      # default false
        sandbox: true                       # default true

The process is ``flows.steps.sandbox.run_command``: the host's root read-only, a private
``/tmp`` and HOME, the repository (``flows.steps.repository``) bound read-only, the
worker's HOME and ORCHESTRA_HOME covered by an empty tmpfs, no network unless
``network: true``, only the step's ``env`` (plus PATH, HOME, LANG, TZ). Without ``bwrap``
a sandboxed step fails, saying how to install it; ``sandbox: false`` runs the command
plainly, and the step's log says so. A command that is not found, a ``workdir`` that
leaves the repository: the step fails (not transient). The step's ``timeout`` kills the
process group (TERM, then KILL).
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import json
import os
from pathlib import Path
from typing import Any

import anyio.to_thread

from core.settings import settings
from flows.errors import StepError
from flows.steps import process
from flows.steps.base import Prepared, StepContext, StepResult
from flows.steps.repository import PathProblem, content_digest, inside, repository
from flows.steps.sandbox import SandboxError, run_command

__all__ = ["CommandKind"]

CACHE_PREFIX = "orchestra-command-v1-"


class CommandKind(process.ProcessKind):
    name = "command"
    field = "command"
    outputs = ("output", "exit_code")

    def validate(self, step: Any, wf: Any, registry: dict[str, Any]) -> list[str]:
        problems = super().validate(step, wf, registry)
        source = getattr(wf, "source", None)
        if step.command.workdir and source and Path(source).is_file():
            try:
                inside(repository(wf), step.command.workdir, "workdir")
            except PathProblem as exc:
                problems.append(f"step '{step.id}': command.workdir: {exc}")
        return problems

    async def prepare(self, step: Any, ctx: StepContext) -> Prepared:
        spec = step.command
        repo = repository(ctx.wf)
        try:
            cwd = inside(repo, spec.workdir or ".", "workdir")
        except PathProblem as exc:
            raise StepError(f"step '{step.id}': command.workdir: {exc}") from None
        digest = await anyio.to_thread.run_sync(content_digest, cwd)
        runs = [(label, {"step": step.id, **rendered, "repo": str(repo), "cwd": str(cwd), "digest": digest,
                         "network": spec.network, "sandbox": spec.sandbox, "timeout": step.timeout,
                         "allow_failure": step.allow_failure, "output_schema": step.output_schema})
                for label, rendered in self.render(step, ctx)]
        return Prepared(runs=runs, timeout=self.timeout(step))

    def cache_key(self, params: dict[str, Any]) -> str:
        """argv, env, where it runs and the content there, network, sandbox, schema."""
        material = {k: params[k] for k in ("argv", "env", "repo", "cwd", "digest", "network", "sandbox",
                                           "allow_failure", "output_schema")}
        digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
        return CACHE_PREFIX + digest

    async def attempt(self, params: dict[str, Any], attempt: int) -> StepResult:
        from prefect import get_run_logger

        step, started = params["step"], await process.begin(self.name, params, attempt)
        logger = get_run_logger()
        hidden = list(params["env"].values())
        shown = process.masked(shlex.join(params["argv"]), hidden)
        if params["sandbox"]:
            logger.info("command in a bubblewrap sandbox (network %s): %s", "on" if params["network"] else "off",
                        shown)
        else:
            logger.warning("step %s runs WITHOUT a sandbox (sandbox: false): %s runs on the worker with its "
                           "file system and network", step, shown)
        try:
            result = await run_command(params["argv"], env=params["env"], repo=Path(params["repo"]),
                                       cwd=params["cwd"], network=params["network"], sandbox=params["sandbox"],
                                       timeout=params["timeout"], hide=_hidden())
        except SandboxError as exc:
            message = process.masked(str(exc), hidden)
            process.record(self.name, params, attempt, started, error=message)
            raise StepError(f"step '{step}': {message}") from None
        except asyncio.CancelledError:  # Prefect's backstop timeout, or the run cancelled: the process is killed
            process.record(self.name, params, attempt, started, error="cancelled")
            raise
        logger.info("command exited with code %d after %.2f s%s", result.exit_code, result.duration_s,
                    "" if result.sandboxed else " (not sandboxed)")
        for line in result.stderr.splitlines()[-process.TAIL_LINES:]:
            logger.info("stderr: %s", process.masked(line, hidden))
        return process.finish(self.name, params, attempt, started, result, [], {"sandboxed": result.sandboxed})


def _hidden() -> list[str]:
    """What the sandbox covers: the worker's HOME and ORCHESTRA_HOME."""
    return [p for p in (os.path.expanduser("~"), str(settings().home)) if p and p != "~"]
