"""Container steps (``container:``): one command in a container, on a Dagger engine.

    - id: tests
      container:
        image: python:3.12-slim
        run: [python, -m, pytest, -q]       # or script: "..."
        env: {CI: "1"}                      # values may be templates
        secrets: [PYPI_TOKEN]               # a Prefect Secret block (pypi-token) or the variable
        workdir: /src
        mounts: {".": /src}                 # repository-relative -> container path, read-only
        outputs: [/src/report.xml]          # exported to <home>/runs/<flow run>/<step>/...
        cache: {pip: /cache/pip}            # named cache volumes
      timeout: 600

Every container step of a run shares one connection to the engine
(``flows.steps.engines``), opened by the first and closed when the run ends
(``RunState.resources``). Each attempt runs ``withExec(..., expect=ANY)``: the exit
code, stdout and stderr come back whatever the exit, and ``flows.steps.process``
decides the step's fate. A secret goes to the engine as a Dagger secret (set with its
value, scrubbed from the output by the engine and by us); its value never reaches a
message, a log, the cache key or the ledger.

Transient (Prefect retries them; each counts in the engine's circuit breaker,
``agents.breaker.engine_endpoint``): the engine unreachable or lost mid-request, a
connection that does not open within ``dagger_connect_timeout``, an image pull
failure. Not transient: no engine configured, an unknown secret, a path that leaves the
repository, a non-zero exit, the step's ``timeout``, an output file that is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import shlex
import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from core.settings import settings
from flows.context import current_run
from flows.errors import StepError
from flows.resources import ResourceTimeout
from flows.steps import engines, process
from flows.steps.base import Prepared, StepContext, StepResult
from flows.steps.repository import PathProblem, content_digest, inside, repository
from flows.steps.sandbox import CommandResult

__all__ = ["ContainerKind", "run_folder"]

CACHE_PREFIX = "orchestra-container-v1-"
ENGINE = "dagger"


def run_folder(flow_run_id: str, step: str) -> Path:
    """Where a step's exported files go: ``<home>/runs/<flow run id>/<step>/``."""
    return settings().home / "runs" / flow_run_id / step


class ContainerKind(process.ProcessKind):
    name = "container"
    field = "container"
    outputs = ("output", "exit_code", "files")

    # -- validation ---------------------------------------------------------
    def validate(self, step: Any, wf: Any, registry: dict[str, Any]) -> list[str]:
        problems = super().validate(step, wf, registry)
        source = getattr(wf, "source", None)
        if source and Path(source).is_file():  # a file's repository is known now; an inline one's at run time
            repo = repository(wf)
            for host in step.container.mounts:
                try:
                    inside(repo, host, "mount")
                except PathProblem as exc:
                    problems.append(f"step '{step.id}': container.mounts: {exc}")
        return problems

    def warnings(self, step: Any, wf: Any) -> list[str]:
        first = next(s for s in wf.steps if s.container is not None)
        if first is not step or engines.configured():
            return []
        return [f"step '{step.id}': a container step, and {engines.NO_ENGINE} (the run would fail at this step)"]

    # -- running --------------------------------------------------------------
    async def prepare(self, step: Any, ctx: StepContext) -> Prepared:
        spec = step.container
        repo = repository(ctx.wf)
        try:
            hosts = [(inside(repo, host, "mount"), path) for host, path in spec.mounts.items()]
        except PathProblem as exc:
            raise StepError(f"step '{step.id}': container.mounts: {exc}") from None
        digests = await asyncio.gather(*(anyio.to_thread.run_sync(content_digest, h) for h, _ in hosts))
        mounts = [[str(h), path, d] for (h, path), d in zip(hosts, digests)]
        runs = []
        for label, rendered in self.render(step, ctx):
            runs.append((label, {"step": step.id, "image": spec.image, **rendered, "secrets": list(spec.secrets),
                                 "workdir": spec.workdir, "mounts": mounts, "outputs": list(spec.outputs),
                                 "cache": dict(spec.cache), "timeout": step.timeout,
                                 "allow_failure": step.allow_failure, "output_schema": step.output_schema,
                                 "label": label}))
        return Prepared(runs=runs, timeout=self.timeout(step), info={"image": spec.image})

    def cache_key(self, params: dict[str, Any]) -> str:
        """Image, argv, env, secret names (never values), workdir, mounted content, outputs, caches."""
        material = {k: params[k] for k in ("image", "argv", "env", "secrets", "workdir", "outputs", "cache",
                                           "allow_failure", "output_schema")}
        material["mounts"] = [(path, digest) for _, path, digest in params["mounts"]]
        digest = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()
        return CACHE_PREFIX + digest

    async def attempt(self, params: dict[str, Any], attempt: int) -> StepResult:
        from prefect import get_run_logger

        from agents.breaker import DENY, PROBE, breakers, engine_endpoint

        step, started = params["step"], await process.begin(self.name, params, attempt)
        logger = get_run_logger()
        run = current_run()

        def fail(message: str, *, transient: bool = False) -> StepError:
            process.record(self.name, params, attempt, started, error=message)
            return StepError(f"step '{step}': {message}", transient=transient)

        try:
            target = await engines.resolve()
        except engines.EngineError as exc:
            raise fail(str(exc)) from None
        secrets = await _secret_values(params["secrets"], fail)
        hidden = list(params["env"].values()) + list(secrets.values())
        ep = engine_endpoint(ENGINE, target.address)
        decision = breakers.check(ep)
        if decision == DENY:
            raise fail(f"the circuit breaker of the Dagger engine ({target.address}) is open after repeated "
                       "engine failures: no request sent")
        probe = decision == PROBE
        logger.info("container %s on the Dagger engine (%s, from %s): %s", params["image"], target.address,
                    target.source, process.masked(shlex.join(params["argv"]), hidden))
        answered = False
        try:
            with engines.engine_log().attach(logger), \
                    anyio.fail_after(params["timeout"]) if params["timeout"] else contextlib.nullcontext():
                client = await _client(run, target)
                answered = True
                result, files = await _execute(client, params, secrets, run.flow_run_id if run else "local")
        except ResourceTimeout:
            breakers.failure(ep, probe, "no answer")
            raise fail(f"the Dagger engine ({target.address}) did not answer within "
                       f"{settings().dagger_connect_timeout:g} s (ORCHESTRA_DAGGER_CONNECT_TIMEOUT)",
                       transient=True) from None
        except TimeoutError:  # the step's own timeout: the engine answered (it is running the command), or not yet
            if answered:
                breakers.success(ep, probe)
            else:
                breakers.release(ep, probe)
            raise fail(f"container timed out after {params['timeout']:g} s") from None
        except _EngineLost as exc:
            breakers.failure(ep, probe, str(exc))
            raise fail(process.masked(str(exc), hidden), transient=True) from None
        except _StepProblem as exc:
            breakers.success(ep, probe)  # the engine answered
            raise fail(process.masked(str(exc), hidden), transient=exc.transient) from None
        except asyncio.CancelledError:
            breakers.release(ep, probe)
            process.record(self.name, params, attempt, started, error="cancelled")
            raise
        breakers.success(ep, probe)
        _log_result(logger, params, result, hidden)
        return process.finish(self.name, params, attempt, started, result, list(secrets.values()),
                              {"image": params["image"], "files": files})


class _EngineLost(Exception):
    """The engine could not be reached or went away (transient)."""


class _StepProblem(Exception):
    """The engine answered with an error about this step (``transient``: an image pull)."""

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


async def _client(run: Any, target: engines.EngineTarget) -> Any:
    """The run's connection to ``target`` (opened by the first container step)."""
    import dagger

    key = (ENGINE, target.address, target.source)
    try:
        if run is None:  # no run (a direct call): no sharing
            raise RuntimeError("container steps run inside a run")
        return await run.resources.get(key, lambda: engines.connect(target),
                                       timeout=settings().dagger_connect_timeout)
    except ResourceTimeout:  # a TimeoutError, hence an OSError: before the clause below
        raise
    except (dagger.ClientConnectionError, dagger.ProvisionError, dagger.TransportError, OSError) as exc:
        raise _EngineLost(f"cannot connect to the Dagger engine ({target.address}): {_first_line(exc)}") from None


async def _execute(client: Any, params: dict[str, Any], secrets: dict[str, str],
                   flow_run_id: str) -> tuple[CommandResult, list[str]]:
    """Run the step's command; (its result, the exported files)."""
    import dagger

    t0 = time.perf_counter()
    ctr = client.container().from_(params["image"])
    for name, value in params["env"].items():
        ctr = ctr.with_env_variable(name, value)
    for name, value in secrets.items():
        ctr = ctr.with_secret_variable(name, client.set_secret(f"orchestra-{flow_run_id}-{name}", value))
    for host, path, _ in params["mounts"]:
        ctr = ctr.with_mounted_directory(path, client.host().directory(host, exclude=[".git"]), read_only=True)
    for name, path in params["cache"].items():
        ctr = ctr.with_mounted_cache(path, client.cache_volume(name))
    if params["workdir"]:
        ctr = ctr.with_workdir(params["workdir"])
    ctr = ctr.with_exec(params["argv"], expect=dagger.ReturnType.ANY)
    try:
        try:
            ctr = await ctr.sync()
            code, out, err = await ctr.exit_code(), await ctr.stdout(), await ctr.stderr()
        except dagger.ExecError as exc:  # a signal (exit 128-191): outside what ANY accepts
            code, out, err = exc.exit_code, exc.stdout, exc.stderr
            ctr = None
        files = await _export(ctr, params, flow_run_id) if ctr is not None else []
    except dagger.QueryError as exc:
        paths = [p for e in exc.errors for p in (e.path or [])]
        if "from" in paths:
            raise _StepProblem(f"image {params['image']}: cannot pull it: {_first_line(exc)}", transient=True) from None
        raise _StepProblem(f"the Dagger engine refused the step: {_first_line(exc)}") from None
    except (dagger.TransportError, dagger.ClientConnectionError) as exc:
        raise _EngineLost(f"lost the Dagger engine during the step: {_first_line(exc)}") from None
    except dagger.DaggerError as exc:
        raise _StepProblem(f"the Dagger SDK failed: {type(exc).__name__}: {_first_line(exc)}") from None
    result = CommandResult(exit_code=code, stdout=out, stderr=err, duration_s=time.perf_counter() - t0,
                           sandboxed=True, timed_out=False, truncated=False)
    return result, files


async def _export(ctr: Any, params: dict[str, Any], flow_run_id: str) -> list[str]:
    """Copy each of ``outputs`` to the run's folder; the host paths."""
    import dagger

    folder = run_folder(flow_run_id, params["label"])
    files = []
    for path in params["outputs"]:
        dest = folder / path.lstrip("/")
        await anyio.to_thread.run_sync(lambda: dest.parent.mkdir(parents=True, exist_ok=True))
        try:
            files.append(await ctr.file(path).export(str(dest)))
        except dagger.QueryError as exc:
            raise _StepProblem(f"container.outputs: {path}: cannot export it: {_first_line(exc)}") from None
    return files


async def _secret_values(names: list[str], fail) -> dict[str, str]:
    """Each secret's value: the Prefect Secret block of that name (lowercase, ``_`` as
    ``-``), else the worker's environment variable; StepError naming an unknown one."""
    found = {}
    for name in names:
        value = await _secret_block(name.lower().replace("_", "-"))
        if value is None:
            value = os.environ.get(name)
        if value is None:
            raise fail(f"container.secrets: unknown secret '{name}': no Prefect Secret block "
                       f"'{name.lower().replace('_', '-')}' and no environment variable {name} on the worker")
        found[name] = value
    return found


async def _secret_block(slug: str) -> str | None:
    from prefect.blocks.system import Secret

    try:
        block = await Secret.aload(slug)
    except Exception:  # no such block (ValueError), or no Prefect API to ask
        return None
    value = block.get()
    return value if isinstance(value, str) else json.dumps(value)


def _log_result(logger: Any, params: dict[str, Any], result: CommandResult, hidden: list[str]) -> None:
    logger.info("container %s exited with code %d after %.2f s", params["image"], result.exit_code,
                result.duration_s)
    lines = result.stderr.splitlines()[-process.TAIL_LINES:]
    for line in lines:
        logger.info("stderr: %s", process.masked(line, hidden))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
