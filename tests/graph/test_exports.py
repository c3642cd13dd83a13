"""The public surface: ``pullweights.__all__`` changes only on purpose."""

from __future__ import annotations

import pullweights

EXPORTS = [
    "ByteSource",
    "CacheError",
    "CompileError",
    "ComputeError",
    "ComputePolicy",
    "ConcatSource",
    "Context",
    "Dim",
    "FetchError",
    "FileSource",
    "FormatError",
    "Graph",
    "GraphBuilder",
    "GraphError",
    "HttpSettings",
    "IntegrityError",
    "MemorySource",
    "Operand",
    "Payload",
    "PullWeightsError",
    "RemoteChangedError",
    "SourceError",
    "Tensor",
    "TensorDescriptor",
    "Transform",
    "UnsupportedError",
    "WeightRef",
    "create_context",
    "raw_weight",
]


def test_exported_names() -> None:
    assert pullweights.__all__ == EXPORTS
    assert sorted(EXPORTS) == EXPORTS


def test_every_export_exists() -> None:
    missing = [name for name in pullweights.__all__ if not hasattr(pullweights, name)]
    assert missing == []
