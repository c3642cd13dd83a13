"""Payloads for cache tests: raw arrays in memory and a multi-part transform."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from pullweights.cache import WeightCache
from pullweights.descriptor import TensorDescriptor
from pullweights.dtypes import from_numpy
from pullweights.sources.memory import MemorySource
from pullweights.weights import Payload, Transform


def raw_payload(data: np.ndarray, label: str = "") -> Payload:
    """A raw payload whose source is ``data``'s bytes (with 8 bytes of padding before)."""
    blob = b"\x00" * 8 + np.ascontiguousarray(data).tobytes()
    desc = TensorDescriptor(from_numpy(data.dtype), data.shape)
    return Payload(
        MemorySource(blob, name=label or "mem"), 8, data.nbytes, raw_descriptor=desc, label=label
    )


class NibbleSplit(Transform):
    """Splits ``n`` bytes into low and high nibbles, their 0-d sum and an empty part."""

    name = "nibble-split"
    version = 1

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        return {
            "lo": TensorDescriptor("uint8", (self.n // 4, 4)),
            "hi": TensorDescriptor("uint8", (self.n // 4, 4)),
            "total": TensorDescriptor("int64", ()),
            "none": TensorDescriptor("float32", (0, 3)),
        }

    def apply(self, raw: npt.NDArray[np.uint8]) -> dict[str, np.ndarray]:
        return {
            "lo": (raw & 0x0F).reshape(-1, 4),
            "hi": (raw >> 4).reshape(-1, 4),
            "total": np.asarray(raw.sum(dtype=np.int64)),
            "none": np.zeros((0, 3), np.float32),
        }


def split_payload(n: int = 64, seed: int = 0) -> tuple[Payload, npt.NDArray[np.uint8]]:
    raw = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    return Payload(MemorySource(raw.tobytes()), 0, n, transform=NibbleSplit(n), label="split"), raw


def leftovers(root: Path) -> list[str]:
    """Files and directories left in the cache's staging and trash areas."""
    found: list[str] = []
    for area in ("staging", "trash"):
        for dirpath, dirnames, filenames in os.walk(root / area):
            found += [os.path.join(dirpath, n) for n in dirnames + filenames]
    return found


def entry_dirs(root: Path) -> list[Path]:
    """Directories under ``entries/<kk>/`` (committed or not)."""
    return sorted(p for p in (root / "entries").glob("*/*") if p.is_dir())


def entry_path(cache: WeightCache, payload: Payload) -> Path:
    """Directory of ``payload``'s weight entry (named by its content key)."""
    key = cache.content_key(payload, local=True)
    assert key is not None
    return cache.root / "entries" / key[:2] / key
