"""A compiled graph: an onnxruntime session plus the weights bound to it.

``compile_graph`` pulls the weights and creates the session off the event loop. Weights
that onnxruntime must prepack are pulled first (the session needs them); all other weights
are pulled while the session compiles. With a cache, the session is saved and a later
compile of the same graph maps it, pulling only the bound weights
(:mod:`~pullweights.graph.session_cache`). ``compute`` checks every input against its
descriptor, symbolic dimension bounds included, and runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pullweights.context import Context
from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.errors import CacheError, CompileError, ComputeError
from pullweights.graph.lowering import PLACEHOLDER, LoweredGraph
from pullweights.graph.session_cache import (
    MODEL,
    SessionSaver,
    saved_session_store,
    session_key,
)
from pullweights.loader import ProgressCallback, WeightLoader
from pullweights.tensor import Tensor

__all__ = ["Graph", "compile_graph"]

log = logging.getLogger("pullweights.graph")


def _explain(exc: Exception, origins: Mapping[str, str]) -> str:
    """onnxruntime's message, with node names mapped back to the builder calls."""
    text = str(exc)
    found = [origins[n] for n in sorted(set(re.findall(r"[A-Za-z_]+:\d+", text))) if n in origins]
    return text + ("" if not found else "\n  from: " + "\n  from: ".join(found))


async def compile_graph(
    context: Context,
    lowered: LoweredGraph,
    *,
    progress: ProgressCallback | None = None,
    on_session_started: Callable[[], object] | None = None,
) -> Graph:
    """Pull weights and create the onnxruntime session for ``lowered``; cancellable.

    With a weight cache, the session is saved there and later compiles of the same graph
    map it (see :mod:`~pullweights.graph.session_cache`). Cancelling returns at once; a
    session creation already running in its worker thread finishes there and is dropped.

    ``on_session_started`` is called (on the event loop, possibly more than once) when the
    session is being created in its worker thread and the bound weights are pulled: from
    then on compiling needs almost no Python, so GIL-heavy work started there (a
    tokenizer build) no longer delays it.
    """
    loader = WeightLoader(context.cache, progress=progress)  # type: ignore[arg-type]
    store = saved_session_store(context, lowered)
    saver: SessionSaver | None = None
    if store is not None:
        key = await asyncio.to_thread(session_key, context, lowered)
        directory = await asyncio.to_thread(store.open_session, key)
        if directory is not None:
            graph = await _compile_saved(
                context, lowered, loader, directory / MODEL, on_session_started
            )
            if graph is not None:
                store.mark_in_use(key, graph.session)
                return graph
            try:
                store.remove(key)
            except CacheError as exc:
                log.warning("cannot remove the unusable saved session %s: %s", key, exc)
        saver = SessionSaver(store, key)
    try:
        graph = await _compile_fresh(context, lowered, loader, saver, on_session_started)
    except BaseException:
        if saver is not None:
            saver.abort()
        raise
    if saver is not None and store is not None and graph.session_save is not None:
        store.mark_in_use(saver.key, graph.session)
    return graph


async def _compile_saved(
    context: Context,
    lowered: LoweredGraph,
    loader: WeightLoader,
    model: Path,
    started: Callable[[], object] | None,
) -> Graph | None:
    """The graph from a saved session, or None if it cannot be used (onnxruntime rejects
    it, or anything else fails: compiling from the weights then says what is wrong)."""
    so = context.session_options()

    def create() -> ort.InferenceSession:
        return ort.InferenceSession(str(model), so, providers=context.providers)

    try:
        session, bound = await _create(lowered, loader, create, started)
    except Exception as exc:
        log.warning("saved session %s is unusable and is removed: %s", model.parent, exc)
        return None
    graph = Graph(session, lowered, {**bound, **lowered.bound_constants}, [])
    graph.from_saved_session = True
    return graph


async def _compile_fresh(
    context: Context,
    lowered: LoweredGraph,
    loader: WeightLoader,
    saver: SessionSaver | None,
    started: Callable[[], object] | None,
) -> Graph:
    """Compile from the weights; with ``saver``, save the session while it is created."""
    initial = await loader.load(lowered.initializer_weights)
    loaded = {**initial, **lowered.large_constants}
    if saver is not None:
        try:
            staged = await asyncio.to_thread(saver.stage, lowered, loaded)
            so = context.session_options()
            saver.configure(so)

            def create_saving() -> ort.InferenceSession:
                return ort.InferenceSession(str(staged), so, providers=context.providers)

            session, bound = await _create(lowered, loader, create_saving, started)
        except Exception as exc:  # saving is an optimization: compile without it
            log.warning("compiling without saving the session: %s", exc)
            saver.abort()
        else:
            saver.finish_in_background()
            graph = Graph(session, lowered, {**bound, **lowered.bound_constants}, [])
            graph.session_save = saver.done
            return graph
    keepalive: list[Any] = []
    so = context.session_options()
    for name, arr in lowered.initializer_arrays(loaded).items():
        value = ort.OrtValue.ortvalue_from_numpy(arr)
        keepalive.append((arr, value))  # onnxruntime does not own these buffers
        so.add_initializer(name, value)
    data = lowered.model.SerializeToString()

    def create() -> ort.InferenceSession:
        # Loaded from a path so the placeholder external data resolves next to the model.
        with tempfile.TemporaryDirectory(prefix="pullweights-") as tmp:
            model_path = os.path.join(tmp, "model.onnx")
            with open(model_path, "wb") as f:
                f.write(data)
            open(os.path.join(tmp, PLACEHOLDER), "wb").close()
            return ort.InferenceSession(model_path, so, providers=context.providers)

    session, bound = await _create(lowered, loader, create, started)
    return Graph(session, lowered, {**bound, **lowered.bound_constants}, keepalive)


async def _create(
    lowered: LoweredGraph,
    loader: WeightLoader,
    create: Callable[[], ort.InferenceSession],
    started: Callable[[], object] | None = None,
) -> tuple[ort.InferenceSession, dict[str, np.ndarray]]:
    """Create the session in a worker thread while the bound weights are pulled.

    Raises:
        CompileError: onnxruntime rejected the model.
    """
    session_task = asyncio.ensure_future(asyncio.to_thread(create))
    try:
        bound = await loader.load(lowered.bound_weights)
        if started is not None:
            started()
        session = await session_task
    except BaseException as exc:
        session_task.cancel()
        if (
            isinstance(exc, Exception)
            and not isinstance(exc, asyncio.CancelledError)
            and _is_ort(exc)
        ):
            raise CompileError(
                f"onnxruntime could not compile the graph: {_explain(exc, lowered.origins)}"
            ) from exc
        raise
    return session, bound


def _is_ort(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("onnxruntime")


class Graph:
    """A compiled graph. Use :meth:`compute` for one-shot calls and :meth:`dispatch` with
    :class:`~pullweights.tensor.Tensor` values for repeated calls without copies."""

    def __init__(
        self,
        session: ort.InferenceSession,
        lowered: LoweredGraph,
        weights: Mapping[str, np.ndarray],
        keepalive: list[Any],
    ) -> None:
        self.session = session
        self.inputs: dict[str, TensorDescriptor] = dict(lowered.inputs)
        self.outputs: dict[str, TensorDescriptor] = dict(lowered.outputs)
        self.origins = lowered.origins
        self._keepalive = keepalive
        self._weight_arrays = dict(weights)
        self._weight_values = {
            name: ort.OrtValue.ortvalue_from_numpy(arr) for name, arr in weights.items()
        }
        self._output_names = list(self.outputs)
        #: True when the session was created from a saved session in the cache.
        self.from_saved_session = False
        #: While this graph's session is being saved to the cache: resolves to the saved
        #: entry's directory (None if saving failed); None when nothing is being saved.
        self.session_save: concurrent.futures.Future[Path | None] | None = None

    def check_inputs(self, shapes: Mapping[str, tuple[tuple[int, ...], str]]) -> None:
        """Validate names, dtypes, ranks, static sizes and symbolic bounds; raise ComputeError."""
        missing = [n for n in self.inputs if n not in shapes]
        if missing:
            raise ComputeError(
                f"compute: missing inputs {missing}; the graph takes {list(self.inputs)}"
            )
        unknown = [n for n in shapes if n not in self.inputs]
        if unknown:
            raise ComputeError(
                f"compute: unknown inputs {unknown}; the graph takes {list(self.inputs)}"
            )
        sizes: dict[Dim, tuple[int, str]] = {}
        for name, desc in self.inputs.items():
            shape, dtype = shapes[name]
            if dtype != desc.dtype:
                raise ComputeError(
                    f"compute: input {name!r} has dtype {dtype}, expected {desc.dtype}"
                )
            if len(shape) != desc.rank:
                raise ComputeError(
                    f"compute: input {name!r} has shape {list(shape)}, expected rank {desc.rank} "
                    f"{list(desc.shape)}"
                )
            for axis, (actual, want) in enumerate(zip(shape, desc.shape, strict=True)):
                if isinstance(want, int):
                    if actual != want:
                        raise ComputeError(
                            f"compute: input {name!r} dim {axis} is {actual}, expected {want}"
                        )
                    continue
                if not want.min_size <= actual <= want.max_size:
                    raise ComputeError(
                        f"compute: input {name!r} dim {axis} ({want.name}) is {actual}, outside "
                        f"its bounds {want.min_size}..{want.max_size}"
                    )
                seen = sizes.setdefault(want, (actual, name))
                if seen[0] != actual:
                    raise ComputeError(
                        f"compute: dimension {want.name} is {seen[0]} in input {seen[1]!r} but "
                        f"{actual} in input {name!r}"
                    )

    async def compute(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run once. Returns ``{output name: array}`` in the order given to ``build``.

        Raises:
            ComputeError: an input is missing, unknown, of the wrong dtype or shape, or a
                symbolic dimension is outside its bounds.
        """
        arrays: dict[str, np.ndarray] = {}
        for name, value in inputs.items():
            arr = np.asarray(value, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
            arrays[name] = arr
        self.check_inputs({n: (a.shape, a.dtype.name) for n, a in arrays.items()})
        feeds = dict(self._weight_values)
        for name, arr in arrays.items():
            feeds[name] = ort.OrtValue.ortvalue_from_numpy(arr)
        values = await asyncio.to_thread(self._run, feeds)
        return {name: v.numpy() for name, v in zip(self._output_names, values, strict=True)}

    def _run(self, feeds: dict[str, ort.OrtValue]) -> list[ort.OrtValue]:
        try:
            return list(self.session.run_with_ort_values(self._output_names, feeds))
        except Exception as exc:
            raise ComputeError(f"onnxruntime failed: {_explain(exc, self.origins)}") from exc

    async def dispatch(
        self,
        inputs: Mapping[str, Tensor | np.ndarray],
        outputs: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Run with tensors that stay onnxruntime values (no copy in or out).

        Outputs named in ``outputs`` are written into those tensors — bind a KV cache as
        both an input and an output to update it in place. Every other output comes back
        as a new :class:`Tensor`.
        """
        outputs = dict(outputs or {})
        unknown = [n for n in outputs if n not in self.outputs]
        if unknown:
            raise ComputeError(
                f"dispatch: unknown outputs {unknown}; the graph has {self._output_names}"
            )
        values: dict[str, ort.OrtValue] = {}
        for name, value in inputs.items():
            if isinstance(value, Tensor):
                values[name] = value.ortvalue
            else:
                arr = np.asarray(value, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
                values[name] = ort.OrtValue.ortvalue_from_numpy(arr)
        self.check_inputs({n: (tuple(v.shape()), _dtype_name(v)) for n, v in values.items()})
        binding = self.session.io_binding()
        for name, value in {**self._weight_values, **values}.items():
            binding.bind_ortvalue_input(name, value)
        for name in self._output_names:
            if name in outputs:
                binding.bind_ortvalue_output(name, outputs[name].ortvalue)
            else:
                binding.bind_output(name, "cpu")
        await asyncio.to_thread(self._run_binding, binding)
        result: dict[str, Tensor] = {}
        for name, value in zip(self._output_names, binding.get_outputs(), strict=True):
            result[name] = outputs[name] if name in outputs else Tensor.wrap_output(value)
        return result

    def _run_binding(self, binding: ort.IOBinding) -> None:
        try:
            self.session.run_with_iobinding(binding)
        except Exception as exc:
            raise ComputeError(f"onnxruntime failed: {_explain(exc, self.origins)}") from exc


_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def _dtype_name(value: ort.OrtValue) -> str:
    kind = str(value.data_type())
    return _ORT_TYPES.get(kind, kind)
