"""A loader killed mid-download leaves a cache that reads back right and finishes later."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
from aiohttp import web

import pullweights as pw
from pullweights.cache import WeightCache
from pullweights.gguf import open_gguf
from pullweights.sources import HttpSettings
from tests.sources.f32_model import N, chain_builder, expected_chain, write_f32_model

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    import pullweights as pw
    from pullweights.gguf import open_gguf
    from pullweights.sources import HttpSettings
    from tests.sources.f32_model import chain_builder

    async def main(url, cache_dir):
        model = await open_gguf(url, remote_dir=cache_dir + "/remote", http=HttpSettings(retries=0))
        b, h = chain_builder(model, pw.create_context(cache_dir=cache_dir))
        print("building", flush=True)
        await b.build({"y": h})
        print("finished", flush=True)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


async def _throttled_server(path: Path, delay: list[float]) -> tuple[web.AppRunner, str]:
    """Range server that sends 64 KiB then sleeps ``delay[0]`` seconds, repeatedly."""
    data = path.read_bytes()
    etag = '"v1"'

    async def handle(request: web.Request) -> web.StreamResponse:
        spec = request.headers.get("Range", "")
        start_s, _, end_s = spec.removeprefix("bytes=").partition("-")
        start, end = int(start_s), min(int(end_s), len(data) - 1)
        resp = web.StreamResponse(
            status=206,
            headers={
                "Content-Range": f"bytes {start}-{end}/{len(data)}",
                "Content-Length": str(end - start + 1),
                "ETag": etag,
                "Accept-Ranges": "bytes",
            },
        )
        await resp.prepare(request)
        pos = start
        while pos <= end:
            chunk = data[pos : min(pos + 65536, end + 1)]
            await resp.write(chunk)
            pos += len(chunk)
            if delay[0]:
                await asyncio.sleep(delay[0])
        return resp

    app = web.Application()
    app.router.add_get("/model.gguf", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/model.gguf"


async def test_killed_loader_leaves_a_recoverable_cache(tmp_path: Path) -> None:
    model_path = tmp_path / "model.gguf"
    write_f32_model(model_path, seed=1)
    delay = [0.0]
    runner, url = await _throttled_server(model_path, delay)
    cache_dir = tmp_path / "cache"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    try:
        delay[0] = 0.02  # ~3 MiB/s: 16 MiB of weights take seconds
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            url,
            str(cache_dir),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), timeout=60)
        assert line.strip() == b"building"
        # Wait until weight bytes are arriving in the cache's staging area, then kill.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            staged = [p for p in cache_dir.rglob("*") if p.is_file() and p.stat().st_size]
            if any("staging" in str(p) for p in staged):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        assert child.returncode == -signal.SIGKILL

        cache = WeightCache(cache_dir)
        print("committed before the kill:", len(cache.entries()))
        assert len(cache.entries()) < 4  # killed before everything landed
        for entry in cache.entries():  # what was committed is whole and right
            assert not cache.verify(entry.key, remove=False)

        delay[0] = 0.0
        model = await open_gguf(url, remote_dir=cache_dir / "remote", http=HttpSettings(retries=0))
        b, h = chain_builder(model, pw.create_context(cache_dir=cache_dir))
        graph = await b.build({"y": h})
        out = await graph.compute({"x": np.ones((1, N), np.float32)})
        await model.aclose()
    finally:
        await runner.cleanup()

    np.testing.assert_allclose(out["y"], expected_chain(model_path), rtol=1e-4, atol=1e-4)
    assert len(WeightCache(cache_dir).entries()) == 4
    assert not WeightCache(cache_dir).verify()
