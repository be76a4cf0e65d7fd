"""Server mode end to end: `prefect server start`, `prefect deploy` of prefect.yaml, a
process worker, and workflow runs submitted through Prefect's REST API, as a user
(or the AI Orchestra service's clients) would. See tests/support/prefect_stack.py.

Runs are submitted together and awaited together where the test allows: each flow
run is a fresh Python process on the worker (a few seconds of imports).
"""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
import uuid
from datetime import datetime, timezone

import pytest

from ledger import queries
import yaml

from tests.support.prefect_stack import PY, ROOT, Stack, clean_env, free_port

pytest_plugins = ["tests.support.prefect_server_fixture"]
pytestmark = pytest.mark.server

FAKE_KEY = "sk-test-not-a-real-key-123456"  # the worker's OPENAI_API_KEY (tests/support/prefect_stack.py)

RUN_GRAPH = {
    "name": "login-feature",
    "workflow_type": "graph",
    "metadata": {"project": "acme-portal", "requested_by": "ada", "ticket": 42},  # as the service's examples carry
    "tasks": [
        {"agent_id": "api", "agent_role": "backend", "input_data": {"task": "Design a login API."},
         "depends_on": []},
        {"agent_id": "form", "agent_role": "frontend", "input_data": {"task": "Build the login form."},
         "depends_on": []},
        {"agent_id": "tests", "agent_role": "qa", "input_data": {"task": "Test the login feature."},
         "depends_on": ["api", "form"]},
    ],
}


def _ledger(stack: Stack):
    from ledger.store import Store

    return Store(stack.ledger_url)


def _final(stack: Stack, run_ids: list[str], timeout: float = 240) -> dict[str, dict]:
    try:
        return stack.api.wait(run_ids, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}\n{stack.diagnostics()}") from None


def _state(run: dict) -> tuple[str, str]:
    return run["state"]["type"], run["state"].get("message") or ""


@pytest.fixture(scope="module")
def run_graph_run(prefect_stack: Stack) -> dict:
    """A /run-graph document submitted as the `workflow` parameter of the code-review
    deployment, awaited to its final state."""
    api = prefect_stack.api
    run_id = api.create_run(api.deployment_id("code-review"), {"workflow": RUN_GRAPH})
    run = _final(prefect_stack, [run_id])[run_id]
    assert run["state"]["type"] == "COMPLETED", f"{_state(run)}\n{prefect_stack.diagnostics(run_id)}"
    return run


# ---------------------------------------------------------------------------
# prefect.yaml, as deployed


def test_prefect_yaml_deploys_one_deployment_per_shipped_workflow(prefect_stack: Stack):
    api = prefect_stack.api
    shipped = sorted(p.stem for p in (ROOT / "deployments" / "workflows").glob("*.yaml"))
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    assert sorted(d["name"] for d in spec["deployments"]) == shipped
    assert {"work_pools", "schedules"} <= set(spec["definitions"])
    pool = api.http.get("/work_pools/orchestra").json()
    assert pool["type"] == "process"
    crons = []
    for name in shipped:
        dep = api.deployment(name)
        assert dep["entrypoint"] == "orchestra/flow.py:run_workflow"
        assert dep["parameters"] == {"workflow": name}
        assert dep["work_pool_name"] == "orchestra"
        assert dep["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
        crons += [s["schedule"]["cron"] for s in dep["schedules"] if s["active"] and "cron" in s["schedule"]]
    assert crons, "at least one deployment has an active cron schedule"


# ---------------------------------------------------------------------------
# the generic flow through a deployment


def test_run_graph_document_completes_with_a_task_run_per_step(prefect_stack: Stack, run_graph_run: dict):
    api, run_id = prefect_stack.api, run_graph_run["id"]
    assert run_graph_run["parameters"]["workflow"] == RUN_GRAPH
    task_runs = api.task_runs(run_id)
    assert sorted(t["name"] for t in task_runs) == ["api", "form", "tests"]
    assert {t["state"]["type"] for t in task_runs} == {"COMPLETED"}
    # `tests` ran after both of its upstream tasks, and the UI draws exactly those edges
    by_name = {t["name"]: t for t in task_runs}
    assert by_name["tests"]["start_time"] >= max(by_name["api"]["end_time"], by_name["form"]["end_time"])
    names = {t["id"]: t["name"] for t in task_runs}
    edges = {t["name"]: sorted(names[i["id"]] for inputs in t["task_inputs"].values() for i in inputs
                               if i.get("input_type") == "task_run") for t in task_runs}
    assert edges == {"api": [], "form": [], "tests": ["api", "form"]}
    # the /run-graph metadata is kept on the flow run (as tags) and in the ledger
    assert {"project:acme-portal", "requested_by:ada", "ticket:42"} <= set(api.flow_run(run_id)["tags"])

    artifacts = {a["key"]: a for a in api.artifacts(run_id)}
    assert "login-feature-cost" in artifacts, list(artifacts)
    table = artifacts["login-feature-cost"]
    assert table["type"] == "table"
    rows = json.loads(table["data"]) if isinstance(table["data"], str) else table["data"]
    assert [r["step"] for r in rows] == ["api", "form", "tests", "TOTAL"]
    assert {r["model"] for r in rows[:-1]} == {"fast-agent:passthrough"}
    assert {r["agent"] for r in rows[:-1]} == {"backend", "frontend", "qa"}

    ledger = queries.run(_ledger(prefect_stack), run_id)
    assert ledger is not None, "the worker's flow run wrote the ledger named by ORCHESTRA_DB_URL"
    assert ledger["state"] == "COMPLETED" and ledger["workflow"] == "login-feature"
    assert ledger["metadata"] == RUN_GRAPH["metadata"]
    assert sorted(c["step"] for c in ledger["calls"]) == ["api", "form", "tests"]


def test_workflow_by_name_by_path_and_inline_dict(prefect_stack: Stack):
    api = prefect_stack.api
    hello, review = api.deployment_id("hello"), api.deployment_id("code-review")
    inline = {"name": "inline-check", "inputs": {"who": {"type": "string"}},
              "steps": [{"id": "greet", "prompt": "Greet {{ inputs.who }}."},
                        {"id": "shout", "depends_on": ["greet"], "prompt": "Shout: {{ steps.greet.output }}"}]}
    model = "openai:gpt-4.1-mini"  # the wire fake: quicker to start than fast-agent
    runs = {  # label: (run id, workflow name, task runs)
        "by name": (api.create_run(hello, {"inputs": {"name": "Ada"}, "model": model}), "hello", ["greet"]),
        "by path": (api.create_run(review, {"workflow": "deployments/workflows/fan-out.yaml", "model": model,
                                            "inputs": {"topics": ["x", "y"]}}),
                    "fan-out", ["combine", "summarise[0]", "summarise[1]"]),
        "inline dict": (api.create_run(review, {"workflow": inline, "inputs": {"who": "Grace"}, "model": model}),
                        "inline-check", ["greet", "shout"]),
    }
    final = _final(prefect_stack, [r for r, _, _ in runs.values()])
    ledger = _ledger(prefect_stack)
    for label, (run_id, workflow, task_names) in runs.items():
        state = _state(final[run_id])
        assert state[0] == "COMPLETED", f"{label}: {state}\n{prefect_stack.diagnostics(run_id)}"
        names = sorted(t["name"] for t in api.task_runs(run_id) if t["state"]["type"] == "COMPLETED")
        assert names == task_names, label
        assert queries.run(ledger, run_id)["workflow"] == workflow, label
        assert f"{workflow}-cost" in {a["key"] for a in api.artifacts(run_id)}, label
    assert queries.run(ledger, runs["by name"][0])["inputs"] == {"name": "Ada"}
    assert queries.run(ledger, runs["inline dict"][0])["inputs"] == {"who": "Grace"}


def test_a_worker_run_cancelled_through_the_api_ends_cancelled_in_prefect_and_the_ledger(prefect_stack: Stack):
    import time

    import httpx

    api, fake = prefect_stack.api, prefect_stack.fake_url.removesuffix("/v1")
    slow = {"name": "slow-one", "steps": [{"id": "wait", "prompt": "take your time", "retries": 0}]}
    httpx.post(f"{fake}/_fake/reset", timeout=10).raise_for_status()
    httpx.post(f"{fake}/_fake/config", json={"latency_ms": 20_000}, timeout=10).raise_for_status()
    try:
        run_id = api.create_run(api.deployment_id("hello"), {"workflow": slow, "model": "openai:gpt-4.1-mini"})
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # the step's request is at the provider
            asked = [r for r in httpx.get(f"{fake}/_fake/requests", timeout=10).json()
                     if "take your time" in json.dumps(r.get("body"))]
            if asked and api.flow_run(run_id)["state"]["type"] == "RUNNING":
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"the run never reached its provider\n{prefect_stack.diagnostics(run_id)}")
        api._json(api.http.post(f"/flow_runs/{run_id}/set_state",
                                json={"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": True}))
        run = _final(prefect_stack, [run_id], timeout=60)[run_id]
    finally:
        httpx.post(f"{fake}/_fake/config", json={"latency_ms": 200}, timeout=10)
        httpx.post(f"{fake}/_fake/reset", timeout=10)
    assert run["state"]["type"] == "CANCELLED", f"{_state(run)}\n{prefect_stack.diagnostics(run_id)}"
    deadline = time.monotonic() + 30  # the ledger follows Prefect (the run's own watcher, or the reaper)
    while time.monotonic() < deadline and queries.run(_ledger(prefect_stack), run_id)["state"] == "RUNNING":
        time.sleep(0.5)
    row = queries.run(_ledger(prefect_stack), run_id)
    assert row["state"] == "CANCELLED", row


# ---------------------------------------------------------------------------
# bad input


def test_bad_input_fails_the_run_with_a_message_that_names_it(prefect_stack: Stack):
    api = prefect_stack.api
    review = api.deployment_id("code-review")
    keyed = {"name": "keyed", "agents": {"a": {"model": "openai:gpt-4.1-mini", "credentials": "no-such-block"}},
             "steps": [{"id": "ask", "agent": "a", "prompt": "hi", "retries": 0}]}
    cases = {
        "unknown workflow": ({"workflow": "no-such-workflow"}, ["no-such-workflow", "code-review", "hello"]),
        "inputs that do not match": ({"inputs": {"kode": "x", "code": 42}},
                                     ["unknown input 'kode'", "declared inputs: code", "input 'code'",
                                      "expected string"]),
        "a block that does not exist": ({"workflow": keyed}, ["step 'ask'", "credentials block 'no-such-block'"]),
    }
    ids = {label: api.create_run(review, params) for label, (params, _) in cases.items()}
    final = _final(prefect_stack, list(ids.values()))
    for label, (_, needles) in cases.items():
        state, message = _state(final[ids[label]])
        assert state == "FAILED", f"{label}: {state} {message}\n{prefect_stack.diagnostics(ids[label])}"
        for needle in needles:
            assert needle in message, f"{label}: {needle!r} not in {message!r}"
        assert "Traceback" not in message and "[REDACTED]" not in message and "***" not in message  # not mangled
        logs = " ".join(entry["message"] for entry in api.logs(ids[label]))
        assert FAKE_KEY not in message and FAKE_KEY not in logs, label
    # a workflow that never started leaves nothing half-written in the ledger
    ledger = _ledger(prefect_stack)
    assert queries.run(ledger, ids["unknown workflow"]) is None
    assert queries.run(ledger, ids["inputs that do not match"]) is None
    assert queries.run(ledger, ids["a block that does not exist"])["state"] == "FAILED"


def test_parameters_of_the_wrong_type_are_refused_by_the_api(prefect_stack: Stack):
    api = prefect_stack.api
    response = api.http.post(f"/deployments/{api.deployment_id('code-review')}/create_flow_run",
                             json={"parameters": {"workflow": 42}})
    assert response.status_code == 409, response.text
    assert "workflow" in response.text


# ---------------------------------------------------------------------------
# events (emitted by flows/engine.py)


def test_a_run_emits_run_finished_and_agent_call_events(prefect_stack: Stack, run_graph_run: dict):
    api, run_id = prefect_stack.api, run_graph_run["id"]
    flow_run = f"prefect.flow-run.{run_id}"
    deadline = time.monotonic() + 30  # events are written asynchronously
    finished, calls = [], []
    while time.monotonic() < deadline:
        finished = api.events("orchestra.run.finished", flow_run)
        calls = api.events("orchestra.agent.call", flow_run)
        if finished and len(calls) >= 3:
            break
        time.sleep(1)
    assert len(finished) == 1, finished
    event = finished[0]
    assert event["resource"]["prefect.resource.id"] == "orchestra.workflow.login-feature"
    assert event["payload"]["state"] == "COMPLETED" and event["payload"]["cost_usd"] == 0
    assert event["payload"]["calls"] == 3
    assert len(calls) == 3
    assert sorted(c["payload"]["step"] for c in calls) == ["api", "form", "tests"]
    assert {c["payload"]["model"] for c in calls} == {"fast-agent:passthrough"}
    # the cost alert (deployments/automations/cost-alert.yaml) matches on this label
    assert event["resource"]["orchestra.cost-usd"] == _load_module().cost_label(0)


# ---------------------------------------------------------------------------
# the cost alert automation (deployments/automations/)


class _Hooks(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).received.append(json.loads(body or b"{}"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_receiver():
    _Hooks.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Hooks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", _Hooks.received
    finally:
        server.shutdown()
        server.server_close()


def _load_automation(stack: Stack | None, *args: str, api_url: str | None = None) -> subprocess.CompletedProcess:
    url = api_url or (stack.server.url if stack else None)
    env = clean_env(PREFECT_API_URL=url, PREFECT_HOME=str(stack.server.home / "client") if stack else None)
    return subprocess.run([PY, "deployments/automations/load.py", *args], cwd=str(ROOT), env=env,
                          capture_output=True, text=True, timeout=120)


def _load_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("orchestra_automation_load",
                                                  ROOT / "deployments/automations/load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cost_alert_automation_loads_and_notifies_above_the_threshold(prefect_stack: Stack, webhook_receiver,
                                                                      capsys):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    api = prefect_stack.api
    url, received = webhook_receiver
    block = CustomWebhookNotificationBlock(name="orchestra-test", url=url,
                                           json_data={"subject": "{{subject}}", "body": "{{body}}"})
    # save the block through the stack's server (the test process has no PREFECT_API_URL of its own)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_stack.server.url}):
        block.save("orchestra-cost-alert-test", overwrite=True, _sync=True)

    result = _load_automation(prefect_stack, "--block", "custom-webhook/orchestra-cost-alert-test",
                              "--threshold", "0.25")
    assert result.returncode == 0, result.stderr
    code, out = _in_process(_load_module().main, ["--block", "custom-webhook/orchestra-cost-alert-test",
                                                  "--threshold", "0.25"], prefect_stack.server.url, capsys)
    assert code == 0, out  # loading twice replaces, never duplicates
    automations = api.http.post("/automations/filter", json={}).json()
    mine = [a for a in automations if a["name"] == "orchestra-cost-alert"]
    assert len(mine) == 1 and mine[0]["enabled"]
    assert "$0.25 or more" in mine[0]["description"]

    load = _load_module()
    now = datetime.now(timezone.utc).isoformat()
    events = []
    for workflow, cost in (("cheap", 0.1), ("pricey", 0.3)):  # as flows/engine.py emits them
        events.append({
            "id": str(uuid.uuid4()), "occurred": now, "event": "orchestra.run.finished",
            "resource": {"prefect.resource.id": f"orchestra.workflow.{workflow}", "prefect.resource.name": workflow,
                         "orchestra.cost-usd": load.cost_label(cost)},
            "payload": {"cost_usd": cost, "state": "COMPLETED", "input_tokens": 100, "output_tokens": 50,
                        "calls": 4, "steps": 4, "failed_steps": [], "duration_s": 1.5},
        })
    response = api.http.post("/events", json=events)
    assert response.status_code == 204, response.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not received:
        time.sleep(0.5)
    time.sleep(3)  # a notification for the cheap run would arrive about as fast
    assert len(received) == 1, received
    assert "pricey" in received[0]["subject"] and "$0.3" in received[0]["subject"]
    assert "alert threshold: $0.25" in received[0]["body"]


def _in_process(main, argv: list[str], api_url: str | None, capsys) -> tuple[int, str]:
    """Run a script's main() here, against `api_url` (None: no PREFECT_API_URL)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    settings = {"updates": {PREFECT_API_URL: api_url}} if api_url else {"restore_defaults": {PREFECT_API_URL}}
    capsys.readouterr()
    with temporary_settings(**settings):
        code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def test_cost_alert_loader_bad_input(prefect_stack: Stack, capsys):
    main = _load_module().main
    code, out = _in_process(main, ["--block", "custom-webhook/no-such-block"], prefect_stack.server.url, capsys)
    assert code == 2 and "custom-webhook/no-such-block" in out and "Traceback" not in out
    code, out = _in_process(main, [], prefect_stack.server.url, capsys)
    assert code == 2 and "--block" in out
    code, out = _in_process(main, ["--block", "nameless"], prefect_stack.server.url, capsys)
    assert code == 2 and "TYPE/NAME" in out
    down = f"http://127.0.0.1:{free_port()}/api"
    code, out = _in_process(main, ["--block", "custom-webhook/x"], down, capsys)
    assert code == 2 and f"the Prefect server at {down} is not reachable" in out
    code, out = _in_process(main, ["--block", "custom-webhook/x"], None, capsys)
    assert code == 2 and "PREFECT_API_URL is not set" in out
    code, out = _in_process(main, ["--print", "--threshold", "-1"], None, capsys)
    assert code == 2 and "--threshold" in out


def test_cost_patterns_match_exactly_the_costs_at_or_above_the_threshold():
    from prefect.events.schemas.events import matches

    load = _load_module()
    shipped = yaml.safe_load((ROOT / "deployments/automations/cost-alert.yaml").read_text())
    assert shipped["trigger"]["match"]["orchestra.cost-usd"] == load.cost_patterns(0.5)
    costs = [0, 1e-6, 0.0042, 0.249999, 0.25, 0.3, 0.4999, 0.5, 0.5001, 0.99, 1, 2.5, 9.99, 10, 123.45, 999999]
    for threshold in (0, 0.0001, 0.25, 0.5, 1, 2.5, 100):
        patterns = load.cost_patterns(threshold)
        for cost in costs:
            hit = any(matches(p, load.cost_label(cost)) for p in patterns)
            assert hit == (cost >= threshold), (threshold, cost, patterns)


# ---------------------------------------------------------------------------
# deploy preflight (what CI runs before `prefect deploy`)


def test_preflight_names_the_server_and_the_pool(prefect_stack: Stack, capsys):
    env = clean_env(PREFECT_API_URL=prefect_stack.server.url, PREFECT_HOME=str(prefect_stack.server.home / "client"))
    ok = subprocess.run([PY, "deployments/preflight.py"], cwd=str(ROOT), env=env, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0 and "'orchestra' (process) exists" in ok.stdout, ok.stderr

    import importlib.util

    spec = importlib.util.spec_from_file_location("orchestra_preflight", ROOT / "deployments/preflight.py")
    preflight = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(preflight)
    down = f"http://127.0.0.1:{free_port()}/api"
    code, out = _in_process(preflight.main, [], down, capsys)
    assert code == 2 and down in out and "not reachable" in out
    code, out = _in_process(preflight.main, ["--pool", "nope"], prefect_stack.server.url, capsys)
    assert code == 2 and "work pool 'nope' does not exist" in out
    code, out = _in_process(preflight.main, ["--pool", "made-by-preflight", "--create-pool"],
                            prefect_stack.server.url, capsys)
    assert code == 0 and "created work pool 'made-by-preflight'" in out
    made = prefect_stack.api.http.get("/work_pools/made-by-preflight").json()
    assert made["type"] == "process" and "job_configuration" in made["base_job_template"]
    code, out = _in_process(preflight.main, [], None, capsys)
    assert code == 2 and "PREFECT_API_URL is not set" in out
    code, out = _in_process(preflight.main, [], f"http://ci:hunter2secret@127.0.0.1:{free_port()}/api", capsys)
    assert code == 2 and "not reachable" in out and "hunter2secret" not in out


def test_deploy_as_ci_does_records_the_workers_checkout(prefect_stack: Stack):
    """What .github/workflows/deploy.yml runs: preflight, then `prefect deploy` with
    ORCHESTRA_REPO naming the workers' checkout, which the pull step then uses."""
    from tests.support.prefect_stack import deploy, prefect_cli

    api = prefect_stack.api
    try:
        prefect_cli(prefect_stack.server, "--no-prompt", "deploy", "-n", "hello",
                    env={"ORCHESTRA_REPO": "/srv/orchestra"})
        assert api.deployment("hello")["pull_steps"] == [
            {"prefect.deployments.steps.set_working_directory": {"directory": "/srv/orchestra"}}]
    finally:
        deploy(prefect_stack.server, "hello")  # back to this checkout, for any later test
    assert api.deployment("hello")["pull_steps"][0]["prefect.deployments.steps.set_working_directory"] == {
        "directory": str(ROOT)}
