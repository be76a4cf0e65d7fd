"""A canary key planted where a careless run would leak it: the provider key itself, an
input a user typed it into, and a provider answer that echoes it. It must appear in no
ledger row, no Prefect database page (parameters, logs, states, artifacts), no cached
result, no file under ORCHESTRA_HOME and no byte the CLI printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ORCHESTRA = [sys.executable, "-m", "orchestra.cli"]


def _files(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob("*") if p.is_file()]


def _holding(needle: bytes, files: list[Path]) -> list[str]:
    return [str(p) for p in files if needle in p.read_bytes()]


def test_a_canary_key_reaches_no_store_log_or_output(tmp_path, prefect_api, openai_fake):
    from prefect.settings import get_current_settings
    from sqlalchemy.engine import make_url

    canary = "sk-canary-" + uuid.uuid4().hex
    openai_fake.configure(reply=f"Found it: {canary} (keep it safe)")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ANTHROPIC_", "PYTEST"))}
    env.update(ORCHESTRA_HOME=str(home), ORCHESTRA_DB_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
               PREFECT_API_URL=prefect_api, PREFECT_LOCAL_STORAGE_PATH=str(home / "results"),
               OPENAI_BASE_URL=openai_fake.base_url, OPENAI_API_KEY=canary,
               PREFECT_LOGGING_LEVEL="DEBUG")
    proc = subprocess.run([*ORCHESTRA, "run", str(ROOT / "deployments" / "workflows" / "code-review.yaml"),
                           "-i", f"code=print('{canary}')", "--model", "openai:gpt-4.1-mini", "--json"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["state"] == "COMPLETED" and "***" in report["steps"]["security"]["output"]
    assert openai_fake.requests, "the provider was called"
    assert all(canary not in json.dumps(r["body"]) for r in openai_fake.requests), "the input reached the provider"

    # what was kept: enough that a leak would be found
    results = home / "results"
    assert any(results.rglob("*")), "the step cache persisted results"
    prefect_db = Path(make_url(get_current_settings().server.database.connection_url.get_secret_value()).database)
    deadline = time.monotonic() + 20  # the server writes the run's logs and events as they arrive
    needle = report["flow_run_id"].encode()
    while time.monotonic() < deadline and not _holding(needle, _files(prefect_db.parent)):
        time.sleep(0.5)
    assert _holding(needle, _files(prefect_db.parent)), "the Prefect database holds the run"

    leaks = _holding(canary.encode(), _files(tmp_path, prefect_db.parent))
    assert leaks == [], leaks
    assert canary not in proc.stdout + proc.stderr
