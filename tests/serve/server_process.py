"""``pullweights serve`` in a child process on 127.0.0.1 (a free port), for client tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

__all__ = ["ServerProcess"]


class ServerProcess:
    """Starts ``python -m pullweights serve ARGS --port 0`` and waits until it listens.

    Attributes:
        url: ``http://127.0.0.1:PORT``, the server's base URL.
        log: the lines the server wrote to stderr so far.
    """

    def __init__(self, *args: str, timeout: float = 120.0, env: dict[str, str] | None = None):
        self.log: list[str] = []
        self.url = ""
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pullweights", "serve", *args, "--port", "0", "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(root), **(env or {})},
        )
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the server did not start:\n" + "".join(self.log))

    def _read(self, ready: threading.Event) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if line.startswith("listening on "):
                self.url = line.split()[2]
                ready.set()

    def close(self) -> int:
        """Stop the server (SIGTERM) and return its exit status."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(30)
        self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
