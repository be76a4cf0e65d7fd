"""Reading a workflow document with limits on what it may cost: size, depth, values
(YAML aliases expanded), and no duplicate keys.

The limits are settings (``core.settings``): ``max_workflow_bytes``
(``ORCHESTRA_MAX_WORKFLOW_BYTES``), ``max_document_depth`` (``ORCHESTRA_MAX_DOCUMENT_DEPTH``)
and ``max_document_nodes`` (``ORCHESTRA_MAX_DOCUMENT_NODES``). A YAML alias is counted
each time it is used, so a kilobyte "billion laughs" document is refused in
milliseconds instead of expanding to millions of values.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from core.settings import settings
from flows.errors import WorkflowError

__all__ = ["parse_text", "check_document"]


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (the last would win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # SafeConstructor reports an unhashable key itself
            if key in seen:
                raise ConstructorError(None, None, f"duplicate key {key!r} (first at line "
                                       f"{seen[key].start_mark.line + 1}); the last value would win",
                                       key_node.start_mark)
            seen[key] = key_node
        return super().construct_mapping(node, deep=deep)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}; the last value would win")
        out[key] = value
    return out


def parse_text(text: str, source: str, json_only: bool = False) -> Any:
    """The document in ``text`` (JSON, or YAML which includes JSON), within the limits."""
    limit = settings().max_workflow_bytes
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > limit:
        raise WorkflowError(source, [f"the document is {size:,} bytes, more than {limit:,} "
                                     "(the max_workflow_bytes setting, ORCHESTRA_MAX_WORKFLOW_BYTES)"])
    try:
        if json_only:
            data = json.loads(text, object_pairs_hook=_no_duplicates)
        else:
            data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except json.JSONDecodeError as exc:
        raise WorkflowError(source, [f"line {exc.lineno}, column {exc.colno}: invalid JSON: {exc.msg}"]) from None
    except ValueError as exc:  # a duplicate key in JSON
        raise WorkflowError(source, [f"invalid JSON: {exc}"]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise WorkflowError(source, [f"{where}invalid YAML: {problem}"]) from None
    except RecursionError:
        raise WorkflowError(source, [_too_deep()]) from None
    check_document(data, source)
    return data


def _too_deep() -> str:
    return (f"the document is nested more than {settings().max_document_depth} levels deep "
            "(the max_document_depth setting, ORCHESTRA_MAX_DOCUMENT_DEPTH)")


def check_document(data: Any, source: str) -> None:
    """Refuse a parsed document nested too deeply or holding too many values (shared
    objects, as YAML aliases make them, counted at every use). Iterative, memoised:
    linear in the distinct objects whatever the expansion."""
    current = settings()
    max_depth, max_nodes = current.max_document_depth, current.max_document_nodes
    height: dict[int, int] = {}
    count: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    on_path: list[int] = []
    while stack:
        obj, done = stack.pop()
        children = list(obj.values()) if isinstance(obj, dict) else obj if isinstance(obj, list) else None
        if children is None:
            continue
        key = id(obj)
        if done:
            on_path.pop()
            inner = [c for c in children if isinstance(c, (dict, list))]
            height[key] = 1 + max((height[id(c)] for c in inner), default=0)
            count[key] = 1 + len(children) - len(inner) + sum(count[id(c)] for c in inner)
            if height[key] > max_depth:
                raise WorkflowError(source, [_too_deep()])
            if count[key] > max_nodes:
                raise WorkflowError(source, [f"the document holds more than {max_nodes:,} values (YAML aliases "
                                             "counted at each use; the max_document_nodes setting, "
                                             "ORCHESTRA_MAX_DOCUMENT_NODES)"])
            continue
        if key in height:
            continue
        if key in on_path:
            raise WorkflowError(source, ["the document refers to itself (a recursive YAML alias)"])
        if len(on_path) >= max_depth:
            raise WorkflowError(source, [_too_deep()])
        on_path.append(key)
        stack.append((obj, True))
        stack.extend((c, False) for c in children if isinstance(c, (dict, list)) and id(c) not in height)
