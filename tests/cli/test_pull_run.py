"""``pullweights pull URL`` (revalidated, ``--offline``, ``--refresh``, from a server without
Range) then ``pullweights run URL`` with the server gone."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from aiohttp import web

from tests.reference import write_tiny_model
from tests.servers.simple_http import SimpleHttpServer


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
        assert f"over HTTP from {url} (not pulled before)" in err and "  wrote: +" in err
        assert requests, "the first pull must fetch over HTTP"
        seen = len(requests)
        code, _, err = await _cli("pull", url, "--cache-dir", cache, "--no-progress")
        assert code == 0, err
        assert requests[seen:] == ["bytes=0-0"], "a second pull only revalidates"
        assert "(unchanged on the server)" in err and "  wrote: +0.0 MiB" in err
        code, _, err = await _cli("pull", url, "--cache-dir", cache, "--no-progress", "--offline")
        assert code == 0, err
        assert len(requests) == seen + 1, "an offline pull must not touch the network"
        assert "fetched: 0.0 MiB over HTTP" in err and "(offline: not checked)" in err
        code, _, err = await _cli("pull", url, "--cache-dir", cache, "--no-progress", "--refresh")
        assert code == 0, err
        assert "(header fetched again (--refresh))" in err
        assert "bytes=0-65535" in requests[seen + 1 :]
    finally:
        await runner.cleanup()

    # The server is gone: run works from the cache alone, and gives the same text as a run
    # of the local file; offline without a word, otherwise after saying it could not check.
    code, remote_text, err = await _cli(
        "run", url, "Paris is", "--cache-dir", cache, "--max-tokens", "5", "--quiet", "--offline"
    )
    assert code == 0, err
    assert err == ""
    code, local_text, err = await _cli(
        "run", str(www / "tiny.gguf"), "Paris is", "--no-cache", "--max-tokens", "5", "--quiet"
    )
    assert code == 0, err
    assert remote_text == local_text
    code, unverified_text, err = await _cli(
        "run", url, "Paris is", "--cache-dir", cache, "--max-tokens", "5", "--quiet"
    )
    assert code == 0, err
    assert "cannot check whether it changed" in err and "Traceback" not in err
    assert unverified_text == local_text


async def test_pull_from_a_server_without_range_support(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    write_tiny_model(www / "tiny.gguf", "qwen2", quant="Q8_0")
    cache = str(tmp_path / "cache")
    with SimpleHttpServer(www) as server:
        url = server.url + "tiny.gguf"
        code, _, err = await _cli("run", url, "Paris is", "--no-cache", "--max-tokens", "2")
        assert code == 1 and "does not support HTTP range requests" in err
        assert "Traceback" not in err
        code, _, err = await _cli("pull", url, "--cache-dir", cache, "--no-progress")
        assert code == 0, err
        assert "the server does not support Range; downloading" in err
        size = (www / "tiny.gguf").stat().st_size
        assert f"fetched: {size / 2**20:.1f} MiB over HTTP" in err
        assert "a complete copy, as the server has no Range support" in err
    code, remote_text, err = await _cli(
        "run", url, "Paris is", "--cache-dir", cache, "--max-tokens", "5", "--quiet", "--offline"
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
