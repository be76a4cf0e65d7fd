"""A workflow's inputs: defaults and declared types applied to given values."""

from __future__ import annotations

import json
from typing import Any

from flows.errors import WorkflowError
from flows.spec.models import Workflow

__all__ = ["coerce_inputs", "coerce_value"]


def coerce_inputs(wf: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    """Apply defaults and declared types to `-i key=value` pairs (strings) or typed values."""
    problems = []
    values: dict[str, Any] = {}
    for key in given:
        if key not in wf.inputs:
            known = ", ".join(sorted(wf.inputs)) or "none"
            problems.append(f"unknown input '{key}' (declared inputs: {known})")
    for name, spec in wf.inputs.items():
        if name in given:
            try:
                values[name] = coerce_value(given[name], spec.type)
            except ValueError as exc:
                problems.append(f"input '{name}': {exc}")
        elif spec.default is not None:
            values[name] = coerce_value(spec.default, spec.type)  # checked at validation
        elif spec.is_required:
            problems.append(f"input '{name}' is required (set it with -i {name}=...)")
        else:
            values[name] = None
    if problems:
        raise WorkflowError(wf.source or wf.name, problems)
    return values


def coerce_value(value: Any, kind: str) -> Any:
    """``value`` as an input of type ``kind`` (a string is parsed); ValueError saying what was expected."""
    if not isinstance(value, str):
        ok = {
            "string": isinstance(value, str),
            "number": isinstance(value, (int, float)) and not isinstance(value, bool),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
        }[kind]
        if not ok:
            raise ValueError(f"expected {kind}, got {type(value).__name__}")
        return value
    try:
        if kind == "string":
            return value
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
        if kind == "boolean":
            low = value.strip().lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        parsed = json.loads(value)
    except (ValueError, json.JSONDecodeError):
        raise ValueError(f"expected {kind}, got {value!r}") from None
    if kind == "object" and not isinstance(parsed, dict) or kind == "array" and not isinstance(parsed, list):
        raise ValueError(f"expected a JSON {kind}, got {value!r}")
    return parsed
