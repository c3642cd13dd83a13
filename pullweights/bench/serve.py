"""A loopback HTTP server for one directory: nginx when it is installed, else aiohttp.

Either runs as its own process (its CPU and memory are not the profiled client's) and
serves byte ranges of the files under ``root`` at ``http://127.0.0.1:PORT/``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["FileServer"]

_NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    default_type application/octet-stream;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""

_AIOHTTP = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


class FileServer:
    """Serves ``root`` on loopback; :attr:`kind` says which server (``"nginx"``,
    ``"aiohttp"``). Use as a context manager.

    Raises:
        RuntimeError: the server did not come up.
    """

    def __init__(self, root: str | os.PathLike[str], *, prefer_nginx: bool = True) -> None:
        self.root = Path(root).resolve()
        self.nginx = shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None
        )
        if not prefer_nginx:
            self.nginx = None
        self.kind = "nginx" if self.nginx else "aiohttp"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> FileServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="pullweights-serve-")
        tmp = Path(self._tmp.name)
        for _ in range(3):  # a free port can be taken before the server binds it
            self.port = _free_port()
            if self.nginx:
                conf = tmp / "nginx.conf"
                conf.write_text(_NGINX_CONFIG.format(tmp=tmp, port=self.port, root=self.root))
                argv = [self.nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
            else:
                argv = [sys.executable, "-c", _AIOHTTP, str(self.root), str(self.port)]
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if _wait_for_port(self.port, self._proc):
                return self
            self._stop_process()
        self.stop()
        raise RuntimeError(f"the {self.kind} file server did not start")

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def stop(self) -> None:
        self._stop_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
