"""Fixtures for source tests: loopback servers from tests/servers and a payload to serve."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import pullweights.sources.http_receive as http_receive
from tests.servers.faults import FaultServer
from tests.servers.nginx import SKIP_REASON, NginxServer, nginx_binary
from tests.servers.static_aiohttp import AiohttpStaticServer

#: Not a multiple of any chunk size, so the last chunk of a read is short.
PAYLOAD_SIZE = 3 * 1024 * 1024 + 12345
FILE_NAME = "payload.bin"


@pytest.fixture(scope="session")
def payload() -> bytes:
    """Deterministic random bytes, the reference every read is compared with."""
    return np.random.default_rng(1234).integers(0, 256, PAYLOAD_SIZE, dtype=np.uint8).tobytes()


@pytest.fixture(scope="session")
def payload_dir(tmp_path_factory: pytest.TempPathFactory, payload: bytes) -> Path:
    root = tmp_path_factory.mktemp("served")
    (root / FILE_NAME).write_bytes(payload)
    (root / "empty.bin").write_bytes(b"")
    return root


@pytest.fixture
async def aiohttp_url(payload_dir: Path) -> AsyncIterator[str]:
    """URL of the payload on aiohttp's static file server (in the test's loop)."""
    async with AiohttpStaticServer(payload_dir) as server:
        yield server.url + FILE_NAME


@pytest.fixture(scope="session")
def nginx_server(payload_dir: Path) -> Iterator[NginxServer]:
    """nginx serving ``payload_dir``; skips when nginx is not installed."""
    if nginx_binary() is None:
        pytest.skip(SKIP_REASON)
    with NginxServer(payload_dir) as server:
        yield server


@pytest.fixture
def nginx_url(nginx_server: NginxServer) -> str:
    return nginx_server.url + FILE_NAME


@pytest.fixture
async def fault_server(payload: bytes) -> AsyncIterator[FaultServer]:
    """The fault-injecting server with the payload (well-behaved until faults are pushed)."""
    async with FaultServer(payload) as server:
        yield server


class CountingReceiver(http_receive._DirectReceiver):
    """The direct receive path, counting how often it is taken."""

    used = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).used += 1
        super().__init__(*args, **kwargs)


@pytest.fixture
def direct_receivers(monkeypatch: pytest.MonkeyPatch) -> type[CountingReceiver]:
    """Count the bodies received by the direct path (``.used``) during one test."""
    monkeypatch.setattr(http_receive, "_DirectReceiver", CountingReceiver)
    CountingReceiver.used = 0
    return CountingReceiver
