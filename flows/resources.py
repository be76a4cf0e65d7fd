"""What one run opens once and its steps share: a connection to an engine, a session.

    client = await current_run().resources.get(("dagger", address), lambda: dagger.Connection(cfg),
                                               timeout=30)

``RunResources.get(key, open, timeout=)`` enters the async context manager that
``open()`` returns the first time a step of the run asks for ``key``; every later step
(concurrent ones included) gets the same value. Each context is held by a task of its
own, so that a context built on anyio task groups or cancel scopes (the mcp SDK's
sessions, an SDK's HTTP client) is entered and exited in the same task, whichever step
asked first and however that step ends: its timeout or cancellation does not close
what the other steps share.

``timeout`` bounds the opening (an engine that accepts a connection and never answers
would otherwise keep a step waiting forever): ``ResourceTimeout``, and nothing is kept.
A context whose opening failed is not kept either: the next ``get`` (a retry) opens
it again. The engine (``flows.engine.execute``) calls ``aclose()`` when the run ends,
in its ``finally``: every context is exited, the last opened first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Hashable
from typing import Any, AsyncContextManager

__all__ = ["RunResources", "ResourceTimeout"]

log = logging.getLogger("orchestra.resources")

CLOSE_GRACE_S = 30.0  # how long aclose() waits for one context to exit before cancelling it


class ResourceTimeout(TimeoutError):
    """A resource did not open within its timeout."""


class _Held:
    __slots__ = ("ready", "stop", "task")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.ready: asyncio.Future = loop.create_future()
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    def failed(self) -> bool:
        return self.ready.done() and (self.ready.cancelled() or self.ready.exception() is not None)


class RunResources:
    """The shared resources of one run; see the module docstring."""

    def __init__(self) -> None:
        self._held: dict[Hashable, _Held] = {}
        self._locks: dict[Hashable, asyncio.Lock] = {}
        self._closed = False

    def __contains__(self, key: Hashable) -> bool:
        held = self._held.get(key)
        return held is not None and held.ready.done() and not held.failed()

    async def get(self, key: Hashable, open: Callable[[], AsyncContextManager[Any]], *,
                  timeout: float | None = None) -> Any:
        """The value of the context ``open()`` for ``key``, entered once per run."""
        if self._closed:
            raise RuntimeError("the run's resources are closed")
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            held = self._held.get(key)
            if held is None or held.failed():
                held = self._held[key] = _Held(asyncio.get_running_loop())
                held.task = asyncio.get_running_loop().create_task(self._hold(held, open),
                                                                   name=f"orchestra-resource-{key}")
            try:
                # shielded: a step that is cancelled while waiting leaves the opening to the others
                return await asyncio.wait_for(asyncio.shield(held.ready), timeout)
            except TimeoutError:
                await self._drop(key, held)
                raise ResourceTimeout(f"did not open within {timeout:g} s") from None
            except BaseException:
                if held.failed():
                    self._held.pop(key, None)
                raise

    async def _hold(self, held: _Held, open: Callable[[], AsyncContextManager[Any]]) -> None:
        try:
            async with open() as value:
                held.ready.set_result(value)
                await held.stop.wait()
        except BaseException as exc:
            if not held.ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    held.ready.cancel()
                else:
                    held.ready.set_exception(exc)
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("a run resource did not close cleanly: %s", exc)
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise

    async def _drop(self, key: Hashable, held: _Held) -> None:
        if self._held.get(key) is held:
            del self._held[key]
        if held.task is not None and not held.task.done():
            held.task.cancel()
            with contextlib.suppress(BaseException):
                await held.task
        if held.ready.done() and not held.ready.cancelled():
            held.ready.exception()  # retrieved: no "never retrieved" warning

    async def aclose(self) -> None:
        """Exit every context, the last opened first; errors are logged, never raised."""
        self._closed = True
        for key, held in reversed(list(self._held.items())):
            held.stop.set()
            if held.task is None:
                continue
            done, _ = await asyncio.wait({held.task}, timeout=CLOSE_GRACE_S)
            if not done:
                log.warning("a run resource (%s) did not close within %g s: cancelled", key, CLOSE_GRACE_S)
                await self._drop(key, held)
            elif held.ready.done() and not held.ready.cancelled():
                held.ready.exception()
        self._held.clear()
