"""A compiled graph: its stages' onnxruntime sessions, chained, with their weights bound.

Each stage is one session (see :mod:`pullweights.graph.stages`). A call runs the stages
in order in one worker thread; a value one stage makes and a later one reads stays an
onnxruntime value between them (never copied to numpy). Every stage keeps a few
``IOBinding`` objects with its weights bound once (:mod:`pullweights.runtime.runner`), so
a call binds only what changes: the step's inputs, the links and the outputs; calls that
repeat the input shapes of the call before (decode steps) run through a
:class:`~pullweights.runtime.wiring.FixedWiring` that binds even less. ``compute`` checks
every input against its descriptor, symbolic dimension bounds included.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.errors import ComputeError
from pullweights.graph.lowering import LoweredGraph
from pullweights.runtime.runner import CompiledStage, StageRunner, explain
from pullweights.runtime.tensor import Tensor
from pullweights.runtime.threads import joined
from pullweights.runtime.wiring import FixedWiring, Signature, dim_sizes
from pullweights.sources.file import mapped_file_checks

__all__ = ["CompiledStage", "Graph", "explain"]


class Graph:
    """A compiled graph. Use :meth:`compute` for one-shot calls and :meth:`dispatch` with
    :class:`~pullweights.runtime.tensor.Tensor` values for repeated calls without copies.

    Attributes:
        inputs: the graph's inputs (name -> descriptor), in declaration order.
        outputs: its outputs, in the order given to ``build``.
        stages: the compiled stages, in the order they run.
    """

    def __init__(self, lowered: LoweredGraph, stages: Sequence[CompiledStage]) -> None:
        self.inputs: dict[str, TensorDescriptor] = dict(lowered.inputs)
        self.outputs: dict[str, TensorDescriptor] = dict(lowered.outputs)
        self.origins = lowered.origins
        self.stages = list(stages)
        self._runners = [StageRunner(stage) for stage in self.stages]
        self._output_names = list(self.outputs)
        #: The input shapes of the last call that passed :meth:`check_inputs` (a decode
        #: step has the same shapes as the one before).
        self._checked: Mapping[str, tuple[tuple[int, ...], str]] = {}
        #: Run before every call: each file that weights are mapped views of is unchanged
        #: (a truncated map would crash the process with SIGBUS).
        self.source_checks = mapped_file_checks(
            ref.payload.source for ref in lowered.weights.values() if ref.payload.transform is None
        )
        #: The signature of the last general call, and the wiring made when one repeated.
        self._last_signature: Signature | None = None
        self._wiring: FixedWiring | None = None
        self._wiring_lock = threading.Lock()
        #: False: every call takes the general path (for comparisons and debugging).
        self.wire_repeated_calls = True
        #: Payloads this graph's load found in the weight cache / transformed itself.
        self.cache_hits = 0
        self.transformed = 0
        #: Stages whose saved session a :class:`~pullweights.runtime.prefetch.
        #: SessionPrefetch` had opened before the graph was built.
        self.prefetched = 0

    @property
    def sessions(self) -> list[ort.InferenceSession]:
        """Every stage's onnxruntime session, in order."""
        return [stage.session for stage in self.stages]

    @property
    def from_saved_session(self) -> bool:
        """True when every stage was created from a saved session in the cache."""
        return all(stage.from_saved for stage in self.stages)

    async def saved(self) -> list[Path]:
        """Wait for sessions still being saved in the background; returns the entries
        saved (a failed save is logged and left out)."""
        futures = [s.save for s in self.stages if s.save is not None]
        results = [await asyncio.wrap_future(f) for f in futures]
        return [r for r in results if r is not None]

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
            SourceError: a mapped weight file changed since the graph was built.
        """
        arrays = {name: _array("compute", name, value) for name, value in _items(inputs)}
        shapes = {n: (a.shape, a.dtype.name) for n, a in arrays.items()}
        self.check_inputs(shapes)
        self._check_sources()
        values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()}
        results = await joined(self._run, values, {}, shapes)
        return {name: results[name].numpy() for name in self._output_names}

    async def dispatch(
        self,
        inputs: Mapping[str, Tensor | np.ndarray],
        outputs: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Run with tensors that stay onnxruntime values (no copy in or out).

        Outputs named in ``outputs`` are written into those tensors — bind a KV cache as
        both an input and an output to update it in place. Every other output comes back
        as a new :class:`Tensor`.

        Raises:
            ComputeError: as :meth:`compute`, or an output that is not a :class:`Tensor`.
            SourceError: a mapped weight file changed since the graph was built.
        """
        outputs = dict(_items(outputs or {}, "dispatch outputs"))
        unknown = [n for n in outputs if n not in self.outputs]
        if unknown:
            raise ComputeError(
                f"dispatch: unknown outputs {unknown}; the graph has {self._output_names}"
            )
        wrong = [n for n, t in outputs.items() if not isinstance(t, Tensor)]
        if wrong:
            raise ComputeError(f"dispatch: outputs {wrong} must be Tensors")
        values: dict[str, ort.OrtValue] = {}
        shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        for name, value in _items(inputs):
            if isinstance(value, Tensor):
                values[name] = value.ortvalue
                shapes[name] = (value.shape, value.descriptor.dtype)
            else:
                arr = _array("dispatch", name, value)
                values[name] = ort.OrtValue.ortvalue_from_numpy(arr)
                shapes[name] = (arr.shape, arr.dtype.name)
        if shapes != self._checked:
            self.check_inputs(shapes)
            self._checked = shapes
        self._check_sources()
        targets = {name: tensor.ortvalue for name, tensor in outputs.items()}
        results = await joined(self._run, values, targets, shapes)
        return {
            name: outputs[name] if name in outputs else Tensor.wrap_output(results[name])
            for name in self._output_names
        }

    def _check_sources(self) -> None:
        for check in self.source_checks:
            check()

    def _run(
        self,
        values: dict[str, ort.OrtValue],
        targets: Mapping[str, ort.OrtValue],
        shapes: Mapping[str, tuple[tuple[int, ...], str]],
    ) -> dict[str, ort.OrtValue]:
        # In the caller's order: a caller passes its inputs in one order every step.
        signature: Signature = (tuple(shapes.items()), frozenset(targets))
        wiring = self._wiring
        if (
            wiring is not None
            and wiring.signature == signature
            and self._wiring_lock.acquire(blocking=False)
        ):
            try:
                return wiring.run(values, targets)
            except BaseException:
                self._wiring = None  # made again from the next repeated call
                raise
            finally:
                self._wiring_lock.release()
        for runner in self._runners:
            runner.run(values, targets)
        if (
            self.wire_repeated_calls
            and signature == self._last_signature
            and (wiring is None or wiring.signature != signature)
        ):
            # A wiring stays until calls of another signature repeat: a decode step's
            # survives the prompt of the next turn.
            self._wiring = FixedWiring.make(
                signature,
                self._runners,
                self.outputs,
                dim_sizes(self.inputs, shapes),
                values,
                targets,
            )
        self._last_signature = signature
        return values


def _items(inputs: object, what: str = "inputs") -> list[tuple[str, Any]]:
    """The ``(name, value)`` pairs of a mapping given as a graph's inputs or outputs."""
    if not isinstance(inputs, Mapping):
        raise ComputeError(f"{what} must be a mapping of names to values, got {inputs!r:.80}")
    return list(inputs.items())


def _array(op: str, name: str, value: object) -> np.ndarray:
    try:
        return np.asarray(value, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    except (ValueError, TypeError, OverflowError) as exc:
        raise ComputeError(f"{op}: input {name!r} is not an array: {exc}") from None
