"""Every server fault ends in the right bytes or one typed pullweights error, never wrong data."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from pullweights.errors import (
    FetchError,
    IntegrityError,
    PullWeightsError,
    RemoteChangedError,
    SourceError,
)
from pullweights.sources.http import HttpSource
from pullweights.sources.http_settings import HttpSettings
from pullweights.sources.http_validate import parse_retry_after
from tests.servers.faults import Fault, FaultServer
from tests.servers.nginx import NginxServer, free_port

from .conftest import PAYLOAD_SIZE

KiB = 1024
CHUNK = 256 * KiB
# A read spanning several chunks, starting and ending off chunk boundaries.
OFFSET, LENGTH = 1000, 3 * CHUNK + 77
FAST_RETRY = {"backoff_base": 0.01, "backoff_max": 0.05, "retries": 3}


async def open_source(server: FaultServer, **options: Any) -> HttpSource:
    settings = HttpSettings(**{"chunk_size": CHUNK, "concurrency": 2, **FAST_RETRY, **options})
    return await HttpSource.open(server.url, settings=settings)


async def read_range(source: HttpSource, offset: int = OFFSET, length: int = LENGTH) -> bytes:
    out = np.zeros(length, dtype=np.uint8)
    await source.read_into(offset, memoryview(out))
    return out.tobytes()


@pytest.mark.parametrize(
    "fault",
    [
        Fault("short_body", after=1000),
        Fault("drop", after=5000),
        Fault("drop", after=0),
        Fault("reset", after=100_000),
        Fault("close_before_headers"),
        Fault("status", status=503),
        Fault("status", status=500),
        Fault("status", status=429, retry_after="0"),
    ],
    ids=lambda f: f"{f.kind}-{f.after or f.status}",
)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_transient_faults_are_retried(
    fault_server: FaultServer, payload: bytes, fault: Fault, direct: bool
) -> None:
    async with await open_source(fault_server, direct_receive=direct) as source:
        fault_server.push(fault)
        assert await read_range(source) == payload[OFFSET : OFFSET + LENGTH]
    # one retried request on top of the opening one and the four chunks
    assert len(fault_server.requests) == 1 + 4 + 1


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_stall_is_detected_and_retried(
    fault_server: FaultServer, payload: bytes, direct: bool
) -> None:
    async with await open_source(fault_server, read_timeout=0.2, direct_receive=direct) as src:
        fault_server.push(Fault("stall", after=CHUNK // 2, seconds=5.0))
        started = time.monotonic()
        assert await read_range(src) == payload[OFFSET : OFFSET + LENGTH]
        assert time.monotonic() - started < 3.0


async def test_retry_after_is_honoured_and_capped(
    fault_server: FaultServer, payload: bytes
) -> None:
    async with await open_source(fault_server, backoff_max=0.3) as source:
        fault_server.push(Fault("status", status=429, retry_after="60"))
        started = time.monotonic()
        assert await read_range(source, 0, 100) == payload[:100]
        assert 0.29 <= time.monotonic() - started < 2.0  # waited, but only the 0.3 s cap


@pytest.mark.parametrize(
    ("fault", "error", "match"),
    [
        (Fault("wrong_content_range"), IntegrityError, "Content-Range"),
        (Fault("short_content_length"), IntegrityError, "Content-Length"),
        (Fault("gzip"), IntegrityError, "gzip"),
        (Fault("ignore_range"), FetchError, "ignored the Range header"),
        (Fault("status", status=416), SourceError, "416"),
        (Fault("status", status=404), FetchError, "HTTP 404"),
        (Fault("status", status=403), FetchError, "HTTP 403"),
        (Fault("change"), RemoteChangedError, "412"),
    ],
    ids=lambda v: v.kind if isinstance(v, Fault) else "",
)
async def test_permanent_faults_raise_one_typed_error(
    fault_server: FaultServer, fault: Fault, error: type[Exception], match: str
) -> None:
    async with await open_source(fault_server) as source:
        fault_server.push(fault)
        with pytest.raises(error, match=match) as caught:
            await read_range(source)
        assert fault_server.url in str(caught.value)
    assert len(fault_server.requests) <= 1 + 4  # never retried


async def test_errors_name_the_range(fault_server: FaultServer) -> None:
    async with await open_source(fault_server) as source:
        fault_server.push(Fault("status", status=416))
        with pytest.raises(SourceError, match=f"bytes {OFFSET}-{OFFSET + CHUNK - 1}"):
            await read_range(source)


async def test_whole_object_in_a_200_is_accepted(fault_server: FaultServer, payload: bytes) -> None:
    async with await open_source(fault_server, chunk_size=PAYLOAD_SIZE) as source:
        fault_server.push(Fault("ignore_range"))
        assert await read_range(source, 0, PAYLOAD_SIZE) == payload


async def test_changed_object_without_precondition_support(payload: bytes) -> None:
    async with (
        FaultServer(payload, honour_preconditions=False) as server,
        await open_source(server) as source,
    ):
        server.push(Fault("change"))
        with pytest.raises(RemoteChangedError, match="ETag is '\"v2\"', was '\"v1\"'"):
            await read_range(source)


async def test_changed_object_by_last_modified(payload: bytes) -> None:
    async with (
        FaultServer(payload, etag=None, honour_preconditions=False) as server,
        await open_source(server) as source,
    ):
        server.push(Fault("change"))
        with pytest.raises(RemoteChangedError, match="Last-Modified"):
            await read_range(source)


@pytest.mark.nginx
async def test_changed_file_on_nginx(nginx_server: NginxServer, payload: bytes) -> None:
    path = Path(nginx_server.root) / "changing.bin"
    path.write_bytes(payload)
    try:
        async with await HttpSource.open(nginx_server.url + "changing.bin") as source:
            assert await source.read(0, 10) == payload[:10]
            path.write_bytes(payload[: PAYLOAD_SIZE // 2] + b"changed")
            with pytest.raises(RemoteChangedError):
                await source.read(0, 10)
    finally:
        path.unlink()


async def test_gives_up_after_the_retries(fault_server: FaultServer) -> None:
    async with await open_source(fault_server, retries=2) as source:
        fault_server.push(*[Fault("status", status=503)] * 3)
        with pytest.raises(FetchError) as caught:
            await read_range(source, 0, 10)
    message = str(caught.value)
    assert "bytes 0-9" in message and "3 attempts" in message and "HTTP 503" in message
    assert fault_server.url in message


async def test_gives_up_at_the_deadline(fault_server: FaultServer) -> None:
    async with await open_source(
        fault_server, retries=100, backoff_base=0.05, retry_deadline=0.3
    ) as source:
        fault_server.push(*[Fault("status", status=503)] * 100)
        started = time.monotonic()
        with pytest.raises(FetchError, match="HTTP 503"):
            await read_range(source, 0, 10)
        assert time.monotonic() - started < 2.0
    assert len(fault_server.requests) < 50


async def test_connection_refused() -> None:
    url = f"http://127.0.0.1:{free_port()}/nothing"
    with pytest.raises(FetchError, match="opening: failed after 2 attempts") as caught:
        await HttpSource.open(url, settings=HttpSettings(retries=1, backoff_base=0.01))
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)


async def test_server_gone_mid_load(payload: bytes) -> None:
    server = FaultServer(payload)
    await server.start()
    source = await open_source(server)
    await server.close()
    with pytest.raises(FetchError, match=r"failed after 4 attempts") as caught:
        await read_range(source)
    assert not isinstance(caught.value, aiohttp.ClientError)
    await source.aclose()


async def test_open_faults(payload: bytes) -> None:
    async with FaultServer(payload) as server:
        server.push(Fault("status", status=503), Fault("close_before_headers"))
        async with await open_source(server) as source:
            assert source.size == PAYLOAD_SIZE
        server.push(Fault("status", status=404))
        with pytest.raises(FetchError, match="HTTP 404"):
            await open_source(server)
        server.push(Fault("gzip"))
        with pytest.raises(IntegrityError, match="gzip"):
            await open_source(server)
        server.push(Fault("wrong_content_range"))
        with pytest.raises(IntegrityError, match="Content-Range"):
            await open_source(server)


async def test_only_pullweights_errors_escape(fault_server: FaultServer, payload: bytes) -> None:
    """A long run of mixed faults: each read is right or fails with a pullweights error."""
    faults = [
        Fault("drop", after=10),
        Fault("gzip"),
        Fault("status", status=502),
        Fault("wrong_content_range"),
        Fault("reset", after=1),
        Fault("short_body", after=7),
        Fault("ignore_range"),
    ]
    async with await open_source(fault_server, read_timeout=0.2) as source:
        for round_ in range(14):
            fault_server.push(faults[round_ % len(faults)])
            offset = 997 * round_
            try:
                data = await read_range(source, offset, LENGTH)
            except PullWeightsError:
                continue
            assert data == payload[offset : offset + LENGTH]


def test_parse_retry_after() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 GMT
    assert parse_retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now=now) == pytest.approx(30.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0
