"""Provider limits: at most `concurrency` calls in flight and `rpm` requests a minute per
provider (`orchestra limits set openai --concurrency 8 --rpm 500`).

The limits live in the Orchestra store (`provider_limits`). How they are enforced:

* with a Prefect server (`PREFECT_API_URL` set): Prefect global concurrency limits,
  shared by every worker on that server: `orchestra-<provider>-concurrency` (held
  around each call with `prefect.concurrency.asyncio.concurrency`) and
  `orchestra-<provider>-rpm` (a limit of `rpm` slots decaying at `rpm/60` per
  second, taken with `rate_limit`). They are created or updated from the store
  the first time a run of this process needs them, and by `orchestra limits set`;
* otherwise: a local limiter in this process (a semaphore per event loop and a
  token bucket of `rpm` tokens refilled at `rpm/60` per second).

The `limiter` setting (`ORCHESTRA_LIMITER=local|prefect`, default auto) forces one of the two. A provider without limits
costs one dict lookup per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from core.settings import settings


def gcl_names(provider: str) -> tuple[str, str]:
    return f"orchestra-{provider}-concurrency", f"orchestra-{provider}-rpm"


def prefect_configured() -> bool:
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def mode() -> str:
    forced = settings().limiter
    if forced != "auto":
        return forced
    return "prefect" if prefect_configured() else "local"


async def sync_to_prefect(limits: list[dict[str, Any]]) -> None:
    """Create or update the Prefect global concurrency limits of ``limits`` (store rows);
    a provider's missing limit is deactivated."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
    from prefect.exceptions import ObjectNotFound

    async with get_client() as client:
        for row in limits:
            conc_name, rpm_name = gcl_names(row["provider"])
            for name, value, decay in ((conc_name, row.get("concurrency"), None),
                                       (rpm_name, row.get("rpm"), (row.get("rpm") or 0) / 60.0)):
                if value:
                    await client.upsert_global_concurrency_limit_by_name(name, int(value), slot_decay_per_second=decay)
                    await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=True))
                else:
                    with contextlib.suppress(ObjectNotFound):
                        await client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=False))


class _Bucket:
    """A token bucket: `rate` tokens a minute, at most `rate` saved up."""

    def __init__(self, rpm: int):
        self.rpm = rpm
        self.tokens = float(rpm)
        self.stamp = time.monotonic()
        self.lock = threading.Lock()

    def wait_time(self) -> float:
        """Take a token and return 0, or return how long to wait before asking again."""
        with self.lock:
            now = time.monotonic()
            self.tokens = min(float(self.rpm), self.tokens + (now - self.stamp) * self.rpm / 60.0)
            self.stamp = now
            if self.tokens >= 1.0:
                self.tokens -= 1.0
                return 0.0
            return (1.0 - self.tokens) * 60.0 / self.rpm


class Limiter:
    def __init__(self) -> None:
        self.limits: dict[str, tuple[int | None, int | None]] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._sems: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
            weakref.WeakKeyDictionary())
        self._synced: set[tuple] = set()

    def set_limits(self, rows: list[dict[str, Any]]) -> None:
        limits = {r["provider"]: (r.get("concurrency"), r.get("rpm")) for r in rows}
        if limits != self.limits:
            self.limits = limits
            self._buckets = {p: _Bucket(rpm) for p, (_, rpm) in limits.items() if rpm}
            self._sems = weakref.WeakKeyDictionary()

    async def refresh(self, ledger: Any) -> None:
        """Re-read the limits from ``ledger`` (at the start of each run); in Prefect mode,
        make sure the server has them."""
        if ledger is None:
            return
        try:
            rows = ledger.list_limits()  # one small SELECT per run
        except Exception:  # limits are politeness: never fail a run on them
            return
        self.set_limits(rows)
        if rows and mode() == "prefect":
            from prefect.settings import PREFECT_API_URL

            marker = (PREFECT_API_URL.value(), tuple(sorted(self.limits.items())))
            if marker not in self._synced:
                try:
                    await sync_to_prefect(rows)
                    self._synced.add(marker)
                except Exception:
                    pass

    @contextlib.asynccontextmanager
    async def _local(self, provider: str, concurrency: int | None) -> AsyncIterator[None]:
        bucket = self._buckets.get(provider)
        if bucket is not None:
            while (delay := bucket.wait_time()) > 0:
                await asyncio.sleep(delay)
        if not concurrency:
            yield
            return
        loop = asyncio.get_running_loop()
        sems = self._sems.setdefault(loop, {})
        sem = sems.get(provider)
        if sem is None:
            sem = sems[provider] = asyncio.Semaphore(concurrency)
        async with sem:
            yield

    @contextlib.asynccontextmanager
    async def _prefect(self, provider: str, concurrency: int | None, rpm: int | None) -> AsyncIterator[None]:
        from prefect.concurrency.asyncio import concurrency as gcl, rate_limit

        conc_name, rpm_name = gcl_names(provider)
        if rpm:
            await rate_limit(rpm_name, occupy=1, strict=False)
        if concurrency:
            async with gcl(conc_name, occupy=1, strict=False):
                yield
        else:
            yield

    def slot(self, provider: str):
        """An async context manager around one call to ``provider``."""
        limit = self.limits.get(provider)
        if limit is None:
            return _NO_LIMIT
        concurrency, rpm = limit
        if mode() == "prefect":
            return self._prefect(provider, concurrency, rpm)
        return self._local(provider, concurrency)


class _NoLimit:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: Any) -> None:
        return None


_NO_LIMIT = _NoLimit()
limiter = Limiter()
