"""Orchestra in Prefect server mode, for tests and benchmarks: a real `prefect server
start` on loopback, `prefect deploy` from the repository root, a process worker
on the `orchestra` work pool, and the OpenAI wire fake, each a subprocess.

Plain functions and classes, no pytest (bench/load.py uses them too); the pytest
fixtures are in tests/prefect_server_fixture.py.

    stack = start_stack(tmp_dir)                 # server (SQLite), pool, deployments, worker
    run_id = stack.api.create_run(stack.api.deployment_id("code-review"), {"workflow": {...}})
    run = stack.api.wait([run_id])[run_id]
    stack.stop()                                 # everything, by PID

Every process runs in its own session and is stopped by its PID: SIGTERM (the
worker needs a second one), then SIGKILL; processes it started are found through
/proc beforehand and killed by PID as well. Logs go to files in the stack's
folder; errors quote their tail.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import httpx

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
POOL = "orchestra"
FLOW = "run_workflow"
WORKER_LIMIT = 4  # flow runs at once per test worker: each is a Python process of ~4 CPU-s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (Linux /proc; empty elsewhere)."""
    if not os.path.isdir("/proc"):
        return []
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        for child in kids.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def clean_env(**extra: str | None) -> dict[str, str]:
    """os.environ without pytest's, Prefect-client and ORCHESTRA_REPO variables, plus
    `extra` (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    for var in ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_PROFILE",
                "ORCHESTRA_REPO"):
        env.pop(var, None)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env["PYTHONUNBUFFERED"] = "1"
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


class Proc:
    """A subprocess in its own session, its output in a log file, stopped by PID."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT):
        self.argv, self.log = argv, log
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.popen = subprocess.Popen(argv, env=env, cwd=str(cwd), stdin=subprocess.DEVNULL,
                                          stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, signals: Iterable[int] = (signal.SIGTERM,), grace: float = 10.0) -> None:
        """Signal the process (each of `signals` in turn, `grace` seconds apart), then
        SIGKILL it and every process it had started, each by PID."""
        below = set(descendants(self.pid))
        for sig in signals:
            if not self.alive():
                break
            below.update(descendants(self.pid))
            try:
                os.kill(self.pid, sig)
            except OSError:
                break
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        if self.alive():
            below.update(descendants(self.pid))
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            pass
        try:  # the rest of its own process group (its session: we started it with setsid)
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:
            pass
        for pid in below:  # flow-run processes start sessions of their own
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


# ---------------------------------------------------------------------------
# the Prefect REST API, as a user would call it


class _RetryingTransport(httpx.HTTPTransport):
    """Retry what Prefect's own client retries: 429/502/503 (a SQLite-backed server
    answers 503 when its database is locked), a connection the server closed
    (keep-alive) and a read timeout (a SQLite-backed server can hold a request for
    its 60 s busy timeout), with jittered exponential pauses. Counts the retries.
    POSTs that create runs carry an idempotency key, so a retry never duplicates."""

    ERRORS = (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadTimeout)

    def __init__(self, codes: set[int], attempts: int = 10):
        super().__init__()
        self.codes, self.attempts, self.retries = codes, attempts, Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(self.attempts):
            last = attempt == self.attempts - 1
            try:
                response = super().handle_request(request)
            except self.ERRORS as exc:
                if last:
                    raise
                self.retries[type(exc).__name__] += 1
            else:
                if response.status_code not in self.codes or last:
                    return response
                self.retries[response.status_code] += 1
                response.read()
                response.close()
            time.sleep(min(0.2 * 2**attempt, 5.0) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")


class Api:
    """The few Prefect REST endpoints the tests and the benchmark use (httpx, no SDK)."""

    RETRY = {429, 502, 503}  # as Prefect's own client: SQLite's "database is locked" is a 503

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.transport = _RetryingTransport(self.RETRY)
        self.http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(90.0, connect=10.0),
                                 transport=self.transport)

    @property
    def retries(self) -> Counter:
        """How often a request was retried, by status code or error."""
        return self.transport.retries

    def close(self) -> None:
        self.http.close()

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def _json(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise AssertionError(f"{response.request.method} {response.request.url} -> "
                                 f"HTTP {response.status_code}: {response.text[:1000]}")
        return response.json()

    def deployment(self, name: str, flow: str = FLOW) -> dict:
        return self._json(self.http.get(f"/deployments/name/{flow}/{name}"))

    def deployment_id(self, name: str, flow: str = FLOW) -> str:
        return self.deployment(name, flow)["id"]

    def create_run(self, deployment_id: str, parameters: dict | None = None, **body: Any) -> str:
        # the idempotency key makes a retried POST create the run only once
        payload = {"parameters": parameters or {}, "idempotency_key": str(uuid.uuid4()), **body}
        return self._json(self.http.post(f"/deployments/{deployment_id}/create_flow_run", json=payload))["id"]

    def flow_run(self, run_id: str) -> dict:
        return self._json(self.http.get(f"/flow_runs/{run_id}"))

    def wait(self, run_ids: Iterable[str], timeout: float = 240.0, poll: float = 0.5,
             on_final=None) -> dict[str, dict]:
        """Poll until every run is in a final state; {id: flow run}. `on_final(run)` is
        called once per run when it gets there (the benchmark times them)."""
        pending, done = list(run_ids), {}
        deadline = time.monotonic() + timeout
        while pending:
            runs = self._json(self.http.post("/flow_runs/filter", json={
                "flow_runs": {"id": {"any_": pending}}, "limit": 200}))
            for run in runs:
                if run["state"] and run["state"]["type"] in FINAL:
                    done[run["id"]] = run
                    pending.remove(run["id"])
                    if on_final:
                        on_final(run)
            if not pending:
                break
            if time.monotonic() > deadline:
                states = {r["id"]: (r["state"] or {}).get("type") for r in runs}
                raise TimeoutError(f"flow runs not final after {timeout:.0f} s: {states}")
            time.sleep(poll)
        return done

    def task_runs(self, run_id: str) -> list[dict]:
        return self._json(self.http.post("/task_runs/filter", json={
            "flow_runs": {"id": {"any_": [run_id]}}, "sort": "EXPECTED_START_TIME_ASC"}))

    def artifacts(self, run_id: str) -> list[dict]:
        return self._json(self.http.post("/artifacts/filter", json={
            "artifacts": {"flow_run_id": {"any_": [run_id]}}}))

    def logs(self, run_id: str) -> list[dict]:
        return self._json(self.http.post("/logs/filter", json={
            "logs": {"flow_run_id": {"any_": [run_id]}}, "sort": "TIMESTAMP_ASC", "limit": 200}))

    def events(self, name: str, resource_id: str | None = None, limit: int = 50) -> list[dict]:
        """Events named `name`, optionally about (or related to) `resource_id`."""
        flt: dict[str, Any] = {"event": {"name": [name]},
                               "occurred": {"since": "2000-01-01T00:00:00Z"}}
        if resource_id:
            flt["any_resource"] = {"id": [resource_id]}
        return self._json(self.http.post("/events/filter", json={"filter": flt, "limit": limit}))["events"]

    def workers(self, pool: str = POOL) -> list[dict]:
        return self._json(self.http.post(f"/work_pools/{pool}/workers/filter", json={}))


# ---------------------------------------------------------------------------
# the processes


@dataclass
class Server:
    url: str
    proc: Proc
    home: Path

    @property
    def ui(self) -> str:
        return self.url[: -len("/api")]


def start_server(home: Path, *, env: dict[str, str] | None = None, timeout: float = 240.0,
                 local: bool = False) -> Server:
    """`prefect server start` on a free loopback port, PREFECT_HOME in `home` (``local``:
    the app Orchestra's own local server runs, `orchestra.prefect_server.server_command`);
    returns once /api/health answers."""
    home.mkdir(parents=True, exist_ok=True)
    last = ""
    for attempt in range(3):  # the port may be taken between probe and bind
        port = free_port()
        server_env = clean_env(PREFECT_HOME=str(home), PREFECT_SERVER_LOGGING_LEVEL="WARNING",
                               PREFECT_API_LOG_RETRYABLE_ERRORS="true", **(env or {}))
        if local:
            from orchestra.prefect_server import server_command

            argv = server_command(port)
        else:
            argv = [PY, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
        proc = Proc(argv, server_env, home / f"server-{attempt}.log")
        url = f"http://127.0.0.1:{port}/api"
        api = Api(url)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and proc.alive():
                if api.healthy():
                    return Server(url=url, proc=proc, home=home)
                time.sleep(0.25)
        finally:
            api.close()
        last = proc.tail()
        proc.stop()
        if "address already in use" not in last.lower():
            break
    raise RuntimeError(f"prefect server did not start (log in {home}):\n{last}")


def prefect_cli(server: Server, *args: str, env: dict[str, str] | None = None, timeout: float = 300.0,
                check: bool = True) -> subprocess.CompletedProcess:
    """`prefect ARGS` against `server`, from the repository root."""
    cli_env = clean_env(PREFECT_API_URL=server.url, PREFECT_HOME=str(server.home / "client"),
                        PREFECT_LOGGING_LEVEL="WARNING", COLUMNS="200", **(env or {}))
    result = subprocess.run([PY, "-m", "prefect", *args], cwd=str(ROOT), env=cli_env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"prefect {' '.join(args)} exited {result.returncode}:\n"
                           f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


def deploy(server: Server, *names: str) -> subprocess.CompletedProcess:
    """`prefect --no-prompt deploy --all` (or `-n NAME`...) from the repository root."""
    selection = [a for n in names for a in ("-n", n)] or ["--all"]
    return prefect_cli(server, "--no-prompt", "deploy", *selection)


def create_pool(server: Server, name: str = POOL) -> None:
    prefect_cli(server, "work-pool", "create", name, "--type", "process")


def launch_worker(server: Server, env: dict[str, str], name: str = "orchestra-test-worker",
                  pool: str = POOL, limit: int | None = None) -> Proc:
    """`prefect worker start` on `pool` (at most `limit` flow runs at once), its flow
    runs getting `env`; does not wait (see wait_for_worker)."""
    worker_env = clean_env(PREFECT_API_URL=server.url, PREFECT_HOME=str(server.home / "worker"),
                           PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_WORKER_PREFETCH_SECONDS="5",
                           **env)
    argv = [PY, "-m", "prefect", "worker", "start", "--pool", pool, "--name", name, "--type", "process"]
    return Proc(argv + (["--limit", str(limit)] if limit else []), worker_env, server.home / f"worker-{name}.log")


def wait_for_worker(server: Server, proc: Proc, name: str, pool: str = POOL, timeout: float = 120.0) -> Proc:
    """Return once the worker has registered with the server; stop it if it does not."""
    api = Api(server.url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and proc.alive():
            if any(w["name"] == name for w in api.workers(pool)):
                return proc
            time.sleep(0.5)
    finally:
        api.close()
    tail = proc.tail()
    stop_worker(proc)
    raise RuntimeError(f"the worker did not register with {server.url}:\n{tail}")


def start_worker(server: Server, env: dict[str, str], name: str = "orchestra-test-worker",
                 pool: str = POOL, limit: int | None = None, timeout: float = 120.0) -> Proc:
    """A process worker on `pool`, registered with the server."""
    return wait_for_worker(server, launch_worker(server, env, name, pool, limit), name, pool, timeout)


def stop_worker(proc: Proc) -> None:
    """A Prefect worker stops on the second SIGTERM (the first asks it to finish)."""
    proc.stop(signals=(signal.SIGTERM, signal.SIGTERM), grace=8.0)


def launch_openai_fake(folder: Path, latency_ms: float = 0.0) -> Proc:
    return Proc([PY, "-m", "tests.fakes.openai_server", "--port", "0", "--latency-ms", str(latency_ms)],
                clean_env(), folder / "openai-fake.log")


def wait_for_fake(proc: Proc, timeout: float = 60.0) -> str:
    """The fake's base URL (with /v1) once it printed READY."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.alive():
        for line in proc.tail(20000).splitlines():
            if line.startswith("READY "):
                return line.split(None, 1)[1].strip() + "/v1"
        time.sleep(0.1)
    tail = proc.tail()
    proc.stop()
    raise RuntimeError(f"the OpenAI fake did not start:\n{tail}")


def start_openai_fake(folder: Path, latency_ms: float = 0.0, timeout: float = 60.0) -> tuple[Proc, str]:
    """`python -m tests.fakes.openai_server` in a subprocess; (proc, base URL with /v1)."""
    proc = launch_openai_fake(folder, latency_ms)
    return proc, wait_for_fake(proc, timeout)


# ---------------------------------------------------------------------------
# the whole thing


@dataclass
class Stack:
    home: Path
    server: Server
    api: Api
    worker: Proc
    fake: Proc | None
    fake_url: str | None
    ledger_url: str
    worker_env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    extra_workers: list[Proc] = field(default_factory=list)

    def add_worker(self, name: str, limit: int | None = None) -> Proc:
        """One more process worker on the pool, its flow runs getting the same environment."""
        proc = start_worker(self.server, self.worker_env, name=name, limit=limit)
        self.extra_workers.append(proc)
        return proc

    def stop(self) -> None:
        try:
            self.api.close()
        finally:
            for worker in [self.worker, *self.extra_workers]:
                stop_worker(worker)
            for proc in [*self.procs, self.server.proc]:
                proc.stop()

    def diagnostics(self, run_id: str | None = None) -> str:
        """Worker log tail and the run's logs, for assertion messages."""
        text = f"--- worker log ({self.worker.log}) ---\n{self.worker.tail(4000)}"
        if run_id:
            try:
                lines = [f"{l['level']:>3} {l['message']}" for l in self.api.logs(run_id)]
                text += "\n--- flow run logs ---\n" + "\n".join(lines)[-4000:]
            except Exception as exc:  # noqa: BLE001 - diagnostics only
                text += f"\n(no flow run logs: {exc})"
        return text


@dataclass
class PgStack:
    """A stack whose Prefect server and ledger are on PostgreSQL."""

    stack: Stack
    prefect_db_url: str  # the Prefect server's database (postgresql+asyncpg://...)


def start_stack(home: Path, *, server_env: dict[str, str] | None = None, ledger_url: str | None = None,
                deployments: tuple[str, ...] = (), fake_latency_ms: float | None = 200.0,
                worker_env: dict[str, str] | None = None, worker_limit: int | None = None,
                local_server: bool = False) -> Stack:
    """Server, work pool, deployments (all, or the named ones), the OpenAI fake (unless
    `fake_latency_ms` is None) and one process worker (at most `worker_limit` flow runs
    at once) whose flow runs use a ledger in `home` (or `ledger_url`) and the fake.
    Independent steps overlap: the fake starts with the server, the worker with `deploy`."""
    home.mkdir(parents=True, exist_ok=True)
    started: list[Proc] = []
    try:
        fake = launch_openai_fake(home, fake_latency_ms) if fake_latency_ms is not None else None
        if fake:
            started.append(fake)
        server = start_server(home / "prefect", env=server_env, local=local_server)
        started.append(server.proc)
        fake_url = wait_for_fake(fake) if fake else None
        create_pool(server)
        orchestra_home = home / "orchestra"
        orchestra_home.mkdir(exist_ok=True)
        ledger_url = ledger_url or f"sqlite:///{orchestra_home / 'orchestra.db'}"
        env = {
            "ORCHESTRA_HOME": str(orchestra_home),
            "ORCHESTRA_DB_URL": ledger_url,
            "PREFECT_LOCAL_STORAGE_PATH": str(orchestra_home / "results"),
            "PREFECT_LOGGING_LEVEL": "INFO",
        }
        if fake_url:
            env.update(OPENAI_BASE_URL=fake_url, OPENAI_API_KEY="sk-test-not-a-real-key-123456")
        env.update(worker_env or {})
        name = "orchestra-test-worker"
        worker = launch_worker(server, env, name=name, limit=worker_limit)
        started.append(worker)
        deploy(server, *deployments)
        wait_for_worker(server, worker, name)
    except BaseException:
        for proc in reversed(started):
            stop_worker(proc) if proc.argv[3:5] == ["worker", "start"] else proc.stop()
        raise
    return Stack(home=home, server=server, api=Api(server.url), worker=worker, fake=fake, fake_url=fake_url,
                 ledger_url=ledger_url, worker_env=env, procs=[fake] if fake else [])
