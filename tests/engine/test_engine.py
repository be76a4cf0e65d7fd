"""The engine end to end: real Prefect runs, real SDKs, wire fakes, the ledger."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest

from ledger import queries

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "deployments" / "workflows"


def run(workflow, inputs=None, **kwargs) -> tuple[dict, object]:
    """Run the generic flow; return (report, final flow-run state)."""
    from flows.engine import final_report
    from orchestra.flow import run_workflow

    async def main():
        state = await run_workflow(workflow=workflow, inputs=inputs or {}, return_state=True, **kwargs)
        return await final_report(state), state

    return asyncio.run(main())


def one_step(prompt="hello", **step) -> dict:
    return {"name": "one", "agents": {"a": {"model": "openai:gpt-4.1-mini"}},
            "steps": [{"id": "only", "agent": "a", "prompt": prompt, **step}]}


def task_runs(flow_run_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def main():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return asyncio.run(main())


def wait_for_task_runs(flow_run_id: str, n: int, timeout: float = 20.0) -> list:
    """Task-run states reach the server as events: wait until they are written."""
    import time

    deadline = time.monotonic() + timeout
    runs = []
    while time.monotonic() < deadline:
        runs = task_runs(flow_run_id)
        if len(runs) >= n and all(r.state and r.state.is_final() for r in runs):
            return runs
        time.sleep(0.3)
    return runs


# ---------------------------------------------------------------------------


def test_graph_workflow_runs_independent_steps_concurrently(orchestra_env, openai_fake):
    openai_fake.configure(latency_ms=600)
    code = f"def sub(a, b): return a + b  # {uuid.uuid4()}"
    report, state = run(str(WORKFLOWS / "code-review.yaml"), {"code": code}, model="openai:gpt-4.1-mini")
    assert state.is_completed(), state.message
    assert report["state"] == "COMPLETED"
    assert set(report["steps"]) == {"security", "correctness", "style", "summary"}
    assert all(s["state"] == "COMPLETED" and s["attempts"] == 1 for s in report["steps"].values())
    reqs = openai_fake.requests
    assert len(reqs) == 4
    # the three reviews were all in flight at once: each arrived before the first reply came back
    first_three = sorted(r["t"] for r in reqs[:3])
    assert first_three[-1] - first_three[0] < 0.5
    # the merge step saw the three outputs
    merge_prompt = reqs[3]["body"]["messages"][-1]["content"]
    for sid in ("security", "correctness", "style"):
        assert report["steps"][sid]["output"] in merge_prompt
    assert reqs[3]["t"] - first_three[-1] >= 0.5


def test_ledger_totals_equal_what_the_provider_reported(orchestra_env, openai_fake):
    from genai_prices import Usage, calc_price

    report, state = run(str(WORKFLOWS / "code-review.yaml"), {"code": uuid.uuid4().hex}, model="openai:gpt-4.1-mini")
    assert state.is_completed()
    reported_in = sum(r["usage"]["input_tokens"] for r in openai_fake.requests)
    reported_out = sum(r["usage"]["output_tokens"] for r in openai_fake.requests)
    assert (report["input_tokens"], report["output_tokens"]) == (reported_in, reported_out)
    run_row = queries.run(orchestra_env, report["flow_run_id"])
    assert run_row["state"] == "COMPLETED"
    assert (run_row["input_tokens"], run_row["output_tokens"]) == (reported_in, reported_out)
    assert run_row["cost_usd"] == pytest.approx(report["cost_usd"])
    expected = sum(float(calc_price(Usage(input_tokens=r["usage"]["input_tokens"], output_tokens=r["usage"]["output_tokens"]),
                                    model_ref="gpt-4.1-mini", provider_id="openai").total_price)
                   for r in openai_fake.requests)
    assert expected > 0
    assert report["cost_usd"] == pytest.approx(expected)
    assert len(run_row["calls"]) == 4 and all(c["priced"] for c in run_row["calls"])


def test_sequential_steps_receive_the_previous_output(orchestra_env, openai_fake):
    openai_fake.configure(reply=lambda body: f"reply-{len(body['messages'][-1]['content'])}")
    topic = uuid.uuid4().hex
    report, state = run(str(WORKFLOWS / "research.yaml"), {"topic": topic}, model="openai:gpt-4.1-mini")
    assert state.is_completed(), state.message
    prompts = [r["body"]["messages"][-1]["content"] for r in openai_fake.requests]
    assert len(prompts) == 4 and topic in prompts[0]
    outputs = [report["steps"][s]["output"] for s in ("outline", "draft", "critique", "final")]
    # each step's prompt holds the output of the one before
    for prev_output, prompt in zip(outputs, prompts[1:]):
        assert prev_output in prompt


def test_parallel_workflow(orchestra_env, openai_fake):
    wf = {"name": "par", "type": "parallel", "agents": {"a": {"model": "openai:gpt-4.1-mini"}},
          "steps": [{"id": f"p{i}", "agent": "a", "prompt": f"{uuid.uuid4()} {i}"} for i in range(5)]}
    report, state = run(wf)
    assert state.is_completed()
    assert openai_fake.request_count == 5
    assert sorted(report["steps"]) == [f"p{i}" for i in range(5)]


def test_retry_on_429_and_500_then_success(orchestra_env, openai_fake):
    openai_fake.configure(faults=[429, 500, None])
    report, state = run(one_step(uuid.uuid4().hex, retries=2))
    assert state.is_completed(), state.message
    step = report["steps"]["only"]
    assert step["attempts"] == 3 and openai_fake.request_count == 3
    calls = queries.run(orchestra_env, report["flow_run_id"])["calls"]
    assert [c["status"] for c in calls] == ["error", "error", "ok"]
    assert "429" in calls[0]["error"] and "500" in calls[1]["error"]
    runs = wait_for_task_runs(report["flow_run_id"], 1)
    assert runs[0].name == "only" and runs[0].run_count == 3


def test_no_retry_on_401_and_the_key_never_leaks(orchestra_env, openai_fake):
    openai_fake.configure(faults=[401, None, None])
    report, state = run(one_step(uuid.uuid4().hex, retries=3))
    assert state.is_failed()
    assert openai_fake.request_count == 1
    step = report["steps"]["only"]
    assert step["state"] == "FAILED" and step["attempts"] == 1
    assert "only" in step["error"] and "401" in step["error"]
    row = queries.run(orchestra_env, report["flow_run_id"])
    assert row["state"] == "FAILED"
    key = "sk-test-not-a-real-key-123456"
    assert key not in str(row) and key not in str(report) and key not in (state.message or "")


def logs_once(log_filter, needle: str, timeout: float = 20.0) -> list[str]:
    """The messages of the logs ``log_filter`` (a Prefect ``LogFilter``) selects, once one
    of them contains ``needle`` (logs reach the API in batches), or at ``timeout``."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.logging.handlers import APILogHandler

    async def read():
        await APILogHandler.aflush()
        async with get_client() as client:
            logs = await client.read_logs(log_filter=log_filter)
        return [entry.message for entry in logs]

    deadline = time.monotonic() + timeout
    while True:
        messages = asyncio.run(read())
        if any(needle in m for m in messages) or time.monotonic() > deadline:
            return messages
        time.sleep(0.3)


def _flow_run_logs(flow_run_id: str, needle: str) -> list[str]:
    """The flow run's log messages (its task runs' included), once one contains ``needle``."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return logs_once(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), needle)


@pytest.mark.parametrize("ship", [False, True])
def test_a_completed_task_runs_line_is_not_shipped_a_failure_is(orchestra_env, openai_fake, monkeypatch, ship):
    if ship:
        monkeypatch.setenv("ORCHESTRA_COMPLETED_TASK_LOGS", "true")
    openai_fake.configure(faults=[None, 401])
    wf = {"name": "logs", "agents": {"a": {"model": "openai:gpt-4.1-mini"}},
          "steps": [{"id": "good", "agent": "a", "prompt": uuid.uuid4().hex},
                    {"id": "bad", "agent": "a", "prompt": uuid.uuid4().hex, "depends_on": ["good"]}]}
    report, state = run(wf)
    assert state.is_failed() and report["steps"]["good"]["state"] == "COMPLETED"
    messages = _flow_run_logs(report["flow_run_id"], "Finished in state Failed")
    assert any(m.startswith("Finished in state Failed") for m in messages), messages  # the failure reaches the UI
    assert any("401" in m for m in messages)
    assert any(m.startswith("Finished in state Completed") for m in messages) is ship, messages


def test_timeout_is_transient_and_retried(orchestra_env, openai_fake):
    openai_fake.configure(faults=["timeout", None], slow_seconds=10)
    report, state = run(one_step(uuid.uuid4().hex, retries=1, timeout=0.5))
    assert state.is_completed(), state.message
    assert report["steps"]["only"]["attempts"] == 2
    calls = queries.run(orchestra_env, report["flow_run_id"])["calls"]
    assert calls[0]["status"] == "error" and "tim" in calls[0]["error"].lower()


def test_a_failed_branch_does_not_stop_independent_ones(orchestra_env, openai_fake):
    # `broken` uses a provider with no key: it fails for good without touching the fake
    wf = {"name": "branches",
          "agents": {"a": {"model": "openai:gpt-4.1-mini"}, "bad": {"model": "anthropic:claude-sonnet-4-5"}},
          "steps": [{"id": "good", "agent": "a", "prompt": uuid.uuid4().hex},
                    {"id": "broken", "agent": "bad", "prompt": "x"},
                    {"id": "after-broken", "agent": "a", "depends_on": ["broken"], "prompt": "{{ steps.broken.output }}"},
                    {"id": "after-good", "agent": "a", "depends_on": ["good"], "prompt": "{{ steps.good.output }}"}]}
    report, state = run(wf)
    assert state.is_failed()
    assert {sid: s["state"] for sid, s in report["steps"].items()} == {
        "good": "COMPLETED", "broken": "FAILED", "after-broken": "NOT_READY", "after-good": "COMPLETED"}
    assert openai_fake.request_count == 2
    assert "ANTHROPIC_API_KEY" in report["steps"]["broken"]["error"]
    assert report["steps"]["broken"]["attempts"] == 1  # a missing key is not retried
    assert queries.run(orchestra_env, report["flow_run_id"])["state"] == "FAILED"


def test_rerun_after_failure_only_calls_unfinished_steps(orchestra_env, openai_fake):
    code = uuid.uuid4().hex
    openai_fake.configure(faults=[None, None, None, 401])  # the three reviews succeed, the merge is refused
    first, state = run(str(WORKFLOWS / "code-review.yaml"), {"code": code}, model="openai:gpt-4.1-mini")
    assert state.is_failed()
    assert [first["steps"][s]["state"] for s in ("security", "correctness", "style", "summary")] == [
        "COMPLETED", "COMPLETED", "COMPLETED", "FAILED"]
    assert openai_fake.request_count == 4
    second, state = run(str(WORKFLOWS / "code-review.yaml"), {"code": code}, model="openai:gpt-4.1-mini")
    assert state.is_completed(), state.message
    assert openai_fake.request_count == 5  # only the merge called the provider again
    for sid in ("security", "correctness", "style"):
        assert second["steps"][sid]["cached"] is True and second["steps"][sid]["attempts"] == 0
        assert second["steps"][sid]["output"] == first["steps"][sid]["output"]
        assert second["steps"][sid]["cost_usd"] == 0
    assert second["steps"]["summary"]["cached"] is False
    cached_rows = [c for c in queries.run(orchestra_env, second["flow_run_id"])["calls"] if c["cached"]]
    assert len(cached_rows) == 3 and all(c["cost_usd"] == 0 for c in cached_rows)


def test_no_cache_calls_every_step_again(orchestra_env, openai_fake):
    wf = one_step(uuid.uuid4().hex)
    run(wf)
    report, _ = run(wf, no_cache=True)
    assert openai_fake.request_count == 2 and report["steps"]["only"]["cached"] is False


def test_a_step_result_is_one_file_that_prefects_own_storage_reads(orchestra_env, openai_fake, tmp_path):
    """The step cache is a file under PREFECT_LOCAL_STORAGE_PATH, where Prefect's default
    storage keeps results, in its format: a second run reads it instead of calling the
    provider, and without it the provider is called again."""
    import json

    from prefect.filesystems import LocalFileSystem

    wf = one_step(uuid.uuid4().hex)
    first, state = run(wf)
    assert state.is_completed(), state.message
    results = tmp_path / "results"
    files = [f for f in results.iterdir() if f.is_file()]
    assert len(files) == 1
    record = json.loads(LocalFileSystem(basepath=str(results)).read_path(files[0].name))
    assert Path(record["metadata"]["storage_key"]).name == files[0].name
    second, _ = run(wf)
    assert second["steps"]["only"]["cached"] is True and openai_fake.request_count == 1
    assert second["steps"]["only"]["output"] == first["steps"]["only"]["output"]
    files[0].unlink()
    third, _ = run(wf)
    assert third["steps"]["only"]["cached"] is False and openai_fake.request_count == 2


def test_result_files_find_paths_as_prefects_storage_does(tmp_path):
    from prefect.filesystems import LocalFileSystem

    from flows.results import ResultFiles

    base = tmp_path / "results"
    ours, prefects = ResultFiles(basepath=str(base)), LocalFileSystem(basepath=str(base))
    for key in ("3f2a9c", "a.b-c_d", str(base / "3f2a9c"), "", None, "sub/key"):
        assert ours._resolve_path(key) == prefects._resolve_path(key), key
    for outside in ("../x", "/etc/passwd", "a/../../b", str(tmp_path / "other")):
        with pytest.raises(ValueError, match="outside of the base path"):
            ours._resolve_path(outside)


def test_a_result_write_does_not_wait_behind_the_loops_default_executor(tmp_path):
    """asyncio resolves new connections' host names on the loop's default executor (6
    threads on 2 cores): a step result's write must not queue there and delay them. Here
    that executor's one thread is busy until the write is done; the write must not need it."""
    import concurrent.futures
    import threading

    from flows.results import ResultFiles

    files = ResultFiles(basepath=str(tmp_path / "results"))

    async def write_while_the_default_executor_is_busy() -> str:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(max_workers=1))
        release = threading.Event()
        busy = loop.run_in_executor(None, release.wait, 30)
        try:
            return await asyncio.wait_for(files.awrite_path("k1", b"result"), 10)
        finally:
            release.set()
            await busy

    written = asyncio.run(write_while_the_default_executor_is_busy())
    assert Path(written).read_bytes() == b"result" and Path(written).name == "k1"


def test_for_each_when_and_one_task_run_per_item(orchestra_env, openai_fake):
    topics = [uuid.uuid4().hex[:8] for _ in range(3)]
    report, state = run(str(WORKFLOWS / "fan-out.yaml"), {"topics": topics}, model="openai:gpt-4.1-mini")
    assert state.is_completed(), state.message
    assert report["steps"]["deep-dive"]["state"] == "SKIPPED"
    outputs = report["steps"]["summarise"]["output"]
    assert isinstance(outputs, list) and len(outputs) == 3
    assert all(t in o for t, o in zip(topics, outputs))
    assert openai_fake.request_count == 4
    runs = wait_for_task_runs(report["flow_run_id"], 4)
    assert sorted(r.name for r in runs) == ["combine", "summarise[0]", "summarise[1]", "summarise[2]"]
    assert all(r.state.is_completed() for r in runs)
    # the combine task run records its upstream task runs (edges in the Prefect UI)
    combine = next(r for r in runs if r.name == "combine")
    upstream = {i.id for i in combine.task_inputs["__parents__"]} if "__parents__" in combine.task_inputs else {
        i.id for inputs in combine.task_inputs.values() for i in inputs}
    assert {r.id for r in runs if r.name.startswith("summarise")} <= upstream


def in_flight_at_arrival(fake, latency_ms: int = 400) -> list[int]:
    """Configure ``fake`` to answer after ``latency_ms`` and note, as each request arrives,
    how many requests it holds at that moment (concurrency counted at the wire)."""
    seen: list[int] = []

    def reply(body):
        seen.append(sum(1 for r in fake.requests if r["status"] is None))
        return "ok"

    fake.configure(reply=reply, latency_ms=latency_ms)
    return seen


def _fan_out(name: str) -> dict:
    return {"name": name, "inputs": {"xs": {"type": "array"}}, "agents": {"a": {"model": "openai:gpt-4.1-mini"}},
            "steps": [{"id": "each", "agent": "a", "prompt": "{{ item }}", "for_each": "inputs.xs"}]}


def test_max_concurrency_bounds_how_many_items_are_at_the_provider_at_once(orchestra_env, openai_fake):
    """Counted at the wire: how many requests the fake holds when each one arrives."""
    seen = in_flight_at_arrival(openai_fake, 150)
    wf = _fan_out("bounded")
    report, state = run(wf, {"xs": [uuid.uuid4().hex[:8] for _ in range(9)]})
    assert state.is_completed(), state.message
    assert max(seen) > 2  # unbounded, the items overlap beyond the bound used below

    openai_fake.reset()
    seen = in_flight_at_arrival(openai_fake, 150)
    wf["steps"][0]["max_concurrency"] = 2
    report, state = run(wf, {"xs": [uuid.uuid4().hex[:8] for _ in range(9)]}, no_cache=True)
    assert state.is_completed(), state.message
    assert len(seen) == 9 and max(seen) == 2  # never more than two at once, and the bound is used
    assert len(report["steps"]["each"]["output"]) == 9
    runs = wait_for_task_runs(report["flow_run_id"], 9)
    assert sorted(r.name for r in runs) == sorted(f"each[{i}]" for i in range(9))  # still a task run per item


class _LoopPasses:
    """Counts the passes of the running event loop, from ``start()`` until ``stop()``: a
    callback that schedules itself again runs once in every pass."""

    def __init__(self) -> None:
        self.n, self.on = 0, False

    def start(self) -> None:
        if not self.on:
            self.on = True
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self.on = False

    def _tick(self) -> None:
        self.n += 1
        if self.on:
            asyncio.get_running_loop().call_soon(self._tick)


def test_a_fan_out_starts_at_most_starting_task_runs_per_pass_of_the_loop(orchestra_env, openai_fake, monkeypatch):
    """Counted from Prefect's side: the task runs created (``Task.create_local_run``) in each
    pass of the event loop. Prefect's start of a task run does not yield to the loop, so a
    fan-out's items admitted together all start in one pass, unless the run's start pacer
    (``flows.context.STARTING`` per pass) makes the rest wait for the next passes; it bounds
    starting only, so more items than that are still at the provider together."""
    import collections

    import prefect.tasks

    from flows import context

    create = prefect.tasks.Task.create_local_run
    created_in_pass: collections.Counter = collections.Counter()
    passes = [_LoopPasses()]

    async def counted_create(self, *args, **kwargs):
        passes[0].start()
        created_in_pass[passes[0].n] += 1
        return await create(self, *args, **kwargs)

    monkeypatch.setattr(prefect.tasks.Task, "create_local_run", counted_create)
    for starting, expected in ((100, 8), (2, 2)):  # without the bound all eight start in one pass
        monkeypatch.setattr(context, "STARTING", starting)
        created_in_pass.clear()
        passes[0] = _LoopPasses()
        seen = in_flight_at_arrival(openai_fake, 300)
        report, state = run(_fan_out("gated"), {"xs": [uuid.uuid4().hex[:8] for _ in range(8)]})
        passes[0].stop()
        assert state.is_completed(), state.message
        assert sum(created_in_pass.values()) == 8 and max(created_in_pass.values()) == expected, created_in_pass
        assert max(seen) > 2  # the bound is on starting only: more than two are at the provider together
        assert len(report["steps"]["each"]["output"]) == 8
        openai_fake.reset()


def test_the_start_pacer_lets_per_pass_callers_on_in_each_pass_first_come_first_served():
    from flows.context import StartPacer

    async def main() -> tuple[list[tuple[int, int]], bool]:
        passes = _LoopPasses()
        passes.start()
        pacer, went = StartPacer(3), []

        async def caller(i: int) -> None:
            await pacer.turn()
            went.append((i, passes.n))

        tasks = [asyncio.create_task(caller(i)) for i in range(10)]
        await asyncio.sleep(0)
        tasks[8].cancel()  # a waiting caller cancelled: it leaves the queue, the others go on
        await asyncio.gather(*tasks, return_exceptions=True)
        passes.stop()
        return went, tasks[8].cancelled()

    went, cancelled = asyncio.run(main())
    assert cancelled and [i for i, _ in went] == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    per_pass: dict[int, int] = {}
    for _, n in went:
        per_pass[n] = per_pass.get(n, 0) + 1
    assert max(per_pass.values()) == 3 and len(per_pass) == 3


def test_a_run_holds_at_most_max_task_runs_step_task_runs_at_once(orchestra_env, openai_fake, monkeypatch):
    """An unbounded fan-out and a step beside it share the run's cap (``ORCHESTRA_MAX_TASK_RUNS``):
    the rest wait before their task run starts, and every item is still a task run."""
    monkeypatch.setenv("ORCHESTRA_MAX_TASK_RUNS", "3")
    seen = in_flight_at_arrival(openai_fake, 150)
    wf = _fan_out("capped")
    wf["steps"].append({"id": "beside", "agent": "a", "prompt": uuid.uuid4().hex})
    report, state = run(wf, {"xs": [uuid.uuid4().hex[:8] for _ in range(8)]})
    assert state.is_completed(), state.message
    assert len(seen) == 9 and max(seen) == 3
    runs = wait_for_task_runs(report["flow_run_id"], 9)
    assert sorted(r.name for r in runs) == sorted([f"each[{i}]" for i in range(8)] + ["beside"])


def test_requests_past_the_clients_pool_wait_before_the_sdk_not_in_it(orchestra_env, openai_fake, monkeypatch):
    """More items than a client's connection pool: the rest wait in Orchestra's slots (no
    SDK timeout runs while they wait), so a large fan-out is never failed by its own queue."""
    import openai

    monkeypatch.setattr(openai, "DEFAULT_CONNECTION_LIMITS", SimpleNamespace(max_connections=2))
    seen = in_flight_at_arrival(openai_fake, 150)
    report, state = run(_fan_out("pooled"), {"xs": [uuid.uuid4().hex[:8] for _ in range(8)]})
    assert state.is_completed(), state.message
    assert len(seen) == 8 and max(seen) == 2
    assert all(c["latency_ms"] < 2000 for c in queries.run(orchestra_env, report["flow_run_id"])["calls"])


def test_when_true_runs_the_step(orchestra_env, openai_fake):
    report, state = run(str(WORKFLOWS / "fan-out.yaml"), {"topics": ["a", uuid.uuid4().hex], "detailed": True},
                        model="openai:gpt-4.1-mini")
    assert state.is_completed()
    assert report["steps"]["deep-dive"]["state"] == "COMPLETED"


def test_output_schema_parses_and_repairs_once(orchestra_env, openai_fake):
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    openai_fake.configure(reply=["this is not json", '{"score": 7}'])
    report, state = run(one_step(uuid.uuid4().hex, output_schema=schema))
    assert state.is_completed(), state.message
    assert report["steps"]["only"]["output"] == {"score": 7}
    assert openai_fake.request_count == 2
    assert openai_fake.requests[0]["body"]["response_format"] == {"type": "json_object"}
    assert "not valid" in openai_fake.requests[1]["body"]["messages"][-1]["content"]


def test_output_schema_fails_after_one_repair(orchestra_env, openai_fake):
    schema = {"type": "object", "required": ["score"]}
    openai_fake.configure(reply=['{"nope": 1}'])
    report, state = run(one_step(uuid.uuid4().hex, output_schema=schema, retries=2))
    assert state.is_failed()
    assert openai_fake.request_count == 2  # schema failures are not retried: one call, one repair
    assert "output_schema" in report["steps"]["only"]["error"] and "score" in report["steps"]["only"]["error"]


def test_downstream_of_a_failed_step_does_not_run(orchestra_env, openai_fake):
    openai_fake.configure(faults=[400])
    wf = {"name": "chain", "type": "sequential", "agents": {"a": {"model": "openai:gpt-4.1-mini"}},
          "steps": [{"id": "one", "agent": "a", "prompt": uuid.uuid4().hex}, {"id": "two", "agent": "a", "prompt": "x"}]}
    report, state = run(wf)
    assert state.is_failed()
    assert report["steps"]["one"]["state"] == "FAILED"
    assert report["steps"]["two"]["state"] == "NOT_READY"
    assert openai_fake.request_count == 1


@pytest.mark.filterwarnings("ignore:The model .* is deprecated:DeprecationWarning")
def test_anthropic_steps(orchestra_env, anthropic_fake):
    wf = {"name": "claude", "agents": {"c": {"model": "anthropic:claude-sonnet-4-5", "instruction": "Be brief."}},
          "steps": [{"id": "ask", "agent": "c", "prompt": uuid.uuid4().hex}]}
    report, state = run(wf)
    assert state.is_completed(), state.message
    body = anthropic_fake.requests[0]["body"]
    assert body["system"] == "Be brief." or body["system"][0]["text"] == "Be brief."
    usage = anthropic_fake.requests[0]["usage"]
    assert report["input_tokens"] == usage["input_tokens"] and report["output_tokens"] == usage["output_tokens"]
    assert report["cost_usd"] > 0


def test_fast_agent_passthrough_runs_offline(orchestra_env):
    name = uuid.uuid4().hex
    report, state = run(str(WORKFLOWS / "hello.yaml"), {"name": name})
    assert state.is_completed(), state.message
    step = report["steps"]["greet"]
    assert step["model"] == "fast-agent:passthrough"
    assert name in step["output"]
    assert report["cost_usd"] == 0


def test_missing_api_key_fails_the_step_with_a_clear_message(orchestra_env, openai_fake, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    report, state = run(one_step(uuid.uuid4().hex))
    assert state.is_failed()
    assert openai_fake.request_count == 0
    error = report["steps"]["only"]["error"]
    assert "only" in error and "OPENAI_API_KEY" in error


def test_invalid_inline_workflow_fails_the_flow_run(orchestra_env):
    report, state = run({"name": "bad", "steps": [{"id": "a", "prompt": "{{ steps.ghost.output }}"}]})
    assert state.is_failed()
    assert "unknown step 'ghost'" in state.message
    assert queries.runs(orchestra_env) == []  # nothing half-written


def test_run_graph_document_runs(orchestra_env):
    doc = {"workflow_type": "graph", "tasks": [
        {"agent_id": "1", "agent_role": "backend", "input_data": {"task": "Design an API " + uuid.uuid4().hex}},
        {"agent_id": "2", "agent_role": "qa", "input_data": {"task": "Test it"}, "depends_on": ["1"]}]}
    report, state = run(doc)
    assert state.is_completed(), state.message
    assert report["steps"]["2"]["agent"] == "qa"
    assert report["steps"]["1"]["output"] in report["steps"]["2"]["output"]  # passthrough echoes its context


def test_cost_artifact_lists_every_step(orchestra_env, openai_fake):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    report, _ = run(str(WORKFLOWS / "code-review.yaml"), {"code": uuid.uuid4().hex}, model="openai:gpt-4.1-mini")

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=[report["flow_run_id"]])))

    artifacts = asyncio.run(read())
    assert len(artifacts) == 1 and artifacts[0].key == "code-review-cost" and artifacts[0].type == "table"
    import json

    rows = json.loads(artifacts[0].data) if isinstance(artifacts[0].data, str) else artifacts[0].data
    by_step = {r["step"]: r for r in rows}
    assert set(by_step) == {"security", "correctness", "style", "summary", "TOTAL"}
    assert by_step["TOTAL"]["cost_usd"] == pytest.approx(report["cost_usd"])
    assert by_step["summary"]["input_tokens"] == report["steps"]["summary"]["input_tokens"]


def test_agent_credentials_come_from_a_prefect_block(orchestra_env, openai_fake, monkeypatch):
    from blocks import ProviderCredentials
    from blocks.credentials import clear_credentials_cache

    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.delenv("OPENAI_BASE_URL")
    block_key = "sk-block-" + uuid.uuid4().hex
    name = "team-" + uuid.uuid4().hex[:8]
    ProviderCredentials(provider="openai", api_key=block_key, base_url=openai_fake.base_url).save(name)
    clear_credentials_cache()
    openai_fake.configure(require_key=block_key)  # any other key gets a 401
    wf = {"name": "blocky", "agents": {"a": {"model": "openai:gpt-4.1-mini", "credentials": name}},
          "steps": [{"id": "only", "agent": "a", "prompt": uuid.uuid4().hex}]}
    report, state = run(wf)
    assert state.is_completed(), state.message
    assert openai_fake.requests[0]["status"] == 200
    assert block_key not in str(report) and block_key not in str(queries.run(orchestra_env, report["flow_run_id"]))


def test_agent_call_and_run_finished_events(orchestra_env, openai_fake):
    import time

    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    report, state = run(str(WORKFLOWS / "code-review.yaml"), {"code": uuid.uuid4().hex}, model="openai:gpt-4.1-mini")
    assert state.is_completed()

    async def read():
        async with get_client() as client:
            flt = EventFilter(event=EventNameFilter(prefix=["orchestra."]),
                              related=EventRelatedFilter(id=[f"prefect.flow-run.{report['flow_run_id']}"]))
            page = await client.request("POST", "/events/filter", json={"filter": flt.model_dump(mode="json"), "limit": 50})
            return page.json()["events"]

    deadline = time.monotonic() + 20
    events = []
    while time.monotonic() < deadline:
        events = asyncio.run(read())
        if len(events) >= 5:
            break
        time.sleep(0.5)
    names = sorted(e["event"] for e in events)
    assert names == ["orchestra.agent.call"] * 4 + ["orchestra.run.finished"]
    finished = next(e for e in events if e["event"] == "orchestra.run.finished")
    assert finished["payload"]["cost_usd"] == pytest.approx(report["cost_usd"])
    calls = [e for e in events if e["event"] == "orchestra.agent.call"]
    assert sum(e["payload"]["cost_usd"] for e in calls) == pytest.approx(report["cost_usd"])
    assert {e["resource"]["prefect.resource.name"] for e in calls} == {"reviewer"}


@pytest.mark.parametrize("name", sorted(p.stem for p in WORKFLOWS.glob("*.yaml")))
def test_the_ui_draws_exactly_the_depends_on_edges(orchestra_env, name, monkeypatch):
    """Prefect links a task run to every upstream *result* object passed in its parameters
    (one level deep); a shared model or agent string used to draw false edges. Read the
    task runs' task_inputs back from the Prefect API and compare with the workflow's DAG.
    A workflow with container steps runs against the Dagger engine double (its command
    steps find the venv's tools, ruff, on PATH)."""
    import contextlib
    import shutil
    import sys

    from flows.spec import load_workflow
    from tests.fakes.dagger_engine import DaggerEngineFake

    wf = load_workflow(WORKFLOWS / f"{name}.yaml")
    with contextlib.ExitStack() as stack:
        if any(s.kind in ("container", "command") for s in wf.steps):
            if shutil.which("bwrap") is None:
                pytest.skip("container and command steps run under bubblewrap (bwrap), which is not installed")
            engine = stack.enter_context(DaggerEngineFake())
            for var, value in engine.env.items():
                monkeypatch.setenv(var, value)
            monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        report, state = run(name, {"topics": ["x", "y"]} if "topics" in wf.inputs else {})
    assert report["state"] == "COMPLETED", report
    expected = sum(len(report["steps"][s.id]["output"]) if s.for_each else 1
                   for s in wf.steps if report["steps"][s.id]["state"] == "COMPLETED")
    runs = wait_for_task_runs(report["flow_run_id"], expected)
    assert len(runs) == expected
    step_of = {str(t.id): t.name.split("[", 1)[0] for t in runs}
    ran = set(step_of.values())
    deps = wf.dependencies()
    for t in runs:
        linked = {step_of[str(i.id)] for inputs in t.task_inputs.values() for i in inputs
                  if getattr(i, "input_type", None) == "task_run"}
        step = t.name.split("[", 1)[0]
        assert linked == {d for d in deps[step] if d in ran}, (t.name, linked, deps[step])


def test_run_graph_metadata_is_kept_on_the_run_and_returned(orchestra_env):
    body = {"name": "meta", "workflow_type": "graph", "metadata": {"project": "acme", "ticket": 7},
            "tasks": [{"agent_id": "api", "agent_role": "backend", "input_data": {"task": "Design it."}}]}
    report, state = run(body)
    assert report["state"] == "COMPLETED" and report["metadata"] == {"project": "acme", "ticket": 7}
    assert queries.run(orchestra_env, report["flow_run_id"])["metadata"] == {"project": "acme", "ticket": 7}
    no_meta, _ = run(one_step(), model="fast-agent:passthrough")
    assert "metadata" not in no_meta


def test_every_step_and_its_state_is_in_the_ledger_steps_that_never_ran_included(orchestra_env):
    wf = {"name": "states", "agents": {"nokey": {"model": "openai:gpt-4.1-mini"}},
          "inputs": {"xs": {"type": "array", "default": ["p", "q"]}},
          "steps": [{"id": "fan", "for_each": "inputs.xs", "prompt": "{{ item }}"},
                    {"id": "broken", "agent": "nokey", "prompt": "x", "retries": 0},
                    {"id": "below", "depends_on": ["broken"], "prompt": "y"},
                    {"id": "off", "when": "false", "prompt": "z"},
                    {"id": "last", "depends_on": ["fan", "off"], "prompt": "w"}]}
    report, _ = run(wf)
    assert report["state"] == "FAILED"
    rows = queries.steps(orchestra_env, report["flow_run_id"])
    assert [(r["step"], r["state"], r["depends_on"]) for r in rows] == [
        ("fan", "COMPLETED", []), ("broken", "FAILED", []), ("below", "NOT_READY", ["broken"]),
        ("off", "SKIPPED", []), ("last", "COMPLETED", ["fan", "off"])]
    by_step = {r["step"]: r for r in rows}
    assert by_step["fan"]["items"] == 2 and by_step["fan"]["model"] == "fast-agent:passthrough"
    assert "No openai API key" in by_step["broken"]["error"]
    assert "upstream step 'broken'" in by_step["below"]["error"]
    assert by_step["fan"]["started"] <= by_step["fan"]["ended"]
    assert by_step["below"]["started"] is None and by_step["below"]["ended"] is not None
    assert queries.progress(orchestra_env, report["flow_run_id"]) == 1.0


def test_a_steps_prompt_and_output_are_kept_redacted(orchestra_env, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_TEST_API_KEY", "sk-canary-0123456789abcdef")
    wf = {"name": "shown", "inputs": {"who": {"type": "string", "default": "Ada"}},
          "steps": [{"id": "hi", "prompt": "Hello {{ inputs.who }}, key sk-canary-0123456789abcdef"},
                    {"id": "each", "for_each": "['x', 'y']", "prompt": "item {{ item }}"}]}
    report, _ = run(wf)
    assert report["state"] == "COMPLETED"
    rows = {r["step"]: r for r in queries.steps(orchestra_env, report["flow_run_id"])}
    assert rows["hi"]["prompt"].startswith("Hello Ada, key ") and "canary" not in rows["hi"]["prompt"]
    assert rows["hi"]["output"] == report["steps"]["hi"]["output"].replace("sk-canary-0123456789abcdef", "***")
    assert rows["each"]["prompt"] == "--- each[0]\nitem x\n\n--- each[1]\nitem y"
    assert rows["each"]["output"] == report["steps"]["each"]["output"] == ["item x", "item y"]


def test_templates_see_data_before_methods(orchestra_env):
    wf = {"name": "names", "inputs": {"items": {"type": "string", "default": "apples"},
                                      "keys": {"type": "string", "default": "door"}},
          "steps": [{"id": "values", "prompt": "{{ inputs.items }} and {{ inputs.keys }}"},
                    {"id": "get", "depends_on": ["values"], "prompt": "{{ steps.values.output }}"}]}
    report, _ = run(wf)
    assert report["state"] == "COMPLETED"
    assert report["steps"]["values"]["output"] == "apples and door"
    assert report["steps"]["get"]["output"] == "apples and door"


def test_a_template_that_would_run_forever_fails_its_step_naming_the_limit(orchestra_env, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_TEMPLATE_TIMEOUT", "0.5")
    wf = {"name": "spin", "steps": [
        {"id": "spin", "prompt": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"},
        {"id": "huge", "prompt": "{{ 'x' * 10**10 }}"}, {"id": "fine", "prompt": "ok"}]}
    report, state = run(wf)
    assert report["state"] == "FAILED" and report["steps"]["fine"]["state"] == "COMPLETED"
    assert "longer than 0.5 s" in report["steps"]["spin"]["error"]
    assert "ORCHESTRA_TEMPLATE_TIMEOUT" in report["steps"]["spin"]["error"]
    assert "ORCHESTRA_TEMPLATE_MAX_CHARS" in report["steps"]["huge"]["error"]
