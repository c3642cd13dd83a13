"""What one chat-template render may cost, and measuring it (see :mod:`loaders.chat_sandbox`).

:class:`RenderLimits` are the limits; :func:`bounded` runs a compile or a render under
them with a :class:`Budget` that counts steps (``sys.settrace``), depth and emitted text
on its thread; :func:`text_size` and the ``check_*`` helpers size a value before an
operation makes it, raising :class:`LimitExceeded` past a limit.
"""

from __future__ import annotations

import contextlib
import re
import sys
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any

from jinja2 import Undefined
from jinja2.utils import Namespace

__all__ = [
    "SPEC_NUMBER",
    "TEMPLATE_FILE",
    "Budget",
    "LimitExceeded",
    "RenderLimits",
    "bounded",
    "check_estimate",
    "check_int",
    "check_percent",
    "check_value",
    "current_budget",
    "size_of",
    "text_size",
]


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


TEMPLATE_FILE = "<template>"  # the file name Jinja compiles ``from_string`` code under
_CHECK_EVERY = 256  # steps between two looks at the clock


class Budget:
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
        if filename == TEMPLATE_FILE:
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


def current_budget() -> Budget:
    budget: Budget | None = getattr(_local, "budget", None)
    if budget is None:  # a hook run outside bounded(): hold it to the default limits
        budget = Budget(RenderLimits())
    return budget


@contextlib.contextmanager
def bounded(limits: RenderLimits) -> Iterator[Budget]:
    """Run the body (a compile or a render) under ``limits`` on this thread."""
    budget = Budget(limits)
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
    budget: Budget | None = getattr(_local, "budget", None)
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


def check_value(value: object, what: str) -> object:
    limit = current_budget().limits.max_value_chars
    if text_size(value, limit) > limit:
        raise current_budget().fail(f"{what} makes a value longer than {limit} characters")
    return value


def check_estimate(size: int, what: str) -> None:
    limit = current_budget().limits.max_value_chars
    if size > limit:
        raise current_budget().fail(
            f"{what} would make a value of {size} characters (limit {limit})"
        )


def size_of(value: object) -> int:
    """Length of a string, else :func:`text_size` (counted up to just past the limit)."""
    if isinstance(value, str):
        return len(value)
    return text_size(value, current_budget().limits.max_value_chars + 1)


def check_int(value: object, what: str) -> None:
    """An int used as a count or width must not exceed the value limit."""
    if isinstance(value, int) and not isinstance(value, bool):
        limit = current_budget().limits.max_value_chars
        if abs(value) > limit:
            raise current_budget().fail(f"{what}: {value} is larger than the limit {limit}")


SPEC_NUMBER = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def check_percent(fmt: str, args: object, what: str) -> None:
    """``fmt % args``: widths and precisions bounded, result size estimated."""
    specs = _PERCENT_SPEC.findall(fmt)
    widths = 0
    for width, precision in specs:
        for number in (width, precision):
            if number == "*":
                raise current_budget().fail(f"{what}: '*' widths are not allowed")
            if number:
                check_int(int(number), f"{what} width")
                widths += int(number)
    largest = size_of(args)
    check_estimate(len(fmt) + widths + len(specs) * largest, what)
