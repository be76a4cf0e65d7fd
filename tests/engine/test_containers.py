"""Container steps (the real dagger-io SDK against the Dagger engine double) and command
steps (real bubblewrap), end to end: real Prefect runs, the ledger, the report, the logs."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from ledger import queries
from tests.engine.test_engine import logs_once, run, wait_for_task_runs
from tests.fakes.dagger_cli import SESSION_LOG, STARTED_LINE, write_cli
from tests.fakes.dagger_engine import DaggerEngineFake

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "python:3.12-slim"
needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")
pytestmark = needs_bwrap
ENGINE_VARS = ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN",
               "_EXPERIMENTAL_DAGGER_RUNNER_HOST", "ORCHESTRA_DAGGER_BLOCK")
NO_DAGGER_PATH = f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"  # our venv (ruff), no dagger


@pytest.fixture
def no_engine(monkeypatch):
    for name in ENGINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", NO_DAGGER_PATH)
    assert shutil.which("dagger") is None


@pytest.fixture
def engine(no_engine, monkeypatch, tmp_path):
    with DaggerEngineFake(pull_fail={"bad/image:1"}, host_workdir=tmp_path) as fake:
        for name, value in fake.env.items():
            monkeypatch.setenv(name, value)
        yield fake


@pytest.fixture
def project(tmp_path, monkeypatch):
    """An inline workflow's repository is the working directory: a small project in tmp_path."""
    src = tmp_path / "proj"
    src.mkdir()
    (src / "data.txt").write_text("hello from the repository\n")
    monkeypatch.chdir(src)
    return src


def container_step(step_id="c", **container) -> dict:
    spec = {"image": IMAGE, "run": ["python", "-c", "print('hi')"], **container}
    if "script" in container:
        spec.pop("run")
    return {"id": step_id, "container": spec}


def workflow(*steps, name="containers") -> dict:
    return {"name": name, "steps": list(steps)}


def calls(store, flow_run_id):
    store.flush()
    return queries.run(store, flow_run_id)["calls"]


def task_run_logs(flow_run_id: str, step: str, needle: str, timeout: float = 20.0) -> list[str]:
    """The messages of the task run of ``step``, once one of them contains ``needle``."""
    from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId

    [task] = [t for t in wait_for_task_runs(flow_run_id, 1) if t.name == step]
    return logs_once(LogFilter(task_run_id=LogFilterTaskRunId(any_=[task.id])), needle, timeout)


def flow_artifact(flow_run_id: str) -> list[dict]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))

    [artifact] = asyncio.run(read())
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else data


# ---------------------------------------------------------------------------
# the shipped example


def test_ci_review_runs_offline_with_the_engine_double(orchestra_env, engine):
    report, _ = run("ci-review")
    assert report["state"] == "COMPLETED", report
    tests, lint, explain = (report["steps"][s] for s in ("tests", "lint", "explain"))

    assert tests["kind"] == "container" and tests["image"] == IMAGE and tests["exit_code"] == 1
    assert "FAIL: test_mean" in tests["output"] and "AssertionError: 1.0 != 2" in tests["output"]
    [exported] = tests["files"]
    assert exported == str(orchestra_env_home() / "runs" / report["flow_run_id"] / "tests" / "out" / "tests.txt")
    assert Path(exported).read_text() == tests["output"]
    assert lint["kind"] == "command" and lint["exit_code"] == 1 and lint["sandboxed"] is True
    assert "calc.py:7:8: F401" in lint["output"]
    assert "The tests exited with code 1" in explain["output"] and "F401" in explain["output"]

    [ex] = engine.execs  # the sample project, mounted read-only, at the workdir
    assert ex["workdir"] == "/src" and ex["mounts"] == [{"path": "/src", "type": "directory", "read_only": True,
                                                        "source": str(ROOT / "deployments/examples/ci-sample")}]

    rows = {c["step"]: c for c in calls(orchestra_env, report["flow_run_id"])}
    assert (rows["tests"]["kind"], rows["tests"]["image"], rows["tests"]["exit_code"], rows["tests"]["provider"],
            rows["tests"]["cost_usd"], rows["tests"]["priced"], rows["tests"]["status"]) == (
        "container", IMAGE, 1, "dagger", 0.0, True, "ok")
    assert (rows["lint"]["kind"], rows["lint"]["image"], rows["lint"]["exit_code"]) == ("command", None, 1)
    assert rows["tests"]["latency_ms"] > 0 and rows["lint"]["latency_ms"] > 0
    assert rows["explain"]["kind"] == "agent" and rows["explain"]["exit_code"] is None

    artifact = {r["step"]: r for r in flow_artifact(report["flow_run_id"])}
    assert (artifact["tests"]["kind"], artifact["tests"]["image"], artifact["tests"]["exit_code"]) == (
        "container", IMAGE, "1")
    assert (artifact["lint"]["kind"], artifact["lint"]["exit_code"], artifact["lint"]["cost_usd"]) == (
        "command", "1", 0.0)

    from dashboard import data as dd

    detail = dd.run_detail(orchestra_env, report["flow_run_id"])
    steps = {s["step"]: s for s in detail["steps"]}
    assert (steps["tests"]["kind"], steps["tests"]["image"], steps["tests"]["exit_code"]) == ("container", IMAGE, 1)
    assert (steps["lint"]["kind"], steps["lint"]["exit_code"]) == ("command", 1)
    assert {c["step"]: (c["kind"], c["exit_code"]) for c in detail["calls"]}["tests"] == ("container", 1)


def orchestra_env_home() -> Path:
    from core.settings import settings

    return settings().home


def test_the_report_shows_kind_image_and_exit_code(orchestra_env, engine):
    from rich.console import Console

    from orchestra.cli import run as cli_run

    report, _ = run(workflow(container_step("tests", script="echo out; exit 4"), name="report"))
    assert report["steps"]["tests"]["state"] == "FAILED" and report["steps"]["tests"]["exit_code"] == 4
    console = Console(record=True, width=80)
    cli_run.out, saved = console, cli_run.out
    cli_run.err, saved_err = console, cli_run.err
    try:
        cli_run.print_report(report)
    finally:
        cli_run.out, cli_run.err = saved, saved_err
    text = console.export_text()
    assert "container" in text and IMAGE in text and "exit" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("tests"))
    assert "FAILED" in row and " 4 " in row
    assert "command failed with exit code 4" in text


# ---------------------------------------------------------------------------
# no engine, a lost engine, a hung engine, a breaker


def test_no_engine_fails_at_once_saying_what_to_set_or_install(orchestra_env, no_engine, tmp_path):
    home = Path.home() / ".cache" / "dagger"
    before = set(home.iterdir()) if home.exists() else set()
    report, _ = run(workflow(container_step(), {"id": "after", "depends_on": ["c"], "prompt": "x"}))
    step = report["steps"]["c"]
    assert step["state"] == "FAILED" and report["steps"]["after"]["state"] == "NOT_READY"
    for needle in ("no Dagger engine is configured", "dagger run orchestra run", "DAGGER_SESSION_PORT",
                   "ORCHESTRA_DAGGER_BLOCK", "_EXPERIMENTAL_DAGGER_CLI_BIN", "install the dagger CLI"):
        assert needle in step["error"]
    assert step["attempts"] == 1  # not transient: no retry
    assert step["duration_s"] < 5  # a generous bound on a hang, not a speed measurement
    assert (set(home.iterdir()) if home.exists() else set()) == before  # the SDK downloaded no CLI
    [row] = calls(orchestra_env, report["flow_run_id"])
    assert (row["kind"], row["status"], row["exit_code"]) == ("container", "error", None)


def test_a_dropped_connection_is_retried_and_the_command_runs_once(orchestra_env, engine):
    engine.fail_next(1, "drop")  # the SDK's first request (the schema) of the run's connection
    report, _ = run(workflow({**container_step(run=["python", "-c", "print('ran')"]), "retries": 2}))
    step = report["steps"]["c"]
    assert step["state"] == "COMPLETED" and step["output"] == "ran\n" and step["attempts"] == 2
    assert [c["status"] for c in calls(orchestra_env, report["flow_run_id"])] == ["error", "ok"]
    assert "cannot connect to the Dagger engine" in calls(orchestra_env, report["flow_run_id"])[0]["error"]
    assert len(engine.execs) == 1


def test_an_image_pull_failure_is_transient_then_fails_naming_the_image(orchestra_env, engine):
    report, _ = run(workflow({**container_step(image="bad/image:1"), "retries": 1}))
    step = report["steps"]["c"]
    assert step["state"] == "FAILED" and step["attempts"] == 2
    assert "image bad/image:1: cannot pull it" in step["error"] and "pull access denied" in step["error"]
    assert engine.execs == []


def test_an_engine_that_never_answers_fails_the_step_within_the_connect_timeout(orchestra_env, engine, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_DAGGER_CONNECT_TIMEOUT", "1")
    engine.slow_seconds = 60
    engine.fail_next(1, "timeout")
    report, _ = run(workflow({**container_step(), "retries": 0}))
    step = report["steps"]["c"]
    assert step["state"] == "FAILED"
    assert "did not answer within 1 s (ORCHESTRA_DAGGER_CONNECT_TIMEOUT)" in step["error"]
    assert step["duration_s"] < 30  # a bound on a hang: the engine would keep it 60 s


def test_engine_failures_open_the_engine_breaker(orchestra_env, no_engine, monkeypatch):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("DAGGER_SESSION_PORT", str(port))
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "tok-unused-here")
    monkeypatch.setenv("ORCHESTRA_BREAKER_THRESHOLD", "2")
    monkeypatch.setenv("ORCHESTRA_BREAKER_COOLDOWN", "600")
    first, _ = run(workflow({**container_step(), "retries": 1}))
    assert first["steps"]["c"]["state"] == "FAILED" and first["steps"]["c"]["attempts"] == 2
    assert "cannot connect to the Dagger engine (session 127.0.0.1:" in first["steps"]["c"]["error"]
    second, _ = run(workflow({**container_step(), "retries": 0}))
    assert "circuit breaker of the Dagger engine (session 127.0.0.1:" in second["steps"]["c"]["error"]
    [breaker] = [b for b in queries.breakers(orchestra_env) if b["provider"] == "dagger"]
    assert breaker["key"] == f"dagger @ session 127.0.0.1:{port}" and breaker["state"] == "open"


# ---------------------------------------------------------------------------
# one connection per run; the CLI's log in the step's Prefect logs; a DaggerEngine block


def test_one_session_per_run_shared_by_its_container_steps_and_closed_at_the_end(orchestra_env, no_engine,
                                                                                 tmp_path, monkeypatch):
    sessions = tmp_path / "sessions.log"
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_CLI_BIN", str(write_cli(tmp_path)))
    monkeypatch.setenv(SESSION_LOG, str(sessions))
    wf = workflow(container_step("a", run=["python", "-c", "print('a')"]),
                  container_step("b", run=["python", "-c", "print('b')"]),
                  {**container_step("c", script="echo c-{{ steps.a.exit_code }}"), "depends_on": ["a", "b"]})
    report, _ = run(wf)
    assert report["state"] == "COMPLETED", report
    assert report["steps"]["c"]["output"] == "c-0\n"
    events = [line.split()[0] for line in sessions.read_text().splitlines()]
    assert events == ["start", "stop"]  # one session for three steps, closed when the run ended

    logs = task_run_logs(report["flow_run_id"], "a", STARTED_LINE)
    assert any(m.startswith("dagger: " + STARTED_LINE) for m in logs), logs  # the CLI's own log line
    assert any(m.startswith(f"container {IMAGE} on the Dagger engine") for m in logs), logs
    assert any("exited with code 0" in m for m in logs), logs


def test_dagger_on_path_is_used(orchestra_env, no_engine, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_cli(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{NO_DAGGER_PATH}")
    report, _ = run(workflow(container_step()))
    assert report["steps"]["c"]["state"] == "COMPLETED" and report["steps"]["c"]["output"] == "hi\n"


def test_a_dagger_engine_block_names_the_session(orchestra_env, no_engine, monkeypatch, tmp_path):
    from blocks import DaggerEngine

    with DaggerEngineFake(host_workdir=tmp_path) as fake:
        DaggerEngine(session_port=fake.port, session_token=fake.token).save("test-engine", overwrite=True)
        monkeypatch.setenv("ORCHESTRA_DAGGER_BLOCK", "test-engine")
        report, _ = run(workflow(container_step()))
        assert report["steps"]["c"]["output"] == "hi\n"
        assert len(fake.execs) == 1
    assert "DAGGER_SESSION_TOKEN" not in os.environ  # the block's token was there only while connecting
    monkeypatch.setenv("ORCHESTRA_DAGGER_BLOCK", "no-such-engine")
    report, _ = run(workflow(container_step(run=["true"])))
    assert "DaggerEngine block 'no-such-engine' (ORCHESTRA_DAGGER_BLOCK): cannot load it" in \
        report["steps"]["c"]["error"]


# ---------------------------------------------------------------------------
# exits, outputs, templates, mounts, caches


def test_a_non_zero_exit_fails_with_the_code_and_the_last_20_stderr_lines(orchestra_env, engine):
    script = "for i in $(seq 1 30); do echo line-$i >&2; done; echo partial; exit 3"
    report, _ = run(workflow(container_step(script=script), {"id": "after", "depends_on": ["c"], "prompt": "x"}))
    step = report["steps"]["c"]
    assert step["state"] == "FAILED" and step["exit_code"] == 3 and step["attempts"] == 1
    assert "command failed with exit code 3; last 20 lines of stderr:" in step["error"]
    assert "line-11" in step["error"] and "line-30" in step["error"] and "line-10\n" not in step["error"] + "\n"
    assert report["steps"]["after"]["state"] == "NOT_READY"
    [row] = calls(orchestra_env, report["flow_run_id"])
    assert (row["status"], row["exit_code"]) == ("error", 3)


def test_allow_failure_completes_and_downstream_reads_exit_code_and_files(orchestra_env, engine, project):
    wf = workflow({**container_step(script="mkdir -p /out && cat /src/data.txt > /out/copy.txt && exit 5",
                                    mounts={".": "/src"}, outputs=["/out/copy.txt"]), "allow_failure": True},
                  {**container_step("next", script="echo code={{ steps.c.exit_code }} n={{ steps.c.files | length }}"),
                   "depends_on": ["c"]})
    report, _ = run(wf)
    step = report["steps"]["c"]
    assert step["state"] == "COMPLETED" and step["exit_code"] == 5
    assert Path(step["files"][0]).read_text() == "hello from the repository\n"
    assert report["steps"]["next"]["output"] == "code=5 n=1\n"


def test_a_command_missing_from_the_image_fails_the_step(orchestra_env, engine):
    report, _ = run(workflow(container_step(run=["no-such-tool-xyz", "--version"])))
    step = report["steps"]["c"]
    assert step["state"] == "FAILED" and step["exit_code"] == 1 and step["attempts"] == 1
    assert 'exec: "no-such-tool-xyz": executable file not found in $PATH' in step["error"]


def test_the_step_timeout_stops_a_container_and_a_command(orchestra_env, engine, project):
    wf = workflow({**container_step(script="sleep 20"), "timeout": 1, "retries": 0},
                  {"id": "cmd", "command": {"run": ["sleep", "20"]}, "timeout": 1, "retries": 0})
    report, _ = run(wf)
    assert "container timed out after 1 s" in report["steps"]["c"]["error"]
    assert "command timed out after" in report["steps"]["cmd"]["error"]
    assert report["steps"]["c"]["duration_s"] < 15 and report["steps"]["cmd"]["duration_s"] < 15  # hang bounds


def test_a_missing_output_file_fails_the_step(orchestra_env, engine):
    report, _ = run(workflow(container_step(outputs=["/out/never.txt"])))
    assert report["steps"]["c"]["state"] == "FAILED"
    assert "container.outputs: /out/never.txt: cannot export it" in report["steps"]["c"]["error"]


def test_output_schema_parses_stdout_as_json(orchestra_env, engine):
    ok = {**container_step(run=["python", "-c", "import json; print(json.dumps({'n': 3}))"]),
          "output_schema": {"type": "object", "required": ["n"]}}
    bad = {**container_step("bad", run=["python", "-c", "print('not json')"]), "output_schema": {"type": "object"}}
    report, _ = run(workflow(ok, bad))
    assert report["steps"]["c"]["output"] == {"n": 3}
    assert "stdout does not match output_schema: not JSON" in report["steps"]["bad"]["error"]


def test_for_each_runs_one_container_per_item(orchestra_env, engine):
    wf = {"name": "each", "inputs": {"xs": {"type": "array", "default": ["a", "b"]}},
          "steps": [{**container_step(script="echo {{ item }}-{{ index }}; exit {{ index }}"),
                     "for_each": "inputs.xs", "allow_failure": True}]}
    report, _ = run(wf)
    step = report["steps"]["c"]
    assert step["output"] == ["a-0\n", "b-1\n"] and step["exit_code"] == [0, 1]


def test_env_templates_caches_and_workdir(orchestra_env, engine):
    wf = {"name": "envs", "inputs": {"who": {"type": "string", "default": "Ada"}},
          "steps": [container_step(script="echo $GREETING; pwd; echo x >> /cache/seen; wc -l < /cache/seen",
                                   env={"GREETING": "hello {{ inputs.who }}"}, workdir="/work/here",
                                   cache={"seen": "/cache"})]}
    report, _ = run(wf)
    assert report["steps"]["c"]["output"] == "hello Ada\n/work/here\n1\n"
    again, _ = run(wf, {"who": "Bob"})  # another command (env), the same cache volume
    assert again["steps"]["c"]["output"] == "hello Bob\n/work/here\n2\n"


def test_the_cache_key_follows_the_mounted_content(orchestra_env, engine, project):
    wf = workflow(container_step(run=["cat", "/src/data.txt"], mounts={".": "/src"}))
    first, _ = run(wf)
    second, _ = run(wf)
    assert second["steps"]["c"]["cached"] is True and second["steps"]["c"]["attempts"] == 0
    assert second["steps"]["c"]["output"] == first["steps"]["c"]["output"]
    assert len(engine.execs) == 1
    [hit] = calls(orchestra_env, second["flow_run_id"])
    assert (hit["cached"], hit["kind"], hit["image"], hit["cost_usd"]) == (True, "container", IMAGE, 0.0)
    (project / "data.txt").write_text("changed\n")
    third, _ = run(wf)
    assert third["steps"]["c"]["cached"] is False and third["steps"]["c"]["output"] == "changed\n"


def test_a_mount_through_a_symlink_out_of_the_repository_fails(orchestra_env, engine, project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (project / "escape").symlink_to(outside)
    report, _ = run(workflow(container_step(mounts={"escape": "/src"})))
    assert "container.mounts: mount 'escape' leaves the repository" in report["steps"]["c"]["error"]
    assert engine.execs == []


# ---------------------------------------------------------------------------
# secrets


SECRET = "hunter2-Secret-Value-77"  # its name does not look secret: only the step's own masking hides it
BLOCK_SECRET = "block-Secret-Value-4242"


def test_secrets_reach_the_container_and_never_a_message_log_artifact_or_row(orchestra_env, engine, monkeypatch):
    from prefect.blocks.system import Secret

    monkeypatch.setenv("DEPLOY_CREDENTIAL", SECRET)
    Secret(value=BLOCK_SECRET).save("registry-login", overwrite=True)
    code = ("import os, sys; a, b = os.environ['DEPLOY_CREDENTIAL'], os.environ['REGISTRY_LOGIN']\n"
            "print(len(a), len(b), 'leak:', a, b); sys.stderr.write('err: ' + a + ' ' + b + '\\n'); sys.exit(3)")
    wf = workflow(container_step(run=["python", "-c", code], secrets=["DEPLOY_CREDENTIAL", "REGISTRY_LOGIN"]),
                  {**container_step("ok", run=["python", "-c", code.replace("sys.exit(3)", "pass")],
                                    secrets=["DEPLOY_CREDENTIAL", "REGISTRY_LOGIN"])})
    report, _ = run(wf)
    failed, ok = report["steps"]["c"], report["steps"]["ok"]
    assert failed["state"] == "FAILED" and "err: *** ***" in failed["error"]
    assert ok["output"] == f"{len(SECRET)} {len(BLOCK_SECRET)} leak: *** ***\n"
    flow_run_id = report["flow_run_id"]
    seen = [json.dumps(report), json.dumps(calls(orchestra_env, flow_run_id)),
            json.dumps(queries.steps(orchestra_env, flow_run_id)),
            json.dumps(queries.dead_letters(orchestra_env, flow_run_id=flow_run_id)),
            json.dumps(flow_artifact(flow_run_id)), json.dumps(engine.requests), json.dumps(engine.execs),
            *task_run_logs(flow_run_id, "c", "stderr:")]
    assert any("err: *** ***" in text for text in seen[7:]), seen[7:]  # the log has the stderr, masked
    for text in seen:
        assert SECRET not in text and BLOCK_SECRET not in text
    [ex, _] = engine.execs
    assert ex["secret_env"] == ["DEPLOY_CREDENTIAL", "REGISTRY_LOGIN"]


def test_an_unknown_secret_fails_naming_it(orchestra_env, engine, monkeypatch):
    monkeypatch.delenv("NOPE_CREDENTIAL", raising=False)
    report, _ = run(workflow(container_step(secrets=["NOPE_CREDENTIAL"])))
    error = report["steps"]["c"]["error"]
    assert "unknown secret 'NOPE_CREDENTIAL'" in error and "Prefect Secret block 'nope-credential'" in error
    assert engine.execs == []


def test_the_cache_key_holds_secret_names_never_values():
    from flows.steps.container import ContainerKind

    params = {"image": IMAGE, "argv": ["true"], "env": {"A": "1"}, "secrets": ["TOKEN"], "workdir": None,
              "outputs": [], "cache": {}, "allow_failure": False, "output_schema": None, "mounts": []}
    key = ContainerKind().cache_key(params)
    assert key == ContainerKind().cache_key({**params})  # the key is computed from params only: no value
    assert key != ContainerKind().cache_key({**params, "env": {"A": "2"}})
    assert key != ContainerKind().cache_key({**params, "mounts": [["/x", "/src", "digest-1"]]})


# ---------------------------------------------------------------------------
# command steps


def test_a_command_step_is_sandboxed_and_reads_the_repository(orchestra_env, no_engine, project):
    script = "cat data.txt; touch new.txt 2>/dev/null || echo read-only; echo $HOME"
    report, _ = run(workflow({"id": "cmd", "command": {"script": script}}))
    step = report["steps"]["cmd"]
    assert step["state"] == "COMPLETED" and step["sandboxed"] is True and step["exit_code"] == 0
    assert step["output"] == "hello from the repository\nread-only\n/tmp/home\n"
    assert not (project / "new.txt").exists()
    [row] = calls(orchestra_env, report["flow_run_id"])
    assert (row["kind"], row["provider"], row["exit_code"], row["cost_usd"]) == ("command", "worker", 0, 0.0)


def test_command_not_found_and_a_non_zero_exit(orchestra_env, no_engine, project):
    wf = workflow({"id": "missing", "command": {"run": ["no-such-tool-xyz", "--version"]}},
                  {"id": "exits", "command": {"script": "echo oops >&2; exit 9"}})
    report, _ = run(wf)
    assert "command not found: no-such-tool-xyz" in report["steps"]["missing"]["error"]
    assert report["steps"]["missing"]["attempts"] == 1
    exits = report["steps"]["exits"]
    assert exits["exit_code"] == 9 and "command failed with exit code 9; last line of stderr:\noops" in exits["error"]


def test_sandbox_false_runs_plainly_and_the_log_says_so(orchestra_env, no_engine, project):
    report, _ = run(workflow({"id": "plain", "command": {"run": ["sh", "-c", "echo $HOME"], "sandbox": False}}))
    step = report["steps"]["plain"]
    assert step["state"] == "COMPLETED" and step["sandboxed"] is False
    logs = task_run_logs(report["flow_run_id"], "plain", "WITHOUT a sandbox")
    assert any("step plain runs WITHOUT a sandbox (sandbox: false)" in m for m in logs), logs


def test_without_bwrap_a_sandboxed_command_fails_saying_how_to_install_it(orchestra_env, no_engine, project,
                                                                          monkeypatch, tmp_path):
    bin_dir = tmp_path / "nobwrap"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to("/bin/sh")
    monkeypatch.setenv("PATH", str(bin_dir))
    report, _ = run(workflow({"id": "cmd", "command": {"run": ["sh", "-c", "true"]}}))
    error = report["steps"]["cmd"]["error"]
    assert "bubblewrap (bwrap) is not installed" in error and "apt-get install bubblewrap" in error
    assert "sandbox: false" in error


def test_command_env_values_never_reach_the_messages(orchestra_env, no_engine, project):
    wf = workflow({"id": "cmd", "command": {"script": "echo got $PASSPHRASE >&2; exit 2",
                                            "env": {"PASSPHRASE": SECRET}}})
    report, _ = run(wf)
    assert "got ***" in report["steps"]["cmd"]["error"]
    assert SECRET not in json.dumps(report) and SECRET not in json.dumps(calls(orchestra_env, report["flow_run_id"]))
