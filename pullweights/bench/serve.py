"""Loopback HTTP servers for one directory, each its own process: nginx (from Debian's
``nginx-light`` or ``nginx`` package) and, where it is missing, aiohttp.

Used by ``pullweights bench`` (its CPU and memory are not the measured client's), the HTTP
benchmarks and the tests (a second, independent range server next to aiohttp's).
:func:`nginx_binary` returns ``None`` when nginx is not installed, so callers can skip
with a clear reason.
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

__all__ = [
    "SKIP_REASON",
    "FileServer",
    "NginxServer",
    "free_port",
    "nginx_binary",
    "stop_process",
    "wait_for_port",
]

SKIP_REASON = "nginx is not installed (apt-get install nginx-light)"

_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
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


def nginx_binary() -> str | None:
    """Path of the nginx executable, or ``None`` when nginx is not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    for candidate in ("/usr/sbin/nginx", "/usr/local/sbin/nginx"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout: float = 10.0) -> bool:
    """Poll until something accepts connections on 127.0.0.1:port; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """Terminate a server process (kill it after 5 s) and reap it; None is a no-op."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


class NginxServer:
    """nginx serving the files under ``root`` at ``http://127.0.0.1:<port>/``.

    Use as a context manager; :attr:`url` is the base URL (ends with ``/``).

    Raises:
        RuntimeError: nginx is missing or did not come up (its error log is quoted).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def start(self) -> None:
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError(SKIP_REASON)
        self._tmp = tempfile.TemporaryDirectory(prefix="pullweights-nginx-")
        tmp = Path(self._tmp.name)
        log = ""
        for _ in range(3):  # the free port can be taken before nginx binds it
            self.port = free_port()
            conf = tmp / "nginx.conf"
            conf.write_text(_CONFIG.format(tmp=tmp, port=self.port, root=self.root))
            self._process = subprocess.Popen(
                [binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            if wait_for_port(self.port) and self._process.poll() is None:
                return
            self._stop_process()
            error_log = tmp / "error.log"
            log = error_log.read_text() if error_log.exists() else ""
        self.stop()
        raise RuntimeError(f"nginx did not start: {log.strip()[-2000:]}")

    def _stop_process(self) -> str:
        process, self._process = self._process, None
        if process is None:
            return ""
        stop_process(process)
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.stderr:
            process.stderr.close()
        return stderr

    def stop(self) -> None:
        self._stop_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> NginxServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


_AIOHTTP = """
import sys
from aiohttp import web
app = web.Application()
app.router.add_static("/", sys.argv[1])
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None)
"""


class FileServer:
    """Serves ``root`` on loopback with nginx, or aiohttp where nginx is missing (or
    ``prefer_nginx`` is False); :attr:`kind` says which. Use as a context manager.

    Raises:
        RuntimeError: the server did not come up.
    """

    def __init__(self, root: str | os.PathLike[str], *, prefer_nginx: bool = True) -> None:
        self.root = Path(root).resolve()
        self.kind = "nginx" if prefer_nginx and nginx_binary() is not None else "aiohttp"
        self.port = 0
        self._nginx: NginxServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def start(self) -> FileServer:
        if self.kind == "nginx":
            self._nginx = NginxServer(self.root)
            self._nginx.start()
            self.port = self._nginx.port
            return self
        for _ in range(3):  # a free port can be taken before the server binds it
            self.port = free_port()
            argv = [sys.executable, "-c", _AIOHTTP, str(self.root), str(self.port)]
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if wait_for_port(self.port, 20.0) and self._proc.poll() is None:
                return self
            self._stop_process()
        raise RuntimeError("the aiohttp file server did not start")

    def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc)

    def stop(self) -> None:
        self._stop_process()
        if self._nginx is not None:
            self._nginx.stop()
            self._nginx = None

    def __enter__(self) -> FileServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
