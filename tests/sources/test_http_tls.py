"""https:// with a local certificate: reads, faults and cancellation over asyncio's TLS."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from pullweights.errors import FetchError
from pullweights.sources.http import HttpSource
from pullweights.sources.http_settings import HttpSettings
from tests.servers.faults import Fault, FaultServer

from .conftest import FILE_NAME, PAYLOAD_SIZE, CountingReceiver


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed")
    root = tmp_path_factory.mktemp("tls")
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
async def https_url(payload_dir: Path, certificate: tuple[Path, Path]) -> AsyncIterator[str]:
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_static("/", payload_dir)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}/{FILE_NAME}"
    finally:
        await runner.cleanup()


async def test_https_reads_match(
    https_url: str,
    certificate: tuple[Path, Path],
    payload: bytes,
    direct_receivers: type[CountingReceiver],
) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    async with (
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=trusted)) as session,
        await HttpSource.open(
            https_url, settings=HttpSettings(chunk_size=256 * 1024), session=session
        ) as source,
    ):
        assert source.size == PAYLOAD_SIZE
        assert await source.read(0, PAYLOAD_SIZE) == payload
        assert await source.read(777, 300_000) == payload[777 : 777 + 300_000]
    assert direct_receivers.used > 0  # the direct path works over TLS too


async def test_tls_from_the_settings(
    https_url: str, certificate: tuple[Path, Path], payload: bytes
) -> None:
    trusted = ssl.create_default_context(cafile=str(certificate[0]))
    async with await HttpSource.open(https_url, settings=HttpSettings(ssl=trusted)) as source:
        assert await source.read(5, 1000) == payload[5:1005]
    async with await HttpSource.open(https_url, settings=HttpSettings(ssl=False)) as source:
        assert await source.read(0, 10) == payload[:10]  # verification off, on request


async def test_untrusted_certificate_is_not_retried(https_url: str) -> None:
    with pytest.raises(FetchError, match="ClientConnectorCertificateError"):
        await HttpSource.open(https_url, settings=HttpSettings(retries=3, backoff_base=1.0))


@pytest.fixture
async def tls_faults(
    payload: bytes, certificate: tuple[Path, Path]
) -> AsyncIterator[tuple[FaultServer, aiohttp.ClientSession]]:
    """The fault server over TLS, and a session that trusts its certificate."""
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    async with (
        FaultServer(payload, ssl_context=server_context) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_context)) as session,
    ):
        yield server, session


@pytest.mark.parametrize(
    "fault",
    [
        Fault("drop", after=300_000, pause=0.05),
        Fault("reset", after=300_000, pause=0.05),
        Fault("short_body", after=1000),
        Fault("stall", after=300_000, seconds=5.0),
        Fault("close_before_headers"),
    ],
    ids=lambda f: f.kind,
)
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
async def test_tls_faults_are_retried(
    tls_faults: tuple[FaultServer, aiohttp.ClientSession],
    payload: bytes,
    fault: Fault,
    direct: bool,
) -> None:
    server, session = tls_faults
    async with await HttpSource.open(
        server.url,
        settings=HttpSettings(
            chunk_size=1 << 20, read_timeout=0.3, backoff_base=0.01, direct_receive=direct
        ),
        session=session,
    ) as source:
        server.push(fault)
        assert await source.read(5, PAYLOAD_SIZE - 5) == payload[5:]
    if fault.kind in ("drop", "stall"):  # resumed after the bytes that arrived
        assert server.ranges[-1] == f"bytes={5 + 300_000}-{5 + (1 << 20) - 1}"


async def test_tls_cancel_releases_connections(
    tls_faults: tuple[FaultServer, aiohttp.ClientSession], payload: bytes
) -> None:
    server, session = tls_faults
    source = await HttpSource.open(
        server.url, settings=HttpSettings(chunk_size=512 * 1024), session=session
    )
    # the first four ranges stall half-way, so the read is mid-body on four connections
    server.push(*[Fault("stall", after=200_000, seconds=5.0)] * 4)
    read = asyncio.create_task(source.read(0, PAYLOAD_SIZE))
    for _ in range(500):
        if server.stalling == 4:
            break
        await asyncio.sleep(0.01)
    read.cancel()
    with pytest.raises(asyncio.CancelledError):
        await read
    connector = session.connector
    assert connector is not None and not connector._acquired
    assert await source.read(1, 2) == payload[1:3]
    await source.aclose()
