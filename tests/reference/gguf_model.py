"""Read a GGUF file into metadata plus dequantized float32 tensors, with gguf-py only.

This is the reference's own reader: ``gguf.GGUFReader`` for the layout and
``gguf.quants.dequantize`` for every tensor type, never pullweights code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF model held in memory, every tensor dequantized to float32.

    ``tensors`` use numpy (PyTorch) layout: GGUF dims reversed, so a matmul weight is
    ``(out_features, in_features)``. ``tensor_types`` keeps each tensor's GGML type name.
    """

    path: Path
    arch: str
    metadata: Mapping[str, Any]
    tensors: Mapping[str, F32]
    tensor_types: Mapping[str, str]

    def meta(self, key: str, default: Any = None) -> Any:
        """Metadata value for ``{arch}.{key}``, or ``default`` when the key is absent."""
        return self.metadata.get(f"{self.arch}.{key}", default)

    def require(self, key: str) -> Any:
        """Metadata value for ``{arch}.{key}``; ``KeyError`` naming the file when absent."""
        full = f"{self.arch}.{key}"
        if full not in self.metadata:
            raise KeyError(f"{self.path}: metadata key {full!r} is missing")
        return self.metadata[full]

    def tensor(self, name: str) -> F32:
        """The dequantized tensor ``name``; ``KeyError`` naming the file when absent."""
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: tensor {name!r} is missing") from None

    def optional(self, name: str) -> F32 | None:
        """The dequantized tensor ``name``, or None when the file does not have it."""
        return self.tensors.get(name)


def load_gguf(path: str | Path) -> GGUFModel:
    """Parse ``path`` and dequantize all of its tensors to float32 copies."""
    path = Path(path)
    reader = gguf.GGUFReader(path)
    metadata: dict[str, Any] = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        metadata[key] = field.contents()
    tensors: dict[str, F32] = {}
    types: dict[str, str] = {}
    for t in reader.tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = np.array(values, dtype=np.float32).reshape(shape)
        types[t.name] = t.tensor_type.name
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise KeyError(f"{path}: general.architecture is missing")
    return GGUFModel(path, arch, metadata, tensors, types)
