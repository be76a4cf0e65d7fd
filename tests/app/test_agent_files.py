"""Agent files edited through the app layer: round-trip YAML, a diff, versions, restore,
delete, the role checked and every change audited (orchestra.agent_files)."""

from __future__ import annotations

import pytest

from agents.base import AgentConfig
from agents.registry import load_agent
from ledger import queries
from ledger.store import Store
from orchestra import agent_files
from orchestra.access import Actor, Forbidden

ADMIN, VIEWER, MEMBER = Actor("ada", "admin"), Actor("vic", "viewer"), Actor("mia", "member")
ORIGINAL = """# The reviewer: keep this comment.
description: "Meticulous reviewer."   # quoted, with a comment
model: openai:gpt-4.1-mini
capabilities: [code-review, python]
instruction: |
  Review the code.
  Be kind.
"""


@pytest.fixture
def env(tmp_path):
    folder = tmp_path / "agents"
    folder.mkdir()
    (folder / "reviewer.yaml").write_text(ORIGINAL)
    store = Store(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield folder, store
    store.close()


def edited(**changes) -> AgentConfig:
    fields = dict(name="reviewer", description="Meticulous reviewer.", model="openai:gpt-4.1-mini",
                  capabilities=["code-review", "python"], instruction="Review the code.\nBe kind.\n")
    return AgentConfig(**{**fields, **changes})


def test_an_edit_keeps_the_files_formatting_and_comments_and_is_a_version(env):
    folder, store = env
    plan = agent_files.preview(edited(daily_budget_usd=2.5), folder, overwrite=True)
    assert plan.old == ORIGINAL and plan.diff.endswith("   Be kind.\n+daily_budget_usd: 2.5\n")
    agent_files.save(ADMIN, edited(daily_budget_usd=2.5), folder, overwrite=True, expected=plan.old, store=store)
    assert (folder / "reviewer.yaml").read_text() == ORIGINAL + "daily_budget_usd: 2.5\n"
    assert load_agent(folder / "reviewer.yaml").daily_budget_usd == 2.5

    versions = agent_files.history("reviewer", store=store)
    assert [(v["version"], v["action"], v["actor"]) for v in versions] == [(2, "edit", "ada"), (1, "import", "(file)")]
    assert agent_files.version_text("reviewer", 1, store=store) == ORIGINAL
    (row,) = queries.audit(store)
    assert (row["action"], row["outcome"], row["actor"]) == ("agent.edit", "ok", "ada")
    assert "daily_budget_usd" not in row["before"] and row["after"]["daily_budget_usd"] == 2.5


def test_a_file_changed_since_its_diff_is_not_overwritten(env):
    folder, store = env
    plan = agent_files.preview(edited(model="anthropic:claude-sonnet-4-0"), folder, overwrite=True)
    (folder / "reviewer.yaml").write_text(ORIGINAL.replace("Be kind.", "Be brief."))
    with pytest.raises(agent_files.AgentConflict, match="changed on disk"):
        agent_files.save(ADMIN, edited(model="anthropic:claude-sonnet-4-0"), folder, overwrite=True,
                         expected=plan.old, store=store)
    assert "Be brief." in (folder / "reviewer.yaml").read_text()
    assert agent_files.history("reviewer", store=store) == []


def test_delete_then_restore_brings_the_agent_back(env):
    folder, store = env
    agent_files.save(ADMIN, edited(temperature=0.1), folder, overwrite=True, store=store)
    agent_files.delete(ADMIN, "reviewer", folder, store=store)
    assert not (folder / "reviewer.yaml").exists()
    versions = agent_files.history("reviewer", store=store)
    assert [v["action"] for v in versions] == ["delete", "edit", "import"]
    agent_files.restore(ADMIN, "reviewer", 1, folder, store=store)
    assert (folder / "reviewer.yaml").read_text() == ORIGINAL
    assert [r["action"] for r in queries.audit(store)] == ["agent.restore", "agent.delete", "agent.edit"]
    with pytest.raises(ValueError, match="no saved version 9"):
        agent_files.restore(ADMIN, "reviewer", 9, folder, store=store)


def test_a_viewer_or_member_is_refused_audited_and_nothing_changes(env):
    folder, store = env
    for who, call in ((VIEWER, lambda: agent_files.save(VIEWER, edited(temperature=0.9), folder, overwrite=True,
                                                          store=store)),
                      (MEMBER, lambda: agent_files.delete(MEMBER, "reviewer", folder, store=store)),
                      (VIEWER, lambda: agent_files.restore(VIEWER, "reviewer", 1, folder, store=store))):
        with pytest.raises(Forbidden, match="needs the admin role"):
            call()
    assert (folder / "reviewer.yaml").read_text() == ORIGINAL
    assert [(r["actor"], r["action"], r["outcome"]) for r in queries.audit(store)] == [
        ("vic", "agent.restore", "refused"), ("mia", "agent.delete", "refused"), ("vic", "agent.edit", "refused")]
    assert agent_files.history("reviewer", store=store) == []


def test_a_lost_database_writes_nothing(env, tmp_path):
    folder, _ = env
    lost = Store("postgresql://orch:pw-123456@127.0.0.1:1/orchestra")
    with pytest.raises(Exception, match="127.0.0.1"):
        agent_files.save(ADMIN, edited(temperature=0.3), folder, overwrite=True, store=lost)
    assert (folder / "reviewer.yaml").read_text() == ORIGINAL
    lost.close()
