"""``python -m http.server`` on 127.0.0.1: the server people try first; it ignores Range.

It answers every GET with 200 and the whole file (with Content-Length and Last-Modified,
no ETag), one request per connection (HTTP/1.0)::

    with SimpleHttpServer(root) as server:
        url = server.url + "model.gguf"
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

from pullweights.bench.serve import free_port, stop_process, wait_for_port

__all__ = ["SimpleHttpServer"]


class SimpleHttpServer:
    """``python -m http.server`` serving ``root`` until the ``with`` block ends."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        for _ in range(3):  # the free port can be taken before the server binds it
            self.port = free_port()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "http.server", str(self.port), "--bind", "127.0.0.1"],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if wait_for_port(self.port) and self._process.poll() is None:
                return
            self.stop()
        raise RuntimeError("python -m http.server did not start")

    def stop(self) -> None:
        process, self._process = self._process, None
        stop_process(process)

    def __enter__(self) -> SimpleHttpServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
