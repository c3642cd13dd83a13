"""A server without Range support (``python -m http.server``): one streaming GET of the
whole object into the cache, written crash-safely, then read as a local file."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

import pytest
from aiohttp import web

from pullweights import events
from pullweights.errors import FetchError
from pullweights.events import Event, Phase
from pullweights.gguf import open_gguf
from pullweights.sources import HttpSettings, RemoteSource
from pullweights.sources.progress import ProgressEvent
from tests.servers.faults import Fault, FaultServer
from tests.servers.simple_http import SimpleHttpServer

from .test_remote_revalidate import model_bytes

FAST = HttpSettings(retries=1, backoff_base=0.01, backoff_max=0.02)


async def tensor_bytes(url: str, remote: Path | None, **options: object) -> tuple[str, bytes]:
    """(origin, bytes of tensor ``b``) of one open of ``url``."""
    async with await open_gguf(url, remote_dir=remote, http=FAST, **options) as model:  # type: ignore[arg-type]
        tensor = model.tensor("b")
        source = model.source
        assert isinstance(source, RemoteSource)
        assert source.map(tensor.offset, tensor.nbytes) is not None  # a local file: mapped
        return source.origin, await source.read(tensor.offset, tensor.nbytes)


def leftovers(remote: Path) -> list[str]:
    return sorted(p.name for p in remote.iterdir() if p.name.endswith(".partial"))


async def test_python_http_server(tmp_path: Path) -> None:
    www, remote = tmp_path / "www", tmp_path / "cache" / "remote"
    www.mkdir()
    old = model_bytes(tmp_path, "one", 1)
    (www / "model.gguf").write_bytes(old)
    with SimpleHttpServer(www) as server:
        url = server.url + "model.gguf"
        async with await open_gguf(url, remote_dir=remote, http=FAST) as model:
            source = model.source
            assert isinstance(source, RemoteSource)
            assert source.local_copy is not None and source.local_copy.parent == remote
            assert source.local_copy.read_bytes() == old  # a complete copy in the cache
            assert source.bytes_fetched == len(old)
        assert await tensor_bytes(url, remote) == ("unchanged", old[-128:])
        assert await tensor_bytes(url, remote, offline=True) == ("offline", old[-128:])
        assert leftovers(remote) == []

        new = model_bytes(tmp_path, "two", 2)
        (www / "model.gguf").write_bytes(new)
        os.utime(www / "model.gguf", (1_700_000_000, 1_700_000_000))  # Last-Modified moves
        assert await tensor_bytes(url, remote) == ("changed", new[-128:])


async def test_without_a_cache_the_error_says_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "model.gguf").write_bytes(model_bytes(tmp_path, "one"))
    with SimpleHttpServer(tmp_path) as server, pytest.raises(FetchError) as caught:
        await open_gguf(server.url + "model.gguf", http=FAST)
    message = str(caught.value)
    assert "does not support HTTP range requests" in message
    assert "no cache directory" in message and "cache_dir" in message and "nginx" in message


async def test_the_download_is_one_get_with_progress(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = model_bytes(tmp_path, "one")
    seen: list[Event] = []
    progress: list[ProgressEvent] = []
    async with FaultServer(data, accept_ranges=False) as server:
        with (
            caplog.at_level(logging.INFO, "pullweights.sources.remote"),
            events.subscribed(seen.append),
        ):
            model = await open_gguf(
                server.url, remote_dir=tmp_path, http=FAST, progress=progress.append
            )
            await model.aclose()
    assert len(server.requests) == 1  # the opening GET's whole-object answer is the download
    fetch = [(e.kind, e.name, e.nbytes) for e in seen if e.phase is Phase.FETCH]
    assert fetch == [("begin", server.url, len(data)), ("end", server.url, len(data))]
    assert progress[-1].finished and progress[-1].bytes_done == len(data)
    assert f"{server.url}: downloaded" in caplog.text


@pytest.mark.parametrize("kind", ["drop", "reset"])
async def test_a_failed_download_leaves_nothing(tmp_path: Path, kind: str) -> None:
    data = model_bytes(tmp_path, "one")
    remote = tmp_path / "remote"
    async with FaultServer(data, accept_ranges=False) as server:
        server.push(Fault(kind, after=5000), Fault(kind, after=5000))
        with pytest.raises(FetchError, match="failed after 2 attempts"):
            await open_gguf(server.url, remote_dir=remote, http=FAST)
        assert sorted(p.name for p in remote.iterdir()) == []  # no copy, no partial, no record
        server.push(Fault(kind, after=5000))  # once: the retry downloads it whole
        assert (await tensor_bytes(server.url, remote))[1] == data[-128:]
    assert leftovers(remote) == []


async def test_a_damaged_copy_is_downloaded_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = model_bytes(tmp_path, "one")
    remote = tmp_path / "remote"
    async with FaultServer(data, accept_ranges=False) as server:
        await tensor_bytes(server.url, remote)
        (copy,) = remote.glob("*.data")
        damaged = bytearray(copy.read_bytes())
        damaged[-1] ^= 0xFF  # the last byte of tensor b
        copy.write_bytes(bytes(damaged))
        with caplog.at_level(logging.WARNING):
            assert await tensor_bytes(server.url, remote) == ("fetched", data[-128:])
        assert "is damaged" in caplog.text
        assert copy.read_bytes() == data


CHILD = """
import asyncio, sys
from pullweights.gguf import open_gguf

async def main(url, remote):
    print("opening", flush=True)
    model = await open_gguf(url, remote_dir=remote)
    await model.aclose()
    print("finished", flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_a_download_killed_midway_leaves_no_copy(tmp_path: Path) -> None:
    data = model_bytes(tmp_path, "one")  # ~130 KiB, sent 4 KiB per 50 ms: seconds
    remote = tmp_path / "remote"

    async def slow_whole_object(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Length": str(len(data)),
                "Last-Modified": "Mon, 02 Jan 2006 15:04:05 GMT",
            },
        )
        await response.prepare(request)
        for start in range(0, len(data), 4096):
            await response.write(data[start : start + 4096])
            await asyncio.sleep(0.05)
        return response

    app = web.Application()
    app.router.add_get("/model.gguf", slow_whole_object)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/model.gguf"
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(script), url, str(remote),
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )  # fmt: skip
        assert child.stdout is not None
        assert (await asyncio.wait_for(child.stdout.readline(), 60)).strip() == b"opening"
        for _ in range(600):  # until the partial file is there and growing
            if remote.is_dir() and leftovers(remote):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        await child.wait()
        assert child.returncode == -signal.SIGKILL
        left = sorted(p.name for p in remote.iterdir())
        assert len(left) == 1 and left[0].endswith(".partial")  # no copy, no record
        # the next open downloads it whole and clears what the killed one left
        assert (await tensor_bytes(url, remote))[1] == data[-128:]
        assert leftovers(remote) == []
    finally:
        await runner.cleanup()
