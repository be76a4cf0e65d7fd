"""A throw-away PostgreSQL server for the tests (no fixtures here: plain functions).

    url = postgres_url()          # None if no server can be had
    if url is None:
        pytest.skip(postgres_unavailable_reason())
    db_url = create_database(url, "t_something")   # a fresh, empty database

``postgres_url()`` returns, in order:

1. ``$ORCHESTRA_TEST_PG_URL`` if set (an existing server, e.g. a CI service
   container; it must allow CREATE DATABASE);
2. a private cluster started on first call: ``initdb`` + ``pg_ctl`` found on
   PATH or in ``/usr/lib/postgresql/*/bin`` (newest), a data directory in a temp
   folder, a free loopback port, trust authentication, fsync off.  PostgreSQL
   refuses to run as root, so as root the server runs as the ``postgres`` OS user
   (``runuser -u postgres --``, else ``su postgres -c``) and the folder is
   chowned to it.  The cluster is stopped (``pg_ctl stop -m immediate``) and the
   folder removed at interpreter exit.

Every outcome is memoized for the process: one cluster per test session.
"""

from __future__ import annotations

import atexit
import glob
import os
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

__all__ = ["postgres_url", "postgres_unavailable_reason", "create_database", "drop_database"]

_lock = threading.Lock()
_state: dict[str, str | None] = {}


def postgres_unavailable_reason() -> str:
    """Why :func:`postgres_url` returned None ('' if it did not)."""
    return _state.get("reason") or ""


def postgres_url() -> str | None:
    """URL of a PostgreSQL server's ``postgres`` database, or None (see the reason)."""
    with _lock:
        if "url" not in _state:
            try:
                url, reason = _start()
            except Exception as exc:  # never let the helper break collection
                url, reason = None, f"could not start PostgreSQL: {type(exc).__name__}: {exc}"
            _state["url"], _state["reason"] = url, reason
        return _state["url"]


def create_database(server_url: str, name: str) -> str:
    """Create (or re-create) database ``name`` on the server; return its URL."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"bad database name {name!r}")
    drop_database(server_url, name)
    _admin(server_url, f'CREATE DATABASE "{name}"')
    return _with_db(server_url, name)


def drop_database(server_url: str, name: str) -> None:
    _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --------------------------------------------------------------------------- internals


def _admin(server_url: str, sql: str) -> None:
    import psycopg2

    dsn = re.sub(r"^postgresql\+\w+://", "postgresql://", server_url)
    conn = psycopg2.connect(dsn)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _with_db(server_url: str, name: str) -> str:
    base, _, query = server_url.partition("?")
    base = re.sub(r"^(\w[\w+.-]*://[^/]*)(/.*)?$", rf"\1/{name}", base)
    return base + ("?" + query if query else "")


def _find_bin() -> Path | None:
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin/initdb") + glob.glob(
        "/usr/local/pgsql/bin/initdb"
    )

    def version(p: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/", p)
        return tuple(int(x) for x in m.groups() if x) if m else (0,)

    for path in sorted(candidates, key=version, reverse=True):
        bindir = Path(path).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _runner() -> tuple[list[str] | None, str | None, str]:
    """(argv prefix, OS user to own the files or None, reason if impossible)."""
    if os.geteuid() != 0:
        return [], None, ""
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return None, None, "running as root and there is no 'postgres' OS user to run PostgreSQL"
    if shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--"], "postgres", ""
    if shutil.which("su"):
        return ["su", "postgres", "-s", "/bin/sh", "-c"], "postgres", ""
    return None, None, "running as root and neither runuser nor su is available"


def _run(prefix: list[str], argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    if prefix and prefix[0] == "su":
        cmd = prefix + [shlex.join(argv)]
    else:
        cmd = prefix + argv
    return subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )


def _start() -> tuple[str | None, str]:
    external = os.environ.get("ORCHESTRA_TEST_PG_URL")
    if external:
        return external, ""
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return None, "psycopg2 is not installed"
    bindir = _find_bin()
    if bindir is None:
        return None, "no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql"
    prefix, owner, reason = _runner()
    if prefix is None:
        return None, reason

    root = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
    data, log = root / "data", root / "server.log"
    if owner:
        shutil.chown(root, owner, owner)
    initdb, pg_ctl = str(bindir / "initdb"), str(bindir / "pg_ctl")

    def cleanup() -> None:
        _run(prefix, [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], 60)
        shutil.rmtree(root, ignore_errors=True)

    r = _run(
        prefix,
        [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        120,
    )
    if r.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        return None, f"initdb failed: {(r.stderr or r.stdout).strip()[-500:]}"

    last = ""
    for _ in range(3):  # the free port may be taken between probe and bind: retry
        port = _free_port()
        opts = (
            f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
        )
        r = _run(prefix, [pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "60",
                          "start"], 90)
        if r.returncode == 0:
            atexit.register(cleanup)
            url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
            return url, ""
        last = (log.read_text(errors="replace") if log.exists() else r.stderr)[-500:]
    cleanup()
    return None, f"pg_ctl start failed: {last.strip()}"
