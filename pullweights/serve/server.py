"""Running the application: load (or not) the models, bind, serve until told to stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from pullweights.serve.app import create_app
from pullweights.serve.registry import ModelRegistry

__all__ = ["serve"]


async def serve(
    registry: ModelRegistry,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    preload: bool = True,
    access_log: bool = False,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve ``registry`` on ``host:port`` until cancelled or sent SIGTERM.

    Args:
        preload: load every model before listening (else each on its first request).
        on_ready: called with the base URL (``http://host:port``, the real port when
            ``port`` is 0) once the server listens.

    Raises:
        PullWeightsError: a model failed to load (``preload``).
        OSError: the address cannot be bound.
    """
    if preload:
        await registry.load_all()
    app = create_app(registry, api_key=api_key)
    options: dict[str, Any] = {} if access_log else {"access_log": None}
    runner = web.AppRunner(app, handler_cancellation=True, **options)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        if on_ready is not None:
            on_ready(f"http://{shown}:{bound[1]}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # Not in the main thread, there is no SIGTERM handler: only cancellation stops it.
        with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
            loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await stop.wait()
        finally:
            with contextlib.suppress(ValueError, RuntimeError, NotImplementedError):
                loop.remove_signal_handler(signal.SIGTERM)
    finally:
        await runner.cleanup()
