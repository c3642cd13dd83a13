"""A Jinja sandbox with bounded cost: chat templates come from model files, so a hostile
template must end in one error, quickly, whatever it does.

:class:`BoundedEnvironment` is Jinja's ``ImmutableSandboxedEnvironment`` (no attribute
escapes, no mutation of lists and dicts) plus limits on what one render may cost, set by
:class:`RenderLimits`:

* **time and steps**: the render runs under ``sys.settrace`` on its own thread; every line
  of template code and every call of other Python code (Jinja's runtime, filters) is a
  step, and the deadline is checked every few hundred steps. A loop that outputs nothing
  still ends.
* **depth**: calls of template code (macros, ``caller()``, recursive loops) nest at most
  ``max_depth`` deep.
* **size**: no value the template makes may be longer (as text) than ``max_value_chars``,
  and all the text it emits, anywhere, at most ``max_output_chars``. Sizes are checked
  *before* the value is made wherever one operation can make a large value from small
  ones (``*``, ``**``, ``+``, ``~``, ``%``, ``str.format``, ``join``, ``replace``,
  ``indent``, padding widths...), so a ``'x' * 10000000000`` never allocates; text
  emitted into the output or into a macro's or ``{% set %}`` block's buffer is counted
  as it is written.

The limits, the running budget and the size checks live in :mod:`loaders.chat_budget`;
this module hooks them into Jinja (its code generator, operators, calls and filters).

Every violation raises :class:`LimitExceeded` (a ``BaseException``, so no ``except
Exception`` in Jinja or a filter can swallow it); :mod:`loaders.chat` turns it into a
``FormatError``. C code that runs without Python steps (a sort, a regular expression)
only ever sees inputs within the size limits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import update_wrapper
from typing import Any

from jinja2 import nodes, pass_environment
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import make_attrgetter
from jinja2.runtime import str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace

from loaders.chat_budget import (
    SPEC_NUMBER,
    LimitExceeded,
    RenderLimits,
    bounded,
    check_estimate,
    check_int,
    check_percent,
    check_value,
    current_budget,
    size_of,
    text_size,
)

__all__ = ["BoundedEnvironment", "LimitExceeded", "RenderLimits", "bounded", "text_size"]


# ------------------------------------------------------------------ operators
def _binop(op: str, left: Any, right: Any) -> Any:
    """``left op right`` with sizes checked before the result is made."""
    if op == "+" and type(left) is str and type(right) is str:  # the usual case, quickly
        if len(left) + len(right) > current_budget().limits.max_value_chars:
            check_estimate(len(left) + len(right), "'+'")
        return left + right
    limits = current_budget().limits
    sequences = (str, list, tuple)
    if op == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, sequences) and isinstance(count, int):
                check_estimate(size_of(seq) * max(count, 0), "'*'")
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > limits.max_int_bits:
                raise current_budget().fail(f"'*' makes an integer of about {bits} bits")
        return left * right
    if op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            bits = max(left.bit_length() - 1, 0) * right
            if abs(left) > 1 and (right > limits.max_int_bits or bits > limits.max_int_bits):
                raise current_budget().fail(f"'**' makes an integer of about {bits} bits")
        return left**right
    if op == "+":
        if isinstance(left, sequences) and isinstance(right, sequences):
            check_estimate(size_of(left) + size_of(right), "'+'")
        return left + right
    if op == "%":
        if isinstance(left, str):
            check_percent(left, right, "'%' formatting")
        return left % right
    if op == "-":
        return left - right
    if op == "/":
        return left / right
    if op == "//":
        return left // right
    raise AssertionError(op)


def _concat(values: tuple[object, ...]) -> str:
    """``a ~ b ~ ...``: the operands as text, joined, size checked first."""
    check_estimate(sum(size_of(v) for v in values), "'~'")
    return str_join(values)


class _CountingBuffer(list[str]):
    """The buffer of a macro or ``{% set %}`` block: text written to it is counted."""

    def append(self, text: str) -> None:
        current_budget().emit(text)
        super().append(text)

    def extend(self, texts: Iterable[str]) -> None:
        texts = tuple(texts)
        for text in texts:
            current_budget().emit(text)
        super().extend(texts)


class _CodeGenerator(CodeGenerator):
    """Jinja's code generator with counted buffers and size-checked ``~``."""

    def buffer(self, frame: Frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.counting_buffer()")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            raise AssertionError("the bounded environment never autoescapes")
        self.write("environment.concat_values((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


# ------------------------------------------------------------------ calls
def _check_call(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, ...]:
    """Sizes of the calls where one argument multiplies another's size; returns the
    arguments to call with (an iterator given to ``join`` is read into a tuple first)."""
    name = getattr(func, "__name__", "")
    owner = getattr(func, "__self__", None)
    for value in (*args, *kwargs.values()):
        check_int(value, f"{name or 'call'}() argument")
    if not isinstance(owner, str):
        return args
    if name == "join" and args:
        items = _materialized(args[0])
        check_estimate(size_of(items) + len(owner) * len(items), "str.join()")
        args = (items, *args[1:])
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], "str.replace()")
    elif name == "expandtabs":
        width = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(width, int):
            check_estimate(len(owner) * max(width, 1), "str.expandtabs()")
    elif name == "translate" and args:
        check_estimate(len(owner) * max(size_of(args[0]), 1), "str.translate()")
    return args


def _materialized(items: Any) -> Any:
    """``items`` as a list or tuple (an iterator read once, within the step budget)."""
    if isinstance(items, (list, tuple, str)):
        return items
    try:
        return tuple(items)
    except TypeError:
        return items


def _check_replace(s: object, old: object, new: object, what: str) -> None:
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        hits = s.count(old) if old else len(s) + 1
        check_estimate(len(s) + hits * len(new), what)


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox: widths bounded, the result counted field by field."""

    def __init__(self, env: BoundedEnvironment) -> None:
        super().__init__(env)
        self._total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in SPEC_NUMBER.findall(format_spec):
            check_int(int(number), "str.format() width")
        self._total += size_of(value) + sum(int(n) for n in SPEC_NUMBER.findall(format_spec))
        check_estimate(self._total, "str.format()")
        return super().format_field(value, format_spec)


# ------------------------------------------------------------------ filters and globals
def _value_position(func: Callable[..., Any]) -> int:
    """Index of the filtered value: filters passed the context or environment get it 2nd."""
    return 1 if hasattr(func, "jinja_pass_arg") else 0


_SLOW_FILTERS = frozenset({"striptags", "urlize", "wordwrap", "pprint", "xmlattr"})
"""Filters that scan their input in long C or Python loops: their input is held smaller."""
_SLOW_FILTER_INPUT = 1 << 16


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    at = _value_position(func)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        what = f"filter {name!r}"
        for value in (*args[at + 1 :], *kwargs.values()):
            check_int(value, what)
        value = args[at] if len(args) > at else None
        extra = args[at + 1 :]
        if name in _SLOW_FILTERS and size_of(value) > _SLOW_FILTER_INPUT:
            raise current_budget().fail(f"{what} of more than {_SLOW_FILTER_INPUT} characters")
        if name == "join" and len(args) > at:
            sep = extra[0] if extra else kwargs.get("d", "")
            value = _materialized(value)
            args = (*args[:at], value, *extra)
            if isinstance(value, (list, tuple)) and isinstance(sep, str):
                check_estimate(size_of(value) + len(sep) * len(value), what)
        elif name == "replace" and len(extra) >= 2:
            _check_replace(value, extra[0], extra[1], what)
        elif name == "indent" and isinstance(value, str):
            width = extra[0] if extra else kwargs.get("width", 4)
            pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            check_estimate(len(value) + (value.count("\n") + 2) * pad, what)
        elif name == "wordwrap" and isinstance(value, str):
            wrap = extra[2] if len(extra) > 2 else kwargs.get("wrapstring")
            check_estimate(len(value) * (1 + (len(wrap) if isinstance(wrap, str) else 1)), what)
        elif name == "format" and isinstance(value, str):
            check_percent(value, kwargs or extra, what)
        return check_value(func(*args, **kwargs), what)

    return update_wrapper(wrapper, func)


@pass_environment
def _sum(
    environment: Any, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
) -> Any:
    """The ``sum`` filter, adding one item at a time with checked ``+``."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    total = start
    for item in iterable:
        total = _binop("+", total, item)
    return total


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, sort_keys: bool = False
) -> str:
    """transformers' ``tojson`` (no HTML escaping, non-ASCII kept), its output counted."""
    if indent is not None:
        check_int(indent, "tojson indent")
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)
    limit = current_budget().limits.max_value_chars
    parts: list[str] = []
    size = 0
    for chunk in encoder.iterencode(value):  # the pure-Python encoder: bounded as it goes
        size += len(chunk)
        if size > limit:
            raise current_budget().fail(f"tojson makes more than {limit} characters")
        parts.append(chunk)
    return "".join(parts)


def _range(*args: int) -> range:
    result = range(*args)
    limit = current_budget().limits.max_range
    if len(result) > limit:
        raise current_budget().fail(f"range() of {len(result)} items (limit {limit})")
    return result


class _Namespace(Namespace):
    """``namespace()`` whose attributes are size checked when set."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, check_value(value, f"namespace attribute {name!r}"))


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """An immutable sandbox whose renders are bounded (see the module docs).

    Use it inside ``with bounded(limits):`` for compiling and for rendering; iterate
    :meth:`render_bounded` to count the top-level output.
    """

    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options, finalize=self._finalize)
        self.filters = {name: _bounded_filter(name, f) for name, f in self.filters.items()}
        self.filters["sum"] = _bounded_filter("sum", _sum)
        self.filters["tojson"] = _bounded_filter("tojson", _tojson)
        self.globals.pop("lipsum", None)
        self.globals["range"] = _range
        self.globals["namespace"] = _Namespace

    def add_filter(self, name: str, func: Callable[..., Any]) -> None:
        """Register a filter, bounded like the built-in ones."""
        self.filters[name] = _bounded_filter(name, func)

    # Hooks called by the generated code.
    def counting_buffer(self) -> list[str]:
        return _CountingBuffer()

    def concat_values(self, values: tuple[object, ...]) -> str:
        return _concat(values)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return _binop(operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        args = _check_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        return check_value(result, f"{getattr(__obj, '__name__', 'call')}()")

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None or not isinstance(getattr(value, "__self__", None), str):
            return wrapped
        fmt: str = value.__self__
        is_map = value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping")
                mapping: Mapping[str, Any] = args[0]
                return str(_BoundedFormatter(self).vformat(fmt, (), mapping))
            return str(_BoundedFormatter(self).vformat(fmt, args, kwargs))

        return update_wrapper(bounded_format, value)

    @staticmethod
    def _finalize(value: Any) -> Any:
        """Every ``{{ value }}``: its text must fit in what is left of the output."""
        budget = current_budget()
        room = budget.limits.max_output_chars - budget.emitted
        size = len(value) if type(value) is str else text_size(value, room)
        if size > room:
            raise budget.fail(f"emitted more than {budget.limits.max_output_chars} characters")
        return value

    def render_bounded(self, template: Any, variables: Mapping[str, Any]) -> Iterator[str]:
        """The template's top-level output, chunk by chunk, each chunk counted."""
        budget = current_budget()
        chunks = template.generate(**variables)
        try:
            for chunk in chunks:
                budget.emit(chunk)
                yield chunk
        finally:
            budget.closing = True  # unwinding the template's frames steps no more
            chunks.close()
