"""HttpSource returns exactly the file's bytes from real loopback servers (aiohttp, nginx, ours)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from aiohttp import web

from pullweights.errors import FetchError, IntegrityError, SourceError
from pullweights.sources.http import HttpSource
from pullweights.sources.http_settings import HttpSettings
from tests.servers.faults import Fault, FaultServer
from tests.servers.nginx import free_port
from tests.servers.static_aiohttp import AiohttpStaticServer

from .conftest import FILE_NAME, PAYLOAD_SIZE

KiB = 1024
CHUNK = 256 * KiB

# (offset, length): empty, first and last byte, whole file, unaligned multi-chunk, exactly
# one chunk, a range ending at the last byte.
RANGES = [
    (0, 0),
    (0, 1),
    (PAYLOAD_SIZE - 1, 1),
    (0, PAYLOAD_SIZE),
    (12_345, 1_000_003),
    (CHUNK, CHUNK),
    (PAYLOAD_SIZE - 300_001, 300_001),
]


@pytest.fixture(params=["aiohttp", pytest.param("nginx", marks=pytest.mark.nginx), "faults"])
async def server_url(
    request: pytest.FixtureRequest, payload_dir: Path, payload: bytes
) -> AsyncIterator[str]:
    """The payload's URL on each of the three servers in turn."""
    if request.param == "nginx":
        yield request.getfixturevalue("nginx_url")
    elif request.param == "aiohttp":
        async with AiohttpStaticServer(payload_dir) as server:
            yield server.url + FILE_NAME
    else:
        async with FaultServer(payload) as faults:
            yield faults.url


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_ranges_match_the_file(server_url: str, payload: bytes, direct: bool) -> None:
    async with await HttpSource.open(
        server_url, settings=HttpSettings(chunk_size=CHUNK, concurrency=3, direct_receive=direct)
    ) as source:
        assert source.size == PAYLOAD_SIZE
        for offset, length in RANGES:
            out = np.full(length, 0xAA, dtype=np.uint8)
            await source.read_into(offset, memoryview(out))
            assert out.tobytes() == payload[offset : offset + length], (offset, length)
            assert await source.read(offset, length) == payload[offset : offset + length]


@pytest.mark.nginx
async def test_open_learns_size_identity_and_validator(nginx_url: str, aiohttp_url: str) -> None:
    for url in (nginx_url, aiohttp_url):
        async with await HttpSource.open(url) as source:
            assert source.name == url
            assert source.size == PAYLOAD_SIZE
            assert source.accepts_ranges
            assert source.identity.startswith(f"http:{url}|")
            assert source.identity.endswith(f'"|{PAYLOAD_SIZE}')  # an ETag, then the size
            assert source.map(0, 10) is None


async def test_identity_falls_back_to_last_modified(payload: bytes) -> None:
    async with FaultServer(payload, etag=None) as server:
        async with await HttpSource.open(server.url) as source:
            assert f"|last-modified:{server.last_modified}|" in source.identity
            assert await source.read(100, 50) == payload[100:150]
        # without an ETag the object is pinned with If-Unmodified-Since
        assert server.requests[-1].headers["if-unmodified-since"] == server.last_modified


async def test_reads_into_any_contiguous_buffer(fault_server: FaultServer, payload: bytes) -> None:
    async with await HttpSource.open(
        fault_server.url, settings=HttpSettings(chunk_size=CHUNK)
    ) as source:
        floats = np.zeros(100_000, dtype=np.float32)
        await source.read_into(8, memoryview(floats))
        assert floats.tobytes() == payload[8 : 8 + floats.nbytes]
        with pytest.raises(ValueError, match="writable"):
            await source.read_into(0, memoryview(b"read-only"))


@pytest.mark.nginx
async def test_empty_object(payload_dir: Path, nginx_url: str, aiohttp_url: str) -> None:
    for url in (nginx_url, aiohttp_url):
        async with await HttpSource.open(url.replace(FILE_NAME, "empty.bin")) as source:
            assert source.size == 0
            assert await source.read(0, 0) == b""
    async with FaultServer(b"") as server, await HttpSource.open(server.url) as source:
        assert source.size == 0


async def test_out_of_range_and_closed(fault_server: FaultServer) -> None:
    source = await HttpSource.open(fault_server.url)
    with pytest.raises(SourceError, match="outside"):
        await source.read(PAYLOAD_SIZE - 1, 2)
    await source.aclose()
    await source.aclose()
    with pytest.raises(SourceError, match="closed"):
        await source.read(0, 1)


async def test_rejects_non_http_urls() -> None:
    for url in ("ftp://example.org/x", "/local/path", "http:///nohost"):
        with pytest.raises(SourceError, match="not an http"):
            await HttpSource.open(url)


async def test_connections_are_reused(fault_server: FaultServer, payload: bytes) -> None:
    async with await HttpSource.open(
        fault_server.url, settings=HttpSettings(chunk_size=64 * KiB, concurrency=2)
    ) as src:
        out = bytearray(PAYLOAD_SIZE)
        await src.read_into(0, memoryview(out))
        assert out == payload
    requests = len(fault_server.requests)
    assert requests == 1 + -(-PAYLOAD_SIZE // (64 * KiB))
    assert fault_server.connections <= 3  # the opening one and at most `concurrency` more


async def test_server_without_range_support(payload: bytes) -> None:
    async with (
        FaultServer(payload, accept_ranges=False) as server,
        await HttpSource.open(server.url, settings=HttpSettings(chunk_size=CHUNK)) as source,
    ):
        assert not source.accepts_ranges
        assert source.size == PAYLOAD_SIZE
        out = bytearray(PAYLOAD_SIZE)
        await source.read_into(0, memoryview(out))  # the whole object: 200 is fine
        assert out == payload
        with pytest.raises(FetchError, match="does not support range requests"):
            await source.read(10, 20)


async def test_shared_session_is_not_closed(fault_server: FaultServer, payload: bytes) -> None:
    # a session that would decode gzip and raise on statuses: the source overrides both
    async with aiohttp.ClientSession(raise_for_status=True) as session:
        async with await HttpSource.open(fault_server.url, session=session) as source:
            assert await source.read(3, 4) == payload[3:7]
            fault_server.push(Fault("status", status=404))
            with pytest.raises(FetchError, match="HTTP 404"):
                await source.read(3, 4)
            fault_server.push(Fault("gzip"))
            with pytest.raises(IntegrityError, match="gzip"):
                await source.read(3, 4)
        assert not session.closed


async def test_follows_redirects(fault_server: FaultServer, payload: bytes) -> None:
    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(location=fault_server.url)

    app = web.Application()
    app.router.add_get("/moved", moved)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", free_port())
    await site.start()
    try:
        url = f"{site.name}/moved"
        async with await HttpSource.open(url, settings=HttpSettings(chunk_size=CHUNK)) as source:
            assert source.name == url and source.size == PAYLOAD_SIZE
            assert await source.read(CHUNK - 5, CHUNK + 10) == payload[CHUNK - 5 : 2 * CHUNK + 5]
        # the ranges and the precondition survive the redirect
        last_two = fault_server.requests[-2:]
        assert {r.headers["range"] for r in last_two} == {
            f"bytes={CHUNK - 5}-{2 * CHUNK - 6}",
            f"bytes={2 * CHUNK - 5}-{2 * CHUNK + 4}",
        }
        assert all(r.headers["if-match"] == fault_server.etag for r in last_two)
    finally:
        await runner.cleanup()
