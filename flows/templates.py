"""Prompt templates: Jinja2's sandbox with strict undefined names, bounded in time and size.

Templates see `inputs.*`, `steps.<id>.output` (and a kind's other outputs),
`previous.output` (sequential workflows) and `item` / `index` (inside a `for_each`
step). Data before methods: `inputs.items` is the input named `items`, not the dict
method, for any mapping a template reads.

Rendering is bounded by two settings, each reported as a TemplateLimit naming it:
``template_timeout`` (``ORCHESTRA_TEMPLATE_TIMEOUT``, seconds, default 5) and
``template_max_chars`` (``ORCHESTRA_TEMPLATE_MAX_CHARS``, default 1,000,000). The
clock is checked at every iteration of a ``range()``, every attribute or item read,
every call, every intercepted operator and every chunk of output; a string or list
that an operator (``*``, ``+``, ``**``) or a filter would make larger than the size
limit is refused before it is made where it can be, after otherwise.

An MCP server's `headers` and `env` values are templates too, with one function and
no other name: `secret('NAME')` (:func:`secret_names` checks them, :func:`render_secrets`
renders them once the secrets are read).
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment, SecurityError

from core.settings import settings

__all__ = ["TemplateError", "TemplateLimit", "DYNAMIC", "env", "references", "render", "evaluate", "secret_names",
           "render_secrets"]

DYNAMIC = "<computed>"  # the key of `steps[...]` / `inputs[...]` when it is an expression


class TemplateError(Exception):
    """A template that does not parse or does not render."""


class TemplateLimit(TemplateError):
    """Rendering went past a limit (time or size); the message names the setting."""


class _Budget:
    __slots__ = ("deadline", "timeout", "max_chars")

    def __init__(self) -> None:
        current = settings()
        self.timeout = current.template_timeout
        self.max_chars = current.template_max_chars
        self.deadline = time.monotonic() + self.timeout

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimit(f"rendering took longer than {self.timeout:g} s "
                                "(the template_timeout setting, ORCHESTRA_TEMPLATE_TIMEOUT)")

    def size(self, n: int) -> None:
        if n > self.max_chars:
            raise TemplateLimit(f"the result would be {n:,} characters, more than {self.max_chars:,} "
                                "(the template_max_chars setting, ORCHESTRA_TEMPLATE_MAX_CHARS)")


_budget: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar("orchestra_template_budget", default=None)


def _tick() -> None:
    budget = _budget.get()
    if budget is not None:
        budget.tick()


def _sized(value: Any) -> Any:
    budget = _budget.get()
    if budget is not None and isinstance(value, (str, bytes, list, tuple)):
        budget.size(len(value))
    return value


class _Range:
    """``range()`` in a template: the sandbox's size cap, and the clock read per item."""

    def __init__(self, *args: int):
        self._range = range(*args)
        if len(self._range) > MAX_RANGE:
            raise TemplateLimit(f"range() of {len(self._range):,} items is more than {MAX_RANGE:,}")

    def __len__(self) -> int:
        return len(self._range)

    def __iter__(self):
        for i in self._range:
            _tick()
            yield i


class _Environment(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "+"})

    def getattr(self, obj: Any, attribute: str) -> Any:
        _tick()
        if isinstance(obj, Mapping) and attribute in obj:  # data before methods
            return obj[attribute]
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        _tick()
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's own names)
        _tick()
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def call_binop(self, context: Any, op: str, left: Any, right: Any) -> Any:
        _tick()
        budget = _budget.get()
        if budget is not None:
            if op == "*" and isinstance(left, int) and not isinstance(right, int):
                left, right = right, left
            if op == "*" and isinstance(left, (str, list, tuple)) and isinstance(right, int):
                budget.size(len(left) * max(right, 0))
            elif op == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                budget.size(len(left) + len(right))
            elif op == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 4096:
                raise TemplateLimit(f"{left} ** {right} is too large a number to compute in a template")
        return super().call_binop(context, op, left, right)


def _bounded_filter(fn: Any) -> Any:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        _tick()
        return _sized(fn(*args, **kwargs))

    return run


env = _Environment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)
env.globals.pop("lipsum", None)  # it makes as much text as asked for
env.globals["range"] = _Range
env.filters = {name: _bounded_filter(fn) for name, fn in env.filters.items()}
for _width_filter in ("center", "indent"):  # refuse a width larger than the size limit before padding
    _inner = env.filters[_width_filter]

    def _checked(*args: Any, __inner: Any = _inner, **kwargs: Any) -> Any:
        widths = [a for a in args[1:] if isinstance(a, int)] + [v for v in kwargs.values() if isinstance(v, int)]
        budget = _budget.get()
        if budget is not None and widths:
            budget.size(max(widths))
        return __inner(*args, **kwargs)

    env.filters[_width_filter] = functools.wraps(_inner)(_checked)


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
    if isinstance(exc, TemplateError):
        return exc
    if isinstance(exc, UndefinedError):
        return TemplateError(f"undefined name: {exc.message}")
    if isinstance(exc, SecurityError):
        return TemplateError(f"not allowed in a template: {exc}")
    if isinstance(exc, (MemoryError, OverflowError)):
        return TemplateLimit(f"{type(exc).__name__}: the template asked for more than can be made")
    return TemplateError(f"{type(exc).__name__}: {exc}")


def render(source: str, context: dict[str, Any]) -> str:
    template = _compile(source)
    budget = _Budget()
    token = _budget.set(budget)
    try:
        chunks: list[str] = []
        length = 0
        for chunk in template.generate(context):
            length += len(chunk)
            budget.size(length)
            budget.tick()
            chunks.append(chunk)
        return "".join(chunks)
    except Exception as exc:  # any error raised by user template code
        raise _error(exc) from None
    finally:
        _budget.reset(token)


def evaluate(source: str, context: dict[str, Any]) -> Any:
    """Evaluate an expression: `inputs.mode == 'full'` or `{{ inputs.items }}`."""
    text = source.strip()
    if text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1:
        text = text[2:-2]
    expression = _compile_expression(text)
    token = _budget.set(_Budget())
    try:
        value = expression(**context)
        if isinstance(value, _Range):
            value = list(value)
        return _sized(value)
    except Exception as exc:
        raise _error(exc) from None
    finally:
        _budget.reset(token)


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
    `inputs.code` gives ("inputs", "code", None); `steps[name].output` gives
    ("steps", DYNAMIC, "output") (a key computed at render time).
    """
    ast = _parse(source, expression)
    assigned = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
    free = {n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"} - assigned
    paths: list[tuple[str, str | None, str | None]] = []
    seen: set[int] = set()

    def key_of(node: nodes.Node) -> str | None:
        if isinstance(node, nodes.Getattr):
            return node.attr
        if isinstance(node, nodes.Getitem):
            return str(node.arg.value) if isinstance(node.arg, nodes.Const) else DYNAMIC
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
