"""The Dagger engine double (tests/fakes/dagger_engine.py), driven by the real dagger-io SDK.

The SDK finds the double through DAGGER_SESSION_PORT / DAGGER_SESSION_TOKEN, exactly as it
finds a session opened by ``dagger run``; nothing in the SDK is patched.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import dagger
import pytest

from tests.fakes.dagger_engine import DaggerEngineFake

REPO = Path(__file__).resolve().parents[2]
IMAGE = "python:3.12-slim"
SECRET = "s3cr3t-Value-8841"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="withExec runs commands under bubblewrap (bwrap), which is not installed")


@pytest.fixture
def engine(monkeypatch, tmp_path):
    with DaggerEngineFake(pull_fail={"bad:image"}, host_workdir=tmp_path) as fake:
        for name, value in fake.env.items():
            monkeypatch.setenv(name, value)
        yield fake


def run(fn, config: dagger.Config | None = None):
    """Open an isolated SDK connection, return ``await fn(client)``."""
    async def main():
        async with dagger.Connection(config or dagger.Config()) as client:
            return await fn(client)
    return asyncio.run(main())


def py(client, code: str, **kw):
    return client.container().from_(IMAGE).with_exec(["python", "-c", code], **kw)


# ---- commands, output, exit codes --------------------------------------------------------

@needs_bwrap
def test_python_runs_and_stdout_is_read(engine):
    assert run(lambda c: py(c, "print(1+1)").stdout()) == "2\n"
    [ex] = engine.execs
    assert ex["argv"] == ["python", "-c", "print(1+1)"] and ex["image"] == IMAGE and ex["exit_code"] == 0


@needs_bwrap
def test_dagger_connection_global_client(engine):
    async def main():
        async with dagger.connection(dagger.Config()):
            return await dagger.dag.container().from_(IMAGE).with_exec(["sh", "-c", "echo hi >&2"]).stderr()
    assert asyncio.run(main()) == "hi\n"


@needs_bwrap
def test_nonzero_exit_raises_exec_error(engine):
    code = "import sys; print('partial'); sys.stderr.write('boom: bad input\\n'); sys.exit(3)"
    with pytest.raises(dagger.ExecError) as err:
        run(lambda c: py(c, code).sync())
    e = err.value
    assert (e.exit_code, e.stdout, e.stderr) == (3, "partial", "boom: bad input")
    assert e.command == ["python", "-c", code]
    assert "did not complete successfully: exit code: 3" in str(e)


@needs_bwrap
def test_expect_any_returns_the_exit_code_and_runs_once(engine):
    async def go(c):
        ctr = c.container().from_(IMAGE).with_exec(["sh", "-c", "echo out; echo err >&2; exit 7"],
                                                   expect=dagger.ReturnType.ANY)
        return await ctr.exit_code(), await ctr.stdout(), await ctr.stderr()
    assert run(go) == (7, "out\n", "err\n")
    assert len(engine.execs) == 1  # three queries, one run: the engine caches the exec


@needs_bwrap
def test_command_not_found_is_an_exec_error(engine):
    with pytest.raises(dagger.ExecError) as err:
        run(lambda c: c.container().from_(IMAGE).with_exec(["no-such-tool", "--version"]).stdout())
    assert err.value.exit_code == 1
    assert err.value.stderr == 'exec: "no-such-tool": executable file not found in $PATH'


@needs_bwrap
def test_pull_failure_is_a_query_error(engine):
    with pytest.raises(dagger.QueryError) as err:
        run(lambda c: c.container().from_("bad:image").with_exec(["true"]).sync())
    assert not isinstance(err.value, dagger.ExecError)
    assert "docker.io/library/bad:image" in str(err.value) and "pull access denied" in str(err.value)
    assert engine.execs == []


# ---- environment and secrets --------------------------------------------------------------

@needs_bwrap
def test_env_and_secret_variables_reach_the_process(engine):
    digest = hashlib.sha256(SECRET.encode()).hexdigest()  # the command must not contain the secret itself
    code = ("import hashlib, os; tok = os.environ['API_TOKEN']\n"
            f"print(os.environ['GREETING'], hashlib.sha256(tok.encode()).hexdigest() == {digest!r}, len(tok))\n"
            "print('leak:', tok)")

    async def go(c):
        ctr = (c.container().from_(IMAGE).with_env_variable("GREETING", "hello")
               .with_secret_variable("API_TOKEN", c.set_secret("api-token", SECRET))
               .with_exec(["python", "-c", code]))
        return await ctr.stdout()

    assert run(go) == f"hello True {len(SECRET)}\nleak: ***\n"  # printed secrets are scrubbed
    [ex] = engine.execs
    assert ex["env"] == ["API_TOKEN", "GREETING"] and ex["secret_env"] == ["API_TOKEN"]
    # the plaintext went over the wire once (setSecret); the log keeps it masked
    assert any('setSecret(name: "api-token", plaintext: "***")' in (r["query"] or "") for r in engine.requests)
    assert SECRET not in json.dumps(engine.requests) and SECRET not in json.dumps(engine.execs)


# ---- filesystem --------------------------------------------------------------------------

@needs_bwrap
def test_mounted_host_folder_is_readable_read_only_and_filtered(engine, tmp_path):
    src = tmp_path / "repo"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "mod.py").write_text("VALUE = 42\n")
    (src / ".venv").mkdir()
    (src / ".venv" / "big").write_text("x")
    code = ("import os, sys; sys.path.insert(0, '/src'); from pkg.mod import VALUE; print(VALUE, os.getcwd(),"
            " os.path.exists('/src/.venv'))\n"
            "try:\n    open('/src/new.txt', 'w')\nexcept OSError as e:\n    print(e.strerror)")

    async def go(c):
        repo = c.host().directory(str(src), exclude=[".venv"])
        return await (c.container().from_(IMAGE).with_mounted_directory("/src", repo).with_workdir("/src")
                      .with_exec(["python", "-c", code]).stdout())

    assert run(go) == "42 /src False\nRead-only file system\n"
    assert not (src / "new.txt").exists()
    [ex] = engine.execs
    assert ex["mounts"] == [{"path": "/src", "type": "directory", "source": str(src), "read_only": True}]


@needs_bwrap
def test_host_paths_tmp_and_network_are_private(engine, tmp_path):
    marker = tmp_path / "host-only.txt"
    marker.write_text("host")
    scratch = f"/tmp/scratch-{uuid.uuid4().hex}"
    code = (f"import os, socket; print(os.path.exists({str(marker)!r}), os.path.exists('/work'))\n"
            f"open({scratch!r}, 'w').write('mine')\n"
            f"try:\n    socket.create_connection(('127.0.0.1', {engine.port}), timeout=2)\n"
            "    print('network')\nexcept OSError:\n    print('no network')")

    async def go(c):
        ctr = py(c, code)
        return await ctr.stdout(), await ctr.file(scratch).contents()

    assert run(go) == ("False False\nno network\n", "mine")  # the container's /tmp, not the host's
    assert not Path(scratch).exists()


@needs_bwrap
def test_files_persist_across_execs_and_are_exported(engine, tmp_path):
    async def go(c):
        ctr = (c.container().from_(IMAGE).with_workdir("/work")
               .with_exec(["sh", "-c", "mkdir -p /out && echo draft > /out/report.txt"])
               .with_exec(["sh", "-c", "echo final >> /out/report.txt && pwd > where.txt"]))
        written = await ctr.file("/out/report.txt").export(str(tmp_path / "exported" / "report.txt"))
        return written, await ctr.file("where.txt").contents()

    written, where = run(go)
    assert Path(written) == tmp_path / "exported" / "report.txt"
    assert Path(written).read_text() == "draft\nfinal\n"
    assert where == "/work\n"


@needs_bwrap
def test_missing_file_is_a_query_error(engine):
    with pytest.raises(dagger.QueryError, match="no such file"):
        run(lambda c: py(c, "pass").file("/out/never-written.txt").contents())


@needs_bwrap
def test_cache_volume_persists_between_containers(engine):
    async def go(c):
        cache = c.cache_volume("pip-cache")
        base = c.container().from_(IMAGE).with_mounted_cache("/root/.cache/pip", cache)
        await base.with_exec(["sh", "-c", "echo wheel > /root/.cache/pip/seen"]).sync()
        again = await base.with_exec(["cat", "/root/.cache/pip/seen"]).stdout()
        other = await (c.container().from_(IMAGE).with_mounted_cache("/c", c.cache_volume("other"))
                       .with_exec(["ls", "-A", "/c"]).stdout())
        return again, other

    assert run(go) == ("wheel\n", "")
    assert [ex["mounts"][0]["source"] for ex in engine.execs] == ["pip-cache", "pip-cache", "other"]


# ---- the wire: token, lost engine, subprocess mode ---------------------------------------------

def test_wrong_token_is_an_authentication_error(engine, monkeypatch):
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "not-the-token")
    with pytest.raises(dagger.ClientConnectionError, match="401 Unauthorized"):
        run(lambda c: c.version())
    assert [r["status"] for r in engine.requests] == [401]


@needs_bwrap
def test_dropped_connection_is_a_transport_error(engine):
    async def go(c):
        engine.fail_next(1, "drop")
        with pytest.raises(dagger.TransportError, match="disconnected"):
            await py(c, "print('lost')").stdout()
        return await py(c, "print('back')").stdout()  # the engine answers again

    assert run(go, dagger.Config(retry=dagger.Retry(execute=False))) == "back\n"
    dropped, answered = engine.requests[2:]
    assert dropped["status"] == "drop" and "print('lost')" in dropped["query"] and answered["status"] == 200
    assert [ex["argv"][-1] for ex in engine.execs] == ["print('back')"]  # the lost request ran nothing


@needs_bwrap
def test_default_retry_absorbs_one_dropped_connection(engine):
    async def go(c):
        engine.fail_next(1, "drop")
        return await py(c, "print('ok')").stdout()

    assert run(go) == "ok\n"
    assert [r["status"] for r in engine.requests][2:] == ["drop", 200]
    assert len(engine.execs) == 1


def test_engine_lost_before_the_schema_is_a_connection_error(engine):
    engine.fail_next(1, "drop")
    with pytest.raises(dagger.ClientConnectionError, match="disconnected"):
        run(lambda c: c.version())


def test_subprocess_mode(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "tests.fakes.dagger_engine", "--port", "0",
                             "--state-dir", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        word, url, token = proc.stdout.readline().split()
        assert word == "READY" and url.startswith("http://127.0.0.1:")

        def query(auth: str | None):
            headers = {"content-type": "application/json"}
            if auth is not None:
                headers["authorization"] = "Basic " + base64.b64encode(f"{auth}:".encode()).decode()
            req = urllib.request.Request(url + "/query", data=json.dumps({"query": "{version}"}).encode(),
                                         headers=headers, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, e.headers.get("www-authenticate")

        assert query(token) == (200, {"data": {"version": "v0.21.11"}})
        assert query("wrong") == (401, 'Basic realm="Access to the Dagger engine session"')
        assert query(None)[0] == 401
    finally:
        proc.terminate()
        proc.wait(10)
