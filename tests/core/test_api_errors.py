"""Misuse of the public API ends in one pullweights error (never a plain ValueError,
AttributeError, MemoryError or OverflowError, never a numpy warning); errors that were
ValueErrors stay ValueErrors, so existing callers keep working."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import pullweights as pw
from pullweights import (
    ComputeError,
    ConcatSource,
    Dim,
    GraphError,
    MemorySource,
    Payload,
    PullWeightsError,
    SourceError,
    Tensor,
    TensorDescriptor,
    raw_weight,
)
from pullweights.allocation import memory_limit

SOURCE = MemorySource(bytes(1024))
U8 = TensorDescriptor("uint8", [4])


def _builder() -> pw.GraphBuilder:
    return pw.GraphBuilder(pw.create_context(cache_dir=None))


def _graph() -> pw.Graph:
    async def build() -> pw.Graph:
        b = _builder()
        x = b.input("x", TensorDescriptor("float32", [2]))
        graph: pw.Graph = await b.build({"y": b.relu(x)})
        return graph

    return asyncio.run(build())


def _tensor(dtype: str) -> Tensor:
    return Tensor.create(TensorDescriptor(dtype, [1]))


CASES: dict[str, tuple[Callable[[], Any], type[PullWeightsError], str]] = {
    "Dim name not an identifier": (lambda: Dim("1bad"), GraphError, "identifier"),
    "Dim name not a string": (lambda: Dim(3), GraphError, "identifier"),  # type: ignore[arg-type]
    "Dim negative bound": (lambda: Dim("x", -1), GraphError, "0 <= min <= max"),
    "Dim bound not an int": (lambda: Dim("x", "a"), GraphError, "must be an int"),  # type: ignore[arg-type]
    "Dim float bound": (lambda: Dim("x", 1.5, 3), GraphError, "must be an int"),  # type: ignore[arg-type]
    "Dim bound past int64": (lambda: Dim("x", 0, 2**63), GraphError, "2\\*\\*63"),
    "descriptor dtype": (lambda: TensorDescriptor("float33", [1]), GraphError, "unknown data"),
    "descriptor dtype not a string": (
        lambda: TensorDescriptor(1, [1]),  # type: ignore[arg-type]
        GraphError,
        "unknown data",
    ),
    "descriptor negative dim": (lambda: TensorDescriptor("float32", [-1]), GraphError, "-1"),
    "descriptor shape a string": (lambda: TensorDescriptor("float32", "ab"), GraphError, "shape"),
    "descriptor shape None": (
        lambda: TensorDescriptor("float32", None),  # type: ignore[arg-type]
        GraphError,
        "shape",
    ),
    "descriptor of 2**64 elements": (
        lambda: TensorDescriptor("float32", [2**32, 2**32]),
        GraphError,
        "more than fits in int64",
    ),
    "descriptor of 2**64 bytes": (
        lambda: TensorDescriptor("float32", [2**31, 2**31]),
        GraphError,
        "more than fits in int64",
    ),
    "raw_weight huge shape": (
        lambda: raw_weight(SOURCE, 0, "float32", (10**20,)),
        GraphError,
        "2\\*\\*63",
    ),
    "raw_weight not a source": (
        lambda: raw_weight("nope", 0, "float32", (4,)),  # type: ignore[arg-type]
        GraphError,
        "ByteSource",
    ),
    "raw_weight offset a string": (
        lambda: raw_weight(SOURCE, "0", "float32", (4,)),  # type: ignore[arg-type]
        GraphError,
        "offset must be an int",
    ),
    "raw_weight float offset": (
        lambda: raw_weight(SOURCE, 0.5, "float32", (4,)),  # type: ignore[arg-type]
        GraphError,
        "offset must be an int",
    ),
    "raw_weight dtype": (lambda: raw_weight(SOURCE, 0, "f32", (4,)), GraphError, "unknown data"),
    "raw_weight outside the source": (
        lambda: raw_weight(SOURCE, 1020, "float32", (4,)),
        SourceError,
        "outside",
    ),
    "Payload without descriptor": (lambda: Payload(SOURCE, 0, 4), GraphError, "exactly one"),
    "Payload bad transform": (
        lambda: Payload(SOURCE, 0, 4, transform="t"),  # type: ignore[arg-type]
        GraphError,
        "Transform",
    ),
    "Payload bad descriptor": (
        lambda: Payload(SOURCE, 0, 4, raw_descriptor="d"),  # type: ignore[arg-type]
        GraphError,
        "TensorDescriptor",
    ),
    "Payload length mismatch": (
        lambda: Payload(SOURCE, 0, 5, raw_descriptor=U8),
        GraphError,
        "needs 4 bytes",
    ),
    "Payload unknown part": (
        lambda: Payload(SOURCE, 0, 4, raw_descriptor=U8).ref("nope"),
        GraphError,
        "no part",
    ),
    "constant dtype": (lambda: _builder().constant(1.0, dtype="float33"), GraphError, "unknown"),
    "constant ragged": (lambda: _builder().constant([1, [2, 3]]), GraphError, "constant"),
    "constant 1000.5 as int8": (
        lambda: _builder().constant(1000.5, dtype="int8"),
        GraphError,
        "does not convert exactly to int8",
    ),
    "constant NaN as int32": (
        lambda: _builder().constant(np.nan, dtype="int32"),
        GraphError,
        "nan",
    ),
    "constant int past int64": (lambda: _builder().constant(2**70), GraphError, "object"),
    "input weight not a WeightRef": (
        lambda: _builder().input("x", U8, weight="w"),  # type: ignore[arg-type]
        GraphError,
        "WeightRef",
    ),
    "input name not a string": (
        lambda: _builder().input(1, U8),  # type: ignore[arg-type]
        GraphError,
        "must be a string",
    ),
    "compute with a list": (
        lambda: asyncio.run(_graph().compute([1, 2])),  # type: ignore[arg-type]
        ComputeError,
        "mapping",
    ),
    "compute with None": (
        lambda: asyncio.run(_graph().compute(None)),  # type: ignore[arg-type]
        ComputeError,
        "mapping",
    ),
    "compute ragged input": (
        lambda: asyncio.run(_graph().compute({"x": [[1], [2, 3]]})),  # type: ignore[dict-item]
        ComputeError,
        "not an array",
    ),
    "dispatch with a list": (
        lambda: asyncio.run(_graph().dispatch([1])),  # type: ignore[arg-type]
        ComputeError,
        "mapping",
    ),
    "dispatch output not a Tensor": (
        lambda: asyncio.run(
            _graph().dispatch({"x": np.zeros(2, np.float32)}, {"y": "t"})  # type: ignore[dict-item]
        ),
        ComputeError,
        "must be Tensors",
    ),
    "Tensor.create beyond memory": (
        lambda: Tensor.create(TensorDescriptor("float32", [2**45])),
        ComputeError,
        "one allocation may take",
    ),
    "Tensor.create ragged": (lambda: Tensor.create([[1], [2, 3]]), ComputeError, "Tensor.create"),
    "Tensor.create object": (lambda: Tensor.create(object()), ComputeError, "object"),  # type: ignore[arg-type]
    "Tensor of a string": (lambda: Tensor("abc"), ComputeError, "numpy array"),  # type: ignore[arg-type]
    "Tensor.write 1000.5 into int8": (
        lambda: _tensor("int8").write(np.array([1000.5])),
        ComputeError,
        "1000.5 .* does not convert exactly to int8",
    ),
    "Tensor.write 300 into int8": (
        lambda: _tensor("int8").write(np.array([300])),
        ComputeError,
        "300",
    ),
    "Tensor.write NaN into int32": (
        lambda: _tensor("int32").write(np.array([np.nan])),
        ComputeError,
        "nan",
    ),
    "Tensor.write overflow into float16": (
        lambda: _tensor("float16").write(np.array([1e10])),
        ComputeError,
        "float16",
    ),
    "Tensor.write strings": (lambda: _tensor("int8").write(np.array(["a"])), ComputeError, "<U1"),
    "Tensor.write ragged": (
        lambda: _tensor("int8").write([[1], [2, 3]]),  # type: ignore[arg-type]
        ComputeError,
        "Tensor.write",
    ),
    "ConcatSource without parts": (lambda: ConcatSource([]), GraphError, "at least one"),
    "ConcatSource bad part": (lambda: ConcatSource([1]), GraphError, "ByteSource"),  # type: ignore[list-item]
    "MemorySource of a string": (lambda: MemorySource("abc"), GraphError, "bytes-like"),  # type: ignore[arg-type]
    "FileSource of None": (lambda: pw.FileSource(None), SourceError, "not a path"),  # type: ignore[arg-type]
    "FileSource of a directory": (lambda: pw.FileSource("/"), SourceError, "cannot map"),
    "context threads not an int": (
        lambda: pw.create_context(intra_op_threads="x", cache_dir=None),  # type: ignore[arg-type]
        GraphError,
        "intra_op_threads",
    ),
    "context negative budget": (
        lambda: pw.create_context(memory_budget=-1, cache_dir=None),
        GraphError,
        "memory_budget",
    ),
}

VALUE_ERRORS = (GraphError, ComputeError)


@pytest.mark.parametrize("case", sorted(CASES))
def test_misuse_is_one_pullweights_error(case: str) -> None:
    call, error, pattern = CASES[case]
    with pytest.raises(error, match=pattern) as info:
        call()
    assert isinstance(info.value, PullWeightsError)
    if error in VALUE_ERRORS:
        assert isinstance(info.value, ValueError)  # as before: existing callers still catch it


def test_exact_writes_still_work() -> None:
    t = _tensor("int8")
    t.write(np.array([3.0]))
    assert t.read().tolist() == [3]
    f = _tensor("float16")
    f.write(np.array([0.1]))  # rounding a float is not an error
    assert abs(float(f.read()[0]) - 0.1) < 1e-3
    b = _builder()
    assert b.constant([1, 2], dtype="uint8").dtype == "uint8"


def test_memory_limit_is_positive_and_below_int64() -> None:
    assert 0 < memory_limit() < 2**63
