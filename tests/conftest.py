"""Shared fixtures: a real Prefect API (prefect_test_harness), an isolated
ORCHESTRA_HOME and ledger per test, and the wire fakes."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Before Prefect is imported anywhere: quick retries, quiet consoles, an isolated home.
_SESSION_HOME = tempfile.mkdtemp(prefix="orchestra-test-")
os.environ["ORCHESTRA_HOME"] = _SESSION_HOME
os.environ.setdefault("ORCHESTRA_RETRY_DELAY", "0.01")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
            "ORCHESTRA_DEFAULT_MODEL", "ORCHESTRA_DB_URL", "PREFECT_API_URL"):
    os.environ.pop(var, None)


@pytest.fixture(autouse=True)
def _settings_follow_the_environment(monkeypatch):
    """Orchestra reads its settings once per process (core.settings); a test that sets an
    ORCHESTRA_* variable with monkeypatch gets them read again."""
    from core.settings import reload_settings

    setenv, delenv = monkeypatch.setenv, monkeypatch.delenv

    def set_(name, value, prepend=None):
        setenv(name, value, prepend)
        if str(name).startswith("ORCHESTRA_"):
            reload_settings()

    def del_(name, raising=True):
        delenv(name, raising=raising)
        if str(name).startswith("ORCHESTRA_"):
            reload_settings()

    monkeypatch.setenv, monkeypatch.delenv = set_, del_
    reload_settings()
    yield


@pytest.fixture(scope="session")
def prefect_api():
    """One real Prefect API server (SQLite, temporary) for the whole session."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture
def orchestra_env(tmp_path, monkeypatch, prefect_api):
    """A fresh ledger and result cache for one test; returns the Store."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    from ledger.store import get_store

    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("ORCHESTRA_DB_URL", db)
    monkeypatch.setenv("ORCHESTRA_HOME", str(tmp_path))
    with temporary_settings(updates={PREFECT_LOCAL_STORAGE_PATH: str(tmp_path / "results")}):
        yield get_store(db)


@pytest.fixture
def openai_fake(monkeypatch):
    from tests.fakes import OpenAIFake

    with OpenAIFake() as fake:
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key-123456")
        yield fake


@pytest.fixture
def anthropic_fake(monkeypatch):
    from tests.fakes import AnthropicFake

    with AnthropicFake() as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key-123456")
        yield fake
