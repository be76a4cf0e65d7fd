"""Prompt templates: Jinja2's sandbox with strict undefined names.

Templates see `inputs.*`, `steps.<id>.output`, `previous.output` (sequential
workflows) and `item` / `index` (inside a `for_each` step).

An MCP server's `headers` and `env` values are templates too, with one function and
no other name: `secret('NAME')` (:func:`secret_names` checks them, :func:`render_secrets`
renders them once the secrets are read).
"""

from __future__ import annotations

import functools
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

__all__ = [
    "TemplateError",
    "env",
    "references",
    "render",
    "evaluate",
    "secret_names",
    "render_secrets",
]


class TemplateError(Exception):
    """A template that does not parse or does not render."""


env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
)


@functools.lru_cache(maxsize=1024)
def _compile(source: str):
    try:
        return env.from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error on line {exc.lineno}: {exc.message}") from None


@functools.lru_cache(maxsize=1024)
def _compile_expression(source: str):
    try:
        return env.compile_expression(source, undefined_to_none=False)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"expression syntax error: {exc.message}") from None


def _error(exc: Exception) -> TemplateError:
    if isinstance(exc, UndefinedError):
        return TemplateError(f"undefined name: {exc.message}")
    if isinstance(exc, SecurityError):
        return TemplateError(f"not allowed in a template: {exc}")
    return TemplateError(f"{type(exc).__name__}: {exc}")


def render(source: str, context: dict[str, Any]) -> str:
    template = _compile(source)
    try:
        return template.render(context)
    except TemplateError:
        raise
    except Exception as exc:  # any error raised by user template code
        raise _error(exc) from None


def evaluate(source: str, context: dict[str, Any]) -> Any:
    """Evaluate an expression: `inputs.mode == 'full'` or `{{ inputs.items }}`."""
    text = source.strip()
    if text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1:
        text = text[2:-2]
    expression = _compile_expression(text)
    try:
        return expression(**context)
    except Exception as exc:
        raise _error(exc) from None


def _parse(source: str, expression: bool) -> nodes.Node:
    try:
        if expression:
            text = source.strip()
            if text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1:
                text = text[2:-2]
            return env.parse("{{ " + text + " }}")
        return env.parse(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error on line {exc.lineno}: {exc.message}") from None


@functools.lru_cache(maxsize=4096)
def references(source: str, expression: bool = False) -> tuple[frozenset[str], tuple[tuple[str, str | None, str | None], ...]]:
    """Names a template reads: (free top-level names, [(root, key, field)]).

    `steps.review.output` gives ("steps", "review", "output");
    `inputs.code` gives ("inputs", "code", None).
    """
    ast = _parse(source, expression)
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    free = {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"} - assigned
    paths: list[tuple[str, str | None, str | None]] = []
    seen: set[int] = set()

    def key_of(node: nodes.Node) -> str | None:
        if isinstance(node, nodes.Getattr):
            return node.attr
        if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
            return str(node.arg.value)
        return None

    # Walk attribute chains from their outermost node: steps.x.output -> Getattr(Getattr(Name))
    for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
        if id(node) in seen:
            continue
        chain = []
        cur = node
        while isinstance(cur, (nodes.Getattr, nodes.Getitem)):
            seen.add(id(cur))
            chain.append(cur)
            cur = cur.node
        if isinstance(cur, nodes.Name) and cur.name in ("steps", "inputs") and cur.name not in assigned:
            keys = [key_of(n) for n in reversed(chain)]
            paths.append((cur.name, keys[0], keys[1] if len(keys) > 1 else None))
    return frozenset(free), tuple(paths)


@functools.lru_cache(maxsize=1024)
def secret_names(source: str) -> tuple[str, ...]:
    """The secrets a header or env template reads, in order: ``secret('NAME')`` calls with a
    literal name are all it may use. TemplateError naming what else it uses."""
    if "{{" not in source and "{%" not in source:
        return ()
    ast = _parse(source, expression=False)
    names: list[str] = []
    calls = list(ast.find_all(nodes.Call))
    called = {id(c.node) for c in calls}
    for call in calls:
        if not (isinstance(call.node, nodes.Name) and call.node.name == "secret"):
            raise TemplateError("only secret('NAME') may be called here")
        if len(call.args) != 1 or call.kwargs or call.dyn_args or call.dyn_kwargs \
                or not isinstance(call.args[0], nodes.Const) or not isinstance(call.args[0].value, str) \
                or not call.args[0].value:
            raise TemplateError("secret() takes one name in quotes, e.g. secret('SEARCH_TOKEN')")
        names.append(call.args[0].value)
    for name in ast.find_all(nodes.Name):
        if name.name != "secret" or id(name) not in called:
            raise TemplateError(f"unknown name '{name.name}' (only secret('NAME') is available here)")
    return tuple(dict.fromkeys(names))


def render_secrets(source: str, values: dict[str, str]) -> str:
    """``source`` with each ``secret('NAME')`` replaced by ``values[NAME]``."""
    if not secret_names(source):
        return source
    return render(source, {"secret": lambda name: values[name]})
