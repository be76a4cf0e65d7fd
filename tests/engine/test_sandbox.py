"""The sandboxed process runner of command steps (flows/steps/sandbox.py), with real
processes and the real bubblewrap."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from flows.steps import sandbox as sb

ROOT = Path(__file__).resolve().parents[2]
MODULE_PATH = ROOT / "flows" / "steps" / "sandbox.py"

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="bubblewrap (bwrap) is not installed: apt-get install bubblewrap")

# sandbox=True (needs bwrap) and sandbox=False
BOTH = pytest.mark.parametrize("sandbox", [pytest.param(True, marks=needs_bwrap, id="sandboxed"),
                                           pytest.param(False, id="plain")])


def run(*args, **kwargs):
    return asyncio.run(sb.run_command(*args, **kwargs))


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "README").write_text("hello from the repo\n")
    return repo


def _pids_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker``."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry))
    return pids


def _sleeping(marker: str) -> bool:
    """The `sleep <marker>` process itself is running."""
    for pid in _pids_with(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if f.read().startswith(b"sleep\0"):
                    return True
        except OSError:
            pass
    return False


def _gone(pid: int) -> bool:
    """The process does not exist any more (a zombie still has a /proc entry)."""
    return not os.path.exists(f"/proc/{pid}")


def _wait_until(predicate, bound: float = 20.0) -> bool:
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _sleep_arg() -> str:
    """An argument for `sleep` of about 30 s that marks this very process."""
    return f"30.{secrets.randbelow(10**8):08d}"


# ---------------------------------------------------------------------------
# the module


def test_module_imports_only_the_standard_library():
    code = (
        "import importlib.util, sys\n"
        "before = set(sys.modules)\n"
        f"spec = importlib.util.spec_from_file_location('sandbox_probe', {str(MODULE_PATH)!r})\n"
        "m = sys.modules['sandbox_probe'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(m)\n"
        "new = {n.split('.')[0] for n in set(sys.modules) - before} - {'sandbox_probe'}\n"
        "print(sorted(n for n in new if n not in sys.stdlib_module_names))\n"
    )
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_sandbox_argv_builds_the_bwrap_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("LANG", "C.UTF-8")
    monkeypatch.delenv("TZ", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-host-only")
    repo, home = tmp_path / "repo", tmp_path / "home"
    argv = sb.sandbox_argv(["ruff", "check", "."], repo=repo, workdir="sub", network=False,
                           home=home, env={"STEP": "1"}, bwrap="/usr/bin/bwrap")

    def has(*seq):
        return any(argv[i:i + len(seq)] == list(seq) for i in range(len(argv)))

    assert argv[0] == "/usr/bin/bwrap"
    assert argv[-4:] == ["--", "ruff", "check", "."]
    for seq in (["--ro-bind", "/", "/"], ["--dev", "/dev"], ["--proc", "/proc"], ["--tmpfs", "/tmp"],
                ["--unshare-all"], ["--die-with-parent"], ["--new-session"], ["--cap-drop", "ALL"],
                ["--clearenv"], ["--bind", str(home), "/tmp/home"], ["--ro-bind", str(repo), str(repo)],
                ["--chdir", str(repo / "sub")], ["--setenv", "STEP", "1"],
                ["--setenv", "PATH", "/usr/bin:/bin"], ["--setenv", "HOME", "/tmp/home"],
                ["--setenv", "LANG", "C.UTF-8"]):
        assert has(*seq), seq
    assert "--share-net" not in argv
    assert "sk-host-only" not in argv and not has("--setenv", "TZ")
    # the private /tmp comes before the binds under it, the repository after the home folder
    assert argv.index("--tmpfs") < argv.index("--bind") < argv.index(str(repo))
    # --clearenv before any --setenv
    assert argv.index("--clearenv") < argv.index("--setenv")

    networked = sb.sandbox_argv(["true"], repo=repo, workdir=None, network=True, home=home, env={})
    assert "--share-net" in networked and networked[networked.index("--share-net") - 1] == "--unshare-all"
    assert networked[networked.index("--chdir") + 1] == str(repo)
    # the step's env wins over the worker's PATH and the default HOME
    own = sb.sandbox_argv(["true"], repo=repo, workdir=None, network=False, home=home,
                          env={"PATH": "/opt/bin", "HOME": "/elsewhere"})
    assert ["--setenv", "PATH", "/opt/bin"] == own[own.index("/opt/bin") - 2:own.index("/opt/bin") + 1]
    assert own.count("PATH") == 1 and own.count("HOME") == 1

    for bad in ("..", "../x", "sub/../../x", "/etc"):
        with pytest.raises(sb.SandboxError, match="outside the repository"):
            sb.sandbox_argv(["true"], repo=repo, workdir=bad, network=False, home=home, env={})
    with pytest.raises(sb.SandboxError):
        sb.sandbox_argv(["true"], repo="relative/repo", workdir=None, network=False, home=home, env={})


def test_failure_message_has_the_exit_code_and_exactly_the_last_20_stderr_lines():
    stderr = "".join(f"err-{i:02d}\n" for i in range(1, 31))
    result = sb.CommandResult(exit_code=3, stdout="", stderr=stderr, duration_s=0.1,
                              sandboxed=True, timed_out=False, truncated=False)
    lines = sb.failure_message(result).splitlines()
    assert "exit code 3" in lines[0]
    assert lines[1:] == [f"err-{i:02d}" for i in range(11, 31)]
    assert sb.failure_message(result, tail_lines=2).splitlines()[1:] == ["err-29", "err-30"]
    quiet = sb.CommandResult(exit_code=2, stdout="", stderr="", duration_s=0.1,
                             sandboxed=False, timed_out=False, truncated=False)
    assert sb.failure_message(quiet) == "command failed with exit code 2; stderr is empty"
    leaked = sb.CommandResult(exit_code=1, stdout="", stderr="token is sk-secret-123\n", duration_s=0.1,
                              sandboxed=True, timed_out=False, truncated=False)
    message = sb.failure_message(leaked, redact={"TOKEN": "sk-secret-123"}.values())
    assert "sk-secret-123" not in message and "token is ***" in message


# ---------------------------------------------------------------------------
# running


@BOTH
def test_stdout_is_captured(repo, sandbox):
    result = run(["cat", "README"], repo=repo, sandbox=sandbox)
    assert result.exit_code == 0 and result.ok
    assert result.stdout == "hello from the repo\n"
    assert result.sandboxed is sandbox
    assert not result.timed_out and not result.truncated
    assert result.duration_s >= 0


@BOTH
def test_script_runs_with_sh(repo, sandbox):
    result = run(script="echo $((40 + 2)); echo to-stderr >&2", repo=repo, sandbox=sandbox)
    assert (result.exit_code, result.stdout, result.stderr) == (0, "42\n", "to-stderr\n")


@BOTH
def test_nonzero_exit_is_kept_with_stderr(repo, sandbox):
    script = "i=1; while [ $i -le 30 ]; do echo \"line-$i\" >&2; i=$((i+1)); done; echo partial; exit 7"
    result = run(script=script, repo=repo, sandbox=sandbox)
    assert result.exit_code == 7 and not result.ok
    assert result.stdout == "partial\n"
    lines = sb.failure_message(result).splitlines()
    assert lines[0].startswith("command failed with exit code 7")
    assert lines[1:] == [f"line-{i}" for i in range(11, 31)]


@needs_bwrap
def test_repository_is_read_only_while_tmp_and_home_are_private_and_writable(repo):
    marker = f"orchestra-sandbox-leak-{secrets.token_hex(8)}"
    script = f"""
        if touch {repo}/new-file 2>/dev/null; then echo repo-writable; else echo repo-read-only; fi
        if echo x > {repo}/README 2>/dev/null; then echo readme-writable; else echo readme-read-only; fi
        if mount -o remount,rw,bind {repo} 2>/dev/null; then echo remounted; else echo no-remount; fi
        echo data > /tmp/{marker} && cat /tmp/{marker}
        echo home > "$HOME/{marker}" && cat "$HOME/{marker}"
        echo "HOME=$HOME"
        pwd
    """
    result = run(script=script, repo=repo)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["repo-read-only", "readme-read-only", "no-remount", "data", "home",
                                          f"HOME={sb.SANDBOX_HOME}", str(repo)]
    assert not (repo / "new-file").exists()
    assert (repo / "README").read_text() == "hello from the repo\n"
    # nothing reached the host's /tmp, and the private work folder is gone
    tmp = Path(tempfile.gettempdir())
    assert not (Path("/tmp") / marker).exists()
    assert not list(tmp.glob(f"orchestra-cmd-*/home/{marker}"))


@needs_bwrap
def test_root_filesystem_is_read_only(repo):
    result = run(script="touch /usr/orchestra-probe 2>&1; echo rc=$?", repo=repo)
    assert "rc=0" not in result.stdout and "Read-only file system" in result.stdout
    assert not Path("/usr/orchestra-probe").exists()


def test_plain_run_gets_a_private_home_removed_afterwards(repo):
    result = run(script='echo "$HOME"; echo kept > "$HOME/file"; cat "$HOME/file"', repo=repo, sandbox=False)
    home, content = result.stdout.splitlines()
    assert content == "kept" and result.sandboxed is False
    assert Path(home).name == "home" and Path(home).parent.name.startswith("orchestra-cmd-")
    assert not Path(home).exists()


@pytest.fixture
def listener():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server
    server.close()


def _connect_argv(port: int) -> list[str]:
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=10).close(); print('connected')"
    # the interpreter itself, not the virtualenv's link to it: a checkout under /tmp (CI's)
    # is hidden by the sandbox's private /tmp
    return [os.path.realpath(sys.executable), "-I", "-S", "-c", code]


def _accepted(server: socket.socket) -> bool:
    server.settimeout(5)
    try:
        conn, _ = server.accept()
    except OSError:
        return False
    conn.close()
    return True


@needs_bwrap
def test_no_network_by_default(repo, listener):
    result = run(_connect_argv(listener.getsockname()[1]), repo=repo)
    assert result.exit_code != 0 and "connected" not in result.stdout
    assert "ConnectionRefusedError" in result.stderr or "Network is unreachable" in result.stderr
    listener.settimeout(0)
    with pytest.raises(BlockingIOError):
        listener.accept()


@needs_bwrap
def test_network_when_asked(repo, listener):
    result = run(_connect_argv(listener.getsockname()[1]), repo=repo, network=True)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "connected\n"
    assert _accepted(listener)


@needs_bwrap
def test_host_run_sockets_are_hidden_without_network(repo):
    entries = sorted(os.listdir("/run")) if os.path.isdir("/run") else []
    if not entries:
        pytest.skip("the host's /run is empty")
    assert run(["ls", "-A", "/run"], repo=repo).stdout == ""
    # with the network, the host's /run stays (resolv.conf often points into it)
    assert set(run(["ls", "-A", "/run"], repo=repo, network=True).stdout.split()) & set(entries)


@BOTH
def test_environment_is_only_the_given_env(repo, sandbox, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-host-key-1234")
    monkeypatch.setenv("LANG", "C.UTF-8")
    result = run(["env"], env={"STEP_TOKEN": "given-value"}, repo=repo, sandbox=sandbox)
    assert result.exit_code == 0, result.stderr
    variables = dict(line.split("=", 1) for line in result.stdout.splitlines())
    assert "OPENAI_API_KEY" not in variables and "sk-fake-host-key-1234" not in result.stdout
    assert variables["STEP_TOKEN"] == "given-value"
    assert variables["PATH"] == os.environ["PATH"]
    assert variables["LANG"] == "C.UTF-8"
    if sandbox:
        assert variables["HOME"] == sb.SANDBOX_HOME
    assert set(variables) <= {"STEP_TOKEN", "PATH", "HOME", "LANG", "TZ", "PWD", "SHLVL", "_"}


@needs_bwrap
def test_env_values_stay_out_of_command_lines(repo):
    secret = f"sk-secret-{secrets.token_hex(8)}"
    marker = _sleep_arg()

    async def main():
        task = asyncio.create_task(sb.run_command(["sleep", marker], env={"API_KEY": secret}, repo=repo))
        seen = await asyncio.to_thread(_wait_until, lambda: _sleeping(marker))
        cmdlines = []
        for pid in _pids_with(marker):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdlines.append(f.read())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return seen, cmdlines

    seen, cmdlines = asyncio.run(main())
    assert seen, "bwrap and sleep did not show up"
    assert cmdlines and all(secret.encode() not in c for c in cmdlines)
    assert any(c.startswith(b"sleep\0") for c in cmdlines)


@BOTH
def test_command_not_found(repo, sandbox):
    with pytest.raises(sb.SandboxError, match=r"^command not found: no-such-command-xyz\b"):
        run(["no-such-command-xyz", "--flag"], repo=repo, sandbox=sandbox)
    with pytest.raises(sb.SandboxError, match=r"^command not found: \./missing\.sh"):
        run(["./missing.sh"], repo=repo, sandbox=sandbox)
    # a command on the step's PATH is found there, not on the worker's
    tools = repo / "tools"
    tools.mkdir()
    (tools / "hello-tool").write_text("#!/bin/sh\necho tool-ran\n")
    (tools / "hello-tool").chmod(0o755)
    result = run(["hello-tool"], env={"PATH": f"{tools}:/usr/bin:/bin"}, repo=repo, sandbox=sandbox)
    assert result.stdout == "tool-ran\n"
    with pytest.raises(sb.SandboxError, match="command not found: hello-tool"):
        run(["hello-tool"], repo=repo, sandbox=sandbox)


@needs_bwrap
def test_command_missing_inside_the_sandbox_only(tmp_path, repo):
    # on the host's /tmp: it exists for the worker but not in the sandbox's private /tmp
    outside = tmp_path / "outside-tool"
    if not str(outside).startswith("/tmp/"):
        pytest.skip("pytest's tmp_path is not under /tmp")
    outside.write_text("#!/bin/sh\necho outside\n")
    outside.chmod(0o755)
    assert run([str(outside)], repo=repo, sandbox=False).stdout == "outside\n"
    with pytest.raises(sb.SandboxError, match=f"^command not found: {outside}"):
        run([str(outside)], repo=repo)


def test_error_messages_never_contain_env_values(repo):
    secret = "sk-live-0123456789abcdef"
    with pytest.raises(sb.SandboxError) as info:
        run([secret], env={"API_KEY": secret}, repo=repo, sandbox=False)
    assert secret not in str(info.value) and str(info.value).startswith("command not found: ***")
    result = run(script='echo "bad key $API_KEY" >&2; exit 4', env={"API_KEY": secret}, repo=repo, sandbox=False)
    assert secret in result.stderr  # the raw stderr is the caller's to redact in logs
    message = sb.failure_message(result, redact={"API_KEY": secret}.values())
    assert secret not in message and "bad key ***" in message
    with pytest.raises(sb.SandboxError) as info:
        run(["true"], env={"API_KEY": 12345}, repo=repo, sandbox=False)
    assert "API_KEY" in str(info.value) and "12345" not in str(info.value)


@BOTH
def test_cwd(repo, sandbox):
    assert run(["pwd"], repo=repo, cwd="sub", sandbox=sandbox).stdout == f"{repo / 'sub'}\n"
    assert run(["pwd"], repo=repo, cwd=str(repo / "sub"), sandbox=sandbox).stdout == f"{repo / 'sub'}\n"
    (repo / "escape").symlink_to("/etc")
    for bad in ("..", "../..", "sub/../../", "/etc", "/", "escape"):
        with pytest.raises(sb.SandboxError, match="outside the repository"):
            run(["pwd"], repo=repo, cwd=bad, sandbox=sandbox)
    with pytest.raises(sb.SandboxError, match="not a folder"):
        run(["pwd"], repo=repo, cwd="no-such-dir", sandbox=sandbox)
    with pytest.raises(sb.SandboxError, match="repository"):
        run(["pwd"], repo=repo / "missing", sandbox=sandbox)


@BOTH
def test_timeout_kills_sleep(repo, sandbox):
    marker = _sleep_arg()
    started = time.monotonic()
    result = run(["sleep", marker], repo=repo, sandbox=sandbox, timeout=1)
    assert time.monotonic() - started < 15
    assert result.timed_out and not result.ok
    assert result.exit_code != 0
    assert "timed out" in sb.failure_message(result)
    assert _wait_until(lambda: not _pids_with(marker))


@BOTH
def test_timeout_kills_background_children_too(repo, sandbox):
    first, second = _sleep_arg(), _sleep_arg()
    started = time.monotonic()
    result = run(script=f"sleep {first} & sleep {second}", repo=repo, sandbox=sandbox, timeout=1)
    assert time.monotonic() - started < 15 and result.timed_out
    assert _wait_until(lambda: not _pids_with(first) and not _pids_with(second))


@BOTH
def test_background_children_do_not_outlive_the_command(repo, sandbox):
    marker = _sleep_arg()
    started = time.monotonic()
    result = run(script=f"sleep {marker} & echo started", repo=repo, sandbox=sandbox)
    assert time.monotonic() - started < 15
    assert result.stdout == "started\n" and not result.timed_out
    assert _wait_until(lambda: not _pids_with(marker))


@BOTH
def test_cancellation_kills_and_reaps_the_process(repo, sandbox):
    marker = _sleep_arg()

    async def main():
        task = asyncio.create_task(sb.run_command(["sleep", marker], repo=repo, sandbox=sandbox))
        assert await asyncio.to_thread(_wait_until, lambda: _sleeping(marker))
        pids = set(_pids_with(marker))
        if sandbox:  # bwrap too: its command line holds the sleep's argv after --
            assert len(pids) >= 2
        task.cancel()
        started = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 15
        return pids

    pids = asyncio.run(main())
    # killed, and reaped (a zombie would still be in /proc)
    assert _wait_until(lambda: all(_gone(pid) for pid in pids)), [
        open(f"/proc/{p}/stat").read() for p in pids if not _gone(p)]


def test_missing_bwrap(repo, monkeypatch, tmp_path):
    monkeypatch.setattr(sb, "bwrap_path", lambda path=None: None)
    with pytest.raises(sb.SandboxError) as info:
        run(["echo", "hi"], repo=repo)
    message = str(info.value)
    assert "apt-get install bubblewrap" in message and "dnf install bubblewrap" in message
    assert "sandbox: false" in message
    result = run(["echo", "hi"], repo=repo, sandbox=False)
    assert (result.stdout, result.sandboxed) == ("hi\n", False)

    # the same with a worker PATH that has no bwrap on it
    monkeypatch.undo()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert sb.bwrap_path() is None
    with pytest.raises(sb.SandboxError, match="apt-get install bubblewrap"):
        run(["/bin/echo", "hi"], repo=repo)
    result = run(["echo", "hi"], env={"PATH": "/usr/bin:/bin"}, repo=repo, sandbox=False)
    assert (result.stdout, result.sandboxed) == ("hi\n", False)


@BOTH
def test_output_is_bounded(repo, sandbox):
    full = "".join(f"{i}\n" for i in range(1, 100_001))
    result = run(script="seq 1 100000; seq 1 100000 >&2", repo=repo, sandbox=sandbox, max_output_bytes=1000)
    assert result.exit_code == 0 and result.truncated
    assert result.stdout == full[:1000]  # the first bytes of stdout
    assert result.stderr == full[-1000:]  # the last bytes of stderr
    small = run(script="seq 1 100000", repo=repo, sandbox=sandbox)
    assert small.stdout == full and not small.truncated


@BOTH
def test_output_is_decoded_as_utf8_with_replacement(repo, sandbox):
    result = run(script=r"printf 'caf\303\251 \377\n'", repo=repo, sandbox=sandbox)
    assert result.stdout == "café \ufffd\n"
    # a cut in the middle of a character leaves no replacement character
    cut = run(script=r"printf '\303\251\303\251\303\251'", repo=repo, sandbox=sandbox, max_output_bytes=3)
    assert (cut.stdout, cut.truncated) == ("é", True)


def test_hidden_folders_get_an_empty_tmpfs_before_the_repository(tmp_path):
    outer = Path(tempfile.mkdtemp(dir="/var/tmp"))  # outside /tmp, which is private anyway
    try:
        repo, home = outer / "repo", tmp_path / "home"
        repo.mkdir()
        argv = sb.sandbox_argv(["true"], repo=repo, home=home, env={},
                               hide=[str(outer), str(outer / "repo"), "/", "/tmp/x", str(outer / "missing")])
        hidden = [argv[i + 1] for i, a in enumerate(argv) if a == "--tmpfs"]
        assert hidden[-1] == str(outer) and "/" not in hidden and "/tmp/x" not in hidden
        assert hidden.count(str(outer)) == 1 and str(outer / "repo") not in hidden  # the outermost only
        # the repository is bound after the tmpfs over the folder that holds it
        assert argv.index(str(outer)) < argv.index("--ro-bind", argv.index(str(outer))) < argv.index(str(repo))
    finally:
        shutil.rmtree(outer)


@needs_bwrap
def test_hidden_folders_are_empty_in_the_sandbox_and_a_repository_inside_stays_visible():
    outer = Path(tempfile.mkdtemp(dir="/var/tmp"))
    try:
        (outer / "keys.txt").write_text("secret material")
        repo = outer / "repo"
        repo.mkdir()
        (repo / "code.py").write_text("x = 1\n")
        result = asyncio.run(sb.run_command(["sh", "-c", f"ls -A {outer}; cat code.py"], repo=repo,
                                            hide=[str(outer)]))
        assert result.ok, result.stderr
        assert result.stdout == "repo\nx = 1\n"  # keys.txt is hidden, the repository is there
    finally:
        shutil.rmtree(outer)
