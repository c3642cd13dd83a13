"""llama.cpp split GGUF files open as one model from the first shard's name, locally and
by URL; a missing shard, a wrong count or shards of different models are clear errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import gguf
import pytest

import pullweights as pw
from loaders import SamplingParams, generate, load_model
from pullweights.errors import FormatError, SourceError
from pullweights.gguf import GGUFFile, open_gguf
from pullweights.sources import FileSource, HttpSettings, RemoteSource
from tests.gguf.gguf_files import write_split
from tests.reference import write_tiny_model
from tests.servers.static_aiohttp import AiohttpStaticServer


@pytest.fixture
def split_model(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A tiny qwen2 GGUF (27 tensors) and the same model as 3 shards of <= 10 tensors."""
    whole = write_tiny_model(tmp_path / "whole.gguf", "qwen2", quant="Q8_0")
    shards = write_split(whole, tmp_path / "shards" / "tiny", 10)
    return whole, shards


async def assert_same_model(joined: GGUFFile, whole_path: Path) -> None:
    reference = gguf.GGUFReader(whole_path)
    assert set(joined.tensors) == {t.name for t in reference.tensors}
    for rt in reference.tensors:
        tensor = joined.tensors[rt.name]
        data = await tensor.source.read(tensor.offset, tensor.nbytes)
        assert data == rt.data.tobytes(), rt.name
    async with await open_gguf(whole_path) as whole:
        assert joined.architecture == whole.architecture
        ours = {k: v for k, v in joined.metadata.items() if not k.startswith("split.")}
        assert ours.keys() == whole.metadata.keys()


async def test_local_split_opens_as_one_model(split_model: tuple[Path, list[Path]]) -> None:
    whole, shards = split_model
    async with await open_gguf(shards[0]) as joined:
        assert len(joined.sources) == 3
        assert [s.name for s in joined.sources] == [str(p) for p in shards]
        owners = {t.source.name for t in joined.tensors.values()}
        assert owners == {str(p) for p in shards}  # every shard's tensors, own source each
        await assert_same_model(joined, whole)
        sources = joined.sources
    for source in sources:  # closing the model closed every shard
        assert isinstance(source, FileSource)
        with pytest.raises(SourceError, match="closed"):
            source.map(0, 4)


async def test_split_by_url(split_model: tuple[Path, list[Path]], tmp_path: Path) -> None:
    whole, shards = split_model
    remote = tmp_path / "remote"
    async with AiohttpStaticServer(shards[0].parent) as server:
        url = server.url + shards[0].name
        async with await open_gguf(url, remote_dir=remote, http=HttpSettings(retries=0)) as joined:
            assert [s.name for s in joined.sources] == [server.url + p.name for p in shards]
            assert all(isinstance(s, RemoteSource) for s in joined.sources)
            await assert_same_model(joined, whole)
        # every shard's header is remembered: offline, it opens again with no server
    async with await open_gguf(url, remote_dir=remote, offline=True) as joined:
        assert len(joined.tensors) == 27


async def test_split_model_generates_the_same_text(
    split_model: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    whole, shards = split_model
    params = SamplingParams(max_tokens=6)
    texts = []
    for model, cache in ((whole, None), (shards[0], tmp_path / "cache")):
        context = pw.create_context(cache_dir=cache)
        llm = await load_model(str(model), context=context)
        texts.append("".join([t async for t in generate(llm, "Paris is", params)]))
    assert texts[0] == texts[1] and texts[0]


async def test_missing_shard(split_model: tuple[Path, list[Path]]) -> None:
    _, shards = split_model
    shards[1].unlink()
    with pytest.raises(SourceError, match=r"split GGUF of 3 shards.*tiny-00002-of-00003\.gguf"):
        await open_gguf(shards[0])


async def test_missing_shard_by_url(split_model: tuple[Path, list[Path]]) -> None:
    _, shards = split_model
    shards[2].unlink()
    async with AiohttpStaticServer(shards[0].parent) as server:
        expected = r"shard 3 of 3 of the split GGUF .*tiny-00003-of-00003\.gguf.*HTTP 404"
        with pytest.raises(SourceError, match=expected):
            await open_gguf(server.url + shards[0].name, http=HttpSettings(retries=0))


async def test_wrong_count(split_model: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, shards = split_model
    # The same three files named as four (the fourth a copy of the third).
    four = tmp_path / "four"
    four.mkdir()
    for i, shard in enumerate([*shards, shards[2]], start=1):
        shutil.copy(shard, four / f"m-{i:05d}-of-00004.gguf")
    with pytest.raises(FormatError, match=r"split.count is 3, but the file names say 4"):
        await open_gguf(four / "m-00001-of-00004.gguf")


async def test_shards_of_different_models(
    split_model: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, shards = split_model
    other_whole = write_tiny_model(tmp_path / "other.gguf", "qwen2", quant="Q8_0", n_layers=3)
    other = write_split(other_whole, tmp_path / "other" / "tiny", 10)
    assert len(other) == 4
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for i, shard in enumerate([shards[0], other[1], shards[2]], start=1):
        shutil.copy(shard, mixed / f"m-{i:05d}-of-00003.gguf")
    with pytest.raises(FormatError, match=r"split.count is 4, but the file names say 3"):
        await open_gguf(mixed / "m-00001-of-00003.gguf")
    # same count, different model: the tensor totals disagree
    total = len(gguf.GGUFReader(other_whole).tensors)
    other3 = write_split(other_whole, tmp_path / "other3" / "tiny", -(-total // 3))
    assert len(other3) == 3
    shutil.copy(other3[1], mixed / "m-00002-of-00003.gguf")
    with pytest.raises(FormatError, match=f"split.tensors.count is {total}, shard 1 says 27"):
        await open_gguf(mixed / "m-00001-of-00003.gguf")


async def test_shards_out_of_place(split_model: tuple[Path, list[Path]], tmp_path: Path) -> None:
    _, shards = split_model
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    for i, shard in enumerate([shards[0], shards[2], shards[1]], start=1):
        shutil.copy(shard, swapped / f"m-{i:05d}-of-00003.gguf")
    with pytest.raises(FormatError, match="says it is shard 3, but it is named shard 2 of 3"):
        await open_gguf(swapped / "m-00001-of-00003.gguf")


async def test_a_lone_shard_says_what_to_open(
    split_model: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    _, shards = split_model
    with pytest.raises(FormatError, match="shard 2 of 3 of a split GGUF: open the first shard"):
        await open_gguf(shards[1])
    renamed = tmp_path / "renamed.gguf"
    shutil.copy(shards[0], renamed)
    with pytest.raises(FormatError, match="shard 1 of 3 of a split GGUF, opened alone"):
        await open_gguf(renamed)
