"""The self-healing commands as a user runs them: `orchestra` subprocesses, real Prefect,
a subprocess wire fake controlled over HTTP.

rerun after SIGKILL, dead letters, limits, bad input, and approval steps against a
real `prefect server start` on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ledger import queries
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "deployments" / "workflows"
ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]
KEY = "sk-test-resilience-cli-0123456789"
MINI = "openai:gpt-4.1-mini"


def _env(tmp_path: Path, prefect_api: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "ANTHROPIC_", "PYTEST", "PREFECT_", "ORCHESTRA_"))}
    env.update(ORCHESTRA_HOME=str(tmp_path), ORCHESTRA_DB_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
               PREFECT_HOME=str(tmp_path / "prefect-home"), PREFECT_LOCAL_STORAGE_PATH=str(tmp_path / "results"),
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL="WARNING",
               ORCHESTRA_RETRY_DELAY="0.01", OPENAI_API_KEY=KEY)
    if prefect_api:
        env["PREFECT_API_URL"] = prefect_api
    env.update(extra)
    return env


def orchestra(env: dict, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([*ORCHESTRA, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


class SubprocessFake:
    """`python -m tests.fakes.openai_server` in its own process, driven over /_fake/*."""

    def __init__(self, latency_ms: int = 300):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0", "--latency-ms", str(latency_ms)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline().strip()
        assert line.startswith("READY "), line
        self.url = line.split(" ", 1)[1]
        self.base_url = self.url + "/v1"

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/_fake/requests", timeout=10).json()

    def configure(self, **knobs) -> None:
        httpx.post(f"{self.url}/_fake/config", json=knobs, timeout=10).raise_for_status()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@pytest.fixture
def fake():
    f = SubprocessFake(latency_ms=300)
    yield f
    f.stop()


def _prompt(req: dict) -> str:
    return (req.get("body") or {}).get("messages", [{}])[-1].get("content", "")


# ---------------------------------------------------------------------------
# rerun


def test_sigkill_mid_run_then_rerun_pays_only_for_unfinished_steps(tmp_path, prefect_api, fake):
    env = _env(tmp_path, prefect_api, OPENAI_BASE_URL=fake.base_url)
    code = f"def sub(a, b): return a + b  # {uuid.uuid4().hex}"
    args = ["run", str(WORKFLOWS / "code-review.yaml"), "-i", f"code={code}", "--model", MINI, "--json"]
    proc = subprocess.Popen([*ORCHESTRA, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # the merge step's request is in flight: kill the run
            if any(_prompt(r).startswith("Merge these reviews") for r in fake.requests()):
                break
            assert proc.poll() is None, proc.stderr.read()
            time.sleep(0.05)
        else:
            pytest.fail("the merge step never started")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert len(fake.requests()) == 4  # three reviews answered, the merge cut off

    runs = json.loads(orchestra(env, "runs", "--json").stdout)  # `runs` reaps first
    assert [r["state"] for r in runs] == ["CRASHED"]  # its process is gone: it ended as crashed
    killed = runs[0]["flow_run_id"]
    assert "process (pid" in runs[0]["error"]
    from ledger import queries
    from ledger.store import Store

    ledger = Store(env["ORCHESTRA_DB_URL"])
    steps = {r["step"]: r["state"] for r in queries.steps(ledger, killed)}
    assert steps == {"security": "COMPLETED", "correctness": "COMPLETED", "style": "COMPLETED",
                     "summary": "CRASHED"}
    calls = queries.run(ledger, killed)["calls"]  # one row per request the provider received
    assert sorted((c["step"], c["status"]) for c in calls) == [
        ("correctness", "ok"), ("security", "ok"), ("style", "ok"), ("summary", "interrupted")]
    assert _prefect_state(prefect_api, killed) == "CRASHED"  # the ledger and Prefect agree

    rerun = orchestra(env, "rerun", killed, "--json")
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["state"] == "COMPLETED" and report["flow_run_id"] != killed
    requests = fake.requests()
    assert len(requests) == 5 and _prompt(requests[4]).startswith("Merge these reviews")  # only the merge again
    for sid in ("security", "correctness", "style"):
        assert report["steps"][sid]["cached"] is True and report["steps"][sid]["attempts"] == 0
    assert report["steps"]["summary"]["attempts"] == 1

    fresh = orchestra(env, *args, "--no-cache")  # the uninterrupted run
    assert fresh.returncode == 0, fresh.stderr
    expected = json.loads(fresh.stdout)
    assert {s: v["output"] for s, v in report["steps"].items()} == {s: v["output"] for s, v in expected["steps"].items()}


def _prefect_state(api: str, flow_run_id: str) -> str:
    return httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).json()["state"]["type"]


def _start_slow_run(env: dict, fake: "SubprocessFake") -> tuple[subprocess.Popen, str]:
    """`orchestra run --json` of code-review against a fake that answers in 10 s; returns
    once its three review requests are in flight, with the run's flow-run id."""
    from ledger import queries
    from ledger.store import Store

    fake.configure(latency_ms=10_000)
    args = ["run", str(WORKFLOWS / "code-review.yaml"), "-i", f"code={uuid.uuid4().hex}", "--model", MINI, "--json"]
    proc = subprocess.Popen([*ORCHESTRA, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if len(fake.requests()) >= 3:
            runs = queries.runs(Store(env["ORCHESTRA_DB_URL"]))
            if runs:
                return proc, runs[0]["flow_run_id"]
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.1)
    proc.kill()
    pytest.fail("the reviews never started")


def _cancelled_report(proc: subprocess.Popen, code: int) -> dict:
    try:
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    report = json.loads(out)
    assert report["state"] == "CANCELLED"
    assert {s["state"] for s in report["steps"].values()} == {"CANCELLED"}
    return report


def test_a_run_cancelled_through_prefect_stops_at_once_and_ends_cancelled_everywhere(tmp_path, prefect_api, fake):
    env = _env(tmp_path, prefect_api, OPENAI_BASE_URL=fake.base_url)
    proc, run_id = _start_slow_run(env, fake)
    cancel = orchestra(env, "cancel", run_id)
    acknowledged = time.monotonic()  # Prefect holds the run as CANCELLING from here
    assert cancel.returncode == 0 and "cancelling" in cancel.stdout, cancel.stderr
    report = _cancelled_report(proc, 1)
    print(f"cancel: the run ended {time.monotonic() - acknowledged:.2f} s after Prefect acknowledged it")
    assert time.monotonic() - acknowledged < 6  # the in-flight 10 s requests were cut, not awaited
    assert len(fake.requests()) == 3  # no step started after the cancel (the merge never ran)
    assert report["flow_run_id"] == run_id
    from ledger import queries
    from ledger.store import Store

    ledger = Store(env["ORCHESTRA_DB_URL"])
    row = queries.run(ledger, run_id)
    assert row["state"] == "CANCELLED" and row["error"] == "cancelled through Prefect"
    assert {s["state"] for s in queries.steps(ledger, run_id)} == {"CANCELLED"}
    assert _prefect_state(prefect_api, run_id) == "CANCELLED"
    assert_clean_error(orchestra(env, "cancel", run_id), 2, "is not running")


def test_ctrl_c_cancels_the_run_prints_its_report_and_exits_130(tmp_path, prefect_api, fake):
    env = _env(tmp_path, prefect_api, OPENAI_BASE_URL=fake.base_url)
    proc, run_id = _start_slow_run(env, fake)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends to the terminal's process group
    report = _cancelled_report(proc, 130)
    assert report["flow_run_id"] == run_id
    assert _prefect_state(prefect_api, run_id) == "CANCELLED"


# ---------------------------------------------------------------------------
# dead letters, limits


def test_failed_list_and_show_read_the_dead_letters(tmp_path, prefect_api, fake):
    env = _env(tmp_path, prefect_api, OPENAI_BASE_URL=fake.base_url)
    fake.configure(faults=[401], latency_ms=0)
    marker = uuid.uuid4().hex
    wf = tmp_path / "dead.yaml"
    wf.write_text(yaml.safe_dump({"name": "dead", "agents": {"a": {"model": MINI}},
                                  "steps": [{"id": "ask", "agent": "a", "prompt": f"Explain {marker}"}]}))
    proc = orchestra(env, "run", str(wf), "--json")
    assert proc.returncode == 1
    letters = json.loads(orchestra(env, "failed", "list", "--json").stdout)
    assert [(d["workflow"], d["step"], d["agent"], d["attempts"]) for d in letters] == [("dead", "ask", "a", 1)]
    shown = orchestra(env, "failed", "show", str(letters[0]["id"]))
    assert shown.returncode == 0
    assert f"Explain {marker}" in shown.stdout and "401" in shown.stdout
    assert KEY not in shown.stdout + json.dumps(letters)
    assert_clean_error(orchestra(env, "failed", "show", "999"), 2, "no failed step with id 999")


def test_limits_set_and_list_mirror_to_prefect(tmp_path, prefect_api):
    env = _env(tmp_path, prefect_api)
    proc = orchestra(env, "limits", "set", "anthropic", "--concurrency", "3", "--rpm", "120")
    assert proc.returncode == 0, proc.stderr
    assert "Prefect global concurrency limits" in proc.stdout
    rows = json.loads(orchestra(env, "limits", "list", "--json").stdout)
    assert [(r["provider"], r["concurrency"], r["rpm"]) for r in rows] == [("anthropic", 3, 120)]
    limits = {gcl["name"]: gcl for gcl in httpx.post(f"{prefect_api}/v2/concurrency_limits/filter",
                                                     json={"limit": 200}, timeout=10).json()}
    assert limits["orchestra-anthropic-concurrency"]["limit"] == 3
    assert limits["orchestra-anthropic-rpm"]["limit"] == 120
    assert limits["orchestra-anthropic-rpm"]["slot_decay_per_second"] == pytest.approx(2.0)
    assert_clean_error(orchestra(env, "limits", "set", "mistral", "--rpm", "1"), 2, "unknown provider 'mistral'")
    assert_clean_error(orchestra(env, "limits", "set", "openai"), 2, "--concurrency and/or --rpm")
    (change,) = json.loads(orchestra(env, "audit", "--json").stdout)  # the owner's change, audited once
    assert (change["action"], change["target"], change["outcome"], change["via"]) == (
        "limits.set", "anthropic", "ok", "cli")
    assert change["before"] is None and change["after"] == {"concurrency": 3, "rpm": 120}


# ---------------------------------------------------------------------------
# bad input: a clear message naming the step or agent, exit 2, nothing written


BAD = {
    "unknown-fallback.yaml": ({"name": "x", "agents": {"a": {"fallback": ["ghost"]}},
                               "steps": [{"id": "s", "agent": "a", "prompt": "p"}]},
                              ["agent 'a'", "unknown agent 'ghost'"]),
    "cycle.yaml": ({"name": "x", "agents": {"a": {"fallback": ["b"]}, "b": {"fallback": ["a"]}},
                    "steps": [{"id": "s", "agent": "a", "prompt": "p"}]},
                   ["fallback cycle a -> b -> a"]),
    "capability.yaml": ({"name": "x", "steps": [{"id": "s", "agent": {"capabilities": ["telepathy"]}, "prompt": "p"}]},
                        ["step 's'", "unknown capability 'telepathy'"]),
    "negative-budget.yaml": ({"name": "x", "budget_usd": -1, "steps": [{"id": "s", "prompt": "p"}]},
                             ["budget_usd", "greater than or equal to 0"]),
    "text-budget.yaml": ({"name": "x", "budget_usd": "plenty", "steps": [{"id": "s", "prompt": "p"}]},
                         ["budget_usd", "valid number"]),
}


def test_bad_input_is_exit_2_with_a_clear_message_and_nothing_written(tmp_path, prefect_api):
    env = _env(tmp_path, prefect_api)
    for name, (doc, needles) in BAD.items():
        path = tmp_path / name
        path.write_text(yaml.safe_dump(doc))
        assert_clean_error(orchestra(env, "run", str(path)), 2, str(path), *needles)
    ok = tmp_path / "ok.yaml"
    ok.write_text(yaml.safe_dump({"name": "ok", "steps": [{"id": "s", "prompt": "p"}]}))
    assert_clean_error(orchestra(env, "run", str(ok), "--budget", "-0.5"), 2, "--budget", ">= 0")
    proc = orchestra(env, "run", str(ok), "--budget", "lots")
    assert proc.returncode == 2 and "--budget" in proc.stderr and "Traceback" not in proc.stderr
    gate = tmp_path / "gate.yaml"
    gate.write_text(yaml.safe_dump({"name": "gate", "steps": [
        {"id": "ship", "approval": {"message": "Ship it?"}}]}))
    ephemeral = {k: v for k, v in env.items() if k != "PREFECT_API_URL"}
    assert_clean_error(orchestra({**ephemeral, "ORCHESTRA_PREFECT": "ephemeral"}, "run", str(gate)), 2,
                       "step 'ship'", "Prefect server")
    assert_clean_error(orchestra(env, "rerun", "no-such-run"), 2, "no run 'no-such-run'")
    assert json.loads(orchestra(env, "runs", "--json").stdout) == []
    assert json.loads(orchestra(env, "failed", "list", "--json").stdout) == []


# ---------------------------------------------------------------------------
# approvals against a real `prefect server start`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server():
    """`prefect server start` on loopback with a temporary PREFECT_HOME, stopped by PID."""
    home = Path(tempfile.mkdtemp(prefix="orchestra-approval-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PREFECT_"))}
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                             "--port", str(port), "--no-ui"], env=env, stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert proc.poll() is None, (home / "server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            pytest.fail("prefect server start did not answer")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _paused_run(server: str, run_proc: subprocess.Popen, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = httpx.post(f"{server}/flow_runs/filter",
                           json={"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}}, timeout=10).json()
        if found:
            return found[0]
        assert run_proc.poll() is None, run_proc.communicate()
        time.sleep(0.3)
    pytest.fail("the run never paused")


def _approval_workflow(tmp_path: Path) -> Path:
    path = tmp_path / "publish.yaml"
    path.write_text(yaml.safe_dump({"name": "publish", "type": "sequential", "agents": {"w": {"model": MINI}},
                                    "steps": [
                                        {"id": "draft", "agent": "w", "prompt": f"Draft {uuid.uuid4().hex}"},
                                        {"id": "gate", "approval": {"message": "Publish {{ steps.draft.output }}?",
                                                                    "timeout": 120}},
                                        {"id": "publish", "agent": "w", "prompt": "Publish. Note: {{ steps.gate.output }}"},
                                    ]}))
    return path


@pytest.mark.server
@pytest.mark.parametrize("decision", ["approve", "reject"])
def test_approval_step_pauses_until_approved_or_rejected(tmp_path, prefect_server, fake, decision):
    fake.configure(latency_ms=0)
    env = _env(tmp_path, prefect_server, OPENAI_BASE_URL=fake.base_url, ORCHESTRA_APPROVAL_POLL="0.5")
    run_proc = subprocess.Popen([*ORCHESTRA, "run", str(_approval_workflow(tmp_path)), "--json"], cwd=ROOT,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        paused = _paused_run(prefect_server, run_proc)
        # the Prefect UI shows a form for it: the pause carries an input keyset, its schema is saved
        keyset = paused["state"]["state_details"]["run_input_keyset"]
        assert keyset and "schema" in keyset
        schema = httpx.get(f"{prefect_server}/flow_runs/{paused['id']}/input/{keyset['schema']}", timeout=10)
        assert schema.status_code == 200 and {"approved", "reason"} <= set(schema.json()["properties"])
        assert len(fake.requests()) == 1  # the draft; publish waits
        if decision == "approve":
            answer = orchestra(env, "approve", paused["id"], "--reason", "ship it")
        else:
            answer = orchestra(env, "approve", paused["id"], "--reject", "--reason", "not today")
        assert answer.returncode == 0, answer.stderr
        out, errors = run_proc.communicate(timeout=120)
    finally:
        if run_proc.poll() is None:
            run_proc.kill()
    report = json.loads(out)
    if decision == "approve":
        assert run_proc.returncode == 0, errors
        assert report["state"] == "COMPLETED"
        assert report["steps"]["gate"]["output"] == "ship it"
        assert len(fake.requests()) == 2 and "ship it" in _prompt(fake.requests()[1])
    else:
        assert run_proc.returncode == 1
        assert report["state"] == "FAILED"
        assert "rejected by the approver: not today" in report["steps"]["gate"]["error"]
        assert report["steps"]["publish"]["state"] == "NOT_READY"
        assert len(fake.requests()) == 1
    # answering again: the run is no longer paused
    assert_clean_error(orchestra(env, "approve", paused["id"]), 2, "not waiting for an approval")


# ---------------------------------------------------------------------------
# health


def test_agents_health_probes_every_agent_and_records_it(tmp_path, prefect_api, fake):
    from agents.registry import load_registry

    fake.configure(latency_ms=0)
    env = _env(tmp_path, prefect_api, OPENAI_BASE_URL=fake.base_url, ORCHESTRA_DEFAULT_MODEL=MINI)
    proc = orchestra(env, "agents", "health", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    names = sorted(load_registry())
    assert sorted(r["agent"] for r in rows) == names
    assert all(r["status"] == "ok" and r["breaker"] == "closed" and r["latency_ms"] > 0 for r in rows)
    requests = fake.requests()
    assert len(requests) == len(names)  # one cheap call per agent ...
    assert all(r["body"]["max_completion_tokens"] == 1 for r in requests)  # ... of one token
    fake.configure(fault_rate=1.0, fault_kinds=[503])
    proc = orchestra(env, "agents", "health", "--json")
    assert proc.returncode == 1
    assert all(r["status"] == "error" and "503" in r["error"] for r in json.loads(proc.stdout))
    from ledger.store import Store

    store = Store(env["ORCHESTRA_DB_URL"])
    assert len(queries.health(store)) == 2 * len(names)
    store.close()
