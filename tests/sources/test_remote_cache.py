"""A remote GGUF loaded once is loaded again with one 1-byte revalidation (none offline)
and no private copy; a changed one is fetched again, never mixed with the old."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web

import pullweights as pw
from pullweights.errors import SourceError
from pullweights.gguf import open_gguf
from pullweights.memstats import MemoryMonitor, snapshot
from pullweights.sources import HttpSettings
from tests.sources.f32_model import (
    WEIGHT_BYTES,
    N,
    chain_builder,
    expected_chain,
    write_f32_model,
)

MIB = 1024 * 1024


class CountingServer:
    """Serves a directory on 127.0.0.1 and records every request's Range header."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str | None] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        @web.middleware
        async def count(request: web.Request, handler: web.RequestHandler) -> web.StreamResponse:
            self.requests.append(request.headers.get("Range"))
            return await handler(request)

        app = web.Application(middlewares=[count])
        app.router.add_static("/", self.root)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[CountingServer]:
    root = tmp_path / "www"
    root.mkdir()
    write_f32_model(root / "model.gguf")
    srv = CountingServer(root)
    await srv.start()
    yield srv
    await srv.stop()


async def _load(
    url: str, cache_dir: Path, *, offline: bool = False
) -> tuple[dict[str, np.ndarray], pw.Graph, str]:
    ctx = pw.create_context(cache_dir=cache_dir)
    model = await open_gguf(
        url, remote_dir=cache_dir / "remote", http=HttpSettings(retries=0), offline=offline
    )
    b, h = chain_builder(model, ctx)
    graph = await b.build({"y": h})
    out = await graph.compute({"x": np.ones((1, N), np.float32)})
    origin = model.source.origin  # type: ignore[attr-defined]
    await model.aclose()
    return out, graph, origin


async def test_second_remote_load_revalidates_and_uses_no_private_memory(
    server: CountingServer, tmp_path: Path
) -> None:
    url = f"{server.url}/model.gguf"
    cache_dir = tmp_path / "cache"
    first, graph, origin = await _load(url, cache_dir)
    del graph
    assert origin == "fetched"
    assert len(server.requests) > 4  # the header and every tensor came over HTTP

    seen = len(server.requests)
    before = snapshot()
    with MemoryMonitor(interval=0.005) as mon:
        second, _graph, origin = await _load(url, cache_dir)
    assert origin == "unchanged"
    assert server.requests[seen:] == ["bytes=0-0"]  # one byte, to revalidate
    np.testing.assert_array_equal(first["y"], second["y"])
    growth = mon.peak_anonymous - before.anonymous
    assert growth < 0.10 * WEIGHT_BYTES, f"private memory grew {growth / MIB:.1f} MiB"

    # The result is right: numpy on the file the server holds.
    expect = expected_chain(server.root / "model.gguf")
    np.testing.assert_allclose(second["y"], expect, rtol=1e-4, atol=1e-4)

    seen = len(server.requests)
    third, _graph, origin = await _load(url, cache_dir, offline=True)
    assert origin == "offline"
    assert server.requests[seen:] == []  # not a single request
    np.testing.assert_array_equal(first["y"], third["y"])


async def test_changed_remote_object_is_fetched_again(
    server: CountingServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"{server.url}/model.gguf"
    cache_dir = tmp_path / "cache"
    old, _graph, _ = await _load(url, cache_dir)
    # The file changes on the server (new weights, mtime and so ETag): the next load sees
    # it, drops the remembered header and pulls the new weights; nothing old is reused.
    write_f32_model(server.root / "model.gguf", seed=7)
    seen = len(server.requests)
    new, _graph, origin = await _load(url, cache_dir)
    assert origin == "changed"
    assert "changed on the server since it was pulled" in caplog.text
    assert len(server.requests) - seen > 4  # header and every weight again
    np.testing.assert_allclose(
        new["y"], expected_chain(server.root / "model.gguf"), rtol=1e-4, atol=1e-4
    )
    assert not np.allclose(new["y"], old["y"])
    # and the new version is what is remembered now
    again, _graph, origin = await _load(url, cache_dir, offline=True)
    np.testing.assert_array_equal(again["y"], new["y"])


async def test_object_changed_while_unverified_is_refused(
    server: CountingServer, tmp_path: Path
) -> None:
    url = f"{server.url}/model.gguf"
    cache_dir = tmp_path / "cache"
    model = await open_gguf(url, remote_dir=cache_dir / "remote")
    await model.aclose()
    # Opened offline (no check), the file then changes; a byte that must come from the
    # network is refused rather than mixed with the remembered header.
    model = await open_gguf(url, remote_dir=cache_dir / "remote", offline=True)
    with open(server.root / "model.gguf", "ab") as f:
        f.write(b"\0" * 64)
    ctx = pw.create_context(cache_dir=cache_dir)
    b = pw.GraphBuilder(ctx)
    ref = model.tensor("w0").payload().ref()
    x = b.input("x", pw.TensorDescriptor("float32", [1, N]))
    with pytest.raises(SourceError, match="offline"):
        await b.build({"y": b.matmul(x, b.input("w0", ref.descriptor, weight=ref))})
    await model.aclose()
