"""Resume, cancellation, bounded concurrency and the direct receive path of HttpSource."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from pullweights.sources.budget import ByteBudget
from pullweights.sources.http import HttpSource
from pullweights.sources.http_settings import HttpSettings
from tests.servers.faults import Fault, FaultServer
from tests.servers.nginx import NginxServer

from .conftest import PAYLOAD_SIZE, CountingReceiver

KiB = 1024


async def test_resume_asks_only_for_the_rest(fault_server: FaultServer, payload: bytes) -> None:
    async with await HttpSource.open(
        fault_server.url, settings=HttpSettings(chunk_size=1024 * KiB, backoff_base=0.01)
    ) as source:
        fault_server.push(Fault("drop", after=300_000))
        out = bytearray(500_000)
        await source.read_into(4242, memoryview(out))
        assert out == payload[4242 : 4242 + 500_000]
    last = 4242 + 500_000 - 1
    assert fault_server.ranges[-2:] == [f"bytes=4242-{last}", f"bytes={4242 + 300_000}-{last}"]


async def test_resume_twice_in_one_range(fault_server: FaultServer, payload: bytes) -> None:
    async with await HttpSource.open(
        fault_server.url, settings=HttpSettings(chunk_size=PAYLOAD_SIZE, backoff_base=0.01)
    ) as source:
        fault_server.push(Fault("drop", after=1000), Fault("short_body", after=2000))
        out = bytearray(PAYLOAD_SIZE)
        await source.read_into(0, memoryview(out))
        assert out == payload
    last = PAYLOAD_SIZE - 1
    assert fault_server.ranges[1:] == [
        f"bytes=0-{last}",
        f"bytes=1000-{last}",
        f"bytes=3000-{last}",
    ]


def other_tasks(server: FaultServer) -> set[asyncio.Task[object]]:
    """Tasks of this loop that are neither the test itself nor the server's handlers."""
    return asyncio.all_tasks() - {asyncio.current_task()} - set(server._handlers)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_cancel_leaks_no_tasks_or_connections(payload: bytes, direct: bool) -> None:
    async with FaultServer(payload) as server:
        source = await HttpSource.open(
            server.url,
            settings=HttpSettings(chunk_size=256 * KiB, concurrency=3, direct_receive=direct),
        )
        before = other_tasks(server)
        # every range stalls half-way, so the read is mid-body on three connections
        server.push(*[Fault("stall", after=100 * KiB, seconds=5.0)] * 20)
        read = asyncio.create_task(source.read_into(0, memoryview(bytearray(PAYLOAD_SIZE))))
        for _ in range(500):
            if server.stalling == 3:
                break
            await asyncio.sleep(0.01)
        assert server.stalling == 3
        read.cancel()
        with pytest.raises(asyncio.CancelledError):
            await read
        assert other_tasks(server) == before
        connector = source._session.connector
        assert connector is not None
        assert not connector._acquired
        assert source._budget.used == 0
        # the source still works after a cancelled read
        assert await source.read(5, 6) == payload[5:11]
        await source.aclose()


async def test_in_flight_bytes_are_bounded(payload: bytes) -> None:
    async with FaultServer(payload, delay=0.01) as server:
        async with await HttpSource.open(
            server.url,
            settings=HttpSettings(chunk_size=64 * KiB, concurrency=8, max_inflight_bytes=128 * KiB),
        ) as source:
            out = bytearray(1024 * KiB)
            await source.read_into(0, memoryview(out))
            assert out == payload[: 1024 * KiB]
        assert server.max_active_bytes == 128 * KiB  # two 64 KiB ranges at a time, never more
        assert server.max_active_requests == 2


async def test_concurrency_is_bounded_across_reads(payload: bytes) -> None:
    async with FaultServer(payload, delay=0.01) as server:
        async with await HttpSource.open(
            server.url, settings=HttpSettings(chunk_size=64 * KiB, concurrency=3)
        ) as src:
            reads = [src.read(i * 300 * KiB, 300 * KiB) for i in range(4)]
            results = await asyncio.gather(*reads)
            assert results == [payload[i * 300 * KiB : (i + 1) * 300 * KiB] for i in range(4)]
        assert server.max_active_requests == 3


async def test_budget_survives_cancelled_waiters() -> None:
    budget = ByteBudget(100)
    async with budget.hold(80):
        waiter = asyncio.create_task(budget._acquire(50))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        async with budget.hold(20):
            assert budget.used == 100
    assert budget.used == 0
    async with budget.hold(500):  # larger than the limit: let through alone
        assert budget.used == 500


@pytest.mark.parametrize("server", [pytest.param("nginx", marks=pytest.mark.nginx), "faults"])
async def test_direct_path_is_taken_and_reuses_connections(
    request: pytest.FixtureRequest,
    payload: bytes,
    direct_receivers: type[CountingReceiver],
    server: str,
) -> None:
    faults: FaultServer | None = None
    if server == "nginx":
        nginx: NginxServer = request.getfixturevalue("nginx_server")
        url = nginx.url + "payload.bin"
    else:
        faults = FaultServer(payload)
        await faults.start()
        url = faults.url
    try:
        async with await HttpSource.open(
            url, settings=HttpSettings(chunk_size=1024 * KiB, concurrency=2)
        ) as source:
            out = np.zeros(PAYLOAD_SIZE, dtype=np.uint8)
            for _ in range(2):
                await source.read_into(0, memoryview(out))
                assert out.tobytes() == payload
                out[:] = 0
        assert direct_receivers.used >= 2
        if faults is not None:
            assert faults.connections <= 3
    finally:
        if faults is not None:
            await faults.close()


@pytest.mark.parametrize("kind", ["drop", "reset"])
async def test_drop_while_receiving_directly(
    fault_server: FaultServer,
    payload: bytes,
    direct_receivers: type[CountingReceiver],
    kind: str,
) -> None:
    """The connection dies while the direct receiver owns the socket: resume after it."""
    async with await HttpSource.open(
        fault_server.url, settings=HttpSettings(chunk_size=PAYLOAD_SIZE, backoff_base=0.01)
    ) as source:
        fault_server.push(Fault(kind, after=1024 * KiB, pause=0.1))
        out = bytearray(PAYLOAD_SIZE)
        await source.read_into(0, memoryview(out))
        assert out == payload
    assert direct_receivers.used == 2  # the failed attempt and the resumed one
    first, resumed = fault_server.ranges[-2:]
    assert first == f"bytes=0-{PAYLOAD_SIZE - 1}"
    assert resumed is not None and resumed.endswith(f"-{PAYLOAD_SIZE - 1}")
    resumed_at = int(resumed.removeprefix("bytes=").split("-")[0])
    assert 0 < resumed_at <= 1024 * KiB
    if kind == "drop":  # a FIN delivers every byte sent before it
        assert resumed_at == 1024 * KiB
