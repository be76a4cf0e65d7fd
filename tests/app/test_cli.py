"""The `orchestra` command as a user runs it: a subprocess, real Prefect, wire fakes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "deployments" / "workflows"
ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]
KEY = "sk-test-cli-secret-0123456789"


@pytest.fixture
def cli(tmp_path, prefect_api):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "PYTEST"))}
    env.update(ORCHESTRA_HOME=str(tmp_path), ORCHESTRA_DB_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
               PREFECT_API_URL=prefect_api, PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"))

    def run(*args: str, **extra_env: str) -> subprocess.CompletedProcess:
        return subprocess.run([*ORCHESTRA, *args], cwd=ROOT, env={**env, **extra_env}, capture_output=True,
                              text=True, timeout=180)

    return run


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_run_json_prints_exactly_the_documented_object(cli, openai_fake):
    code = uuid.uuid4().hex
    proc = cli("run", str(WORKFLOWS / "code-review.yaml"), "-i", f"code={code}", "--model", "openai:gpt-4.1-mini",
               "--json", OPENAI_BASE_URL=openai_fake.base_url, OPENAI_API_KEY=KEY)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)  # the whole of stdout is one JSON object
    assert set(report) == {"workflow", "flow_run_id", "state", "duration_s", "cost_usd", "input_tokens",
                           "output_tokens", "steps"}
    assert report["workflow"] == "code-review" and report["state"] == "COMPLETED"
    assert set(report["steps"]) == {"security", "correctness", "style", "summary"}
    step = report["steps"]["security"]
    assert {"state", "agent", "model", "output", "input_tokens", "output_tokens", "cost_usd", "attempts", "cached",
            "duration_s"} <= set(step)
    assert step["agent"] == "reviewer" and step["model"] == "openai:gpt-4.1-mini" and step["cached"] is False
    assert code in step["output"]
    assert report["input_tokens"] == sum(r["usage"]["input_tokens"] for r in openai_fake.requests)
    assert KEY not in proc.stdout + proc.stderr

    runs = json.loads(cli("runs", "--json").stdout)
    assert [(r["flow_run_id"], r["workflow"], r["state"]) for r in runs] == [
        (report["flow_run_id"], "code-review", "COMPLETED")]
    assert runs[0]["cost_usd"] == pytest.approx(report["cost_usd"]) and runs[0]["started"]
    for by in ("model", "agent", "workflow", "day"):
        rows = json.loads(cli("costs", "--by", by, "--json").stdout)
        assert len(rows) == 1 and {by, "calls", "input_tokens", "output_tokens", "cost_usd"} <= set(rows[0])
        assert rows[0]["cost_usd"] == pytest.approx(report["cost_usd"])
    assert json.loads(cli("costs", "--by", "model", "--json").stdout)[0]["model"] == "openai:gpt-4.1-mini"


def test_failed_run_exits_1_with_the_reason(cli, openai_fake):
    openai_fake.configure(faults=[401])
    proc = cli("run", str(WORKFLOWS / "hello.yaml"), "-i", f"name={uuid.uuid4().hex}", "--model",
               "openai:gpt-4.1-mini", OPENAI_BASE_URL=openai_fake.base_url, OPENAI_API_KEY=KEY)
    assert proc.returncode == 1
    assert "greet" in proc.stderr and "401" in proc.stderr
    assert "Traceback" not in proc.stderr and KEY not in proc.stdout + proc.stderr


@pytest.mark.parametrize("faults, retries", [([401], 0), ([500, 500], 1)], ids=["no retries", "retries exhausted"])
def test_a_step_that_fails_for_good_prints_no_traceback(cli, openai_fake, tmp_path, faults, retries):
    """Prefect logs a task run that failed with no retry left with its traceback: for a
    step's own error the one-line message is all the terminal shows."""
    openai_fake.configure(faults=faults)
    wf = tmp_path / "once.yaml"
    wf.write_text(f"name: once\nsteps:\n  - {{id: only, prompt: {uuid.uuid4().hex}, retries: {retries}}}\n")
    proc = cli("run", str(wf), "--model", "openai:gpt-4.1-mini", OPENAI_BASE_URL=openai_fake.base_url,
               OPENAI_API_KEY=KEY)
    assert proc.returncode == 1 and "step 'only'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "NoneType: None" not in proc.stderr
    assert openai_fake.request_count == retries + 1


def test_offline_default_run_json(cli):
    proc = cli("run", str(WORKFLOWS / "hello.yaml"), "-i", "name=Ada", "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["steps"]["greet"]["model"] == "fast-agent:passthrough"
    assert "Ada" in report["steps"]["greet"]["output"] and report["cost_usd"] == 0


@pytest.mark.parametrize("content, needles", [
    ("name: x\nsteps: [\n", ["invalid YAML", "line"]),
    ("name: x\nsteps:\n  - {id: a, prompt: hi, depends_on: [b]}\n  - {id: b, prompt: hi, depends_on: [a]}\n",
     ["cycle between steps", "a", "b"]),
    ("name: x\nsteps:\n  - {id: a, prompt: '{{ steps.nope.output }}'}\n", ["step 'a'", "unknown step 'nope'"]),
    ("name: x\nsteps:\n  - {id: a, agent: ghost, prompt: hi}\n", ["step 'a'", "unknown agent 'ghost'"]),
    ("name: x\nagents: {r: {model: 'gpt-4o'}}\nsteps:\n  - {id: a, agent: r, prompt: hi}\n", ["agent 'r'", "invalid model"]),
    ("name: x\nmcp_servers: {web: {url: 'http://h/mcp', headers: {A: '{{ token }}'}}}\n"
     "agents: {r: {servers: [web, search]}}\nsteps:\n  - {id: a, agent: r, prompt: hi}\n",
     ["agent 'r'", "unknown MCP server 'search'", "server 'web': headers.A: unknown name 'token'"]),
])
def test_invalid_workflow_exits_2_and_writes_nothing(cli, tmp_path, content, needles):
    path = tmp_path / "wf.yaml"
    path.write_text(content)
    for command in ("run", "validate", "graph"):
        proc = cli(command, str(path))
        assert_clean_error(proc, 2, str(path), *needles)
    assert json.loads(cli("runs", "--json").stdout) == []


def test_bad_inputs_and_model_exit_2(cli):
    hello = str(WORKFLOWS / "hello.yaml")
    assert_clean_error(cli("run", hello, "-i", "nope=1"), 2, "unknown input 'nope'")
    assert_clean_error(cli("run", hello, "-i", "novalue"), 2, "expected key=value")
    assert_clean_error(cli("run", hello, "--model", "gpt-4o"), 2, "--model", "invalid model")
    assert_clean_error(cli("run", str(ROOT / "missing.yaml")), 2, "no such file")
    assert_clean_error(cli("costs", "--by", "planet"), 2, "--by")
    assert json.loads(cli("runs", "--json").stdout) == []


def test_validate_and_graph(cli):
    proc = cli("validate", str(WORKFLOWS / "code-review.yaml"))
    assert proc.returncode == 0 and "ok" in proc.stdout
    proc = cli("graph", str(WORKFLOWS / "code-review.yaml"))
    assert proc.returncode == 0
    assert proc.stdout.startswith("flowchart TD") and "s_security --> s_summary" in proc.stdout


def test_agents_commands(cli):
    listed = json.loads(cli("agents", "list", "--json").stdout)
    names = {a["name"] for a in listed}
    assert {"frontend", "backend", "qa", "debugger", "coordinator", "reviewer"} <= names
    shown = cli("agents", "show", "qa")
    assert shown.returncode == 0 and "instruction" in shown.stdout
    assert_clean_error(cli("agents", "show", "nobody"), 2, "unknown agent 'nobody'")
    tested = cli("agents", "test", "reviewer", "--prompt", "ping-123")
    assert tested.returncode == 0 and "ping-123" in tested.stdout
    assert "fast-agent:passthrough" in tested.stderr


def test_unreachable_prefect_server_exits_2_naming_the_setting(cli):
    proc = cli("run", str(WORKFLOWS / "hello.yaml"), PREFECT_API_URL="http://user:hunter2@127.0.0.1:9/api")
    assert_clean_error(proc, 2, "PREFECT_API_URL=", "does not answer")
    assert "hunter2" not in proc.stderr
    assert json.loads(cli("runs", "--json").stdout) == []


def _listening(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net/tcp{,6} show them) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.append(addr)
    return found


def test_dashboard_refuses_a_non_loopback_host_while_no_user_exists(tmp_path):
    env = {**os.environ, "ORCHESTRA_HOME": str(tmp_path), "ORCHESTRA_DB_URL": f"sqlite:///{tmp_path / 'l.db'}"}
    proc = subprocess.run([*ORCHESTRA, "dashboard", "--host", "0.0.0.0"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)
    assert_clean_error(proc, 2, "--host 0.0.0.0", "no dashboard user exists", "orchestra users add")


def test_dashboard_listens_on_loopback_by_default(tmp_path):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "ORCHESTRA_HOME": str(tmp_path)}
    proc = subprocess.Popen([*ORCHESTRA, "dashboard", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while not _listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        addresses = _listening(port)
        assert addresses, "the dashboard never listened"
        # 0100007F is 127.0.0.1 in /proc's byte order; 0.0.0.0 would be 00000000
        assert set(addresses) == {"0100007F"}, addresses
        # and it serves the login cookie's route beside the pages (dashboard/server.py)
        import urllib.request

        request = urllib.request.Request(f"http://127.0.0.1:{port}/_orchestra/session", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 204 and "HttpOnly" in answer.headers["set-cookie"]
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def test_a_setting_that_does_not_parse_exits_2_naming_it(cli):
    proc = cli("runs", ORCHESTRA_BREAKER_THRESHOLD="many")
    assert_clean_error(proc, 2, "ORCHESTRA_BREAKER_THRESHOLD", "'many'")
    proc = cli("runs", ORCHESTRA_LIMITER="sometimes")
    assert_clean_error(proc, 2, "ORCHESTRA_LIMITER")


def test_a_run_started_in_the_background_returns_its_id_at_once_and_completes(orchestra_env):
    """orchestra.runs.start: the flow run is created, then run by Prefect's own engine
    entrypoint in a process of its own; the caller gets the id before the run ends."""
    import asyncio
    import time

    from ledger import queries
    from orchestra import runs

    request = runs.prepare("hello", {"name": "Ada"})
    flow_run_id = asyncio.run(runs.start(request))
    deadline = time.monotonic() + 120
    row = None
    while time.monotonic() < deadline:
        row = queries.run(orchestra_env, flow_run_id)
        if row is not None and row["state"] != "RUNNING":
            break
        time.sleep(0.3)
    assert row is not None and row["state"] == "COMPLETED", row
    assert row["workflow"] == "hello" and row["inputs"] == {"name": "Ada"}
    assert [s["state"] for s in queries.steps(orchestra_env, flow_run_id)] == ["COMPLETED"]
