"""The dashboard tests' Streamlit process: served on loopback, as `orchestra dashboard` does
(before the first user exists the dashboard is the machine user's only there)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _served_on_loopback(monkeypatch):
    from streamlit import config

    before = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    monkeypatch.setenv("ORCHESTRA_LOGIN_DELAY", "0")
    yield
    config.set_option("server.address", before)
