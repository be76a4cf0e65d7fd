"""Run a command step's process on the worker, inside a bubblewrap sandbox.

This is the process runner behind ``command:`` steps::

    - id: lint
      command:
        run: [ruff, check, .]      # argv; or `script: "..."`, run by /bin/sh -c
        env: {}
        network: false             # default false
        sandbox: true              # default true

It imports only the standard library; the engine wires it in as a step kind.

API
---
``run_command(argv=None, script=None, *, env, repo, cwd, network, sandbox, timeout,
max_output_bytes, hide) -> CommandResult``
    Runs the process and waits for it. Exactly one of ``argv`` (a list of strings) and
    ``script`` (run as ``/bin/sh -c script``) is given. It returns a ``CommandResult``
    whatever the exit code; a non-zero ``exit_code`` (or ``timed_out``) is a failed
    step, and ``failure_message(result, redact=env.values())`` is its message. It
    raises ``SandboxError`` when the process cannot be started: ``sandbox=True``
    without bwrap (the message says how to install bubblewrap), a command that is
    not found (``command not found: foo``), a bad repository or ``cwd``, a bad
    ``env``, or bwrap failing to set up the sandbox.
``CommandResult(exit_code, stdout, stderr, duration_s, sandboxed, timed_out, truncated)``
    ``stdout`` is the step's output. ``exit_code`` is negative (``-signal``) when the
    process was killed by a signal (the timeout kills it: ``timed_out`` is then
    true). ``sandboxed`` is false when it ran plainly (``sandbox=False``; the caller
    logs that). ``result.ok``: exit code 0 and not timed out.
``failure_message(result, *, tail_lines=20, redact=()) -> str``
    ``command failed with exit code N`` (or ``command timed out after T s``) and the
    last ``tail_lines`` lines of stderr, one per line. Pass the step's
    ``env.values()`` as ``redact``: stderr may print them.
``sandbox_argv(argv, *, repo, workdir, network, home, env, bwrap=None) -> list[str]``
    The bwrap command line, pure (testable without running anything).
``command_env(env, *, home) -> dict``  the environment the process gets.
``bwrap_path(path=None) -> str | None``  bwrap on ``path`` (default: the worker's PATH).
``SandboxError``  the process could not be started.

The sandbox
-----------
``bwrap --die-with-parent --new-session --unshare-all [--share-net] --cap-drop ALL
--ro-bind / / --dev /dev --proc /proc --tmpfs /tmp [--tmpfs /run] [--tmpfs HIDDEN]... --bind HOME /tmp/home
--ro-bind REPO REPO --chdir CWD --clearenv --setenv K V ... -- argv...``:

* the host's root is read-only (``--ro-bind / /``), with a fresh ``/dev`` and ``/proc``;
* ``/tmp`` is a private tmpfs: nothing written there reaches the host's ``/tmp``;
* the folders in ``hide`` (the command kind passes the worker's HOME and ORCHESTRA_HOME:
  keys, the ledger, the step cache) are covered by an empty tmpfs, before the repository
  is bound, so a repository inside HOME stays visible; tools installed under HOME
  (``~/.local/bin``) are then not found in the sandbox;
* HOME is ``/tmp/home`` (``SANDBOX_HOME``): a fresh, writable folder made for this run
  on the host (under ``tempfile.gettempdir()``) and removed afterwards. ``/tmp`` is
  the only place where a mount point can always be created on a read-only root,
  hence the path;
* the repository is bound read-only at its own absolute (resolved) path, and the
  process starts in it, or in ``cwd``: relative to the repository (or absolute inside
  it), it must not leave it (``..``, absolute paths outside, symlinks out: all are
  ``SandboxError``);
* every namespace is unshared (pid, ipc, uts, cgroup, user when possible, net): no
  network at all unless ``network=True`` (``--share-net``), in which case the host's
  network is shared. With ``network=False`` ``/run`` is also a private tmpfs, so
  the host daemons' Unix sockets there (docker, dbus, ...) are out of reach; with
  ``network=True`` it stays (``/etc/resolv.conf`` often points into it);
* ``--cap-drop ALL``: bwrap run as root would otherwise keep root's capabilities, and
  the command could remount the repository read-write;
* ``--die-with-parent``: the sandbox dies with the worker; ``--new-session``: no
  access to the worker's terminal;
* the environment is only: the given ``env``, PATH (the worker's unless ``env`` sets
  it), HOME (``/tmp/home`` unless ``env`` sets it), LANG and TZ when the worker has
  them (``command_env``). Nothing else of the worker's environment (API keys, ...)
  gets in.

``run_command`` hands bwrap its options (which hold the env values) through a memfd
(``bwrap --args FD``), so secrets never appear in a command line that ``ps`` shows.

``sandbox=False`` runs the same argv plainly with the same environment rules (HOME is
then the host path of the private folder), the same cwd rules, timeout and output
handling; no isolation at all (``sandboxed=False``).

Processes
---------
The process (bwrap, or the command when unsandboxed) leads a new session and process
group. On timeout the group gets SIGTERM, then SIGKILL after ``KILL_GRACE_S``; killing
bwrap takes the whole sandbox with it (its pid namespace dies). When the command
exits, what is left of its group is killed (in the sandbox, its pid namespace already
died with it) so that background children do not outlive the step. When the task
awaiting ``run_command`` is cancelled, the group gets SIGKILL at once and the process
is reaped before ``CancelledError`` propagates. Unsandboxed, a process that leaves the
group (``setsid``) escapes all this; sandboxed, it cannot.

Output: stdout and stderr are read concurrently; at most ``max_output_bytes`` of
each are kept (the first bytes of stdout, the last bytes of stderr), ``truncated``
says some were dropped; both are decoded as UTF-8 with replacement characters.

A command is looked up on the PATH of its environment before it starts, from the
folder it runs in (a name with a ``/`` is taken relative to it): not found is
``SandboxError("command not found: NAME")``. bwrap's own ``bwrap: execvp NAME: No such
file or directory`` (a command that exists on the host but not in the sandbox, e.g.
under the host's /tmp) is recognised too. A ``script`` whose command is missing exits
127 (the shell's rule): a failed step, not a ``SandboxError``.

No exception message built here contains a value of ``env`` (values of 4 characters or
more are replaced by ``***``; shorter ones cannot be secrets and would garble the text).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "CommandResult",
    "SandboxError",
    "SANDBOX_HOME",
    "INSTALL_HINT",
    "bwrap_path",
    "command_env",
    "sandbox_argv",
    "run_command",
    "failure_message",
]

SANDBOX_HOME = "/tmp/home"
"""Where the private writable work folder is mounted in the sandbox; it is HOME."""

KILL_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL when a command times out."""

DRAIN_GRACE_S = 5.0
"""Seconds to wait for stdout/stderr to close once the command has exited."""

PASSED_THROUGH = ("LANG", "TZ")
"""Variables of the worker's environment the command gets when they are set."""

INSTALL_HINT = (
    "install bubblewrap on the worker: `apt-get install bubblewrap` (Debian/Ubuntu) "
    "or `dnf install bubblewrap` (Fedora)"
)

_MIN_REDACTED_LEN = 4
_READ_CHUNK = 1 << 16


class SandboxError(Exception):
    """The command could not be started (no bwrap with sandbox=True, command not found,
    bad repository/cwd/env, the sandbox could not be set up)."""


@dataclass(frozen=True)
class CommandResult:
    exit_code: int
    """The exit status; ``-N`` when killed by signal N (e.g. by the timeout)."""
    stdout: str
    stderr: str
    duration_s: float
    sandboxed: bool
    timed_out: bool
    truncated: bool
    """Some stdout (its end) or stderr (its beginning) was dropped: max_output_bytes."""

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out


# ---------------------------------------------------------------------------
# pure helpers


def bwrap_path(path: str | None = None) -> str | None:
    """The bwrap executable on ``path`` (default: the worker's PATH), or None."""
    return shutil.which("bwrap", path=path)


def _redact(text: str, values: Iterable[str]) -> str:
    for value in sorted({v for v in values if isinstance(v, str) and len(v) >= _MIN_REDACTED_LEN},
                        key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def _check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    if env is None:
        return {}
    if not isinstance(env, Mapping):
        raise SandboxError("env must be a mapping of names to strings")
    checked: dict[str, str] = {}
    for key, value in env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise SandboxError(f"env: invalid variable name {key!r}")
        if not isinstance(value, str):
            # the value itself is never shown: it may be a secret
            raise SandboxError(f"env {key}: the value must be a string")
        if "\0" in value:
            raise SandboxError(f"env {key}: the value contains a NUL byte")
        checked[key] = value
    return checked


def command_env(env: Mapping[str, str] | None, *, home: str | os.PathLike[str]) -> dict[str, str]:
    """The whole environment of the command: PATH (the worker's), HOME (``home``), LANG
    and TZ (when the worker has them), then ``env``, which wins."""
    result = {"PATH": os.environ.get("PATH") or os.defpath, "HOME": os.fspath(home)}
    for name in PASSED_THROUGH:
        if name in os.environ:
            result[name] = os.environ[name]
    result.update(_check_env(env))
    return result


def _check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, (str, bytes)) or not isinstance(argv, Sequence) or not argv:
        raise SandboxError("run must be a non-empty list of strings (the argv)")
    if not all(isinstance(a, str) for a in argv):
        raise SandboxError("run must be a list of strings")
    if any("\0" in a for a in argv):
        raise SandboxError("run: an argument contains a NUL byte")
    if not argv[0]:
        raise SandboxError("run: the command name is empty")
    return list(argv)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _hidden(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The folders to cover with an empty tmpfs: absolute, existing, not ``/`` nor under
    ``/tmp`` (already private), the outermost of nested ones."""
    found: list[str] = []
    for p in sorted({os.path.normpath(os.fspath(p)) for p in paths if p}, key=len):
        if (not os.path.isabs(p) or p == "/" or _inside(p, "/tmp") or not os.path.isdir(p)
                or any(_inside(p, f) for f in found)):
            continue
        found.append(p)
    return found


def _bwrap_options(*, repo: str, cwd: str, network: bool, home: str,
                   env: Mapping[str, str], hide: Iterable[str] = ()) -> list[str]:
    opts = ["--die-with-parent", "--new-session", "--unshare-all"]
    if network:
        opts.append("--share-net")
    opts += ["--cap-drop", "ALL",
             "--ro-bind", "/", "/",
             "--dev", "/dev",
             "--proc", "/proc",
             "--tmpfs", "/tmp"]
    if not network and os.path.isdir("/run"):
        opts += ["--tmpfs", "/run"]
    for path in _hidden(hide):  # before the repository: a repository inside HOME stays visible
        opts += ["--tmpfs", path]
    opts += ["--bind", home, SANDBOX_HOME,
             "--ro-bind", repo, repo,
             "--chdir", cwd,
             "--clearenv"]
    for key, value in env.items():
        opts += ["--setenv", key, value]
    return opts


def _sandbox_paths(repo: str | os.PathLike[str], workdir: str | os.PathLike[str] | None,
                   home: str | os.PathLike[str]) -> tuple[str, str, str]:
    """Check (lexically) and normalise the repository, cwd and home folder paths."""
    repo_s = os.path.normpath(os.fspath(repo))
    home_s = os.path.normpath(os.fspath(home))
    if not os.path.isabs(repo_s):
        raise SandboxError(f"the repository path must be absolute: {repo_s}")
    if not os.path.isabs(home_s):
        raise SandboxError(f"the work folder path must be absolute: {home_s}")
    if _inside(SANDBOX_HOME, repo_s) or repo_s == "/":
        raise SandboxError(f"the repository cannot be {repo_s}: it would hide the sandbox's "
                           f"{SANDBOX_HOME}")
    cwd_s = _lexical_cwd(repo_s, workdir)
    return repo_s, cwd_s, home_s


def _lexical_cwd(repo: str, cwd: str | os.PathLike[str] | None) -> str:
    if cwd is None or os.fspath(cwd) in ("", "."):
        return repo
    cwd_s = os.fspath(cwd)
    joined = os.path.normpath(os.path.join(repo, cwd_s))  # an absolute cwd stays absolute
    if not _inside(joined, repo):
        raise SandboxError(f"cwd {cwd_s!r} is outside the repository")
    return joined


def sandbox_argv(argv: Sequence[str], *, repo: str | os.PathLike[str],
                 workdir: str | os.PathLike[str] | None = None, network: bool = False,
                 home: str | os.PathLike[str], env: Mapping[str, str] | None = None,
                 bwrap: str | None = None, hide: Iterable[str] = ()) -> list[str]:
    """The bwrap command line that runs ``argv`` sandboxed.

    ``repo``: the repository (absolute), bound read-only at its own path. ``workdir``:
    where the command starts, relative to ``repo`` or absolute inside it (default:
    ``repo``). ``home``: the host folder bound writable at ``SANDBOX_HOME``. ``env``:
    the step's env; the command gets ``command_env(env, home=SANDBOX_HOME)``.
    ``bwrap``: the executable (default: ``bwrap_path()`` or ``"bwrap"``).

    Pure: it reads the worker's PATH/LANG/TZ and whether ``/run`` exists, nothing else
    (``run_command`` also resolves symlinks and checks that the folders exist).
    """
    argv = _check_argv(argv)
    repo_s, cwd_s, home_s = _sandbox_paths(repo, workdir, home)
    full_env = command_env(env, home=SANDBOX_HOME)
    opts = _bwrap_options(repo=repo_s, cwd=cwd_s, network=network, home=home_s, env=full_env, hide=hide)
    return [bwrap or bwrap_path() or "bwrap", *opts, "--", *argv]


def failure_message(result: CommandResult, *, tail_lines: int = 20,
                    redact: Iterable[str] = ()) -> str:
    """The message of a failed command step: the exit code (or the timeout) and the
    last ``tail_lines`` lines of stderr, one per line after the first.

    ``redact``: values (the step's ``env.values()``) replaced by ``***`` in stderr."""
    if result.timed_out:
        head = f"command timed out after {result.duration_s:.1f} s and was killed"
    else:
        head = f"command failed with exit code {result.exit_code}"
        if result.exit_code < 0:
            try:
                head += f" (killed by {signal.Signals(-result.exit_code).name})"
            except ValueError:
                pass
        elif result.exit_code == 127:
            head += " (command not found)"
        elif result.exit_code == 126:
            head += " (command not executable)"
    lines = result.stderr.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    tail = lines[-tail_lines:] if tail_lines > 0 else []
    if not tail:
        return head + ("" if tail_lines <= 0 else "; stderr is empty")
    values = list(redact)
    label = "line" if len(tail) == 1 else f"{len(tail)} lines"
    body = "\n".join(_redact(line, values) for line in tail)
    return f"{head}; last {label} of stderr:\n{body}"


# ---------------------------------------------------------------------------
# running


class _Capture:
    """Keeps the first (``head``) or the last bytes, at most ``limit`` of them."""

    def __init__(self, limit: int, *, head: bool):
        self.limit = limit
        self.head = head
        self.buf = bytearray()
        self.dropped = False

    def feed(self, data: bytes) -> None:
        if self.head:
            room = self.limit - len(self.buf)
            if room > 0:
                self.buf += data[:room]
            if len(data) > max(room, 0):
                self.dropped = True
        else:
            self.buf += data
            excess = len(self.buf) - self.limit
            if excess > 0:
                del self.buf[:excess]
                self.dropped = True

    def text(self) -> str:
        data = bytes(self.buf)
        if self.dropped:
            data = _trim_head_cut(data) if self.head else _trim_tail_cut(data)
        return data.decode("utf-8", errors="replace")


def _trim_head_cut(data: bytes) -> bytes:
    """Drop a UTF-8 sequence cut at the end of ``data``."""
    for i in range(1, min(4, len(data)) + 1):
        byte = data[-i]
        if byte & 0xC0 == 0x80:  # continuation byte: look further back
            continue
        if byte >= 0xC0:  # lead byte of a sequence of `need` bytes
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if need > i:
                return data[:-i]
        return data
    return data


def _trim_tail_cut(data: bytes) -> bytes:
    """Drop the continuation bytes of a UTF-8 sequence cut at the start of ``data``."""
    i = 0
    while i < min(3, len(data)) and data[i] & 0xC0 == 0x80:
        i += 1
    return data[i:]


class _Protocol(asyncio.SubprocessProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int):
        self.stdout = _Capture(limit, head=True)
        self.stderr = _Capture(limit, head=False)
        self.exited = loop.create_future()
        self.closed = loop.create_future()
        self._open = {1, 2}

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        (self.stdout if fd == 1 else self.stderr).feed(data)

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._open.discard(fd)
        if not self._open and not self.closed.done():
            self.closed.set_result(None)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def _wait(fut: asyncio.Future, timeout: float | None) -> bool:
    """Wait for ``fut`` without cancelling it; False on timeout."""
    try:
        await asyncio.wait_for(asyncio.shield(fut), timeout)
        return True
    except TimeoutError:
        return False


def _resolve_cwd(repo: Path, cwd: str | None) -> tuple[str, str]:
    """The resolved repository and cwd; symlinks out of the repository are rejected."""
    try:
        repo_r = Path(repo).resolve(strict=True)
    except (OSError, RuntimeError):
        raise SandboxError(f"the repository folder does not exist: {repo}") from None
    if not repo_r.is_dir():
        raise SandboxError(f"the repository is not a folder: {repo}")
    repo_s = str(repo_r)
    cwd_s = _lexical_cwd(repo_s, cwd)
    real = os.path.realpath(cwd_s)
    if not _inside(real, repo_s):
        raise SandboxError(f"cwd {cwd!r} is outside the repository")
    if not os.path.isdir(real):
        raise SandboxError(f"cwd {cwd!r} is not a folder of the repository")
    return repo_s, real


def _find_command(name: str, path: str, cwd: str) -> None:
    if "/" in name:
        candidate = name if os.path.isabs(name) else os.path.join(cwd, name)
        if not os.path.exists(candidate):
            raise SandboxError(f"command not found: {name}")
        if os.path.isdir(candidate) or not os.access(candidate, os.X_OK):
            raise SandboxError(f"command not executable: {name}")
        return
    if shutil.which(name, path=path) is None:
        raise SandboxError(f"command not found: {name} (not on the step's PATH)")


def _args_fd(options: list[str]) -> int:
    """A file descriptor holding ``options`` NUL-separated, for ``bwrap --args``."""
    data = b"".join(o.encode("utf-8", "surrogateescape") + b"\0" for o in options)
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("orchestra-bwrap-args", os.MFD_CLOEXEC)
    else:  # an unlinked temporary file
        fd = os.dup(tempfile.TemporaryFile().fileno())
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _rmtree(path: str) -> None:
    def retry(func, p, _exc):  # a folder the command made unreadable or unwritable
        try:
            os.chmod(os.path.dirname(p), stat.S_IRWXU)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, stat.S_IRWXU)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=retry)


_EXECVP_PREFIX = "bwrap: execvp "


def _bwrap_start_error(name: str, stdout: str, stderr: str) -> str | None:
    """bwrap's own error when it could not start the command (it exits 1), else None."""
    text = stderr.strip()
    if stdout or "\n" in text or not text.startswith("bwrap: "):
        return None
    if text == f"{_EXECVP_PREFIX}{name}: No such file or directory":
        return f"command not found: {name} (not in the sandbox)"
    if text.startswith(f"{_EXECVP_PREFIX}{name}: "):
        return f"command not executable: {name} ({text[len(_EXECVP_PREFIX) + len(name) + 2:]})"
    return f"bubblewrap could not set up the sandbox: {text}"


async def run_command(argv: list[str] | None = None, script: str | None = None, *,
                      env: Mapping[str, str] | None = None, repo: Path,
                      cwd: str | None = None, network: bool = False, sandbox: bool = True,
                      timeout: float | None = None,
                      max_output_bytes: int = 10_000_000,
                      hide: Iterable[str] = ()) -> CommandResult:
    """Run ``argv`` (or ``/bin/sh -c script``) in ``repo`` (or ``cwd`` inside it),
    sandboxed unless ``sandbox=False``; see the module docstring. ``hide``: host folders
    the sandbox covers with an empty tmpfs (the worker's HOME, ORCHESTRA_HOME)."""
    values = list(env.values()) if isinstance(env, Mapping) else []
    try:
        return await _run(argv, script, env=env, repo=repo, cwd=cwd, network=network,
                          sandbox=sandbox, timeout=timeout, max_output_bytes=max_output_bytes, hide=hide)
    except SandboxError as exc:
        message = _redact(str(exc), values)
        if message != str(exc):
            raise SandboxError(message) from None
        raise


async def _run(argv, script, *, env, repo, cwd, network, sandbox, timeout,
               max_output_bytes, hide) -> CommandResult:
    if (argv is None) == (script is None):
        raise SandboxError("give exactly one of run (an argv) and script")
    if script is not None:
        if not isinstance(script, str) or "\0" in script:
            raise SandboxError("script must be a string")
        argv = ["/bin/sh", "-c", script]
    argv = _check_argv(argv)
    if timeout is not None and not timeout > 0:
        raise SandboxError("timeout must be a positive number of seconds")
    if not isinstance(max_output_bytes, int) or max_output_bytes < 0:
        raise SandboxError("max_output_bytes must be a non-negative integer")
    env = _check_env(env)

    bwrap = None
    if sandbox:
        bwrap = bwrap_path()
        if bwrap is None:
            raise SandboxError("this command step runs sandboxed (sandbox: true) but bubblewrap "
                               f"(bwrap) is not installed on this worker; {INSTALL_HINT}; or set "
                               "`sandbox: false` on the step to run it without a sandbox")
    repo_s, cwd_s = _resolve_cwd(repo, cwd)

    tmp_root = tempfile.mkdtemp(prefix="orchestra-cmd-")
    args_fd = -1
    try:
        host_home = os.path.join(tmp_root, "home")
        os.mkdir(host_home, 0o700)
        full_env = command_env(env, home=SANDBOX_HOME if sandbox else host_home)
        _find_command(argv[0], full_env["PATH"], cwd_s)

        if sandbox:
            _, _, home_s = _sandbox_paths(repo_s, cwd_s, host_home)
            options = _bwrap_options(repo=repo_s, cwd=cwd_s, network=network, home=home_s,
                                     env=full_env, hide=hide)
            args_fd = _args_fd(options)
            exec_argv = [bwrap, "--args", str(args_fd), "--", *argv]
            exec_env: dict[str, str] = {}  # bwrap itself needs nothing; the command's env is in args_fd
            pass_fds: tuple[int, ...] = (args_fd,)
        else:
            exec_argv, exec_env, pass_fds = argv, full_env, ()

        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            transport, proto = await loop.subprocess_exec(
                lambda: _Protocol(loop, max_output_bytes), *exec_argv,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, env=exec_env, cwd=cwd_s,
                start_new_session=True, pass_fds=pass_fds)
        except FileNotFoundError:
            raise SandboxError(f"command not found: {argv[0]}") from None
        except PermissionError:
            raise SandboxError(f"command not executable: {argv[0]}") from None
        except OSError as exc:
            raise SandboxError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        finally:
            if args_fd >= 0:
                os.close(args_fd)  # bwrap has its copy
                args_fd = -1

        pid = transport.get_pid()
        timed_out = False
        try:
            if not await _wait(proto.exited, timeout):
                timed_out = True
                _killpg(pid, signal.SIGTERM)
                if not await _wait(proto.exited, KILL_GRACE_S):
                    _killpg(pid, signal.SIGKILL)
                    await _wait(proto.exited, None)
            duration = time.monotonic() - started
            _killpg(pid, signal.SIGKILL)  # what is left of its process group
            await _wait(proto.closed, DRAIN_GRACE_S)
        finally:
            if transport.get_returncode() is None:  # cancelled (or failed) while running
                _killpg(pid, signal.SIGKILL)
                try:
                    await _wait(proto.exited, DRAIN_GRACE_S)
                finally:
                    transport.close()
            else:
                transport.close()
    finally:
        if args_fd >= 0:
            os.close(args_fd)
        _rmtree(tmp_root)

    exit_code = transport.get_returncode()
    stdout, stderr = proto.stdout.text(), proto.stderr.text()
    if sandbox and exit_code == 1 and not timed_out:
        error = _bwrap_start_error(argv[0], stdout, stderr)
        if error is not None:
            raise SandboxError(error)
    return CommandResult(exit_code=exit_code, stdout=stdout, stderr=stderr,
                         duration_s=duration, sandboxed=bool(sandbox), timed_out=timed_out,
                         truncated=proto.stdout.dropped or proto.stderr.dropped)
