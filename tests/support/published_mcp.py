"""A real, published MCP server for tests: ``mcp-server-time`` from PyPI (offline tools:
``get_current_time``, ``convert_time``).

Its current release needs ``mcp>=2`` and a newer pydantic than our pins
(``constraints.txt``: ``mcp==1.10.1``, ``pydantic==2.11.7``); pip would only fit an old
release into our venv. So it gets a virtualenv of its own, made once under a cache
folder and reused, and our pinned ``mcp`` client talks to a current server over stdio,
as Orchestra will in the field::

    found = mcp_server_time()
    if found.command is None:
        pytest.skip(found.reason)
    params = StdioServerParameters(command=found.command[0], args=found.command[1:])

The cache is ``$ORCHESTRA_TEST_CACHE`` or ``$XDG_CACHE_HOME/orchestra-tests`` (default
``~/.cache/orchestra-tests``), one folder per pinned version, completed by a marker
file; an interrupted install is redone. ``ORCHESTRA_TEST_NO_INSTALL=1`` uses the cache
only. The install uses pip as configured on the machine, under a file lock so that
parallel test processes install once.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

PACKAGE = "mcp-server-time"
VERSION = "2026.10.19"
MODULE = "mcp_server_time"
INSTALL_TIMEOUT = 600  # seconds, for pip on a slow mirror


class Published(NamedTuple):
    """``command``: the argv that starts the server on stdio, or None; ``reason``: why not,
    or how it was found (``cached in ...`` / ``installed in ... in 12.3 s``)."""

    command: list[str] | None
    reason: str
    install_seconds: float | None = None


def cache_root() -> Path:
    if os.environ.get("ORCHESTRA_TEST_CACHE"):
        return Path(os.environ["ORCHESTRA_TEST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "orchestra-tests"


def _tail(text: str, lines: int = 8) -> str:
    return " | ".join(line for line in (text or "").strip().splitlines()[-lines:])


def mcp_server_time(*, install: bool | None = None, root: Path | None = None,
                    local_timezone: str = "UTC") -> Published:
    """The command to run ``mcp-server-time`` (``--local-timezone`` fixed, so the machine's
    own zone never matters), installing it in its own venv the first time."""
    if install is None:
        install = os.environ.get("ORCHESTRA_TEST_NO_INSTALL", "") in ("", "0")
    venv = (root or cache_root()) / f"{PACKAGE}-{VERSION}"
    python = venv / "bin" / "python"
    marker = venv / ".orchestra-installed"
    command = [str(python), "-m", MODULE, "--local-timezone", local_timezone]
    if marker.exists():
        return Published(command, f"cached in {venv}")
    if not install:
        return Published(None, f"{PACKAGE} {VERSION} is not in {venv} and installing is off (ORCHESTRA_TEST_NO_INSTALL)")
    try:
        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(venv.parent / f".{venv.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if marker.exists():  # another process installed it meanwhile
                return Published(command, f"cached in {venv}")
            return _install(venv, python, marker, command)
    except OSError as e:
        return Published(None, f"cannot use the cache folder {venv.parent}: {e}")


def _install(venv: Path, python: Path, marker: Path, command: list[str]) -> Published:
    t0 = time.monotonic()
    shutil.rmtree(venv, ignore_errors=True)  # a half-made one
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q",
         f"{PACKAGE}=={VERSION}"],
        [str(python), "-m", MODULE, "--help"],
    ]
    deadline = t0 + INSTALL_TIMEOUT
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                  timeout=max(1.0, deadline - time.monotonic()))
        except (OSError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(venv, ignore_errors=True)
            return Published(None, f"installing {PACKAGE} {VERSION} failed at {step[2:4]}: {e}")
        if done.returncode != 0:
            shutil.rmtree(venv, ignore_errors=True)
            return Published(None, f"installing {PACKAGE} {VERSION} failed at {' '.join(step[1:4])} "
                                   f"(exit {done.returncode}): {_tail(done.stderr or done.stdout)}")
    seconds = time.monotonic() - t0
    marker.write_text(f"{PACKAGE}=={VERSION}\n")
    return Published(command, f"installed in {venv} in {seconds:.1f} s", seconds)


if __name__ == "__main__":  # python -m tests.support.published_mcp: install now, print the command
    found = mcp_server_time()
    print(found.reason)
    print(" ".join(found.command) if found.command else "unavailable")
    sys.exit(0 if found.command else 1)
