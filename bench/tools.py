"""What Orchestra adds to one tool call, against the MCP fake at 0 ms, in one run.

Two sessions to two copies of the fake MCP server (``tests.fakes.mcp_server``, stdio by
default, each in its own process; its ``echo`` tool answers at once):

  bare:       the official ``mcp`` client, ``session.call_tool("echo", ...)``
  Orchestra:  the run's session (``agents.mcp.MCPPool``) through ``agents.tools.Toolbox.call``
              (the wire name, the input-schema check, the result for the model) and its
              recording, ``RunState.record_tool_call`` (a ledger row queued for the SQLite
              store, an ``orchestra.tool.call`` Prefect event, a line in the task run's log),
              inside a real Prefect task run, on Orchestra's local Prefect server (in its own
              process, as ``orchestra run`` uses it; started in a temporary home and stopped
              at the end)

Both run sequentially (one call in flight) and alternate call by call, so each pair sees
the same machine (a shared box's load moves a lot within seconds); the excess per call
is the median of the pairs' differences (Orchestra minus bare), printed with the middle
half of those differences. The ledger's rows are counted at the end (they must be every
Orchestra call made).

    python bench/tools.py                   # 2000 pairs, stdio
    python bench/tools.py --transport http --calls 500

No timing is asserted anywhere: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import local_server  # bench/harness.py


async def measure(transport: str, calls: int) -> dict:
    from mcp import ClientSession
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamablehttp_client
    from prefect import flow, task

    from agents import AgentConfig
    from agents.mcp import MCPPool, MCPServerSpec
    from agents.tools import Toolbox, ToolCall
    from core.calls import ToolCallRecord
    from flows.context import RunState, reset_run, set_run
    from ledger import queries
    from ledger.store import Store
    from tests.fakes.mcp_server import MCPFake

    store = Store(f"sqlite:///{Path(os.environ['ORCHESTRA_HOME']) / 'bench-tools.db'}")  # removed with the home
    bare_fake = MCPFake(transport, name="bare", process=transport == "http")
    orch_fake = MCPFake(transport, name="fake", process=transport == "http")

    def spec(fake: MCPFake) -> MCPServerSpec:
        if transport == "stdio":
            return MCPServerSpec(command=sys.executable, args=fake.args(), cwd=str(ROOT), env={"PYTHONPATH": str(ROOT)})
        return MCPServerSpec(url=fake.url)

    @task(name="tool-calls", persist_result=False)
    async def run_calls(flow_run_id: str) -> dict:
        run = RunState(flow_run_id=flow_run_id, workflow="bench-tools", ledger=store)
        store.start_run(flow_run_id=flow_run_id, workflow="bench-tools", started=None)
        token = set_run(run)
        agent = AgentConfig(name="bench", servers=["fake"])
        pool = MCPPool({"fake": spec(orch_fake)})

        def on_call(result) -> None:
            run.record_tool_call(ToolCallRecord.from_result(result, flow_run_id=flow_run_id, step="bench",
                                                            attempt=1, agent="bench"))

        try:
            box = await Toolbox.open(pool, agent, where="bench", on_call=on_call)
            wire = next(t.wire for t in box.tools if t.name == "echo")
            async with _bare(spec(bare_fake)) as session:
                async def bare_call(i: int) -> float:
                    t0 = time.perf_counter()
                    await session.call_tool("echo", {"text": f"call {i}"})
                    return time.perf_counter() - t0

                async def orchestra_call(i: int) -> float:
                    t0 = time.perf_counter()
                    await box.call(ToolCall(id=f"c{i}", name=wire, arguments={"text": f"call {i}"}))
                    return time.perf_counter() - t0

                warm = 50
                for i in range(warm):  # warm-up of both
                    await bare_call(i)
                    await orchestra_call(i)
                bare, orch = [], []
                for i in range(calls):
                    if i % 2:  # alternate which goes first
                        orch.append(await orchestra_call(i))
                        bare.append(await bare_call(i))
                    else:
                        bare.append(await bare_call(i))
                        orch.append(await orchestra_call(i))
        finally:
            await pool.aclose()
            reset_run(token)
        store.flush()
        return {"bare": bare, "orchestra": orch, "rows": len(queries.tool_calls(store, flow_run_id)),
                "made": warm + calls}

    @flow(name="bench-tools", persist_result=False)
    async def bench_flow() -> dict:
        from prefect.context import get_run_context

        return await run_calls(str(get_run_context().flow_run.id))

    import contextlib

    @contextlib.asynccontextmanager
    async def _bare(server: MCPServerSpec):
        if transport == "stdio":
            from mcp import StdioServerParameters

            params = StdioServerParameters(command=server.command, args=server.args, cwd=server.cwd, env=server.env)
            async with stdio_client(params, errlog=open(os.devnull, "w")) as (r, w):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    yield session
        else:
            async with streamablehttp_client(server.url) as (r, w, _):
                async with ClientSession(r, w) as session:
                    await session.initialize()
                    yield session

    with bare_fake, orch_fake:
        result = await bench_flow()
    store.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    parser.add_argument("--calls", type=int, default=2000, help="pairs of calls (one bare, one through Orchestra)")
    args = parser.parse_args()

    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    with local_server():
        result = asyncio.run(measure(args.transport, args.calls))
    us = lambda xs: [x * 1e6 for x in xs]  # noqa: E731
    bare, orch = us(result["bare"]), us(result["orchestra"])
    excess = sorted(o - b for o, b in zip(orch, bare))
    q1, q3 = excess[len(excess) // 4], excess[3 * len(excess) // 4]
    print(f"{args.transport}, {args.calls} pairs of sequential echo calls, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| path | µs per call, median | middle half |")
    print("| --- | ---: | ---: |")
    for name, xs in (("bare mcp client", bare), ("Orchestra (Toolbox + recording)", orch)):
        xs = sorted(xs)
        print(f"| {name} | {statistics.median(xs):.0f} | {xs[len(xs) // 4]:.0f}-{xs[3 * len(xs) // 4]:.0f} |")
    print(f"excess per tool call: {statistics.median(excess):.0f} µs (middle half {q1:.0f}-{q3:.0f}); "
          f"ledger rows {result['rows']} of {result['made']} calls made")
    return 0


if __name__ == "__main__":
    sys.exit(main())
