"""Circuit breakers, one per provider endpoint: (provider, base URL, model), and one
per container engine (:func:`engine_endpoint`: ``dagger @ <engine address>``).

    closed --N consecutive transient failures--> open --cool-down--> half_open
    half_open --the probe call succeeds--> closed
    half_open --the probe call fails------> open (a new cool-down)

While a breaker is open a call is refused at once, without touching the network
(:meth:`Breakers.check` returns ``DENY``); the caller fails the call or hands it to
a fallback agent. After the cool-down exactly one caller gets ``PROBE``: its call
decides whether the breaker closes again. Non-transient errors (400, 401, ...) mean
the provider answered: they count as a success for the breaker.

Sharing. With a backend (the Orchestra store: ``ledger.resilience_store``) the
state lives in the ``breakers`` table, so every process on one database sees one
breaker. The hot path never waits for the database: each process keeps the state
in memory and re-reads an endpoint's row at most once per ``ttl`` seconds
(default 2). Only transitions are written, each as a compare-and-set on the row's
``version`` together with a ``breaker_events`` row, so a transition is written once
however many workers race for it. Consecutive failures are counted per process.

Listeners (:meth:`Breakers.add_listener`) hear every transition this process made;
the engine turns them into Prefect events (``orchestra.breaker.opened`` ...).

Settings (``core.settings``), read by :meth:`Breakers.configure` (the engine calls
it at the start of each run): ``breaker_threshold`` (consecutive transient failures
that open a breaker, default 5), ``breaker_cooldown`` (seconds before a probe,
default 30), ``breaker_ttl`` (seconds a process trusts its cached state, default 2).

Nothing here imports Prefect, an SDK or SQL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from core.settings import Settings, settings

from .providers import PROVIDERS

log = logging.getLogger("orchestra.breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
ALLOW, PROBE, DENY = "allow", "probe", "deny"
STATES = (CLOSED, OPEN, HALF_OPEN)



@dataclass(frozen=True, slots=True)
class Endpoint:
    """What a breaker guards: one model at one base URL of one provider."""

    provider: str
    base_url: str
    model: str  # the full "provider:model" string
    key: str = field(init=False, compare=False)  # "<model> @ <base url>", the breakers table's key

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.model} @ {self.base_url}")


def endpoint(model: str, base_url: str | None = None) -> Endpoint:
    """The endpoint that a call to ``model`` ("provider:name") reaches now: ``base_url``
    when the caller resolved one (a credentials block), else the SDK's variable."""
    provider = model.partition(":")[0]
    found = PROVIDERS.get(provider)
    if found is not None and found.base_url_var and base_url is None:
        base_url = os.environ.get(found.base_url_var)
    return _endpoint(model, base_url)


def engine_endpoint(engine: str, address: str) -> Endpoint:
    """What a breaker guards for a container engine: the engine (``dagger``) at one
    address (``session 127.0.0.1:PORT``, a runner host); its key is ``dagger @ <address>``."""
    return Endpoint(engine, address, engine)


@lru_cache(maxsize=1024)
def _endpoint(model: str, base_url: str | None) -> Endpoint:
    provider, _, name = model.partition(":")
    found = PROVIDERS.get(provider)
    if found is None:
        base = "unknown"
    elif found.default_base_url:
        base = (base_url or found.default_base_url).rstrip("/")
    else:  # in-process (fast-agent): its free models never leave the machine
        base = "local" if name.split(".")[0] in found.free_models else found.name
    return Endpoint(provider, base, model)


class Backend(Protocol):
    """Where breaker state is shared (``ledger.store.Store`` implements it)."""

    def load_breaker(self, key: str) -> dict[str, Any] | None: ...

    def swap_breaker(self, key: str, expect_version: int, values: dict[str, Any],
                     event: dict[str, Any] | None = None) -> bool: ...


class BreakerOpen(Exception):
    """A call refused because its endpoint's breaker is open (no request was sent)."""

    def __init__(self, ep: Endpoint, retry_at: float | None):
        self.endpoint = ep
        self.retry_at = retry_at
        wait = f"; next probe in {max(0.0, retry_at - time.time()):.1f} s" if retry_at else ""
        super().__init__(f"{ep.model}: circuit breaker open for {ep.base_url} (no request sent{wait})")


Listener = Callable[[Endpoint, str, str, dict[str, Any]], None]


class _Entry:
    __slots__ = ("ep", "state", "failures", "retry_at", "opened_at", "version", "checked", "probing")

    def __init__(self, ep: Endpoint):
        self.ep = ep
        self.state = CLOSED
        self.failures = 0
        self.retry_at: float | None = None
        self.opened_at: float | None = None
        self.version = 0
        self.checked = float("-inf")  # monotonic time of the last read of the shared row
        self.probing = False  # this process holds the half-open probe


class Breakers:
    """Every breaker of this process; see the module docstring."""

    def __init__(self, *, threshold: int | None = None, cooldown: float | None = None,
                 ttl: float | None = None, backend: Backend | None = None):
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self.backend: Backend | None = backend
        # the settings' defaults until configure() reads the environment (each run does)
        fields = Settings.model_fields
        self.threshold = threshold if threshold is not None else fields["breaker_threshold"].default
        self.cooldown = cooldown if cooldown is not None else fields["breaker_cooldown"].default
        self.ttl = ttl if ttl is not None else fields["breaker_ttl"].default

    # ---- settings ----------------------------------------------------------------

    def configure(self, *, threshold: int | None = None, cooldown: float | None = None,
                  ttl: float | None = None) -> None:
        """Explicit values win; otherwise the ``breaker_*`` settings (``ORCHESTRA_BREAKER_*``)."""
        current = settings()
        self.threshold = max(1, int(threshold if threshold is not None else current.breaker_threshold))
        self.cooldown = cooldown if cooldown is not None else current.breaker_cooldown
        self.ttl = ttl if ttl is not None else current.breaker_ttl

    def use_backend(self, backend: Backend | None) -> None:
        """Share state through ``backend``; a different backend starts from a clean slate."""
        with self._lock:
            if backend is not self.backend:
                self.backend = backend
                self._entries.clear()

    def add_listener(self, fn: Listener) -> None:
        if fn not in self._listeners:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    # ---- the hot path --------------------------------------------------------------

    def check(self, ep: Endpoint) -> str:
        """``ALLOW`` (closed), ``PROBE`` (this call is the half-open probe) or ``DENY``."""
        e = self._entries.get(ep.key)
        if e is None:
            with self._lock:
                e = self._entries.setdefault(ep.key, _Entry(ep))
        if self.backend is not None and time.monotonic() - e.checked > self.ttl:
            self._refresh(e)
        if e.state == CLOSED:
            return ALLOW
        now = time.time()
        if e.retry_at is not None and now < e.retry_at:
            return DENY  # cooling down, or another caller's probe is in flight
        return PROBE if self._claim_probe(e, now) else DENY

    def success(self, ep: Endpoint, probe: bool = False) -> None:
        """The provider answered (a non-transient error counts too)."""
        e = self._entries.get(ep.key)
        if e is None:
            return
        e.failures = 0
        if e.state == HALF_OPEN and (probe or e.probing):
            self._transition(e, CLOSED, retry_at=None, reason="probe succeeded")
        if probe:
            e.probing = False

    def failure(self, ep: Endpoint, probe: bool = False, reason: str | None = None) -> None:
        """A transient failure: 429, 5xx, a timeout, a dropped connection."""
        e = self._entries.get(ep.key)
        if e is None:
            with self._lock:
                e = self._entries.setdefault(ep.key, _Entry(ep))
        e.failures += 1
        if probe and e.state == HALF_OPEN:
            e.probing = False
            self._transition(e, OPEN, retry_at=time.time() + self.cooldown, reason=f"probe failed: {reason}")
        elif e.state == CLOSED and e.failures >= self.threshold:
            self._transition(e, OPEN, retry_at=time.time() + self.cooldown,
                             reason=f"{e.failures} consecutive failures; last: {reason}")

    def release(self, ep: Endpoint, probe: bool) -> None:
        """A call that says nothing about the provider (cancelled, no key): give the
        probe back so the next caller may probe at once."""
        e = self._entries.get(ep.key)
        if e is None or not probe:
            return
        e.probing = False
        if e.state == HALF_OPEN:
            self._transition(e, OPEN, retry_at=time.time(), reason="probe gave no answer", event=False)

    # ---- reading -------------------------------------------------------------------

    def state(self, ep: Endpoint, refresh: bool = True) -> dict[str, Any]:
        """``{"key", "state", "failures", "retry_at", "opened_at"}`` of one endpoint."""
        e = self._entries.get(ep.key)
        if e is None:
            with self._lock:
                e = self._entries.setdefault(ep.key, _Entry(ep))
        if refresh and self.backend is not None:
            self._refresh(e)
        return {"key": ep.key, "provider": ep.provider, "base_url": ep.base_url, "model": ep.model,
                "state": e.state, "failures": e.failures, "retry_at": e.retry_at, "opened_at": e.opened_at}

    def is_open(self, ep: Endpoint) -> bool:
        """True while calls would be refused (open and cooling down, or a probe in flight)."""
        e = self._entries.get(ep.key)
        if e is None or (self.backend is not None and time.monotonic() - e.checked > self.ttl):
            self.state(ep)
            e = self._entries[ep.key]
        return e.state != CLOSED and (e.retry_at is None or time.time() < e.retry_at)

    # ---- internals -----------------------------------------------------------------

    def _refresh(self, e: _Entry) -> None:
        try:
            row = self.backend.load_breaker(e.ep.key)  # type: ignore[union-attr]
        except Exception as exc:  # the store is down: keep the local view, retry after ttl
            log.warning("breaker %s: cannot read shared state: %s", e.ep.key, exc)
            e.checked = time.monotonic()
            return
        e.checked = time.monotonic()
        if row is None:
            if e.version:  # the row was removed: closed
                e.state, e.version, e.retry_at, e.opened_at = CLOSED, 0, None, None
            return
        if row["version"] != e.version:
            e.state, e.version = row["state"], row["version"]
            e.retry_at, e.opened_at = row["retry_at"], row["opened_at"]
            if e.state == CLOSED:
                e.probing = False

    def _claim_probe(self, e: _Entry, now: float) -> bool:
        with self._lock:
            if e.state == CLOSED:
                return False
            if e.retry_at is not None and now < e.retry_at:
                return False
            ok = self._transition(e, HALF_OPEN, retry_at=now + max(self.cooldown, 1.0),
                                  reason="cool-down over: one probe call")
            e.probing = ok
            return ok

    def _transition(self, e: _Entry, new: str, *, retry_at: float | None, reason: str,
                    event: bool = True) -> bool:
        with self._lock:
            old = e.state
            now = time.time()
            opened_at = now if new == OPEN and old == CLOSED else (None if new == CLOSED else e.opened_at)
            values = {"provider": e.ep.provider, "base_url": e.ep.base_url, "model": e.ep.model,
                      "state": new, "failures": e.failures, "retry_at": retry_at, "opened_at": opened_at,
                      "version": e.version + 1}
            if self.backend is not None:
                try:
                    ok = self.backend.swap_breaker(
                        e.ep.key, e.version, values,
                        {"from_state": old, "to_state": new, "reason": reason} if event else None)
                except Exception as exc:  # the store is down: act locally
                    log.warning("breaker %s: cannot write %s -> %s: %s", e.ep.key, old, new, exc)
                    ok = True
                if not ok:  # another process got there first: adopt its state
                    e.checked = float("-inf")
                    self._refresh(e)
                    return False
            e.state, e.retry_at, e.opened_at, e.version = new, retry_at, opened_at, e.version + 1
            if new == CLOSED:
                e.failures = 0
        if event:
            info = {"reason": reason, "failures": e.failures, "retry_at": retry_at, "key": e.ep.key}
            for fn in list(self._listeners):
                try:
                    fn(e.ep, old, new, info)
                except Exception:  # a listener must never break a call
                    log.debug("breaker listener failed", exc_info=True)
        return True


# The process-wide registry that call sites share.
breakers = Breakers()
