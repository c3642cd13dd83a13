"""Remembered URLs: revalidated cheaply, offline on request, refreshed on request; objects
without a validator checked by the digest of their header; damaged records never trusted."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import gguf
import numpy as np
import pytest

from pullweights.errors import RemoteChangedError, SourceError, UnsupportedError
from pullweights.gguf import open_gguf
from pullweights.sources import HttpSettings, RemoteSource
from pullweights.sources.remote_record import RecordStore
from tests.servers.faults import Fault, FaultServer
from tests.servers.nginx import NginxServer

FAST = HttpSettings(retries=1, backoff_base=0.01, backoff_max=0.02)


def model_bytes(tmp_path: Path, name: str, seed: int = 0) -> bytes:
    """A small GGUF: ``general.name`` = ``name`` and two F32 tensors from ``seed``; the
    last, ``b``, lies past the parser's first 64 KiB window."""
    path = tmp_path / f"{name}-{seed}.gguf"
    writer = gguf.GGUFWriter(str(path), "test")
    writer.add_name(name)
    rng = np.random.default_rng(seed)
    writer.add_tensor("a", rng.standard_normal((128, 256)).astype(np.float32))
    writer.add_tensor("b", rng.standard_normal((32,)).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.read_bytes()


async def opened(url: str, remote: Path, **options: object) -> tuple[str, str, str, bytes]:
    """(origin, identity, general.name, bytes of tensor b) of one open."""
    async with await open_gguf(url, remote_dir=remote, http=FAST, **options) as model:  # type: ignore[arg-type]
        tensor = model.tensor("b")
        data = await tensor.source.read(tensor.offset, tensor.nbytes)
        source = model.source
        assert isinstance(source, RemoteSource)
        return source.origin, source.identity, str(model.get("general.name")), data


def ranges_since(server: FaultServer, seen: int) -> list[str | None]:
    return server.ranges[seen:]


async def test_unchanged_object_costs_one_byte(tmp_path: Path) -> None:
    async with FaultServer(model_bytes(tmp_path, "one")) as server:
        remote = tmp_path / "remote"
        first = await opened(server.url, remote)
        seen = len(server.requests)
        again = await opened(server.url, remote)
        assert again[0] == "unchanged" and again[1:] == first[1:]
        # the probe, then the tensor (not in a weight cache here); no header reads
        assert ranges_since(server, seen)[0] == "bytes=0-0"
        assert len(server.requests) - seen == 2


async def test_changed_etag_drops_the_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old, new = model_bytes(tmp_path, "one", 1), model_bytes(tmp_path, "two", 2)
    async with FaultServer(old) as server:
        remote = tmp_path / "remote"
        first = await opened(server.url, remote)
        server.change(new, '"v2"')
        second = await opened(server.url, remote)
    assert second[0] == "changed" and "its validator is" in caplog.text
    assert second[1] != first[1]  # new identity: weights cached for "one" never match
    assert second[2] == "two" and first[2] == "one"
    assert second[3] == new[-32 * 4 :] and first[3] == old[-32 * 4 :]


@pytest.mark.parametrize("same_size", [True, False], ids=["same-size", "other-size"])
async def test_object_without_validator_is_checked_by_header_digest(
    tmp_path: Path, same_size: bool
) -> None:
    old = model_bytes(tmp_path, "one", 1)
    new = model_bytes(tmp_path, "two" if same_size else "a much longer name " * 4, 2)
    assert (len(old) == len(new)) == same_size
    async with FaultServer(old, etag=None, last_modified=None) as server:
        remote = tmp_path / "remote"
        first = await opened(server.url, remote)
        assert "|no-validator|" in first[1] and "|head-sha256:" in first[1]
        seen = len(server.requests)
        assert (await opened(server.url, remote))[0] == "unchanged"
        # the probe, the header range again (no validator to compare), the tensor
        head = RecordStore(remote).load(server.url)
        assert head is not None
        assert ranges_since(server, seen)[:2] == ["bytes=0-0", f"bytes=0-{head[0].head_length - 1}"]
        server.change(new, None)
        second = await opened(server.url, remote)
    assert second[0] == "changed"
    assert second[1] != first[1] and second[2] != "one"
    assert second[3] == new[-32 * 4 :]


async def test_offline_never_touches_the_network(tmp_path: Path) -> None:
    async with FaultServer(model_bytes(tmp_path, "one")) as server:
        remote = tmp_path / "remote"
        with pytest.raises(SourceError, match=r"not available offline.*pullweights pull"):
            await opened(server.url, remote, offline=True)
        assert server.requests == []
        source = await RemoteSource.open(server.url, remote, settings=FAST)
        await source.aclose()  # opened, but its header never parsed: not remembered
        first = await opened(server.url, remote)
        seen = len(server.requests)
        async with await open_gguf(server.url, remote_dir=remote, offline=True) as model:
            assert model.get("general.name") == "one"
            tensor = model.tensor("b")
            with pytest.raises(SourceError, match="not in the cache and the load is offline"):
                await tensor.source.read(tensor.offset, tensor.nbytes)
        assert len(server.requests) == seen
        with pytest.raises(UnsupportedError, match="exclude"):
            await opened(server.url, remote, offline=True, refresh=True)
    assert first[0] == "fetched"


async def test_refresh_fetches_the_header_again(tmp_path: Path) -> None:
    async with FaultServer(model_bytes(tmp_path, "one")) as server:
        remote = tmp_path / "remote"
        first = await opened(server.url, remote)
        seen = len(server.requests)
        refreshed = await opened(server.url, remote, refresh=True)
        assert refreshed[0] == "refreshed" and refreshed[1:] == first[1:]
        assert "bytes=0-65535" in ranges_since(server, seen)  # the header window again


async def test_unreachable_server_uses_the_record_and_refuses_a_changed_object(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with FaultServer(model_bytes(tmp_path, "one", 1)) as server:
        remote = tmp_path / "remote"
        await opened(server.url, remote)
        server.push(Fault("status", status=503), Fault("status", status=503))
        with caplog.at_level(logging.WARNING):
            model = await open_gguf(server.url, remote_dir=remote, http=FAST)
        assert "cannot check whether it changed" in caplog.text
        assert model.source.origin == "unverified"  # type: ignore[attr-defined]
        server.change(model_bytes(tmp_path, "two", 2), '"v2"')
        tensor = model.tensor("a")
        with pytest.raises(RemoteChangedError, match="changed since it was cached"):
            await tensor.source.read(tensor.offset, tensor.nbytes)
        await model.aclose()


def _damage_head(store: RecordStore, url: str) -> None:
    path = store.head_path(url)
    data = bytearray(path.read_bytes())
    data[30] ^= 0x01  # one bit of the first metadata entry
    path.write_bytes(bytes(data))


def _truncate_head(store: RecordStore, url: str) -> None:
    path = store.head_path(url)
    path.write_bytes(path.read_bytes()[:-100])


def _garbage_record(store: RecordStore, url: str) -> None:
    store.record_path(url).write_bytes(b'{"version": 2, "url": ')


def _wrong_type(store: RecordStore, url: str) -> None:
    path = store.record_path(url)
    doc = json.loads(path.read_text())
    doc["size"] = str(doc["size"])
    path.write_text(json.dumps(doc))


def _not_an_object(store: RecordStore, url: str) -> None:
    store.record_path(url).write_text("[1, 2, 3]")


def _missing_head(store: RecordStore, url: str) -> None:
    store.head_path(url).unlink()


@pytest.mark.parametrize(
    "damage",
    [_damage_head, _truncate_head, _garbage_record, _wrong_type, _not_an_object, _missing_head],
    ids=lambda f: f.__name__.strip("_"),
)
async def test_a_damaged_record_is_never_trusted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: object
) -> None:
    async with FaultServer(model_bytes(tmp_path, "one")) as server:
        remote = tmp_path / "remote"
        first = await opened(server.url, remote)
        store = RecordStore(remote)
        damage(store, server.url)  # type: ignore[operator]
        with caplog.at_level(logging.WARNING):
            again = await opened(server.url, remote)
        assert "is damaged" in caplog.text and "fetched again" in caplog.text
        assert again == ("fetched", *first[1:])  # the header came from the server again
        # and the fresh record is whole again
        assert (await opened(server.url, remote))[0] == "unchanged"
        # offline, a damaged record is an error, never a wrong header
        damage(store, server.url)  # type: ignore[operator]
        with pytest.raises(SourceError, match="not available offline"):
            await opened(server.url, remote, offline=True)


@pytest.mark.nginx
async def test_a_file_changed_on_nginx_is_fetched_again(
    nginx_server: NginxServer, tmp_path: Path
) -> None:
    path = Path(nginx_server.root) / "revalidated.gguf"
    remote = tmp_path / "remote"
    url = nginx_server.url + path.name
    path.write_bytes(model_bytes(tmp_path, "one", 1))
    try:
        first = await opened(url, remote)
        assert (await opened(url, remote))[0] == "unchanged"
        path.write_bytes(model_bytes(tmp_path, "two", 2))  # same size: the ETag is mtime-size
        os.utime(path, (1_700_000_000, 1_700_000_000))
        second = await opened(url, remote)
    finally:
        path.unlink()
    assert first[0] == "fetched" and first[2] == "one"
    assert second[0] == "changed" and second[2] == "two"


async def test_an_unwritable_record_directory_only_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a regular file where the record directory should be")
    async with FaultServer(model_bytes(tmp_path, "one")) as server:
        with caplog.at_level(logging.WARNING):
            origin, _, name, _ = await opened(server.url, blocker / "remote")
            again = await opened(server.url, blocker / "remote")
    assert (origin, name, again[0]) == ("fetched", "one", "fetched")
    assert "cannot record the header" in caplog.text and "not remembered" in caplog.text
    assert "damaged" not in caplog.text
