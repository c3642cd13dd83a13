"""``pullweights chat [MODEL ...]``: a multi-turn chat with a GGUF LLM in the terminal.

The conversation is rendered with the model's chat template on every turn and answered
with streaming output; the history stays in the KV cache, so a turn prefills only the new
message (:class:`loaders.conversation.Conversation`). Input: one message per line; a line
ending in ``\\`` continues on the next, and a line holding only ``\"\"\"`` opens (and
another closes) a multi-line block. Commands: ``/reset`` forgets the conversation,
``/system TEXT`` replaces the system message (and resets), ``/quit`` or Ctrl-D ends the
session, Ctrl-C stops the current answer (or clears the line being typed).

``pullweights chat MODEL -`` (or ``--file PATH``) sends stdin's (the file's) whole text as
one message, prints the answer and exits. ``pullweights run MODEL`` without a prompt
starts this chat too.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pullweights.cli.model_args import (
    ModelSpec,
    add_load_arguments,
    add_sampling_arguments,
    is_model_spec,
    load_llm,
    model_spec,
    sampling_from_args,
)
from pullweights.errors import ComputeError, FormatError, SourceError

if TYPE_CHECKING:
    from loaders import GenerationStats
    from loaders.conversation import Conversation

__all__ = ["add_parser", "chat", "is_model_spec", "model_spec", "run"]

HELP = """commands:
  /reset          forget the conversation (keeps the system message)
  /system TEXT    replace the system message and reset ("/system" alone: none)
  /quit           end the session (also /exit, /bye, Ctrl-D)
  /help           this text
input: a line ending in \\ continues on the next; a line with only \"\"\" opens and closes
a multi-line block. Ctrl-C stops the answer being written."""

BLOCK = '"""'


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``chat`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "chat",
        help="chat with a GGUF language model in the terminal (multi-turn, streaming)",
        description=(
            "An interactive multi-turn chat with the model's chat template. MODEL is a path, "
            "part paths in order, a URL or an installed model name (default gemma3-270m); a "
            "last argument '-' sends stdin as one message and prints the answer."
        ),
    )
    parser.add_argument(
        "inputs", nargs="*", metavar="MODEL", help="the model; a last '-' reads a message"
    )
    parser.add_argument("--system", default=None, help="system message")
    parser.add_argument("--file", default=None, help="send this file's text as one message")
    parser.add_argument(
        "--stats", action="store_true", help="after each answer, a line of figures on stderr"
    )
    add_sampling_arguments(parser, max_tokens=1024)
    add_load_arguments(parser)


async def run(args: argparse.Namespace) -> int:
    """Chat interactively, or answer the one message from stdin / ``--file``.

    Raises:
        PullWeightsError: the model cannot be loaded, the file cannot be read.
    """
    inputs = list(args.inputs)
    message: str | None = None
    if inputs and inputs[-1] == "-":
        inputs.pop()
        message = sys.stdin.read()
    if args.file is not None:
        try:
            message = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SourceError(f"cannot read --file {args.file}: {exc}") from exc
    return await chat(model_spec(inputs), args, message=message)


async def chat(model: ModelSpec, args: argparse.Namespace, *, message: str | None = None) -> int:
    """Load ``model`` and chat (``args`` as parsed by ``chat`` or ``run``).

    With ``message``, answer it once and return; else read messages from stdin until
    end of input or ``/quit``.
    """
    from loaders.conversation import Conversation

    params = sampling_from_args(args)
    llm = await load_llm(model, args)
    conversation = Conversation(llm, system=getattr(args, "system", None), params=params)
    if message is not None:
        if not message.strip():
            raise ComputeError("chat: the message is empty")
        return 0 if await _answer(conversation, message.strip(), args) else 1
    tty = sys.stdin.isatty()
    if tty:
        import readline  # noqa: F401  (line editing and history for input())

        name = model if isinstance(model, str) else model[0]
        print(
            f"chatting with {name} ({llm.config.arch}, context {llm.context}); /help for "
            "commands, Ctrl-C stops an answer, Ctrl-D quits",
            file=sys.stderr,
        )
    with _interrupts_raise():
        await _loop(conversation, args, tty)
    return 0


async def _loop(conversation: Conversation, args: argparse.Namespace, tty: bool) -> None:
    prompt = ">>> " if tty else ""
    while True:
        try:
            text = _read_message(prompt, "... " if tty else "")
        except KeyboardInterrupt:
            print(file=sys.stderr)
            continue
        if text is None:
            if tty:
                print(file=sys.stderr)
            return
        command, _, rest = text.strip().partition(" ")
        if command in ("/quit", "/exit", "/bye"):
            return
        if command == "/help":
            print(HELP, file=sys.stderr)
        elif command in ("/reset", "/clear"):
            conversation.reset()
            print("(conversation reset)", file=sys.stderr)
        elif command == "/system":
            conversation.reset(rest.strip())
            print("(system message set; conversation reset)", file=sys.stderr)
        elif command.startswith("/"):
            print(f"unknown command {command}; /help lists them", file=sys.stderr)
        elif text.strip():
            await _answer(conversation, text, args)


def _read_message(prompt: str, more: str) -> str | None:
    """One message from stdin (``None`` at end of input): continued lines, or a block."""
    try:
        line = input(prompt)
    except EOFError:
        return None
    if line.strip() == BLOCK:
        lines: list[str] = []
        while True:
            try:
                line = input(more)
            except EOFError:
                break
            if line.strip() == BLOCK:
                break
            lines.append(line)
        return "\n".join(lines)
    parts = [line]
    while parts[-1].endswith("\\"):
        parts[-1] = parts[-1][:-1]
        try:
            parts.append(input(more))
        except EOFError:
            break
    return "\n".join(parts)


async def _answer(conversation: Conversation, text: str, args: argparse.Namespace) -> bool:
    """Stream the answer to ``text``; Ctrl-C stops it. False if the turn failed."""
    from loaders import GenerationStats

    stats = GenerationStats()
    shown = _visible if sys.stdout.isatty() else str

    async def write() -> None:
        async for piece in conversation.send(text, stats=stats):
            sys.stdout.write(shown(piece))
            sys.stdout.flush()

    task = asyncio.ensure_future(write())
    loop = asyncio.get_running_loop()
    handled = _on_interrupt(loop, task.cancel)
    try:
        await asyncio.wait({task})
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGINT)  # back to KeyboardInterrupt
    sys.stdout.write("\n")
    sys.stdout.flush()
    if task.cancelled():
        print("(stopped)", file=sys.stderr)
    elif (exc := task.exception()) is not None:
        if not isinstance(exc, (ComputeError, FormatError)):
            raise exc
        print(f"pullweights: error: {exc} (/reset starts over)", file=sys.stderr)
        return False
    if getattr(args, "stats", False):
        print(_figures(stats), file=sys.stderr)
    return True


_CONTROLS = {c: f"^{chr(c + 64)}" for c in range(32) if chr(c) not in "\n\t"} | {127: "^?"}


def _visible(text: str) -> str:
    """``text`` with terminal control characters in caret notation (``ESC`` -> ``^[``): a
    model's output must not drive the terminal."""
    return text.translate(_CONTROLS)


def _figures(stats: GenerationStats) -> str:
    return (
        f"[{stats.generated_tokens} tokens, {stats.decode_tokens_per_second:.1f} tok/s; prompt "
        f"{stats.prompt_tokens} tokens, {stats.cached_tokens} cached; first token "
        f"{stats.time_to_first_token * 1000:.0f} ms]"
    )


def _on_interrupt(loop: asyncio.AbstractEventLoop, callback: Callable[[], object]) -> bool:
    """Make SIGINT call ``callback`` (on the loop) instead of raising; False if impossible
    (not the main thread, no signal support)."""
    try:
        loop.add_signal_handler(signal.SIGINT, callback)
    except (ValueError, RuntimeError, NotImplementedError):
        return False
    return True


@contextmanager
def _interrupts_raise() -> Iterator[None]:
    """While reading input, Ctrl-C raises KeyboardInterrupt (asyncio.run's handler would
    cancel the whole session instead); the previous handler comes back at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
