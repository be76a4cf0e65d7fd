"""Progress of a run for callers in this process (the CLI's live table): each step's
state changes, as ``listener(step_id, state, info)``. A broken listener never breaks a run."""

from __future__ import annotations

from typing import Callable

__all__ = ["Listener", "add_listener", "remove_listener", "notify"]

Listener = Callable[[str, str, dict], None]
_listeners: list[Listener] = []


def add_listener(fn: Listener) -> None:
    _listeners.append(fn)


def remove_listener(fn: Listener) -> None:
    if fn in _listeners:
        _listeners.remove(fn)


def notify(step_id: str, state: str, info: dict | None = None) -> None:
    for fn in list(_listeners):
        try:
            fn(step_id, state, info or {})
        except Exception:  # a broken listener must never break a run
            pass
