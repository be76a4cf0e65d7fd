"""Self-healing end to end: real Prefect runs, real SDKs, wire fakes, the ledger.

Circuit breakers, fallbacks, injected faults, budgets, routing, provider limits,
dead letters, every attempt visible.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from ledger import queries
from tests.engine.test_engine import in_flight_at_arrival
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "deployments" / "workflows"
MINI = "openai:gpt-4.1-mini"
CLAUDE = "anthropic:claude-sonnet-4-0"


def run(workflow, inputs=None, **kwargs):
    from flows.engine import final_report
    from orchestra.flow import run_workflow

    async def main():
        state = await run_workflow(workflow=workflow, inputs=inputs or {}, return_state=True, **kwargs)
        return await final_report(state), state

    return asyncio.run(main())


def attempts_in_ledger(store, flow_run_id: str) -> list[dict]:
    return [c for c in queries.run(store, flow_run_id)["calls"] if not c["cached"]]


def read_events(prefix: str, since: datetime, n: int, timeout: float = 20.0) -> list[dict]:
    """Events reach the API asynchronously: poll until `n` have arrived (or the timeout)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter

    async def read():
        async with get_client() as client:
            flt = EventFilter(event=EventNameFilter(prefix=[prefix]), occurred=EventOccurredFilter(since=since))
            page = await client.request("POST", "/events/filter", json={"filter": flt.model_dump(mode="json"),
                                                                       "limit": 50})
            return page.json()["events"]

    deadline = time.monotonic() + timeout
    events: list[dict] = []
    while time.monotonic() < deadline:
        events = asyncio.run(read())
        if len(events) >= n:
            break
        time.sleep(0.3)
    return sorted(events, key=lambda e: e["occurred"])


# ---------------------------------------------------------------------------
# injected faults


def test_30_percent_injected_faults_20_code_review_runs_all_complete(orchestra_env, openai_fake, anthropic_fake):
    """The README's "When providers fail" numbers come from this test (printed with -s)."""
    openai_fake.configure(fault_rate=0.3, fault_kinds=[429, 500, "timeout", "drop"], seed=7, slow_seconds=3)
    wf = yaml.safe_load((WORKFLOWS / "code-review.yaml").read_text())
    wf["agents"]["reviewer"].update(model=MINI, fallback=["backup"])
    wf["agents"]["backup"] = {"model": CLAUDE, "instruction": "You are a careful code reviewer."}
    for step in wf["steps"]:
        step["timeout"] = 1  # a slow reply (3 s) is a timeout, and a transient failure

    async def all_runs():
        from flows.engine import final_report
        from orchestra.flow import run_workflow

        gate = asyncio.Semaphore(2)  # two at a time: the box has two cores

        async def one(i: int):
            async with gate:
                state = await run_workflow(workflow=wf, inputs={"code": f"def f{i}(): return {uuid.uuid4().int}"},
                                           return_state=True)
                return await final_report(state), state

        return await asyncio.gather(*(one(i) for i in range(20)))

    results = asyncio.run(all_runs())
    assert all(state.is_completed() for _, state in results), [s.message for _, s in results if not s.is_completed()]
    reports = [r for r, _ in results]
    rows = [c for r in reports for c in attempts_in_ledger(orchestra_env, r["flow_run_id"])]
    # exactly one ledger row per request each fake received
    assert len([c for c in rows if c["provider"] == "openai"]) == openai_fake.request_count
    assert len([c for c in rows if c["provider"] == "anthropic"]) == anthropic_fake.request_count
    failed_requests = [r for r in openai_fake.requests if r["status"] != 200]
    assert failed_requests, "the fake injected no fault"
    assert len([c for c in rows if c["status"] == "error"]) == len(failed_requests) + sum(
        r["status"] != 200 for r in anthropic_fake.requests)
    # --json attempts are the ledger's rows, step by step
    for report in reports:
        calls = attempts_in_ledger(orchestra_env, report["flow_run_id"])
        for sid, step in report["steps"].items():
            assert step["attempts"] == len([c for c in calls if c["step"] == sid]) >= 1
            assert step["agent"] in ("reviewer", "backup")
            answered = [c for c in calls if c["step"] == sid and c["status"] == "ok"]
            assert len(answered) == 1 and answered[0]["agent"] == step["agent"]
    steps = [s for r in reports for s in r["steps"].values()]
    fallbacks = sum(s["agent"] == "backup" for s in steps)
    cost = sum(r["cost_usd"] for r in reports)
    assert cost == pytest.approx(sum(c["cost_usd"] for c in rows))
    kinds = {}
    for r in failed_requests:
        kinds[str(r["status"])] = kinds.get(str(r["status"]), 0) + 1
    print(f"\nREADME numbers: runs=20 steps={len(steps)} attempts={len(rows)} "
          f"openai_requests={openai_fake.request_count} anthropic_requests={anthropic_fake.request_count} "
          f"failed_attempts={len(failed_requests)} faults={kinds} retries={len(rows) - len(steps) - fallbacks} "
          f"fallbacks={fallbacks} cost_usd={cost:.6f}")


# ---------------------------------------------------------------------------
# circuit breakers and fallbacks


def _breaker_workflow(retries: int = 3) -> dict:
    return {"name": "breaker", "agents": {"primary": {"model": MINI, "fallback": ["backup"]},
                                          "backup": {"model": CLAUDE}},
            "steps": [{"id": "ask", "agent": "primary", "prompt": uuid.uuid4().hex, "retries": retries}]}


def _end_cooldown(store, key: str) -> None:
    """What the passing of the cool-down does to the shared row (no waiting in tests)."""
    row = store.load_breaker(key)
    assert store.swap_breaker(key, row["version"], {**row, "retry_at": time.time() - 1, "version": row["version"] + 1})


def test_breaker_opens_fails_fast_fallback_answers_and_half_open_probe_closes_it(
        orchestra_env, openai_fake, anthropic_fake, monkeypatch):
    from agents.breaker import breakers, endpoint

    monkeypatch.setenv("ORCHESTRA_BREAKER_THRESHOLD", "3")
    monkeypatch.setenv("ORCHESTRA_BREAKER_TTL", "0")  # read the shared row on every check
    since = datetime.now(timezone.utc)
    openai_fake.configure(fault_rate=1.0, fault_kinds=[500])  # the provider is down

    # 1st run: three 500s open the breaker; the 4th attempt goes straight to the fallback
    report, state = run(_breaker_workflow())
    assert state.is_completed(), state.message
    assert openai_fake.request_count == 3
    step = report["steps"]["ask"]
    assert step["agent"] == "backup" and step["model"] == CLAUDE and step["attempts"] == 4
    calls = attempts_in_ledger(orchestra_env, report["flow_run_id"])
    assert [(c["agent"], c["status"]) for c in calls] == [("primary", "error")] * 3 + [("backup", "ok")]
    ep = endpoint(MINI)
    assert ep.base_url == openai_fake.base_url
    assert orchestra_env.load_breaker(ep.key)["state"] == "open"

    # 2nd run: the open breaker refuses the call without a request; the fallback answers
    report, state = run(_breaker_workflow(retries=0))
    assert state.is_completed(), state.message
    assert openai_fake.request_count == 3
    assert report["steps"]["ask"]["agent"] == "backup" and report["steps"]["ask"]["attempts"] == 1

    # without a fallback the step fails at once, naming the open breaker, and nothing is sent
    alone = {"name": "alone", "agents": {"a": {"model": MINI}},
             "steps": [{"id": "only", "agent": "a", "prompt": uuid.uuid4().hex, "retries": 0}]}
    report, state = run(alone)
    assert state.is_failed()
    assert "circuit breaker open" in report["steps"]["only"]["error"] and report["steps"]["only"]["attempts"] == 0
    assert openai_fake.request_count == 3

    # the provider recovers; after the cool-down one probe goes out and closes the breaker
    openai_fake.reset()
    _end_cooldown(orchestra_env, ep.key)
    report, state = run(_breaker_workflow(retries=0))
    assert state.is_completed(), state.message
    assert report["steps"]["ask"]["agent"] == "primary" and openai_fake.request_count == 1
    assert orchestra_env.load_breaker(ep.key)["state"] == "closed"
    assert breakers.state(ep)["state"] == "closed"

    transitions = [(e["from_state"], e["to_state"]) for e in queries.breaker_events(orchestra_env, ep.key)]
    assert transitions == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    events = read_events("orchestra.breaker.", since, 3)
    assert [e["event"] for e in events] == ["orchestra.breaker.opened", "orchestra.breaker.half_opened",
                                           "orchestra.breaker.closed"]
    assert all(e["resource"]["orchestra.model"] == MINI for e in events)
    assert "500" in events[0]["payload"]["reason"]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_store(request, tmp_path):
    """A ledger that several workers share: SQLite, and PostgreSQL (what teams run)."""
    from ledger.store import Store

    if request.param == "sqlite":
        store = Store(f"sqlite:///{tmp_path / 'shared.db'}")
        yield store
        store.close()
        return
    from tests.support.pg import create_database, drop_database, postgres_unavailable_reason, postgres_url

    server = postgres_url()
    if server is None:
        pytest.skip(f"PostgreSQL unavailable: {postgres_unavailable_reason()}")
    name = "t_" + uuid.uuid4().hex[:12]
    store = Store(create_database(server, name))
    yield store
    store.close()
    drop_database(server, name)


def test_breaker_state_is_shared_by_processes_on_one_store(shared_store):
    """Two registries on one database behave like two workers: one breaker, each transition written once."""
    from agents.breaker import ALLOW, DENY, PROBE, Breakers, Endpoint

    orchestra_env = shared_store
    ep = Endpoint("openai", "http://shared.example/v1", MINI)
    worker_a = Breakers(threshold=2, cooldown=60, ttl=0, backend=orchestra_env)
    worker_b = Breakers(threshold=2, cooldown=60, ttl=0, backend=orchestra_env)
    assert worker_a.check(ep) == ALLOW and worker_b.check(ep) == ALLOW
    worker_a.failure(ep, reason="HTTP 500")
    worker_a.failure(ep, reason="HTTP 500")
    assert worker_b.check(ep) == DENY  # b never saw a failure itself
    # once the cool-down is over both workers ask: exactly one gets the probe
    _end_cooldown(orchestra_env, ep.key)
    assert worker_a.check(ep) == PROBE
    assert worker_b.check(ep) == DENY  # a's probe is in flight
    worker_a.success(ep, probe=True)
    assert worker_b.check(ep) == ALLOW
    assert [(e["from_state"], e["to_state"]) for e in queries.breaker_events(orchestra_env, ep.key)] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_fallback_after_retries_are_exhausted_and_sdk_retries_are_off(orchestra_env, openai_fake, anthropic_fake):
    openai_fake.configure(faults=[429, 500, "drop"])
    report, state = run(_breaker_workflow(retries=2))
    assert state.is_completed(), state.message
    # three attempts Orchestra decided (the SDK retried nothing), then the fallback
    assert openai_fake.request_count == 3 and anthropic_fake.request_count == 1
    assert report["steps"]["ask"]["attempts"] == 4 and report["steps"]["ask"]["agent"] == "backup"
    calls = attempts_in_ledger(orchestra_env, report["flow_run_id"])
    assert [c["attempt"] for c in calls] == [1, 2, 3, 3]
    # a failed fallback as well: the step names every agent it tried
    openai_fake.configure(faults=[400])
    anthropic_fake.configure(faults=[400])
    report, state = run(_breaker_workflow(retries=2))
    assert state.is_failed()
    error = report["steps"]["ask"]["error"]
    assert "primary -> backup" in error and "400" in error
    assert openai_fake.request_count == 4 and anthropic_fake.request_count == 2  # 400 is not retried


def test_every_sdk_request_is_one_attempt_anthropic(orchestra_env, anthropic_fake):
    anthropic_fake.configure(faults=[529, 500, None])
    wf = {"name": "claude", "agents": {"c": {"model": CLAUDE}},
          "steps": [{"id": "ask", "agent": "c", "prompt": uuid.uuid4().hex, "retries": 2}]}
    report, state = run(wf)
    assert state.is_completed(), state.message
    assert anthropic_fake.request_count == 3 == report["steps"]["ask"]["attempts"]
    assert len(attempts_in_ledger(orchestra_env, report["flow_run_id"])) == 3


# ---------------------------------------------------------------------------
# budgets


def _budget_agent() -> dict:
    return {"model": MINI, "max_tokens": 50}


def test_budget_stops_before_the_call_that_would_exceed_it(orchestra_env, openai_fake):
    from agents.base import AgentConfig
    from flows.budget import worst_case

    openai_fake.configure(reply=" ".join(["word"] * 50))  # each reply uses all of max_tokens
    prompt = "Say fifty words about " + uuid.uuid4().hex
    worst = worst_case(AgentConfig(name="a", **_budget_agent()), MINI, prompt)
    budget = worst * 1.2  # room for one call's worst case, not two
    wf = {"name": "budgeted", "type": "sequential", "budget_usd": budget, "agents": {"a": _budget_agent()},
          "steps": [{"id": "one", "agent": "a", "prompt": prompt},
                    {"id": "two", "agent": "a", "prompt": prompt + " again"},
                    {"id": "three", "agent": "a", "prompt": prompt + " and again"}]}
    report, state = run(wf)
    assert state.is_failed()
    assert openai_fake.request_count == 1
    assert [report["steps"][s]["state"] for s in ("one", "two", "three")] == ["COMPLETED", "FAILED", "NOT_READY"]
    error = report["steps"]["two"]["error"]
    spent = report["steps"]["one"]["cost_usd"]
    assert "budget_usd" in error and f"{budget:.6f}" in error and f"spent ${spent:.6f}" in error
    assert "needs up to $" in error and "not made" in error
    row = queries.run(orchestra_env, report["flow_run_id"])
    assert 0 < row["cost_usd"] <= budget
    # --budget (the flow parameter) overrides the workflow's budget
    report, state = run(wf, budget_usd=1.0)
    assert state.is_completed(), state.message


def test_budget_holds_for_concurrent_steps(orchestra_env, openai_fake):
    from agents.base import AgentConfig
    from flows.budget import worst_case

    openai_fake.configure(reply=" ".join(["word"] * 50), latency_ms=300)
    prompt = "p" * 40
    worst = worst_case(AgentConfig(name="a", **_budget_agent()), MINI, prompt + " 0")
    wf = {"name": "par-budget", "type": "parallel", "agents": {"a": _budget_agent()},
          "steps": [{"id": f"s{i}", "agent": "a", "prompt": f"{prompt} {i}"} for i in range(4)]}
    report, state = run(wf, budget_usd=worst * 2.5)  # two worst cases fit, a third does not
    assert state.is_failed()
    assert openai_fake.request_count == 2
    assert sorted(s["state"] for s in report["steps"].values()) == ["COMPLETED", "COMPLETED", "FAILED", "FAILED"]
    assert report["cost_usd"] <= worst * 2.5


def test_agent_daily_budget_counts_todays_ledger(orchestra_env, openai_fake):
    from agents.base import AgentConfig
    from flows.budget import worst_case
    from ledger.store import CallRecord

    prompt = "daily " + uuid.uuid4().hex
    worst = worst_case(AgentConfig(name="thrifty", **_budget_agent()), MINI, prompt)
    # earlier today, in another run, the agent spent most of its daily budget
    orchestra_env.start_run(flow_run_id="earlier", workflow="x", inputs={})
    orchestra_env.record_call(CallRecord(flow_run_id="earlier", step="s", model=MINI, agent="thrifty",
                                         cost_usd=worst, priced=True))
    orchestra_env.finish_run(flow_run_id="earlier", state="COMPLETED")
    wf = {"name": "daily", "agents": {"thrifty": {**_budget_agent(), "daily_budget_usd": worst * 1.5}},
          "steps": [{"id": "only", "agent": "thrifty", "prompt": prompt}]}
    report, state = run(wf)
    assert state.is_failed() and openai_fake.request_count == 0
    assert "agent 'thrifty' daily_budget_usd" in report["steps"]["only"]["error"]


# ---------------------------------------------------------------------------
# routing


def _routing_workflow(strategy: str) -> dict:
    return {"name": "routed", "agents": {
        "alpha": {"model": "openai:gpt-4.1", "capabilities": ["review"], "description": "The thorough one."},
        "bravo": {"model": MINI, "capabilities": ["review"], "description": "The quick one."},
        "charlie": {"model": "fast-agent:passthrough", "capabilities": ["review", "echo"],
                    "description": "The echo."},
        "delta": {"model": MINI, "capabilities": ["other"]}},
        "steps": [{"id": "pick", "agent": {"capabilities": ["review"], "strategy": strategy}, "prompt": "Review x"}]}


def _ledger_history(store) -> None:
    """alpha: 100 ms, 5 recent calls; bravo: 300 ms, 1 call, the newest; charlie: no history."""
    from ledger.store import CallRecord

    store.start_run(flow_run_id="history", workflow="h", inputs={})
    for agent, latency, n in (("alpha", 100.0, 5), ("bravo", 300.0, 1)):
        for _ in range(n):
            store.record_call(CallRecord(flow_run_id="history", step="s", model=MINI, agent=agent,
                                         latency_ms=latency))
    store.finish_run(flow_run_id="history", state="COMPLETED")


def _route(wf_dict: dict, store) -> str:
    from flows import resilience
    from flows.spec import parse_workflow

    wf = parse_workflow(wf_dict)

    async def main():
        token = await resilience.begin_run(wf, store)
        try:
            return (await resilience.route(wf, wf.steps[0], None)).name
        finally:
            resilience.end_run(token)

    return asyncio.run(main())


def test_each_routing_strategy_picks_the_expected_agent_on_a_fixed_history(orchestra_env):
    from agents import routing

    _ledger_history(orchestra_env)
    assert _route(_routing_workflow("cheapest"), orchestra_env) == "charlie"  # passthrough costs nothing
    assert _route(_routing_workflow("fastest"), orchestra_env) == "alpha"
    assert _route(_routing_workflow("least_loaded"), orchestra_env) == "charlie"  # no calls at all
    routing.reset_round_robin()
    # bravo called last -> charlie, then alpha, then bravo
    assert [_route(_routing_workflow("round_robin"), orchestra_env) for _ in range(4)] == [
        "charlie", "alpha", "bravo", "charlie"]
    # the router model is the default passthrough: its echo names every agent -> the first candidate
    assert _route(_routing_workflow("llm"), orchestra_env) == "alpha"


def test_routing_skips_agents_with_an_open_breaker(orchestra_env, openai_fake):
    from agents.breaker import breakers, endpoint

    _ledger_history(orchestra_env)
    wf = _routing_workflow("least_loaded")
    wf["agents"]["charlie"]["model"] = "openai:gpt-4o-mini"
    breakers.use_backend(orchestra_env)
    breakers.configure(threshold=1)
    breakers.failure(endpoint("openai:gpt-4o-mini"), reason="test")  # open
    try:
        assert _route(wf, orchestra_env) == "bravo"
    finally:
        breakers.configure()


def test_a_routed_step_runs_and_reports_the_agent_that_answered(orchestra_env, openai_fake):
    wf = _routing_workflow("llm")
    wf["agents"]["charlie"]["model"] = MINI
    openai_fake.configure(reply=lambda body: "bravo" if "route a task" in body["messages"][-1]["content"]
                          else "reviewed")
    report, state = run(wf, model=None)
    assert state.is_completed(), state.message
    # the router is the default model (passthrough, offline); its echo names no single agent -> alpha
    assert report["steps"]["pick"]["agent"] == "alpha"
    calls = queries.run(orchestra_env, report["flow_run_id"])["calls"]
    assert [c["step"] for c in calls] == ["pick:route", "pick"]
    assert calls[0]["agent"] == "router" and report["steps"]["pick"]["attempts"] == 1


def test_llm_routing_follows_the_router_models_answer(orchestra_env, openai_fake, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_ROUTER_MODEL", MINI)
    openai_fake.configure(reply=lambda body: "bravo" if "route a task" in body["messages"][-1]["content"]
                          else "reviewed")
    report, state = run(_routing_workflow("llm"))
    assert state.is_completed(), state.message
    assert report["steps"]["pick"]["agent"] == "bravo" and report["steps"]["pick"]["output"] == "reviewed"
    assert "The quick one." in openai_fake.requests[0]["body"]["messages"][-1]["content"]


# ---------------------------------------------------------------------------
# provider limits


@pytest.mark.parametrize("limiter", ["local", "prefect"])
def test_provider_concurrency_limit(orchestra_env, openai_fake, monkeypatch, limiter):
    monkeypatch.setenv("ORCHESTRA_LIMITER", limiter)
    seen = in_flight_at_arrival(openai_fake)
    wf = {"name": "limited", "type": "parallel", "agents": {"a": {"model": MINI}},
          "steps": [{"id": f"s{i}", "agent": "a", "prompt": uuid.uuid4().hex} for i in range(4)]}
    report, state = run(wf)
    assert state.is_completed()
    assert max(seen) > 1  # without a limit the four calls overlap
    orchestra_env.set_limit("openai", concurrency=1, rpm=600)  # the rpm limit is taken too, never binding here
    openai_fake.reset()
    seen.clear()
    wf["steps"] = [{"id": f"s{i}", "agent": "a", "prompt": uuid.uuid4().hex} for i in range(4)]
    report, state = run(wf)
    assert state.is_completed(), state.message
    assert seen == [1, 1, 1, 1]
    if limiter == "prefect":
        from prefect.client.orchestration import get_client

        async def read():
            async with get_client() as client:
                return await client.read_global_concurrency_limit_by_name("orchestra-openai-concurrency")

        gcl = asyncio.run(read())
        assert gcl.limit == 1 and gcl.active


# ---------------------------------------------------------------------------
# dead letters


def test_a_step_that_fails_for_good_is_kept_with_its_prompt_and_error(orchestra_env, openai_fake):
    openai_fake.configure(faults=[401])
    secret_input = uuid.uuid4().hex
    wf = {"name": "dead", "inputs": {"x": {"type": "string"}}, "agents": {"a": {"model": MINI}},
          "steps": [{"id": "only", "agent": "a", "prompt": "Look at {{ inputs.x }} with sk-live-abcdefgh12345678"}]}
    report, state = run(wf, {"x": secret_input})
    assert state.is_failed()
    # `orchestra rerun` can find an inline workflow again: the run row holds it as JSON
    import json

    from flows.spec import parse_workflow

    ref = queries.run(orchestra_env, report["flow_run_id"])["workflow_ref"]
    assert parse_workflow(json.loads(ref)).model_dump() == parse_workflow(wf).model_dump()
    letters = queries.dead_letters(orchestra_env, flow_run_id=report["flow_run_id"])
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["workflow"], letter["step"], letter["agent"], letter["model"], letter["attempts"]) == (
        "dead", "only", "a", MINI, 1)
    assert secret_input in letter["prompt"] and "401" in letter["error"]
    assert "sk-live-abcdefgh12345678" not in letter["prompt"]  # redacted
    assert "sk-test-not-a-real-key-123456" not in str(letter)


def test_local_rate_limit_is_a_token_bucket():
    from flows.limits import _Bucket

    bucket = _Bucket(rpm=2)
    assert bucket.wait_time() == 0 and bucket.wait_time() == 0  # a burst of `rpm`
    assert 0 < bucket.wait_time() <= 30.0  # then one token every 60/rpm seconds


# ---------------------------------------------------------------------------
# approvals (approve and reject against `prefect server start`: tests/app/test_resilience_cli.py)


def test_an_approval_nobody_answers_times_out_and_fails_the_run(orchestra_env, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_APPROVAL_POLL", "0.2")
    wf = {"name": "unanswered", "steps": [{"id": "gate", "approval": {"message": "Ship?", "timeout": 1}},
                                          {"id": "after", "depends_on": ["gate"], "prompt": "shipped"}]}
    report, state = run(wf)
    assert state.is_failed()
    assert "approval timed out after 1 s" in report["steps"]["gate"]["error"]
    assert report["steps"]["after"]["state"] == "NOT_READY"
    assert queries.run(orchestra_env, report["flow_run_id"])["state"] == "FAILED"
