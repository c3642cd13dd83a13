"""llama.cpp split GGUF files (``gguf-split``) checked and joined into one model.

A split model is several complete GGUF files, ``<prefix>-00001-of-0000N.gguf`` onwards.
Every shard has the metadata keys ``split.no`` (0-based shard number), ``split.count``
(N) and ``split.tensors.count`` (tensors in all shards together) and a subset of the
tensors; the first shard alone carries the model's metadata (it may hold no tensors at
all, with ``--no-tensor-first-split``). The joined model has the first shard's metadata
and every shard's tensors, each tensor keeping its own source and absolute offsets, so
nothing is copied and each shard is read (or fetched) where it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from gguf.constants import Keys

from pullweights.errors import FormatError

if TYPE_CHECKING:
    from pullweights.gguf.reader import GGUFFile

__all__ = ["SplitInfo", "check_not_a_lone_shard", "join_shards", "split_info"]

SPLIT_NO = Keys.Split.LLM_KV_SPLIT_NO
SPLIT_COUNT = Keys.Split.LLM_KV_SPLIT_COUNT
SPLIT_TENSORS = Keys.Split.LLM_KV_SPLIT_TENSORS_COUNT


@dataclass(frozen=True, slots=True)
class SplitInfo:
    """The split keys of one shard."""

    #: ``split.no``: the shard's number, from 0.
    number: int
    #: ``split.count``: shards in the model.
    count: int
    #: ``split.tensors.count``: tensors in all shards together.
    tensors: int


def split_info(gguf: GGUFFile) -> SplitInfo | None:
    """The shard's split keys, or ``None`` when it has none (a plain GGUF file).

    Raises:
        FormatError: some split keys but not all, or values that are not in range.
    """
    keys = (SPLIT_NO, SPLIT_COUNT, SPLIT_TENSORS)
    present = [key for key in keys if key in gguf.metadata]
    if not present:
        return None
    name = gguf.source.name
    if len(present) != len(keys):
        missing = ", ".join(k for k in keys if k not in present)
        raise FormatError(f"{name}: a split GGUF shard without {missing}")
    values = []
    for key in keys:
        value = gguf.metadata[key]
        at = gguf.value_offsets.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise FormatError(f"{name}: {key} at byte {at}: {value!r} is not a count")
        values.append(value)
    number, count, tensors = values
    if count < 1 or number >= count:
        raise FormatError(f"{name}: {SPLIT_NO} is {number} of {SPLIT_COUNT} {count}")
    return SplitInfo(number, count, tensors)


def check_not_a_lone_shard(gguf: GGUFFile) -> None:
    """Refuse one shard of a split GGUF opened as if it were the whole model.

    Raises:
        FormatError: saying which file to open instead.
    """
    info = split_info(gguf)
    if info is None or info.count == 1:
        return
    name = gguf.source.name
    if info.number == 0:
        raise FormatError(
            f"{name}: this is shard 1 of {info.count} of a split GGUF, opened alone (its name "
            f"does not say so): name the shards <prefix>-00001-of-{info.count:05d}.gguf ... "
            f"<prefix>-{info.count:05d}-of-{info.count:05d}.gguf and open the first"
        )
    raise FormatError(
        f"{name}: this is shard {info.number + 1} of {info.count} of a split GGUF: open the "
        f"first shard (<prefix>-00001-of-{info.count:05d}.gguf), which finds the others"
    )


def join_shards(shards: list[GGUFFile]) -> GGUFFile:
    """Check that ``shards`` (in order) are every shard of one split model; join them
    into the first, which gains the others' tensors and sources.

    Raises:
        FormatError: a shard that is not one, a wrong ``split.count`` or ``split.no``,
            or shards of different models (tensor totals, architectures, or a tensor name
            in two shards).
    """
    first = shards[0]
    expected = len(shards)
    infos: list[SplitInfo] = []
    for index, shard in enumerate(shards):
        name = shard.source.name
        info = split_info(shard)
        if info is None:
            raise FormatError(
                f"{name}: no {SPLIT_COUNT} key: not a shard of a split GGUF, although it is "
                f"named as shard {index + 1} of {expected}"
            )
        if info.count != expected:
            raise FormatError(
                f"{name}: {SPLIT_COUNT} is {info.count}, but the file names say {expected} "
                "shards: the shards are of different splits"
            )
        if info.number != index:
            raise FormatError(
                f"{name}: {SPLIT_NO} says it is shard {info.number + 1}, but it is named "
                f"shard {index + 1} of {expected}"
            )
        if infos and info.tensors != infos[0].tensors:
            raise FormatError(
                f"{name}: {SPLIT_TENSORS} is {info.tensors}, shard 1 says "
                f"{infos[0].tensors}: the shards are of different models"
            )
        infos.append(info)
    arch_key = Keys.General.ARCHITECTURE
    arch = first.metadata.get(arch_key)
    owner: dict[str, str] = {t: first.source.name for t in first.tensors}
    for shard in shards[1:]:
        other_arch = shard.metadata.get(arch_key)
        if other_arch is not None and other_arch != arch:
            raise FormatError(
                f"{shard.source.name}: {arch_key} is {other_arch!r}, shard 1 says {arch!r}: the "
                "shards are of different models"
            )
        for tensor in shard.tensors:
            if tensor in owner:
                raise FormatError(
                    f"{shard.source.name}: tensor {tensor!r} is also in {owner[tensor]}: the "
                    "shards are of different models"
                )
            owner[tensor] = shard.source.name
    if len(owner) != infos[0].tensors:
        raise FormatError(
            f"{first.source.name}: the {expected} shards hold {len(owner)} tensors, "
            f"{SPLIT_TENSORS} says {infos[0].tensors}: a shard is of another model or damaged"
        )
    first.add_shards(shards[1:])
    return first
