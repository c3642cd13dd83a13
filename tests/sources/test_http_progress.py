"""Progress events: throttled, measured, final; reported by HttpSource; drawn by tqdm."""

from __future__ import annotations

import dataclasses
import io

import pytest

from pullweights.errors import FetchError
from pullweights.sources.http import HttpSource
from pullweights.sources.http_settings import HttpSettings
from pullweights.sources.progress import ProgressEvent, ProgressMeter, TqdmProgress
from tests.servers.faults import Fault, FaultServer

from .conftest import PAYLOAD_SIZE


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_throttles_and_measures() -> None:
    clock, events = FakeClock(), list[ProgressEvent]()
    meter = ProgressMeter("thing", events.append, total=10_000_000, clock=clock)
    for _ in range(1000):  # 10 s at 1 MB/s in 10 kB steps
        clock.now += 0.01
        meter.advance(10_000)
    meter.finish()
    assert 95 <= len(events) <= 102  # ~10 per second, plus the final one
    assert all(not e.finished for e in events[:-1]) and events[-1].finished
    final = events[-1]
    assert (final.what, final.bytes_done, final.bytes_total, final.eta) == (
        "thing",
        10_000_000,
        10_000_000,
        0.0,
    )
    middle = events[len(events) // 2]
    assert middle.rate == pytest.approx(1e6, rel=0.02)
    assert middle.eta == pytest.approx((10_000_000 - middle.bytes_done) / 1e6, rel=0.02)


def test_meter_rate_follows_recent_speed() -> None:
    clock, events = FakeClock(), list[ProgressEvent]()
    meter = ProgressMeter("x", events.append, clock=clock, window=1.0)
    for step in range(400):  # 2 s at 1 MB/s, then 2 s at 4 MB/s
        clock.now += 0.01
        meter.advance(10_000 if step < 200 else 40_000)
    assert events[-1].rate == pytest.approx(4e6, rel=0.1)
    assert events[-1].bytes_total is None and events[-1].eta is None


def test_event_is_frozen() -> None:
    event = ProgressEvent("x", 1, 2, 3.0, 4.0, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.bytes_done = 5  # type: ignore[misc]


async def test_source_reports_progress(fault_server: FaultServer, payload: bytes) -> None:
    events: list[ProgressEvent] = []
    async with await HttpSource.open(
        fault_server.url, settings=HttpSettings(chunk_size=64 * 1024), progress=events.append
    ) as source:
        out = bytearray(PAYLOAD_SIZE)
        await source.read_into(0, memoryview(out))
        assert out == payload
    assert events[-1].finished
    assert events[-1].bytes_done == events[-1].bytes_total == PAYLOAD_SIZE
    assert all(e.what == fault_server.url for e in events)
    done = [e.bytes_done for e in events]
    assert done == sorted(done)


async def test_failed_read_takes_its_bytes_back(fault_server: FaultServer) -> None:
    events: list[ProgressEvent] = []
    async with await HttpSource.open(
        fault_server.url, settings=HttpSettings(retries=0), progress=events.append
    ) as source:
        fault_server.push(Fault("status", status=404))
        with pytest.raises(FetchError):
            await source.read(0, 1000)
    assert events[-1].finished and events[-1].bytes_total == events[-1].bytes_done == 0


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_failing_callback_is_not_retried(
    fault_server: FaultServer, payload: bytes, direct: bool
) -> None:
    calls = 0

    def callback(event: ProgressEvent) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("callback failed")

    async with await HttpSource.open(
        fault_server.url,
        settings=HttpSettings(chunk_size=1 << 20, direct_receive=direct),
        progress=callback,
    ) as source:
        with pytest.raises(RuntimeError, match="callback failed"):
            await source.read(0, PAYLOAD_SIZE)
    assert calls == 2  # the failing event, then the final one; no retry called it again
    assert len(fault_server.requests) <= 1 + 4  # the opening request and one per chunk


async def test_tqdm_bar(fault_server: FaultServer) -> None:
    stream = io.StringIO()
    bar = TqdmProgress(file=stream, mininterval=0)
    async with await HttpSource.open(fault_server.url, progress=bar) as source:
        await source.read(0, PAYLOAD_SIZE)
    assert not bar._bars  # closed on the finished event
    text = stream.getvalue()
    assert "object.bin" in text and "100%" in text and "3.01M/3.01M" in text
    bar.close()
