"""``pullweights pull URL`` then ``pullweights run URL`` with the server gone: fully offline."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web

from tests.reference import write_tiny_model


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pullweights",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_pull_then_run_offline(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    write_tiny_model(www / "tiny.gguf", "qwen2", quant="Q8_0")
    requests: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
        requests.append(request.headers.get("Range", ""))
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.router.add_static("/", www)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/tiny.gguf"
    cache = str(tmp_path / "cache")
    try:
        code, _, err = await _cli("pull", url, "--cache-dir", cache, "--no-progress")
        assert code == 0, err
        assert "pulled qwen2 model" in err
        assert requests, "the first pull must fetch over HTTP"
        seen = len(requests)
        code, _, err = await _cli("pull", url, "--cache-dir", cache, "--no-progress")
        assert code == 0, err
        assert len(requests) == seen, "a second pull must not touch the network"
    finally:
        await runner.cleanup()

    # The server is gone: run works from the cache alone, and gives the same text as a run
    # of the local file.
    code, remote_text, err = await _cli(
        "run", url, "Paris is", "--cache-dir", cache, "--max-tokens", "5", "--quiet"
    )
    assert code == 0, err
    code, local_text, err = await _cli(
        "run", str(www / "tiny.gguf"), "Paris is", "--no-cache", "--max-tokens", "5", "--quiet"
    )
    assert code == 0, err
    assert remote_text == local_text


async def test_run_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\xff" * 60)
    code, _, err = await _cli("run", str(bad), "hello", "--no-cache")
    assert code == 1
    assert err.startswith("pullweights: error:") and "Traceback" not in err
    code, _, err = await _cli("inspect", str(tmp_path / "missing.gguf"))
    assert code == 1 and "cannot open" in err
