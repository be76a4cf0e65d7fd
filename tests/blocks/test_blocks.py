"""Orchestra's Prefect block types and the credential resolution order.

The block types run through Prefect's own `BlockStandardTestSuite`; save/load,
masking and resolution run against a real Prefect server started by
`prefect_test_harness` (one server for the module).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from pydantic import HttpUrl, ValidationError

from blocks import DaggerEngine, FastAgentSettings, MCPServer, OrchestraStore, ProviderCredentials
from blocks.credentials import (
    CredentialsError,
    MissingCredentials,
    Resolved,
    aresolve_credentials,
    clear_credentials_cache,
    resolve_credentials,
)
from prefect.blocks.system import Secret
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings
from prefect.testing.standard_test_suites import BlockStandardTestSuite
from prefect.testing.utilities import prefect_test_harness

REPO = Path(__file__).resolve().parents[2]
ALL_BLOCKS = [ProviderCredentials, FastAgentSettings, DaggerEngine, OrchestraStore]
LOGO_HOST = "raw.githubusercontent.com"
SDK_VARS = ["OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"]


# -- Prefect's standard block checks ---------------------------------------------


@functools.cache
def logo_host_reachable() -> bool:
    try:
        socket.create_connection((LOGO_HOST, 443), timeout=3).close()
        return True
    except OSError:
        return False


class OrchestraBlockSuite(BlockStandardTestSuite):
    """Prefect's suite; on a machine that cannot reach GitHub the logo is checked by
    its URL instead of downloaded (`test_logos_are_prefects_pinned_assets` pins them)."""

    def test_has_a_valid_image(self, block):
        if logo_host_reachable():
            super().test_has_a_valid_image(block)
            return
        # No network (as in CI): check offline what can be checked, the URL itself.
        url = str(block._logo_url)
        assert url.startswith(f"https://{LOGO_HOST}/") and url.endswith(".png"), url


class TestProviderCredentialsStandard(OrchestraBlockSuite):
    @pytest.fixture
    def block(self):
        return ProviderCredentials


class TestFastAgentSettingsStandard(OrchestraBlockSuite):
    @pytest.fixture
    def block(self):
        return FastAgentSettings


class TestDaggerEngineStandard(OrchestraBlockSuite):
    @pytest.fixture
    def block(self):
        return DaggerEngine


class TestOrchestraStoreStandard(OrchestraBlockSuite):
    @pytest.fixture
    def block(self):
        return OrchestraStore


def test_block_type_names_and_slugs():
    assert {b.get_block_type_slug(): b.get_block_type_name() for b in ALL_BLOCKS} == {
        "orchestra-provider-credentials": "Orchestra Provider Credentials",
        "orchestra-fast-agent-settings": "Orchestra Fast-Agent Settings",
        "orchestra-dagger-engine": "Orchestra Dagger Engine",
        "orchestra-store": "Orchestra Store",
    }


def test_logos_are_prefects_pinned_assets():
    # Prefect 3.8.8 points its own Secret block at the same pinned asset commit.
    base = str(Secret._logo_url).rsplit("/", 1)[0] + "/"
    assert base.startswith(f"https://{LOGO_HOST}/PrefectHQ/prefect/")
    logos = {b.__name__: str(b._logo_url) for b in ALL_BLOCKS}
    assert logos == {
        "ProviderCredentials": base + "secret.png",
        "FastAgentSettings": base + "terminal.png",
        "DaggerEngine": base + "docker.png",
        "OrchestraStore": base + "sqlalchemy.png",
    }
    for b in ALL_BLOCKS:
        assert isinstance(b._logo_url, HttpUrl) and isinstance(b._documentation_url, HttpUrl)


def test_secret_fields_in_block_schemas():
    assert ProviderCredentials.model_json_schema()["secret_fields"] == ["api_key"]
    assert DaggerEngine.model_json_schema()["secret_fields"] == ["session_token"]
    assert OrchestraStore.model_json_schema()["secret_fields"] == ["database_url"]
    # env/headers live under user-chosen server names, out of reach of a fixed path
    assert FastAgentSettings.model_json_schema()["secret_fields"] == ["mcp_servers.*"]


def test_blocks_package_exports_exactly_the_four_block_types():
    import inspect

    import blocks
    from prefect.blocks.core import Block

    found = sorted(name for name, obj in inspect.getmembers(blocks) if Block.is_block_class(obj))
    assert found == ["DaggerEngine", "FastAgentSettings", "OrchestraStore", "ProviderCredentials"]


# -- secrets stay secret ----------------------------------------------------------


def assert_hidden(obj, *secrets: str) -> None:
    """No rendering of `obj` that could reach a log contains any of `secrets`."""
    renderings = {
        "repr": repr(obj),
        "str": str(obj),
        "format": f"{obj}",
        "model_dump": str(obj.model_dump()),
        "model_dump(json)": json.dumps(obj.model_dump(mode="json")),
        "model_dump_json": obj.model_dump_json(),
    }
    for how, text in renderings.items():
        for secret in secrets:
            assert secret not in text, f"{secret!r} shows in {how}: {text}"
        assert "**********" in text, how


def test_provider_credentials_hide_the_key():
    creds = ProviderCredentials(
        provider="openai", api_key="sk-live-7f3a9c", base_url="http://127.0.0.1:8000/v1", organization="org-1"
    )
    assert_hidden(creds, "sk-live-7f3a9c")
    assert creds.api_key.get_secret_value() == "sk-live-7f3a9c"
    assert creds.model_dump()["base_url"] == "http://127.0.0.1:8000/v1"
    assert creds.model_dump()["organization"] == "org-1"


def test_fast_agent_settings_hide_env_and_headers():
    settings = FastAgentSettings(
        mcp_servers={
            "github": {"command": "npx", "args": ["-y", "github-mcp"], "env": {"GITHUB_TOKEN": "ghp_token42"}},
            "search": {"transport": "http", "url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer tok-99"}},
        }
    )
    assert_hidden(settings, "ghp_token42", "tok-99")
    assert_hidden(settings.mcp_servers["github"], "ghp_token42")
    assert settings.mcp_servers["github"].env["GITHUB_TOKEN"].get_secret_value() == "ghp_token42"
    assert settings.mcp_servers["search"].headers["Authorization"].get_secret_value() == "Bearer tok-99"
    # non-secret parts stay readable
    dumped = settings.model_dump()
    assert dumped["mcp_servers"]["github"]["args"] == ["-y", "github-mcp"]
    assert dumped["mcp_servers"]["search"]["url"] == "https://mcp.example/mcp"


def test_dagger_engine_hides_the_session_token():
    engine = DaggerEngine(session_port=41234, session_token="dgr-session-abc")
    assert_hidden(engine, "dgr-session-abc")
    assert engine.session_token.get_secret_value() == "dgr-session-abc"


def test_orchestra_store_hides_the_url():
    store = OrchestraStore(database_url="postgresql+psycopg2://orchestra:hunter2@db.internal:5432/ledger")
    assert_hidden(store, "hunter2", "db.internal")
    assert store.url() == "postgresql+psycopg2://orchestra:hunter2@db.internal:5432/ledger"
    assert store.redacted_url() == "postgresql+psycopg2://orchestra:***@db.internal:5432/ledger"


def test_redacted_url_masks_query_passwords_and_keeps_plain_urls():
    store = OrchestraStore(database_url="postgresql://db.internal/ledger?user=o&password=hunter2&sslmode=require")
    assert store.redacted_url() == "postgresql://db.internal/ledger?password=***&sslmode=require&user=o"
    assert OrchestraStore(database_url="sqlite:////tmp/o.db").redacted_url() == "sqlite:////tmp/o.db"


def test_validation_errors_never_echo_a_secret():
    with pytest.raises(ValidationError) as bad_url:
        OrchestraStore(database_url="this is not a url hunter2")
    assert "hunter2" not in str(bad_url.value)
    assert "database_url is not a SQLAlchemy URL" in str(bad_url.value)

    with pytest.raises(ValidationError) as bad_provider:
        ProviderCredentials(provider="sk-pasted-into-the-wrong-field", api_key="sk-real")
    assert "sk-pasted-into-the-wrong-field" not in str(bad_provider.value)
    assert "sk-real" not in str(bad_provider.value)


def test_field_validation():
    with pytest.raises(ValidationError, match="api_key must not be empty"):
        ProviderCredentials(provider="openai", api_key="  ")
    with pytest.raises(ValidationError, match="base_url must start with http"):
        ProviderCredentials(provider="openai", api_key="k", base_url="127.0.0.1:8000")
    assert ProviderCredentials(provider="anthropic", api_key="k", base_url="", organization=" ").base_url is None
    with pytest.raises(ValidationError, match="session_port and session_token"):
        DaggerEngine(session_port=41234)
    with pytest.raises(ValidationError, match="runner_host must be a URL"):
        DaggerEngine(runner_host="dagger.internal:8080")
    with pytest.raises(ValidationError, match="needs a command"):
        MCPServer(transport="stdio")
    with pytest.raises(ValidationError, match="needs a url"):
        MCPServer(transport="sse", command="x")


def test_dagger_engine_env_names_the_sdk_variables():
    engine = DaggerEngine(
        session_port=41234, session_token="dgr-session-abc", runner_host="tcp://dagger.internal:8080", cli_bin="/usr/local/bin/dagger"
    )
    assert engine.engine_env() == {
        "DAGGER_SESSION_PORT": "41234",
        "DAGGER_SESSION_TOKEN": "dgr-session-abc",
        "_EXPERIMENTAL_DAGGER_RUNNER_HOST": "tcp://dagger.internal:8080",
        "_EXPERIMENTAL_DAGGER_CLI_BIN": "/usr/local/bin/dagger",
    }
    assert DaggerEngine().engine_env() == {}
    assert DaggerEngine().timeout_seconds == 600.0


def test_saving_reveals_each_mcp_server_once_and_in_place():
    # Prefect's own secret walk mixes up servers (it caches by id() of temporary
    # dicts); FastAgentSettings serialises its servers itself when saving.
    servers = {
        f"s{i}": {"transport": "http", "url": f"http://127.0.0.1:{9000 + i}/mcp", "headers": {"X-Key": f"hdr-{i}"}}
        if i % 2 else {"command": f"cmd{i}", "env": {"TOKEN": f"tok-{i}"}}
        for i in range(5)
    }
    block = FastAgentSettings(mcp_servers=servers)
    for mode in ("python", "json"):
        saved = block.model_dump(mode=mode, context={"include_secrets": True})["mcp_servers"]
        assert list(saved) == list(servers)
        for name, given in servers.items():
            assert saved[name]["env"] == given.get("env", {})
            assert saved[name]["headers"] == given.get("headers", {})
            assert saved[name].get("url") == given.get("url") and saved[name].get("command") == given.get("command")


def test_fastagent_config_is_accepted_by_fast_agent():
    from mcp_agent.config import Settings

    block = FastAgentSettings(
        default_model="passthrough",
        logger_level="info",
        show_chat=True,
        mcp_servers={
            "fetch": {"command": "uvx", "args": ["mcp-server-fetch"], "env": {"TOKEN": "t-1"}},
            "remote": {"transport": "http", "url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer b-2"}},
        },
    )
    settings = Settings.model_validate(block.fastagent_config())
    assert settings.default_model == "passthrough"
    assert settings.logger.level == "info" and settings.logger.show_chat is True
    assert settings.logger.progress_display is False and settings.logger.show_tools is False
    fetch, remote = settings.mcp.servers["fetch"], settings.mcp.servers["remote"]
    assert (fetch.transport, fetch.command, fetch.args, fetch.env) == ("stdio", "uvx", ["mcp-server-fetch"], {"TOKEN": "t-1"})
    assert (remote.transport, remote.url, remote.headers) == ("http", "https://mcp.example/mcp", {"Authorization": "Bearer b-2"})


# -- against a real Prefect server -----------------------------------------------


@pytest.fixture(scope="module")
def prefect_api() -> str:
    # One server for this module. Module scope, not session scope: the harness
    # sets PREFECT_API_URL for as long as it lives, which must not leak into
    # other modules' tests that expect Prefect's ephemeral mode.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry noise
        with prefect_test_harness():
            for block in ALL_BLOCKS:
                block.register_type_and_schema(_sync=True)
            yield get_current_settings().api.url


@pytest.fixture
def sdk_env(monkeypatch):
    """No SDK variables unless a test sets them; no cached lookups across tests."""
    for var in SDK_VARS:
        monkeypatch.delenv(var, raising=False)
    clear_credentials_cache()
    yield monkeypatch
    clear_credentials_cache()


@pytest.fixture
def api(prefect_api, sdk_env) -> str:
    return prefect_api


@pytest.fixture
def no_api(sdk_env):
    """No Prefect API configured (even though the module's test server runs)."""
    sdk_env.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert get_current_settings().api.url is None
        yield


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def save(name: str, provider: str = "openai", key: str = "sk-test", **fields) -> str:
    ProviderCredentials(provider=provider, api_key=key, **fields).save(name, overwrite=True, _sync=True)
    return name


@pytest.fixture
def default_block(api):
    """Saves `<provider>-default` blocks on request; deletes them afterwards."""
    made: list[str] = []

    def make(provider: str, key: str, **fields) -> str:
        made.append(save(f"{provider}-default", provider=provider, key=key, **fields))
        return made[-1]

    yield make
    for name in made:
        ProviderCredentials.delete(name, _sync=True)


def test_blocks_round_trip_through_the_server(api):
    name = unique("rt")
    FastAgentSettings(
        mcp_servers={"gh": {"command": "npx", "env": {"GITHUB_TOKEN": "ghp_round"}},
                     "web": {"transport": "sse", "url": "http://127.0.0.1:9/sse", "headers": {"X-Key": "hdr-round"}}},
        logger_level="debug",
    ).save(name, _sync=True)
    fa = FastAgentSettings.load(name, _sync=True)
    assert fa.mcp_servers["gh"].env["GITHUB_TOKEN"].get_secret_value() == "ghp_round"
    assert fa.mcp_servers["web"].headers["X-Key"].get_secret_value() == "hdr-round"
    assert fa.mcp_servers["web"].url == "http://127.0.0.1:9/sse" and fa.logger_level == "debug"

    DaggerEngine(session_port=4242, session_token="dgr-round", timeout_seconds=30).save(name, _sync=True)
    de = DaggerEngine.load(name, _sync=True)
    assert (de.session_port, de.session_token.get_secret_value(), de.timeout_seconds) == (4242, "dgr-round", 30)

    OrchestraStore(database_url="postgresql://o:pw-round@db/ledger").save(name, _sync=True)
    assert OrchestraStore.load(name, _sync=True).url() == "postgresql://o:pw-round@db/ledger"

    save(name, provider="openai-compatible", key="sk-round", base_url="http://127.0.0.1:11434/v1")
    pc = ProviderCredentials.load(name, _sync=True)
    assert (pc.provider, pc.api_key.get_secret_value(), pc.base_url) == ("openai-compatible", "sk-round", "http://127.0.0.1:11434/v1")


def test_server_masks_every_secret_when_reading_without_secrets(api):
    from prefect.client.orchestration import get_client

    name = unique("masked")
    FastAgentSettings(
        mcp_servers={"gh": {"command": "npx", "env": {"GITHUB_TOKEN": "ghp_masked"}},
                     "web": {"transport": "http", "url": "http://x/mcp", "headers": {"Authorization": "Bearer hdr-masked"}}}
    ).save(name, _sync=True)
    DaggerEngine(session_port=4242, session_token="dgr-masked").save(name, _sync=True)
    OrchestraStore(database_url="postgresql://o:pw-masked@db/ledger").save(name, _sync=True)
    save(name, key="sk-masked")
    with get_client(sync_client=True) as client:
        for block, secret in [
            (FastAgentSettings, "ghp_masked"), (FastAgentSettings, "hdr-masked"), (DaggerEngine, "dgr-masked"),
            (OrchestraStore, "pw-masked"), (ProviderCredentials, "sk-masked"),
        ]:
            shown = client.read_block_document_by_name(name, block.get_block_type_slug(), include_secrets=False)
            assert secret not in json.dumps(shown.data), (block.__name__, shown.data)
            full = client.read_block_document_by_name(name, block.get_block_type_slug(), include_secrets=True)
            assert secret in json.dumps(full.data)


# -- the resolution order ---------------------------------------------------------


def test_named_block_wins_over_env_and_default(api, sdk_env, default_block):
    team = save(unique("team-openai"), key="sk-team", base_url="http://127.0.0.1:8000/v1", organization="org-team")
    default_block("openai", "sk-default")
    sdk_env.setenv("OPENAI_API_KEY", "sk-env")
    sdk_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9999/v1")
    got = resolve_credentials("openai", team)
    assert got == Resolved(api_key="sk-team", base_url="http://127.0.0.1:8000/v1", source=f"block '{team}'", organization="org-team")
    key, base_url, source = got
    assert (key, base_url, source) == ("sk-team", "http://127.0.0.1:8000/v1", f"block '{team}'")
    assert "sk-team" not in repr(got) and "sk-team" not in str(got)


def test_env_wins_over_default_block(api, sdk_env, default_block):
    default_block("openai", "sk-default")
    sdk_env.setenv("OPENAI_API_KEY", "sk-env")
    assert tuple(resolve_credentials("openai", None)) == ("sk-env", None, "env OPENAI_API_KEY")
    sdk_env.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    assert tuple(resolve_credentials("openai", None)) == (
        "sk-env", "http://127.0.0.1:11434/v1", "env OPENAI_API_KEY and OPENAI_BASE_URL")


def test_default_block_when_env_is_unset(api, sdk_env, default_block):
    default_block("anthropic", "sk-ant-default", base_url="http://127.0.0.1:9100")
    sdk_env.setenv("OPENAI_API_KEY", "sk-openai-env")  # another provider's variable does not count
    assert tuple(resolve_credentials("anthropic")) == ("sk-ant-default", "http://127.0.0.1:9100", "block 'anthropic-default'")


def test_anthropic_env_variables(api, sdk_env):
    sdk_env.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    sdk_env.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9200")
    assert tuple(resolve_credentials("anthropic")) == (
        "sk-ant-env", "http://127.0.0.1:9200", "env ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL")


def test_empty_env_variable_counts_as_unset(api, sdk_env, default_block):
    default_block("openai", "sk-default")
    sdk_env.setenv("OPENAI_API_KEY", "  ")
    assert resolve_credentials("openai").source == "block 'openai-default'"


def test_missing_everywhere_names_the_three_places(api, sdk_env):
    sdk_env.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
    save(unique("unrelated"), key="sk-block-must-not-leak")
    with pytest.raises(MissingCredentials) as err:
        resolve_credentials("openai", None)
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "credentials block named by the agent" in msg and "`credentials:`" in msg
    assert "OPENAI_API_KEY: not set" in msg
    assert "'openai-default' (type orchestra-provider-credentials): not found on the Prefect server" in msg
    assert "sk-ant-must-not-leak" not in msg and "sk-block-must-not-leak" not in msg


def test_unknown_named_block_is_named_and_does_not_fall_back(api, sdk_env, default_block):
    sdk_env.setenv("OPENAI_API_KEY", "sk-env-not-used")
    default_block("openai", "sk-default-not-used")
    with pytest.raises(MissingCredentials) as err:
        resolve_credentials("openai", "no-such-block")
    msg = str(err.value)
    assert "credentials block 'no-such-block'" in msg and "no orchestra-provider-credentials block with that name exists" in msg
    assert "OPENAI_API_KEY" in msg and "'openai-default'" in msg  # the alternatives
    assert "sk-env-not-used" not in msg and "sk-default-not-used" not in msg
    assert "Unable to find block document" not in msg  # Prefect's own wording
    assert err.value.__cause__ is None and err.value.__context__ is None  # no Prefect traceback attached


def test_block_of_another_provider_is_refused(api):
    ant = save(unique("ant"), provider="anthropic", key="sk-ant-secret")
    with pytest.raises(CredentialsError) as err:
        resolve_credentials("openai", ant)
    assert f"'{ant}' holds 'anthropic' credentials" in str(err.value)
    assert "sk-ant-secret" not in str(err.value)
    compat = save(unique("vllm"), provider="openai-compatible", key="sk-vllm", base_url="http://127.0.0.1:8000/v1")
    assert tuple(resolve_credentials("openai", compat)) == ("sk-vllm", "http://127.0.0.1:8000/v1", f"block '{compat}'")


def test_unknown_provider():
    with pytest.raises(CredentialsError, match="unknown provider 'fast-agent'"):
        resolve_credentials("fast-agent")


def test_lookups_are_cached_per_process(api):
    name = save(unique("cached"), key="sk-cached")
    assert resolve_credentials("openai", name).api_key == "sk-cached"
    ProviderCredentials.delete(name, _sync=True)
    assert resolve_credentials("openai", name).api_key == "sk-cached"  # served from the cache
    clear_credentials_cache()
    with pytest.raises(MissingCredentials, match=name):
        resolve_credentials("openai", name)
    # "not found" is cached too: a block saved later shows after clearing the cache
    save(name, key="sk-later")
    with pytest.raises(MissingCredentials):
        resolve_credentials("openai", name)
    clear_credentials_cache()
    assert resolve_credentials("openai", name).api_key == "sk-later"


def test_async_resolution(api, sdk_env, default_block):
    team = save(unique("team-async"), key="sk-async")
    default_block("openai", "sk-default-async")

    async def main():
        named = await aresolve_credentials("openai", team)
        fallback = await aresolve_credentials("openai", None)
        # the sync API also works from inside a running event loop
        from_sync = resolve_credentials("openai", team)
        with pytest.raises(MissingCredentials, match="'gone-async'"):
            await aresolve_credentials("openai", "gone-async")
        return named, fallback, from_sync

    named, fallback, from_sync = asyncio.run(main())
    assert tuple(named) == ("sk-async", None, f"block '{team}'")
    assert tuple(fallback) == ("sk-default-async", None, "block 'openai-default'")
    assert from_sync == named


def test_without_a_prefect_api_blocks_are_not_looked_up(prefect_api, no_api, sdk_env):
    # The module's server holds an `openai-default` block; without PREFECT_API_URL
    # resolution must not reach it (nor start an ephemeral server to look).
    with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
        save("openai-default", key="sk-unreachable-default")
    try:
        with pytest.raises(MissingCredentials) as err:
            resolve_credentials("openai")
        msg = str(err.value)
        assert "'openai-default' (type orchestra-provider-credentials): not looked up" in msg
        assert "PREFECT_API_URL is unset" in msg and "sk-unreachable-default" not in msg

        sdk_env.setenv("OPENAI_API_KEY", "sk-env-only")
        assert tuple(resolve_credentials("openai")) == ("sk-env-only", None, "env OPENAI_API_KEY")
        assert asyncio.run(aresolve_credentials("openai")).source == "env OPENAI_API_KEY"

        # a named block cannot be honoured without an API: say so, do not guess
        with pytest.raises(MissingCredentials) as named:
            resolve_credentials("openai", "team-openai")
        assert "credentials block 'team-openai'" in str(named.value)
        assert "PREFECT_API_URL" in str(named.value) and "sk-env-only" not in str(named.value)
    finally:
        with temporary_settings(updates={PREFECT_API_URL: prefect_api}):
            ProviderCredentials.delete("openai-default", _sync=True)


def test_prefect_block_register_cli(prefect_api):
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("prefect")), "block", "register", "-m", "blocks"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Successfully registered 4 blocks" in done.stdout
    for block in ALL_BLOCKS:
        assert block.get_block_type_name() in done.stdout


# ---------------------------------------------------------------------------
# the blocks the app reads: OrchestraStore (the ledger) and FastAgentSettings


def test_the_store_block_named_by_the_settings_is_the_ledger(api, monkeypatch, tmp_path):
    from orchestra import runtime

    url = f"sqlite:///{tmp_path / 'team-ledger.db'}"
    name = unique("ledger")
    OrchestraStore(database_url=url).save(name, overwrite=True, _sync=True)
    monkeypatch.delenv("ORCHESTRA_DB_URL", raising=False)
    monkeypatch.setenv("ORCHESTRA_STORE_BLOCK", name)
    assert runtime.ledger_url() == url
    assert runtime.ledger().display_url == url
    monkeypatch.setenv("ORCHESTRA_DB_URL", f"sqlite:///{tmp_path / 'env.db'}")  # the variable wins
    assert runtime.ledger_url().endswith("env.db")
    monkeypatch.delenv("ORCHESTRA_DB_URL")
    monkeypatch.setenv("ORCHESTRA_STORE_BLOCK", "no-such-store")
    with pytest.raises(RuntimeError, match="ORCHESTRA_STORE_BLOCK=no-such-store: cannot read"):
        runtime.ledger_url()


def test_the_fast_agent_block_named_by_the_settings_is_applied(api, monkeypatch):
    import asyncio

    from agents import fastagent_adapter
    from flows import tools

    name = unique("fa")
    block = FastAgentSettings(logger_level="error", show_tools=False,
                              mcp_servers={"remote": {"url": "http://127.0.0.1:9/mcp", "headers": {"X-Key": "k-1"}}})
    block.save(name, overwrite=True, _sync=True)
    monkeypatch.setattr(fastagent_adapter, "_SETTINGS", {})
    monkeypatch.setattr(fastagent_adapter._runtime, "reset", lambda: None)  # no fast-agent thread here
    monkeypatch.setattr(tools, "_applied_fast_agent", None)
    monkeypatch.setenv("ORCHESTRA_FAST_AGENT_BLOCK", name)
    found, servers = asyncio.run(tools.fast_agent_block())
    assert found == name and fastagent_adapter._SETTINGS == block.fastagent_config()
    assert servers["remote"].url == "http://127.0.0.1:9/mcp"  # its servers join the run's map
    assert servers["remote"].plain()["headers"] == {"X-Key": "k-1"}
    monkeypatch.setenv("ORCHESTRA_FAST_AGENT_BLOCK", "no-such-settings")
    with pytest.raises(RuntimeError, match="ORCHESTRA_FAST_AGENT_BLOCK=no-such-settings"):
        asyncio.run(tools.fast_agent_block())
