"""What a model string means, decided by name and file system alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullweights.errors import FormatError, SourceError, UnsupportedError
from pullweights.sources import MemorySource
from pullweights.sources.installed import INSTALLED_MODELS
from pullweights.sources.resolve import (
    LocalFile,
    OpenSource,
    PartFiles,
    RemoteFile,
    resolve_model,
    shard_name,
)


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF")
    return path


def test_paths_parts_sources_and_urls(tmp_path: Path) -> None:
    one = touch(tmp_path / "model.gguf")
    assert resolve_model(one).shards == (LocalFile(one),)
    assert resolve_model(str(one)).shards == (LocalFile(one),)
    parts = [touch(tmp_path / f"m.gguf.part{i}") for i in range(3)]
    assert resolve_model([str(p) for p in parts]).shards == (PartFiles(tuple(parts)),)
    source = MemorySource(b"GGUF")
    assert resolve_model(source).shards == (OpenSource(source),)
    url = "http://127.0.0.1:1/a/model.gguf?sig=1"
    assert resolve_model(url).shards == (RemoteFile(url),)
    assert resolve_model(url).name == url
    # a missing file is the reader's to report (it says "cannot open")
    assert resolve_model(tmp_path / "missing.gguf").shards == (
        LocalFile(tmp_path / "missing.gguf"),
    )


def test_installed_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name = next(iter(INSTALLED_MODELS))
    parts = [touch(tmp_path / f"part{i}.bin") for i in range(2)]
    monkeypatch.setattr(
        "pullweights.sources.resolve.installed_model_parts", lambda n: parts if n == name else []
    )
    resolved = resolve_model(name)
    assert resolved.installed == name and resolved.name == name
    assert resolved.shards == (PartFiles(tuple(parts)),)
    monkeypatch.chdir(tmp_path)
    touch(tmp_path / name)  # a file of that name wins over the installed model
    assert resolve_model(name).shards == (LocalFile(Path(name)),)


def test_split_shards_by_name(tmp_path: Path) -> None:
    shards = [touch(tmp_path / shard_name("qwen", n, 3)) for n in (1, 2, 3)]
    assert shards[0].name == "qwen-00001-of-00003.gguf"
    resolved = resolve_model(shards[0])
    assert resolved.is_split and resolved.shards == tuple(LocalFile(p) for p in shards)
    # a later shard's name is that file only (the reader says to open the first)
    assert resolve_model(shards[1]).shards == (LocalFile(shards[1]),)
    shards[2].unlink()
    with pytest.raises(SourceError, match=r"3 shards, but 1 is missing.*qwen-00003-of-00003"):
        resolve_model(shards[0])


def test_split_shards_by_url() -> None:
    url = "https://example.test/m/qwen-00001-of-00002.gguf?download=1"
    assert [s.url for s in resolve_model(url).shards] == [  # type: ignore[union-attr]
        url,
        "https://example.test/m/qwen-00002-of-00002.gguf?download=1",
    ]
    single = "https://example.test/m/qwen-00001-of-00001.gguf"
    assert resolve_model(single).shards == (RemoteFile(single),)


def test_a_directory_is_refused_with_what_it_holds(tmp_path: Path) -> None:
    touch(tmp_path / "a.gguf")
    with pytest.raises(
        SourceError, match=r"is a directory; give one of the GGUF files in it: .*a\.gguf"
    ):
        resolve_model(tmp_path)
    with pytest.raises(SourceError, match="is a directory"):
        resolve_model([tmp_path / "a.gguf", tmp_path])


def test_parts_out_of_order_by_name_name_the_fix(tmp_path: Path) -> None:
    parts = [touch(tmp_path / f"model.gguf.part{i:02d}") for i in (1, 3, 2, 4)]
    with pytest.raises(FormatError) as caught:
        resolve_model(parts)
    message = str(caught.value)
    assert "out of order" in message and "[1, 3, 2, 4]" in message
    ordered = " ".join(str(tmp_path / f"model.gguf.part{i:02d}") for i in (1, 2, 3, 4))
    assert message.endswith(ordered)
    # names that do not number the parts alike are left to the header checks
    other = [touch(tmp_path / "b1.bin"), touch(tmp_path / "a2.bin"), touch(tmp_path / "a1.bin")]
    assert resolve_model(other).shards == (PartFiles(tuple(other)),)


def test_no_model_and_remote_parts() -> None:
    with pytest.raises(UnsupportedError, match="empty"):
        resolve_model([])
    with pytest.raises(UnsupportedError, match="one URL"):
        resolve_model(["a.gguf", "http://127.0.0.1:1/b.gguf"])
