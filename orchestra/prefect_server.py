"""Orchestra's local Prefect server: started on demand, reused by later commands.

Prefect's ephemeral mode starts a fresh API server in every process (6 s here on an
existing database, 12-14 s more to migrate a new one) and stops it when the process
exits, sometimes before the last task states are written. So when `PREFECT_API_URL`
is unset, `orchestra` starts `prefect server start` on loopback once, in the
background, with its home in `$ORCHESTRA_HOME/prefect`, and every later command
reuses it. It stops by itself after the `server_idle_minutes` setting (`ORCHESTRA_SERVER_IDLE_MINUTES`, default 60)
without an Orchestra command, or with `orchestra server stop`. The UI is at the
server's address, and it is served with that address as its API URL
(``PREFECT_SERVER_UI_API_URL``), so its pages, and the dashboard's links to them, work on
whatever port the server took. While it runs, its supervisor also runs Orchestra's reaper
every 15 s (runs whose process died end CRASHED: `orchestra.reaper`).
`ORCHESTRA_PREFECT=ephemeral` keeps Prefect's own ephemeral mode.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from core.settings import settings
from orchestra.runtime import orchestra_home, refresh_prefect_settings

STATE_FILE = "prefect-server.json"


class UnreachableServer(RuntimeError):
    """The configured Prefect API does not answer: a setting the user can fix."""


def _state_path() -> Path:
    return orchestra_home() / STATE_FILE


def _activity_path() -> Path:
    return orchestra_home() / "prefect-server.activity"


def _healthy(url: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def status() -> dict | None:
    """The running server's {pid, url, ui} or None."""
    path = _state_path()
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        os.kill(info["pid"], 0)
    except (ValueError, KeyError, OSError):
        return None
    return info if _healthy(info["url"]) else None


def known_api() -> str | None:
    """The Prefect API this process may use without starting anything: ``PREFECT_API_URL``,
    else the running local server's (then set as ``PREFECT_API_URL`` here); None without one."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    info = status()
    if info is None:
        return None
    _use_api(info["url"])
    return info["url"]


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port on 127.0.0.1")


@contextmanager
def _lock():
    import fcntl

    with open(orchestra_home() / "prefect-server.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure(echo=None, timeout: float = 180.0, mode: str | None = None) -> str | None:
    """Point this process at a Prefect API; returns its URL, or None for ephemeral mode.
    ``mode`` overrides the ``prefect`` setting (``local`` | ``ephemeral``)."""
    if os.environ.get("PREFECT_API_URL"):
        url = os.environ["PREFECT_API_URL"].rstrip("/")
        if not any(_healthy(url, timeout=3.0) for _ in range(2)):
            from core.redact import redact_url

            raise UnreachableServer(
                f"PREFECT_API_URL={redact_url(url)} does not answer (GET /health): start that server, "
                "or unset PREFECT_API_URL to use Orchestra's local Prefect server")
        return os.environ["PREFECT_API_URL"]
    if (mode or settings().prefect) == "ephemeral":
        return None
    _activity_path().touch()
    info = status()
    if info is None:
        with _lock():
            info = status()
            if info is None:
                info = _start(echo, timeout)
    _use_api(info["url"])
    return info["url"]


def _use_api(url: str) -> None:
    """``PREFECT_API_URL`` for this process, also when Prefect is imported already (its
    settings are read once, at import: without the refresh this process would start an
    ephemeral server of its own and the local server would never see its runs)."""
    os.environ["PREFECT_API_URL"] = url
    refresh_prefect_settings()


def _start(echo, timeout: float) -> dict:
    home = orchestra_home()
    port = _free_port(settings().server_port)
    log = home / "prefect-server.log"
    if echo:
        echo(f"Starting a local Prefect server on http://127.0.0.1:{port} (first start migrates its database: ~20 s) ...")
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestra.prefect_server", "supervise", str(port)],
        stdin=subprocess.DEVNULL, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True, cwd=str(Path(__file__).resolve().parent.parent),
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the local Prefect server exited (code {proc.returncode}); see {log}:\n{tail}")
        if _healthy(url):
            info = {"pid": proc.pid, "url": url, "ui": f"http://127.0.0.1:{port}", "log": str(log)}
            _state_path().write_text(json.dumps(info))
            return info
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError(f"the local Prefect server did not answer within {timeout:.0f} s; see {log}")


def stop() -> bool:
    info = None
    path = _state_path()
    if path.is_file():
        try:
            info = json.loads(path.read_text())
        except ValueError:
            info = None
    path.unlink(missing_ok=True)
    if not info:
        return False
    try:
        os.kill(info["pid"], signal.SIGTERM)
    except OSError:
        return False
    for _ in range(100):
        try:
            os.kill(info["pid"], 0)
        except OSError:
            return True
        time.sleep(0.1)
    return True


def server_command(port: int) -> list[str]:
    """What `prefect server start` runs (uvicorn serving Prefect's app with the UI and the
    background services), with two changes for a loopback-only server: SQLite
    transactions that queue instead of failing under concurrent writers
    (``orchestra.prefect_app``), and no permessage-deflate on websockets (every task-run
    state change reaches the server as an event over a websocket, and compressing each
    frame costs the client ~1 ms of CPU per task run for no gain on loopback)."""
    return [sys.executable, "-m", "uvicorn", "--factory", "orchestra.prefect_app:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--ws-per-message-deflate", "false",
            "--log-level", "warning", "--lifespan", "on", "--timeout-keep-alive", "5"]


#: Prefect settings of the local server that differ from Prefect's defaults, each measured
#: alone with ``bench/run.py --env`` (bench/README.md). A variable already set wins.
#: Task-run states reach Prefect 3's server as events; its task-run recorder writes them
#: one per transaction by default (batch size 1). In batches of up to 100, flushed every
#: second, its CPU per task run halves and the UI shows a task run at most a second later.
SERVER_DEFAULTS = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "100",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
}


def _supervise(port: int) -> int:
    """Run `prefect server start` and stop it when Orchestra has been idle long enough."""
    home = orchestra_home()
    idle = settings().server_idle_minutes * 60
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.setdefault("PREFECT_HOME", str(home / "prefect"))
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(home / "results"))
    env["PREFECT__SERVER_FINAL"] = "1"
    for name, value in SERVER_DEFAULTS.items():
        env.setdefault(name, value)
    # The UI asks its API at the address it was served with: this server's real one,
    # whatever port it took (Prefect's default would be 127.0.0.1:4200, a dead or a
    # different server whenever 4200 was busy or ORCHESTRA_SERVER_PORT moved it).
    env["PREFECT_SERVER_API_HOST"] = "127.0.0.1"
    env["PREFECT_SERVER_API_PORT"] = str(port)
    env["PREFECT_SERVER_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    env["PREFECT_UI_URL"] = f"http://127.0.0.1:{port}"
    env.pop("PREFECT_UI_API_URL", None)  # an inherited value would win over the line above
    child = subprocess.Popen(server_command(port), env=env, stdin=subprocess.DEVNULL)
    stopping = False

    def on_signal(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    activity = _activity_path()
    os.environ["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"  # for the reaper's Prefect calls
    next_reap = time.monotonic() + 15
    while not stopping and child.poll() is None:
        time.sleep(1)
        if time.monotonic() >= next_reap:
            next_reap = time.monotonic() + 15
            _reap()
        try:
            last = activity.stat().st_mtime
        except OSError:
            last = 0
        if time.time() - last > idle:
            break
    if child.poll() is None:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    try:
        info = json.loads(_state_path().read_text())
        if info.get("pid") == os.getpid():
            _state_path().unlink()
    except (OSError, ValueError):
        pass
    return 0


def _reap() -> None:
    """Runs whose process died end as Prefect says (``orchestra.reaper``); never fatal here."""
    try:
        from orchestra import reaper

        reaper.reap(api=os.environ.get("PREFECT_API_URL"))
    except Exception as exc:
        print(f"orchestra server: reaper: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "supervise":
        sys.exit(_supervise(int(sys.argv[2])))
    print("usage: python -m orchestra.prefect_server supervise PORT", file=sys.stderr)
    sys.exit(2)
