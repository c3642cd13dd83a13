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

Every violation raises :class:`LimitExceeded` (a ``BaseException``, so no ``except
Exception`` in Jinja or a filter can swallow it); :mod:`loaders.chat` turns it into a
``FormatError``. C code that runs without Python steps (a sort, a regular expression)
only ever sees inputs within the size limits.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import update_wrapper
from types import FrameType
from typing import Any

from jinja2 import Undefined, nodes, pass_environment
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import make_attrgetter
from jinja2.runtime import str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from jinja2.utils import Namespace

__all__ = ["BoundedEnvironment", "LimitExceeded", "RenderLimits", "bounded"]


@dataclass(frozen=True)
class RenderLimits:
    """What one render (or one compile) of a template may cost."""

    #: Characters of template source.
    max_template_chars: int = 1 << 20
    #: Characters emitted in all, counting the output and every captured block.
    max_output_chars: int = 1 << 22
    #: Characters of any one value (string, list, dict) as text.
    max_value_chars: int = 1 << 22
    #: Wall-clock seconds (a real template renders 200 messages in ~20 ms).
    max_seconds: float = 1.0
    #: Lines of template code plus calls of other Python code (~70 per message of a
    #: real template).
    max_steps: int = 1_000_000
    #: Nested calls of template code (macros, ``caller()``, recursive loops).
    max_depth: int = 64
    #: Bits of any integer the template computes.
    max_int_bits: int = 4096
    #: Items of a ``range()``.
    max_range: int = 100_000


class LimitExceeded(BaseException):
    """A render went past one of its :class:`RenderLimits` (message says which)."""


_TEMPLATE_FILE = "<template>"  # the file name Jinja compiles ``from_string`` code under
_CHECK_EVERY = 256  # steps between two looks at the clock


class _Budget:
    """The running cost of one render; installed as the thread's trace function."""

    def __init__(self, limits: RenderLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.max_seconds
        self.steps = 0
        self.depth = 0
        self.emitted = 0
        self.walked = 0
        #: Sizes of large containers already walked: ``id -> (container, size)``.
        self.sizes: dict[int, tuple[object, int]] = {}
        self.closing = False
        self.failure: str | None = None
        self._next_check = _CHECK_EVERY

    def fail(self, message: str) -> LimitExceeded:
        """Record the first failure (every later size or time check in a hook raises it
        again) and return it."""
        if self.failure is None:
            self.failure = message
        return LimitExceeded(self.failure)

    def check_time(self) -> None:
        """Raise if the render has failed or is past its deadline (not while closing)."""
        if self.closing:
            return
        if self.failure is not None:
            raise LimitExceeded(self.failure)
        if time.monotonic() > self.deadline:
            raise self.fail(f"took longer than {self.limits.max_seconds:g} s")

    def emit(self, text: str) -> None:
        self.emitted += len(text)
        if self.emitted > self.limits.max_output_chars:
            raise self.fail(f"emitted more than {self.limits.max_output_chars} characters")

    # -------------------------------------------------------------- tracing
    def trace(self, frame: FrameType, event: str, arg: object) -> Callable[..., Any] | None:
        """The thread's trace function: lines of template code are steps; every call of
        other Python code (Jinja's runtime, filters, the libraries they use) is one."""
        self.steps += 1
        if self.steps >= self._next_check:
            self._check()
        filename = frame.f_code.co_filename
        if filename == _TEMPLATE_FILE:
            self.depth += 1
            if self.depth > self.limits.max_depth and not self.closing and not self.failure:
                raise self.fail(f"nested template calls deeper than {self.limits.max_depth}")
            return self._template_line
        return None

    def _template_line(
        self, frame: FrameType, event: str, arg: object
    ) -> Callable[..., Any] | None:
        if event == "line":
            self.steps += 1
            if self.steps >= self._next_check:
                self._check()
        elif event == "return":
            self.depth -= 1
        return self._template_line

    def _check(self) -> None:
        self._next_check = self.steps + _CHECK_EVERY
        if self.closing or self.failure is not None:
            return  # frames unwinding after a failure (finally blocks, closed generators)
        if self.steps > self.limits.max_steps:
            raise self.fail(f"ran more than {self.limits.max_steps} steps")
        if time.monotonic() > self.deadline:
            raise self.fail(f"took longer than {self.limits.max_seconds:g} s")


_local = threading.local()


def _budget() -> _Budget:
    budget: _Budget | None = getattr(_local, "budget", None)
    if budget is None:  # a hook run outside bounded(): hold it to the default limits
        budget = _Budget(RenderLimits())
    return budget


@contextlib.contextmanager
def bounded(limits: RenderLimits) -> Iterator[_Budget]:
    """Run the body (a compile or a render) under ``limits`` on this thread."""
    budget = _Budget(limits)
    previous_budget = getattr(_local, "budget", None)
    previous_trace = sys.gettrace()
    _local.budget = budget
    sys.settrace(budget.trace)
    try:
        yield budget
    finally:
        sys.settrace(previous_trace)
        _local.budget = previous_budget


# ------------------------------------------------------------------ sizes
_SCALARS = (bool, type(None))
_MEMO_MIN = 64  # containers longer than this have their size remembered during a render
_CHECK_WALKED = 4096  # items walked, over all walks, between two looks at the clock
_CONTAINERS: tuple[type[Collection[Any]], ...] = (
    dict,
    list,
    tuple,
    set,
    frozenset,
    type({}.keys()),
    type({}.values()),
    type({}.items()),
)


def text_size(value: object, limit: int) -> int:
    """An upper estimate of ``len(str(value))``; stops counting once past ``limit``.

    Strings inside containers count their length plus quotes (a ``repr`` escaping
    unprintable characters can make them up to 10 times longer). Shared references count
    every time they appear, as they would when printed. Inside a
    render, the sizes of large containers are remembered (the sandbox cannot change a
    container) and the clock is checked as the walk goes.
    """
    budget: _Budget | None = getattr(_local, "budget", None)
    memo = budget.sizes if budget is not None else {}
    total = 0
    stack = [value]
    visits = 0
    while stack:
        item = stack.pop()
        visits += 1
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, _SCALARS):
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Undefined):
            pass
        elif isinstance(item, _CONTAINERS):
            known = memo.get(id(item))
            if known is not None and known[0] is item:
                total += known[1]
            elif len(item) > _MEMO_MIN and item is not value:
                size = text_size(item, limit - total)
                memo[id(item)] = (item, size)
                total += size
            elif isinstance(item, dict):
                total += 16 + 4 * len(item)
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                total += 16 + 2 * len(item)
                stack.extend(item)
        elif isinstance(item, Namespace):
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:  # a macro, loop, function, range...: its repr is short
            total += 64
        if total > limit:
            break
        if visits % 4096 == 0 and budget is not None:
            budget.check_time()
    if budget is not None:
        budget.walked += visits
        if budget.walked > _CHECK_WALKED:
            budget.walked = 0
            budget.check_time()
    return total


def _check_value(value: object, what: str) -> object:
    limit = _budget().limits.max_value_chars
    if text_size(value, limit) > limit:
        raise _budget().fail(f"{what} makes a value longer than {limit} characters")
    return value


def _check_estimate(size: int, what: str) -> None:
    limit = _budget().limits.max_value_chars
    if size > limit:
        raise _budget().fail(f"{what} would make a value of {size} characters (limit {limit})")


def _size(value: object) -> int:
    """Length of a string, else :func:`text_size` (counted up to just past the limit)."""
    if isinstance(value, str):
        return len(value)
    return text_size(value, _budget().limits.max_value_chars + 1)


def _check_int(value: object, what: str) -> None:
    """An int used as a count or width must not exceed the value limit."""
    if isinstance(value, int) and not isinstance(value, bool):
        limit = _budget().limits.max_value_chars
        if abs(value) > limit:
            raise _budget().fail(f"{what}: {value} is larger than the limit {limit}")


_SPEC_NUMBER = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _check_percent(fmt: str, args: object, what: str) -> None:
    """``fmt % args``: widths and precisions bounded, result size estimated."""
    specs = _PERCENT_SPEC.findall(fmt)
    widths = 0
    for width, precision in specs:
        for number in (width, precision):
            if number == "*":
                raise _budget().fail(f"{what}: '*' widths are not allowed")
            if number:
                _check_int(int(number), f"{what} width")
                widths += int(number)
    largest = _size(args)
    _check_estimate(len(fmt) + widths + len(specs) * largest, what)


# ------------------------------------------------------------------ operators
def _binop(op: str, left: Any, right: Any) -> Any:
    """``left op right`` with sizes checked before the result is made."""
    if op == "+" and type(left) is str and type(right) is str:  # the usual case, quickly
        if len(left) + len(right) > _budget().limits.max_value_chars:
            _check_estimate(len(left) + len(right), "'+'")
        return left + right
    limits = _budget().limits
    sequences = (str, list, tuple)
    if op == "*":
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, sequences) and isinstance(count, int):
                _check_estimate(_size(seq) * max(count, 0), "'*'")
        if isinstance(left, int) and isinstance(right, int):
            bits = left.bit_length() + right.bit_length()
            if bits > limits.max_int_bits:
                raise _budget().fail(f"'*' makes an integer of about {bits} bits")
        return left * right
    if op == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0:
            bits = max(left.bit_length() - 1, 0) * right
            if abs(left) > 1 and (right > limits.max_int_bits or bits > limits.max_int_bits):
                raise _budget().fail(f"'**' makes an integer of about {bits} bits")
        return left**right
    if op == "+":
        if isinstance(left, sequences) and isinstance(right, sequences):
            _check_estimate(_size(left) + _size(right), "'+'")
        return left + right
    if op == "%":
        if isinstance(left, str):
            _check_percent(left, right, "'%' formatting")
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
    _check_estimate(sum(_size(v) for v in values), "'~'")
    return str_join(values)


class _CountingBuffer(list[str]):
    """The buffer of a macro or ``{% set %}`` block: text written to it is counted."""

    def append(self, text: str) -> None:
        _budget().emit(text)
        super().append(text)

    def extend(self, texts: Iterable[str]) -> None:
        texts = tuple(texts)
        for text in texts:
            _budget().emit(text)
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
        _check_int(value, f"{name or 'call'}() argument")
    if not isinstance(owner, str):
        return args
    if name == "join" and args:
        items = _materialized(args[0])
        _check_estimate(_size(items) + len(owner) * len(items), "str.join()")
        args = (items, *args[1:])
    elif name == "replace" and len(args) >= 2:
        _check_replace(owner, args[0], args[1], "str.replace()")
    elif name == "expandtabs":
        width = args[0] if args else kwargs.get("tabsize", 8)
        if isinstance(width, int):
            _check_estimate(len(owner) * max(width, 1), "str.expandtabs()")
    elif name == "translate" and args:
        _check_estimate(len(owner) * max(_size(args[0]), 1), "str.translate()")
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
        _check_estimate(len(s) + hits * len(new), what)


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` in the sandbox: widths bounded, the result counted field by field."""

    def __init__(self, env: BoundedEnvironment) -> None:
        super().__init__(env)
        self._total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        for number in _SPEC_NUMBER.findall(format_spec):
            _check_int(int(number), "str.format() width")
        self._total += _size(value) + sum(int(n) for n in _SPEC_NUMBER.findall(format_spec))
        _check_estimate(self._total, "str.format()")
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
            _check_int(value, what)
        value = args[at] if len(args) > at else None
        extra = args[at + 1 :]
        if name in _SLOW_FILTERS and _size(value) > _SLOW_FILTER_INPUT:
            raise _budget().fail(f"{what} of more than {_SLOW_FILTER_INPUT} characters")
        if name == "join" and len(args) > at:
            sep = extra[0] if extra else kwargs.get("d", "")
            value = _materialized(value)
            args = (*args[:at], value, *extra)
            if isinstance(value, (list, tuple)) and isinstance(sep, str):
                _check_estimate(_size(value) + len(sep) * len(value), what)
        elif name == "replace" and len(extra) >= 2:
            _check_replace(value, extra[0], extra[1], what)
        elif name == "indent" and isinstance(value, str):
            width = extra[0] if extra else kwargs.get("width", 4)
            pad = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
            _check_estimate(len(value) + (value.count("\n") + 2) * pad, what)
        elif name == "wordwrap" and isinstance(value, str):
            wrap = extra[2] if len(extra) > 2 else kwargs.get("wrapstring")
            _check_estimate(len(value) * (1 + (len(wrap) if isinstance(wrap, str) else 1)), what)
        elif name == "format" and isinstance(value, str):
            _check_percent(value, kwargs or extra, what)
        return _check_value(func(*args, **kwargs), what)

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
        _check_int(indent, "tojson indent")
    encoder = json.JSONEncoder(ensure_ascii=ensure_ascii, indent=indent, sort_keys=sort_keys)
    limit = _budget().limits.max_value_chars
    parts: list[str] = []
    size = 0
    for chunk in encoder.iterencode(value):  # the pure-Python encoder: bounded as it goes
        size += len(chunk)
        if size > limit:
            raise _budget().fail(f"tojson makes more than {limit} characters")
        parts.append(chunk)
    return "".join(parts)


def _range(*args: int) -> range:
    result = range(*args)
    limit = _budget().limits.max_range
    if len(result) > limit:
        raise _budget().fail(f"range() of {len(result)} items (limit {limit})")
    return result


class _Namespace(Namespace):
    """``namespace()`` whose attributes are size checked when set."""

    def __setitem__(self, name: str, value: Any) -> None:
        super().__setitem__(name, _check_value(value, f"namespace attribute {name!r}"))


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
        return _check_value(result, f"{getattr(__obj, '__name__', 'call')}()")

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
        budget = _budget()
        room = budget.limits.max_output_chars - budget.emitted
        size = len(value) if type(value) is str else text_size(value, room)
        if size > room:
            raise budget.fail(f"emitted more than {budget.limits.max_output_chars} characters")
        return value

    def render_bounded(self, template: Any, variables: Mapping[str, Any]) -> Iterator[str]:
        """The template's top-level output, chunk by chunk, each chunk counted."""
        budget = _budget()
        chunks = template.generate(**variables)
        try:
            for chunk in chunks:
                budget.emit(chunk)
                yield chunk
        finally:
            budget.closing = True  # unwinding the template's frames steps no more
            chunks.close()
