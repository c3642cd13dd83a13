"""aiohttp's static file handler (``FileResponse``: sendfile, Range, ETag) on 127.0.0.1.

In tests it runs in the test's own event loop (:class:`AiohttpStaticServer`); the
benchmark runs it as a separate process so that server and client do not share a loop::

    python -m tests.servers.static_aiohttp ROOT     # prints the port, serves until killed
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from types import TracebackType

from aiohttp import web

__all__ = ["AiohttpStaticServer"]


class AiohttpStaticServer:
    """Serves the files under ``root`` at :attr:`url` until the ``async with`` ends."""

    def __init__(self, root: str | os.PathLike[str], port: int = 0) -> None:
        self.root = Path(root).resolve()
        self.port = port
        app = web.Application()
        app.router.add_static("/", self.root)
        self._runner = web.AppRunner(app, access_log=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        await self._runner.cleanup()

    async def __aenter__(self) -> AiohttpStaticServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def _serve_forever(root: str) -> None:
    server = AiohttpStaticServer(root)
    await server.start()
    print(server.port, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(_serve_forever(sys.argv[1]))
