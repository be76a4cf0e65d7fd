"""The local Prefect server on a port that is not 4200: its UI is served with its real API
URL, so a flow-run page (the dashboard's "Open in Prefect UI" link) shows its task runs in
Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.chromium import browser, chromium_or_skip, free_port

pytestmark = [pytest.mark.server, pytest.mark.browser]
ROOT = Path(__file__).resolve().parents[2]
FLOW = '''
from prefect import flow, task

@task(task_run_name="alpha-step")
def alpha():
    return 1

@task(task_run_name="beta-step")
def beta(x):
    return x + 1

@flow(name="links-check")
def links():
    return beta(alpha())

print(links(return_state=True).state_details.flow_run_id)
'''


def test_a_flow_run_page_of_a_server_on_another_port_shows_its_task_runs(tmp_path, monkeypatch):
    chromium_or_skip()
    from core.settings import reload_settings
    from dashboard import data as dd
    from orchestra import prefect_server

    port = free_port()
    assert port != 4200
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    monkeypatch.setenv("ORCHESTRA_SERVER_PORT", str(port))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setenv("PREFECT_UI_API_URL", "http://127.0.0.1:4200/api")  # a stale value must not win
    reload_settings()
    try:
        api = prefect_server.ensure(timeout=240)
        assert api == f"http://127.0.0.1:{port}/api"
        ui = api[: -len("/api")]
        assert httpx.get(f"{ui}/ui-settings", timeout=10).json()["api_url"] == api
        # the server runs with Orchestra's settings (task-run states written in batches) and
        # the page below still shows every task run
        recorder = httpx.get(f"{api}/admin/settings", timeout=10).json()["server"]["services"]["task_run_recorder"]
        assert (recorder["batch_size"], recorder["flush_interval"]) == (100, 1)
        # `orchestra run` uses this server (not an ephemeral one of its own, which it did when
        # a check imported Prefect before the CLI chose its API): the run is on its API
        cli_env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PREFECT_"))}
        cli = subprocess.run([sys.executable, "-m", "orchestra.cli", "run", str(ROOT / "deployments/workflows/hello.yaml"),
                              "-i", "name=Ada", "--json"], env=cli_env, capture_output=True, text=True, timeout=180,
                             cwd=ROOT)
        assert cli.returncode == 0, cli.stderr[-2000:]
        ran = json.loads(cli.stdout)["flow_run_id"]
        assert httpx.get(f"{api}/flow_runs/{ran}", timeout=10).json()["id"] == ran
        assert "Starting temporary server" not in cli.stderr
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env["PREFECT_API_URL"] = api
        proc = subprocess.run([sys.executable, "-c", FLOW], env=env, capture_output=True, text=True, timeout=180,
                              cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        flow_run_id = proc.stdout.strip().splitlines()[-1]
        monkeypatch.delenv("PREFECT_UI_URL", raising=False)
        url = dd.flow_run_url(flow_run_id, dd.prefect_ui_url())  # what the dashboard links to
        assert url == f"{ui}/runs/flow-run/{flow_run_id}"

        async def look() -> str:
            async with browser(tmp_path) as tab:
                return await tab.load(url, ["Completed", "2 Task runs", "alpha-step", "beta-step"], timeout=60,
                                      streamlit=False)

        text = asyncio.run(asyncio.wait_for(look(), 120))
        assert "links-check" in text
    finally:
        prefect_server.stop()
