"""How fast the dashboard is on a big ledger: 100,000 calls over 90 days.

    python bench/dashboard.py                    # seed (once) and measure every page
    python bench/dashboard.py --repeats 5 --db /tmp/big.db

Seeds runs, steps and calls through the ledger's own write path (``Store.start_run``,
``record_step``, ``record_call``, ``finish_run``), then measures each page

* server-side: Streamlit's AppTest runs the page script with the figures' cache cleared
  first (what the first reader after the 5 s cache expiry waits for), after one warm-up
  run of the same AppTest (whose first run scans every installed package for components);
* in Chromium: a real ``streamlit run`` and headless Chromium at 1440 px, from
  navigation until the page's content and charts show and the script has finished,
  each visit after the cache expired.

Prints the median and the range of each. Measures; never asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

UTC = timezone.utc
WORKFLOWS = {  # workflow -> its steps (depends_on)
    "code-review": [("security", ()), ("correctness", ()), ("style", ()), ("summary", ("security", "correctness",
                                                                                       "style"))],
    "fan-out": [("summarise", ()), ("combine", ("summarise",))],
    "hello": [("greet", ())],
    "research": [("outline", ()), ("draft", ("outline",)), ("critique", ("draft",)), ("final", ("critique",))],
    "nightly-digest": [("fetch", ()), ("write", ("fetch",)), ("publish", ("write",))],
}
MODELS = [("openai:gpt-4.1-mini", "reviewer", 0.4e-6, 1.6e-6), ("anthropic:claude-sonnet-4-0", "writer", 3e-6, 15e-6),
          ("openai:gpt-4.1-nano", "assistant", 0.1e-6, 0.4e-6), ("fast-agent:passthrough", None, 0.0, 0.0),
          ("openai:my-local-llama", "researcher", 0.0, 0.0)]
PAGES = [  # (AppTest page, URL path, texts that show the content, plotly charts)
    ("views/overview.py", "", ["Recent runs", "Latest run:"], 1),
    ("views/runs.py", "runs", ["Every attempt", "Steps"], 2),
    ("views/costs.py", "costs", ["Latency", "Breakdown", "Top model:"], 6),
    ("views/workflows.py", "workflows", ["Run it", "Valid:"], 1),
    ("views/agents.py", "agents", ["Provider limits", "Circuit breakers"], 0),
    ("views/configuration.py", "configuration", ["Orchestra blocks"], 0),
    ("views/audit.py", "audit", ["Audit log"], 0),
]


def seed(url: str, calls: int = 100_000, days: int = 90, seed_: int = 7) -> dict[str, int]:
    """Runs of the five workflows spread over ``days``, about ``calls`` calls in all: retries,
    cache hits, failed steps and runs, for_each items, unpriced models; one user's changes."""
    from core.calls import CallRecord
    from core.steps import StepState
    from ledger.store import Store
    from orchestra import users
    from orchestra.access import Actor

    rng = random.Random(seed_)
    store = Store(url)
    now = datetime.now(UTC)
    made = runs = failed = 0
    while made < calls:
        workflow = rng.choice(list(WORKFLOWS))
        started = now - timedelta(seconds=rng.uniform(0, days * 86400))
        run_id = f"bench-{runs:06d}"
        runs += 1
        store.start_run(flow_run_id=run_id, workflow=workflow, inputs={"n": runs}, started=started,
                        budget_usd=0.05 if runs % 50 == 0 else None)
        model, agent, pin, pout = rng.choice(MODELS)
        t = started
        fail_at = rng.randrange(len(WORKFLOWS[workflow])) if rng.random() < 0.0013 else None
        state = "COMPLETED"
        for i, (step, deps) in enumerate(WORKFLOWS[workflow]):
            store.record_step(StepState(run_id, step, "PENDING", depends_on=deps, position=i, at=started))
        for i, (step, deps) in enumerate(WORKFLOWS[workflow]):
            if state == "FAILED":
                store.record_step(StepState(run_id, step, "NOT_READY", error="upstream step did not complete", at=t))
                continue
            store.record_step(StepState(run_id, step, "RUNNING", agent=agent, model=model, at=t))
            items = rng.randint(2, 6) if step == "summarise" else 1
            cached = rng.random() < 0.08
            for item in range(items):
                attempts = 1 + (rng.random() < 0.05)
                for attempt in range(1, attempts + 1):
                    error = attempt < attempts or (fail_at == i and item == 0)
                    latency = rng.lognormvariate(6.3, 0.5)
                    t += timedelta(milliseconds=latency)
                    tin, tout = rng.randint(80, 1500), rng.randint(20, 600)
                    if cached:  # the engine's own row of a cache hit, at the time it happened
                        record = dataclasses.replace(CallRecord.cache_hit(
                            flow_run_id=run_id, step=step, model=model, agent=agent, priced=True), created=t)
                    else:
                        record = CallRecord(flow_run_id=run_id, step=step, model=model, agent=agent, attempt=attempt,
                                            input_tokens=0 if error else tin, output_tokens=0 if error else tout,
                                            cost_usd=0.0 if error else tin * pin + tout * pout,
                                            priced=pin > 0 or model.startswith("fast-agent"),
                                            latency_ms=latency, status="error" if error else "ok",
                                            error="HTTP 503 from provider" if error else None, created=t)
                    store.record_call(record)
                    made += 1
                    if cached:
                        break
            if fail_at == i:
                state = "FAILED"
                store.record_step(StepState(run_id, step, "FAILED", error="HTTP 503 from provider", at=t))
            else:
                store.record_step(StepState(run_id, step, "COMPLETED", prompt=f"{step} of run {runs}",
                                            output=f"done {runs}", at=t))
        failed += state == "FAILED"
        store.finish_run(flow_run_id=run_id, state=state, ended=t, error="step failed" if state == "FAILED" else None)
    owner = Actor("bench", "owner", via="cli")
    users.add(owner, "ada", "admin", "correct horse battery", store=store)
    store.flush()
    store.close()
    return {"calls": made, "runs": runs, "failed": failed}


def server_side(db: str, repeats: int) -> dict[str, list[float]]:
    import streamlit as st
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    from orchestra.access import Actor

    config.set_option("server.address", "127.0.0.1")
    os.environ["ORCHESTRA_DB_URL"] = db
    from core.settings import reload_settings

    reload_settings()
    out: dict[str, list[float]] = {}
    for page, *_ in PAGES:
        # One AppTest per page: its first run scans every installed package for Streamlit
        # components (AppTest's own cost, seconds); the runs after it are the page's work.
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        at.session_state["actor"] = Actor("ada", "admin")
        at.switch_page(page)
        times = []
        for _ in range(repeats + 1):
            st.cache_data.clear()  # every run reads the ledger, as the first reader after the 5 s cache does
            started = time.perf_counter()
            at.run()
            times.append(time.perf_counter() - started)
            if at.exception:
                raise RuntimeError(f"{page}: {at.exception[0].value}")
        out[page] = times[1:]
    return out


async def _browser_pass(base: str, repeats: int, tmp: Path) -> dict[str, list[float]]:
    from tests.support.chromium import browser

    out: dict[str, list[float]] = {p[1] or "overview": [] for p in PAGES}
    async with browser(tmp) as tab:
        await tab.load(base + "/", ["User name"], streamlit=False, timeout=120)
        await tab.type_into("input[aria-label='User name']", "ada")
        await tab.type_into("input[type='password']", "correct horse battery")
        await tab.click_button("Log in")
        await tab.wait_for(["Recent runs"], charts=1, timeout=120)
        for _ in range(repeats + 1):
            for page, path, wants, charts in PAGES:
                await asyncio.sleep(5.5)  # past the figures' 5 s cache: every visit reads the ledger
                started = time.perf_counter()
                await tab.load(f"{base}/{path}", wants, charts=charts, timeout=120)
                out[path or "overview"].append(time.perf_counter() - started)
    return {k: v[1:] for k, v in out.items()}


def in_browser(db: str, repeats: int) -> dict[str, list[float]]:
    from tests.support.chromium import free_port, stop, wait_http

    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"orchestra-bench-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_API", "OPENAI_", "ANTHROPIC_"))}
    env.update(ORCHESTRA_DB_URL=db, ORCHESTRA_HOME=str(tmp / "home"), ORCHESTRA_LOGIN_DELAY="0")
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true", "--server.port",
         str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60, server)
        return asyncio.run(_browser_pass(f"http://127.0.0.1:{port}", repeats, tmp))
    finally:
        stop(server)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default=str(ROOT / ".bench" / "dashboard-100k.db"), help="SQLite file (kept)")
    ap.add_argument("--calls", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-browser", action="store_true")
    ap.add_argument("--no-server", action="store_true", help="only the browser")
    args = ap.parse_args()
    db_path = Path(args.db)
    url = f"sqlite:///{db_path}"
    if not db_path.exists():
        db_path.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        made = seed(url, args.calls)
        print(f"seeded {made['calls']:,} calls in {made['runs']:,} runs ({made['failed']} failed) "
              f"in {time.perf_counter() - started:.0f} s: {db_path}")
    os.environ.setdefault("ORCHESTRA_HOME", str(db_path.parent / "home"))
    server = {p[0]: [float("nan")] for p in PAGES} if args.no_server else server_side(url, args.repeats)
    browser = {} if args.no_browser else in_browser(url, args.repeats)
    print(f"\n{'page':<16} {'server median':>14} {'server range':>16} {'browser median':>15} {'browser range':>16}")
    for page, path, *_ in PAGES:
        s = server[page]
        b = browser.get(path or "overview") or []
        print(f"{(path or 'overview'):<16} {statistics.median(s):>13.2f}s {min(s):>7.2f}–{max(s):<6.2f}s "
              + (f"{statistics.median(b):>14.2f}s {min(b):>7.2f}–{max(b):<6.2f}s" if b else ""))


if __name__ == "__main__":
    main()
