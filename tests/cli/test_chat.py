"""``pullweights chat`` in a real terminal (tmux), and from stdin and a file.

The tmux sessions run on a private tmux socket and type as a user would: messages, a
multi-line block, ``/reset``, Ctrl-C while an answer streams, Ctrl-C on the input line,
Ctrl-D. ``--stats`` prints a line of figures after each answer, which shows how many
prompt tokens came from the KV cache (prefix reuse of the history).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reference import write_tiny_model

ROOT = Path(__file__).resolve().parents[2]
STATS = re.compile(r"\[(\d+) tokens, [\d.]+ tok/s; prompt (\d+) tokens, (\d+) cached")

needs_tmux = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A long training context, so an answer can run for thousands of tokens: greedy
    # decoding of this model after "hello" reaches no end-of-turn token within 3000.
    root = tmp_path_factory.mktemp("chat")
    return write_tiny_model(root / "tiny-qwen2.gguf", "qwen2", context_length=8192)


class Terminal:
    """A tmux session on its own socket running one command."""

    def __init__(self, command: list[str], tmp_path: Path) -> None:
        self.socket = f"pw-chat-{os.getpid()}-{time.monotonic_ns()}"
        script = tmp_path / "session.sh"
        quoted = " ".join(_quote(c) for c in command)
        script.write_text(f"cd {_quote(str(ROOT))}\n{quoted}\necho EXIT=$?\nsleep 60\n")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._tmux("new-session", "-d", "-x", "160", "-y", "50", "bash", str(script), env=env)

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            env=env,
        )
        return result.stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-J", "-S", "-2000")

    def type(self, text: str) -> None:
        self._tmux("send-keys", "-l", text)
        self._tmux("send-keys", "Enter")

    def key(self, name: str) -> None:
        self._tmux("send-keys", name)

    def wait_for(self, pattern: str, count: int = 1, limit: float = 120.0) -> str:
        """The screen once ``pattern`` (a regex) appears ``count`` times (a bound on
        waiting, not a timing assertion)."""
        deadline = time.monotonic() + limit
        while True:
            screen = self.screen()
            if len(re.findall(pattern, screen)) >= count:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"gave up waiting for {pattern!r} x{count}:\n{screen}")
            time.sleep(0.05)

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, timeout=30)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for t in opened:
        t.close()


def chat_command(gguf: Path, *extra: str, stdin: bool = False) -> list[str]:
    positional = [str(gguf), "-"] if stdin else [str(gguf)]
    return [sys.executable, "-m", "pullweights", "chat", *positional, "--no-cache", *extra]


def stats(screen: str) -> list[tuple[int, int, int]]:
    return [(int(a), int(b), int(c)) for a, b, c in STATS.findall(screen)]


@needs_tmux
def test_turns_history_reuse_multiline_reset_and_quit(
    gguf: Path, tmp_path: Path, terminal: list[Terminal]
) -> None:
    term = Terminal(chat_command(gguf, "--max-tokens", "6", "--stats"), tmp_path)
    terminal.append(term)
    term.wait_for(r"Ctrl-D quits")
    term.wait_for(r">>> $|>>> \n")
    term.type("What is a cat?")
    first = stats(term.wait_for(STATS.pattern, 1))[0]
    assert first[0] == 6 and first[2] == 0  # 6 tokens, nothing cached before
    term.type("And a dog?")
    second = stats(term.wait_for(STATS.pattern, 2))[1]
    # The history (first question and answer) came from the KV cache.
    assert second[1] > first[1] and second[2] >= first[1]
    term.type('"""')
    term.type("line one")
    term.type("line two")
    term.type('"""')
    third = stats(term.wait_for(STATS.pattern, 3))[2]
    assert len(stats(term.screen())) == 3  # the block was one message
    assert third[1] > second[1]
    term.type("/reset")
    term.wait_for(r"\(conversation reset\)")
    term.type("What is a cat?")
    fourth = stats(term.wait_for(STATS.pattern, 4))[3]
    assert fourth[1] == first[1]  # the history is gone: the first prompt again
    # Ctrl-C on the input line clears it and keeps the session.
    term._tmux("send-keys", "-l", "half a line")
    prompts = term.wait_for(r">>> half a line").count(">>> ")
    term.key("C-c")
    term.wait_for(r">>> ", prompts + 1)  # a fresh prompt (readline sees Ctrl-C while idle)
    term.type("/help")
    term.wait_for(r"/reset +forget the conversation")
    assert len(stats(term.screen())) == 4  # the cleared line was not sent
    term.key("C-d")
    screen = term.wait_for(r"EXIT=\d+")
    assert "EXIT=0" in screen and "Traceback" not in screen


@needs_tmux
def test_ctrl_c_stops_the_answer_and_keeps_the_session(
    gguf: Path, tmp_path: Path, terminal: list[Terminal]
) -> None:
    command = chat_command(gguf, "--context", "8192", "--max-tokens", "100000", "--stats")
    term = Terminal(command, tmp_path)
    terminal.append(term)
    term.wait_for(r"Ctrl-D quits")
    term.type("hello")
    term.wait_for(r"hello\n.{20,}")  # the answer is streaming
    term.key("C-c")
    screen = term.wait_for(r"\(stopped\)")
    stopped = stats(term.wait_for(STATS.pattern, 1))[0]
    assert 0 < stopped[0] < 8000
    term.type("again")
    term.wait_for(r"again\n.{20,}")
    term.key("C-c")
    term.wait_for(STATS.pattern, 2)
    after = stats(term.screen())[1]
    assert after[2] >= stopped[1]  # the stopped answer stayed in the history and the cache
    term.type("/quit")
    screen = term.wait_for(r"EXIT=\d+")
    assert "EXIT=0" in screen and "Traceback" not in screen


def _run(args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_message_from_stdin_and_file(gguf: Path, tmp_path: Path) -> None:
    one = _run(chat_command(gguf, "--max-tokens", "5", stdin=True), stdin="Hello there\n")
    assert one.returncode == 0, one.stderr
    message = tmp_path / "message.txt"
    message.write_text("Hello there\n")
    two = _run(chat_command(gguf, "--file", str(message), "--max-tokens", "5"))
    assert two.returncode == 0, two.stderr
    assert one.stdout == two.stdout and one.stdout.strip()
    # Piped lines are turns of one conversation; the answer to the first is the same.
    turns = _run(chat_command(gguf, "--max-tokens", "5", "--stats"), stdin="Hello there\nMore\n")
    assert turns.returncode == 0, turns.stderr
    assert turns.stdout.startswith(one.stdout)
    assert len(stats(turns.stderr)) == 2 and stats(turns.stderr)[1][2] > 0
    missing = _run(chat_command(gguf, "--file", str(tmp_path / "none.txt")))
    assert missing.returncode == 1 and missing.stderr.startswith("pullweights: error:")
    assert "Traceback" not in missing.stderr


def test_run_without_a_prompt_chats(gguf: Path) -> None:
    args = [sys.executable, "-m", "pullweights", "run", str(gguf), "--no-cache"]
    chat = _run([*args, "--max-tokens", "5"], stdin="Hello there\n")
    direct = _run(chat_command(gguf, "--max-tokens", "5"), stdin="Hello there\n")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout == direct.stdout and chat.stdout.strip()
