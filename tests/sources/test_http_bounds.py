"""Bounded HTTP: no read past what was asked, deadlines on every request and load, and
retries and stalls reported while they happen (issue 10, HTTP)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from pullweights import events
from pullweights.errors import FetchError, IntegrityError
from pullweights.events import Event, Phase
from pullweights.sources.http import HttpSource
from pullweights.sources.http_settings import HttpSettings
from tests.servers.faults import Fault, FaultServer

KiB = 1024
CHUNK = 256 * KiB
# Quick failure in tests: short deadlines, few and fast retries, no rate allowance.
BOUNDED: dict[str, Any] = {
    "chunk_size": CHUNK,
    "retries": 1,
    "backoff_base": 0.01,
    "backoff_max": 0.02,
    "min_rate": 1e12,
}


async def read(source: HttpSource, offset: int, length: int) -> bytes:
    out = np.zeros(length, dtype=np.uint8)
    await source.read_into(offset, memoryview(out))
    return out.tobytes()


@pytest.mark.timeout(60)
async def test_endless_chunked_answer_to_the_probe_is_not_buffered(payload: bytes) -> None:
    async with FaultServer(payload) as server:
        server.push(Fault("endless_chunked", after=64 * KiB))
        with pytest.raises(IntegrityError, match="longer than the 1 bytes asked for"):
            await HttpSource.open(server.url, settings=HttpSettings(**BOUNDED))
    # The client stopped reading at once: the server got rid of socket buffers' worth.
    assert server.body_bytes_sent < 32 * 1024 * KiB


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_endless_chunked_range_is_not_buffered(
    fault_server: FaultServer, direct: bool
) -> None:
    settings = HttpSettings(**BOUNDED, direct_receive=direct)
    async with await HttpSource.open(fault_server.url, settings=settings) as source:
        sent_before = fault_server.body_bytes_sent
        fault_server.push(Fault("endless_chunked", after=64 * KiB))
        with pytest.raises(IntegrityError, match="longer than"):
            await read(source, 0, 1000)
    assert fault_server.body_bytes_sent - sent_before < 32 * 1024 * KiB


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    "fault",
    [
        Fault("drip_headers", seconds=0.05),
        Fault("drip_body", seconds=0.05),
    ],
    ids=lambda f: f.kind,
)
async def test_a_dripping_server_meets_the_request_deadline(
    fault_server: FaultServer, payload: bytes, fault: Fault
) -> None:
    # A byte every 50 ms never trips the 5 s stall timeout; the request deadline ends it.
    settings = HttpSettings(**BOUNDED, read_timeout=5.0, request_timeout=0.5)
    async with await HttpSource.open(fault_server.url, settings=settings) as source:
        fault_server.push(fault, fault)
        with pytest.raises(FetchError) as caught:
            await read(source, 100, 1000)
    message = str(caught.value)
    assert "bytes 100-1099" in message and "failed after 2 attempts" in message
    assert "no complete response within 0.5 s (the request deadline" in message


@pytest.mark.timeout(60)
async def test_a_server_that_never_answers_meets_the_request_deadline(
    fault_server: FaultServer,
) -> None:
    settings = HttpSettings(**BOUNDED, read_timeout=None, request_timeout=0.3)
    fault_server.push(Fault("silent"), Fault("silent"))
    with pytest.raises(FetchError, match=r"opening: failed after 2 attempts.*request deadline"):
        await HttpSource.open(fault_server.url, settings=settings)


@pytest.mark.timeout(60)
async def test_a_server_that_never_answers_stalls(fault_server: FaultServer) -> None:
    settings = HttpSettings(**BOUNDED, read_timeout=0.3)
    fault_server.push(Fault("silent"), Fault("silent"))
    with pytest.raises(FetchError, match=r"opening: failed after 2 attempts.*Timeout"):
        await HttpSource.open(fault_server.url, settings=settings)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_content_length_larger_than_the_body(
    fault_server: FaultServer, payload: bytes, direct: bool
) -> None:
    settings = HttpSettings(**BOUNDED, read_timeout=0.3, direct_receive=direct)
    async with await HttpSource.open(fault_server.url, settings=settings) as source:
        # once, then the retry resumes after the bytes that came and succeeds
        fault_server.push(Fault("long_content_length", after=10))
        assert await read(source, 0, 2 * CHUNK) == payload[: 2 * CHUNK]
        fault_server.push(*[Fault("long_content_length", after=10)] * 2)
        with pytest.raises(FetchError, match=r"failed after 2 attempts.*(stalled|Timeout)"):
            await read(source, 0, 1000)


@pytest.mark.timeout(60)
async def test_the_load_deadline_bounds_every_retry(fault_server: FaultServer) -> None:
    settings = HttpSettings(
        chunk_size=CHUNK, retries=1000, backoff_base=0.05, backoff_max=0.05, load_timeout=0.5,
        min_rate=1e12,
    )  # fmt: skip
    async with await HttpSource.open(fault_server.url, settings=settings) as source:
        fault_server.push(*[Fault("status", status=503)] * 1000)
        with pytest.raises(FetchError) as caught:
            await read(source, 0, 3 * CHUNK)
    message = str(caught.value)
    assert "bytes 0-786431: not done within 0.5 s (the load deadline" in message
    assert "last error: HTTP 503" in message
    assert len(fault_server.requests) < 200


async def test_retries_are_reported_as_they_happen(
    fault_server: FaultServer, payload: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[Event] = []
    settings = HttpSettings(**{**BOUNDED, "retries": 3})
    async with await HttpSource.open(fault_server.url, settings=settings) as source:
        fault_server.push(Fault("status", status=503), Fault("drop", after=10))
        with (
            caplog.at_level(logging.WARNING, "pullweights.sources.http"),
            events.subscribed(seen.append),
        ):
            assert await read(source, 5, 100) == payload[5:105]
    retries = [e for e in seen if e.phase is Phase.RETRY]
    assert [e.kind for e in retries] == ["mark", "mark"]
    lines = [r.getMessage() for r in caplog.records if r.name == "pullweights.sources.http"]
    assert len(lines) == 2
    assert lines[0].startswith(f"{fault_server.url}: bytes 5-104: attempt 1 failed (HTTP 503)")
    assert "attempt 2 failed (the connection closed after 10 of 100 bytes)" in lines[1]
    assert all("; retrying in " in line and line.endswith(" s") for line in lines)
    assert [e.name for e in retries] == lines


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_stalls_are_reported_while_they_last(
    fault_server: FaultServer, payload: bytes, caplog: pytest.LogCaptureFixture, direct: bool
) -> None:
    seen: list[Event] = []
    settings = HttpSettings(
        **{**BOUNDED, "retries": 2}, read_timeout=10.0, stall_report=0.1, direct_receive=direct
    )
    async with await HttpSource.open(fault_server.url, settings=settings) as source:
        # 1000 bytes, then silence; after a second the server drops and the retry succeeds
        fault_server.push(Fault("stall", after=1000, seconds=1.0))
        with (
            caplog.at_level(logging.WARNING, "pullweights.sources.http"),
            events.subscribed(seen.append),
        ):
            assert await read(source, 0, CHUNK) == payload[:CHUNK]
    stalls = [e.name for e in seen if e.phase is Phase.STALL]
    assert len(stalls) >= 2  # reported again and again while it lasted, not once at the end
    assert all(
        s.startswith(f"{fault_server.url}: bytes 0-{CHUNK - 1}: no data for ") for s in stalls
    )
    assert all("(stalled; the attempt ends at 10 s)" in s for s in stalls)
    logged = {r.getMessage() for r in caplog.records}
    assert set(stalls) <= logged


def test_settings_are_checked_frozen_and_replaced() -> None:
    settings = HttpSettings(headers={"X-Token": "abc"})
    with pytest.raises(AttributeError):
        settings.retries = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.headers["X-Token"] = "other"  # type: ignore[index]
    assert settings.replace(retries=1).retries == 1 and settings.retries == 5
    assert HttpSettings(chunk_size=10 << 20, max_inflight_bytes=1 << 20).chunk_size == 1 << 20
    for bad in (
        {"concurrency": 0},
        {"retries": -1},
        {"request_timeout": 0},
        {"min_rate": 0},
        {"headers": {"Range": "bytes=0-"}},
    ):
        with pytest.raises(ValueError, match="HttpSettings"):
            HttpSettings(**bad)
    assert HttpSettings(request_timeout=10, min_rate=100).request_deadline(1000) == 20.0
    assert HttpSettings(load_timeout=None).load_deadline(10**9) is None


async def test_extra_headers_are_sent(fault_server: FaultServer, payload: bytes) -> None:
    settings = HttpSettings(headers={"Authorization": "Bearer t0k", "User-Agent": "pw-test"})
    async with await HttpSource.open(fault_server.url, settings=settings) as source:
        assert await read(source, 0, 10) == payload[:10]
    for request in fault_server.requests:
        assert request.headers["authorization"] == "Bearer t0k"
        assert request.headers["user-agent"] == "pw-test"
