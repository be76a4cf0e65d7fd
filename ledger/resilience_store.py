"""The write path of the ledger's self-healing tables (revision 0002), mixed into :class:`ledger.store.Store`;
what they hold is read through ``ledger.queries``.

* breakers: one row per provider endpoint; every transition is a compare-and-set on
  ``version`` plus one ``breaker_events`` row, in one transaction, so processes that
  share the database agree on one breaker and each transition is written once;
* dead letters: steps that failed for good, with the rendered prompt and the error
  (both redacted);
* provider limits (``orchestra limits``), health checks (``orchestra agents health``);
* what routing and budgets read: per-agent latency, recent load and spend.

Nothing here is on the per-call hot path except the rare breaker transition and the
breaker refresh (one primary-key ``SELECT`` per endpoint every few seconds).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ledger.models import Breaker, BreakerEvent, Call, DeadLetter, HealthCheck, ProviderLimit
from core.redact import redact

UTC = timezone.utc
MAX_PROMPT_CHARS = 100_000
_BREAKERS = Breaker.__table__
_EVENTS = BreakerEvent.__table__
_DEAD = DeadLetter.__table__
_LIMITS = ProviderLimit.__table__
_HEALTH = HealthCheck.__table__
_CALLS = Call.__table__


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def _clip(text: str | None, limit: int = MAX_PROMPT_CHARS) -> str | None:
    if text is None:
        return None
    text = redact(str(text))
    return text if len(text) <= limit else text[:limit] + f"... [{len(text) - limit} chars truncated]"


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def _epoch(dt: datetime | None) -> float | None:
    return None if dt is None else dt.timestamp()


class ResilienceStore:
    """Methods of :class:`ledger.store.Store` for the 0002 tables."""

    # ------------------------------------------------------------ breakers

    def load_breaker(self, key: str) -> dict[str, Any] | None:
        """The shared state of one breaker (times as epoch seconds), or None."""
        with self._connect() as conn:
            row = conn.execute(select(_BREAKERS).where(_BREAKERS.c.key == key)).mappings().first()
        return None if row is None else self._breaker_dict(row)

    @staticmethod
    def _breaker_dict(row: Any) -> dict[str, Any]:
        d = dict(row)
        d["retry_at"] = _epoch(d["retry_at"])
        d["opened_at"] = _epoch(d["opened_at"])
        d["updated"] = _epoch(d["updated"])
        return d

    def swap_breaker(self, key: str, expect_version: int, values: dict[str, Any],
                     event: dict[str, Any] | None = None) -> bool:
        """Write a transition if the row is still at ``expect_version`` (0: no row yet).

        ``values``: provider, base_url, model, state, failures, retry_at, opened_at
        (epoch seconds), version. ``event``: from_state, to_state, reason. False when
        another process won the race (the caller re-reads).
        """
        now = datetime.now(UTC)
        row = {
            "provider": values["provider"], "base_url": values["base_url"], "model": values["model"],
            "state": values["state"], "failures": int(values.get("failures", 0)),
            "retry_at": _ts(values.get("retry_at")), "opened_at": _ts(values.get("opened_at")),
            "version": int(values["version"]), "updated": now,
        }
        try:
            with self._write() as conn:
                if expect_version == 0:
                    if conn.execute(select(_BREAKERS.c.version).where(_BREAKERS.c.key == key)).first():
                        return False
                    conn.execute(insert(_BREAKERS).values(key=key, **row))
                else:
                    done = conn.execute(
                        update(_BREAKERS)
                        .where(_BREAKERS.c.key == key, _BREAKERS.c.version == expect_version)
                        .values(**row)
                    )
                    if done.rowcount != 1:
                        return False
                if event is not None:
                    conn.execute(insert(_EVENTS).values(
                        key=key, provider=row["provider"], model=row["model"],
                        from_state=event["from_state"], to_state=event["to_state"],
                        failures=row["failures"], reason=_clip(event.get("reason"), 2000), created=now,
                    ))
        except IntegrityError:  # PostgreSQL: a concurrent first insert
            return False
        return True

    # ------------------------------------------------------------ dead letters

    def add_dead_letter(self, *, flow_run_id: str, workflow: str, step: str, error: str,
                        agent: str | None = None, model: str | None = None, prompt: str | None = None,
                        attempts: int = 0, created: datetime | None = None) -> int:
        with self._write() as conn:
            result = conn.execute(insert(_DEAD).values(
                flow_run_id=flow_run_id, workflow=workflow, step=step, agent=agent, model=model,
                prompt=_clip(prompt), error=_clip(error, 20_000) or "", attempts=int(attempts),
                created=created or datetime.now(UTC),
            ))
            return int(result.inserted_primary_key[0])

    # ------------------------------------------------------------ provider limits

    def set_limit(self, provider: str, *, concurrency: int | None, rpm: int | None) -> None:
        """Set (or, with both None, remove) a provider's limits."""
        now = datetime.now(UTC)
        with self._write() as conn:
            conn.execute(delete(_LIMITS).where(_LIMITS.c.provider == provider))
            if concurrency is not None or rpm is not None:
                conn.execute(insert(_LIMITS).values(provider=provider, concurrency=concurrency, rpm=rpm,
                                                    updated=now))

    def list_limits(self) -> list[dict[str, Any]]:
        with self._connect() as conn:
            rows = [dict(r) for r in conn.execute(select(_LIMITS).order_by(_LIMITS.c.provider)).mappings()]
        for r in rows:
            r["updated"] = _iso(r["updated"])
        return rows

    # ------------------------------------------------------------ health

    def record_health(self, rows: Iterable[dict[str, Any]]) -> None:
        now = datetime.now(UTC)
        clean = [{"agent": r["agent"], "model": r["model"], "status": r["status"],
                  "latency_ms": float(r.get("latency_ms") or 0.0), "cost_usd": float(r.get("cost_usd") or 0.0),
                  "error": _clip(r.get("error"), 2000), "created": r.get("created") or now} for r in rows]
        if clean:
            with self._write() as conn:
                conn.execute(insert(_HEALTH), clean)

    # ------------------------------------------------------------ routing and budgets

    def agent_stats(self, agents: Iterable[str], *, window_s: float = 300.0, sample: int = 100,
                    now: datetime | None = None) -> dict[str, dict[str, Any]]:
        """Per agent, from its provider calls (cache hits left out):
        ``latency_ms`` (mean of the last ``sample`` successful calls, None without any),
        ``recent_calls`` (calls in the last ``window_s`` seconds) and ``last_call_id``."""
        self._sync_reads()
        now = now or datetime.now(UTC)
        since = now - timedelta(seconds=window_s)
        c = _CALLS.c
        stats: dict[str, dict[str, Any]] = {}
        with self._connect() as conn:
            for agent in agents:
                recent = (select(c.latency_ms).where(c.agent == agent, c.cached.is_(False), c.status == "ok")
                          .order_by(c.id.desc()).limit(sample).subquery())
                latency = conn.execute(select(func.avg(recent.c.latency_ms))).scalar()
                load = conn.execute(select(func.count(c.id)).where(
                    c.agent == agent, c.cached.is_(False), c.created >= since)).scalar()
                last = conn.execute(select(func.max(c.id)).where(c.agent == agent, c.cached.is_(False))).scalar()
                stats[agent] = {"latency_ms": float(latency) if latency is not None else None,
                                "recent_calls": int(load or 0), "last_call_id": int(last) if last else None}
        return stats

    def spent_since(self, agent: str, since: datetime) -> float:
        """What ``agent``'s calls cost since ``since`` (daily budgets)."""
        self._sync_reads()
        c = _CALLS.c
        with self._connect() as conn:
            value = conn.execute(select(func.coalesce(func.sum(c.cost_usd), 0.0))
                                 .where(c.agent == agent, c.created >= since)).scalar()
        return float(value or 0.0)
