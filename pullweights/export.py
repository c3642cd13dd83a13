"""Export the graph pullweights builds for a GGUF LLM as a standard ONNX model.

The decoder graph is built exactly as :func:`loaders.load_model` builds it (one stage),
its weights are pulled and transformed as for a load (quant blocks repacked for
``MatMulNBits``), and every weight — the initializers onnxruntime prepacks and the
weights pullweights binds as inputs at run time — becomes an ordinary initializer:
embedded in the .onnx, or as ONNX external data in one file next to it
(``OUT.onnx.data``, tensors of 1 KiB or more, 64-byte aligned), written under temporary
names and renamed into place at the end. Plain onnxruntime loads
the result; it needs the ``com.microsoft`` contrib ops (``MatMulNBits``,
``GroupQueryAttention``...).

The model's inputs are those of :class:`loaders.blocks.DecoderInputs` but the RoPE
tables, which become initializers for ``context_length`` positions: ``input_ids``
``int64[tokens]``, ``logits_index`` ``int64[n]`` (positions whose logits are wanted),
``seqlens_k`` ``int32[1]`` (total length - 1), ``total_sequence_length`` ``int32[]``,
and ``past_key.L`` / ``past_value.L`` ``float32[1, kv_heads, cache_length, head_dim]``
per layer (``cache_length`` at most ``context_length``); outputs ``logits`` and
``present_key.L`` / ``present_value.L``.

Example::

    await export_model("gemma3-270m", "gemma3.onnx", external_data=True)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import IO

import numpy as np
import onnx
from onnx import TensorProto

from pullweights import GraphBuilder
from pullweights.errors import GraphError, PullWeightsError, UnsupportedError
from pullweights.gguf.reader import GGUFFile, ModelSpec, open_gguf
from pullweights.graph.lowering import LoweredStage, lower
from pullweights.runtime import WeightPuller, create_context

__all__ = ["EMBED_LIMIT", "export_model"]

#: The protobuf limit: an .onnx with embedded weights must stay below it.
EMBED_LIMIT = 2**31 - 2**24
#: Tensors smaller than this stay inside the .onnx with ``external_data``.
EXTERNAL_THRESHOLD = 1024
_ALIGN = 64


async def _lowered(
    gguf: GGUFFile, context_length: int | None, accuracy_level: int | None
) -> tuple[LoweredStage, dict[str, np.ndarray]]:
    """The decoder graph as ``loaders.build_model`` builds it, in one stage, and the
    arrays it binds at run time besides weights (the RoPE tables of this context).

    This repeats the graph-building part of ``loaders.model.build_model`` (which also
    compiles): a ``loaders`` function returning the builder's outputs would remove it.
    """
    from loaders import DEFAULT_CONTEXT, architecture_for
    from loaders.blocks import DecoderInputs
    from loaders.model import _freq_factors
    from loaders.weights import WeightMap

    architecture = architecture_for(gguf.architecture)
    config = architecture.config(gguf.metadata, gguf.tensor("token_embd.weight").shape[0])
    if "rope_freqs.weight" in gguf.tensors:
        config = replace(config, rope_freq_factors=await _freq_factors(gguf, config))
    length = min(context_length or DEFAULT_CONTEXT, config.train_context)
    if length < 1:
        raise GraphError(f"context_length must be >= 1, got {context_length}")
    builder = GraphBuilder(create_context(cache_dir=None))
    weights = WeightMap(builder, gguf, accuracy_level=accuracy_level)
    io = DecoderInputs.declare(builder, config, length)
    logits = architecture.build(builder, weights, io)
    (stage,) = lower(builder, {"logits": logits, **io.presents}, stages=1).stages
    return stage, dict(io.tables)


def _tensor(name: str, array: np.ndarray, data_type: int) -> TensorProto:
    tensor = TensorProto()
    tensor.name = name
    tensor.data_type = data_type
    tensor.dims.extend(array.shape)
    return tensor


def _weights(
    stage: LoweredStage, loaded: Mapping[str, np.ndarray], tables: Mapping[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, int]]:
    """Every weight, large constant and run-time table of the stage as (array, ONNX data
    type), by the name the graph reads it under."""
    graph = stage.model.graph
    types = {t.name: t.data_type for t in graph.initializer}
    types.update({i.name: i.type.tensor_type.elem_type for i in graph.input})
    out: dict[str, tuple[np.ndarray, int]] = {}
    for name, array in stage.initializer_arrays({**loaded, **stage.large_constants}).items():
        out[name] = (array, types[name])
    for name in stage.bound_weights:
        out[name] = (loaded[name], types[name])
    for name, array in {**stage.bound_constants, **tables}.items():
        if name in types:
            out[name] = (array, types[name])
    return out


def _fill(
    stage: LoweredStage, weights: Mapping[str, tuple[np.ndarray, int]], data: IO[bytes] | None,
    data_name: str,
) -> onnx.ModelProto:  # fmt: skip
    """The stage's model with every weight as an initializer (bytes of the large ones
    written to ``data``, named ``data_name`` in the model, when given)."""
    model = stage.model
    graph = model.graph
    keep = [t for t in graph.initializer if t.name not in weights]
    inputs = [i for i in graph.input if i.name not in weights]
    del graph.initializer[:]
    del graph.input[:]
    graph.input.extend(inputs)
    graph.initializer.extend(keep)
    offset = 0
    for name, (array, data_type) in weights.items():
        tensor = _tensor(name, array, data_type)
        contiguous = np.ascontiguousarray(array)
        if data is not None and contiguous.nbytes >= EXTERNAL_THRESHOLD:
            pad = -offset % _ALIGN
            data.write(b"\0" * pad)
            offset += pad
            data.write(memoryview(contiguous.reshape(-1).view(np.uint8)))
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (
                ("location", data_name),
                ("offset", str(offset)),
                ("length", str(contiguous.nbytes)),
            ):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += contiguous.nbytes
        else:
            tensor.raw_data = contiguous.tobytes()
        graph.initializer.append(tensor)
    return model


def _write(
    stage: LoweredStage, weights: Mapping[str, tuple[np.ndarray, int]], out: Path, external: bool
) -> list[Path]:
    """Write the model (and its data file) under temporary names, then rename them into
    place: a failed export leaves no partial file behind."""
    total = sum(a.nbytes for a, _ in weights.values())
    if not external and total > EMBED_LIMIT:
        raise UnsupportedError(
            f"export: {total / 2**30:.1f} GiB of weights do not fit inside one .onnx "
            "(protobuf limit 2 GiB); use --external-data"
        )
    data_path = out.with_name(out.name + ".data")
    final = [out, data_path] if external else [out]
    staged = [p.with_name(p.name + ".partial") for p in final]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if external:
            with open(staged[1], "wb") as data:
                model = _fill(stage, weights, data, data_path.name)
        else:
            model = _fill(stage, weights, None, "")
        onnx.save_model(model, str(staged[0]))
        for tmp, path in zip(staged[::-1], final[::-1], strict=True):  # the data first
            tmp.replace(path)
    except OSError as exc:
        raise PullWeightsError(f"export: cannot write {out}: {exc.strerror or exc}") from exc
    finally:
        for tmp in staged:
            with contextlib.suppress(OSError):
                tmp.unlink()
    return final


async def export_model(
    model: ModelSpec,
    out: str | os.PathLike[str],
    *,
    external_data: bool = False,
    context_length: int | None = None,
    accuracy_level: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Write ``model``'s decoder graph with its transformed weights as an ONNX model.

    Args:
        model: a GGUF path, part paths, an installed model name or a URL.
        out: the .onnx file to write.
        external_data: weights in ``OUT.data`` instead of inside the .onnx.
        context_length: positions of the KV cache inputs (default as ``load_model``).
        accuracy_level: ``MatMulNBits`` accuracy level (default 4).
        cache_dir: a weight cache to take transformed weights from and put them in
            (default: none; transformed weights are held in memory while writing).

    Returns:
        The files written (the .onnx, and the data file with ``external_data``).

    Raises:
        UnsupportedError: embedded weights over the 2 GiB protobuf limit, or a model
            pullweights does not handle; SourceError, FormatError: see ``load_model``;
        PullWeightsError: the output cannot be written.
    """
    context = create_context(cache_dir=cache_dir)
    async with await open_gguf(model) as gguf:
        stage, tables = await _lowered(gguf, context_length, accuracy_level)
        puller = WeightPuller(context.cache)
        try:
            loaded = await puller.pull({**stage.initializer_weights, **stage.bound_weights})
        finally:
            await puller.aclose()
        stage.model.doc_string = (
            f"pullweights export of a {gguf.architecture} GGUF model: inputs input_ids, "
            "logits_index, seqlens_k, total_sequence_length, past_key.L/past_value.L; "
            "outputs logits, present_key.L/present_value.L"
        )
        return _write(stage, _weights(stage, loaded, tables), Path(out), external_data)
