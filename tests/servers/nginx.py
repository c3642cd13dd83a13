"""nginx from the system package, started on 127.0.0.1 with a temporary config and root.

Used by tests (a second, independent range server next to aiohttp's) and by
``benchmarks/bench_http.py``. ``nginx`` comes from Debian's ``nginx-light`` (or ``nginx``)
package; :func:`nginx_binary` returns ``None`` when it is not installed so callers can skip
with a clear reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NginxServer", "free_port", "nginx_binary", "wait_for_port"]

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
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
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
