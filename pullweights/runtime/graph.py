"""A compiled graph: its stages' onnxruntime sessions, chained, with their weights bound.

Each stage is one session (see :mod:`pullweights.graph.stages`). A call runs the stages
in order in one worker thread; a value one stage makes and a later one reads stays an
onnxruntime value between them (never copied to numpy). Every stage keeps a few
``IOBinding`` objects with its weights bound once, so a call binds only what changes:
the step's inputs, the links and the outputs. ``compute`` checks every input against its
descriptor, symbolic dimension bounds included.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.errors import ComputeError
from pullweights.graph.lowering import LoweredGraph, LoweredStage
from pullweights.runtime.tensor import Tensor
from pullweights.runtime.threads import joined
from pullweights.sources.file import mapped_file_checks

__all__ = ["CompiledStage", "Graph", "explain"]


def explain(exc: BaseException, origins: Mapping[str, str]) -> str:
    """onnxruntime's message, with node names mapped back to the builder calls."""
    text = str(exc)
    found = [origins[n] for n in sorted(set(re.findall(r"[A-Za-z_]+:\d+", text))) if n in origins]
    return text + ("" if not found else "\n  from: " + "\n  from: ".join(found))


@dataclass
class CompiledStage:
    """One stage's session and the weights bound to it."""

    lowered: LoweredStage
    session: ort.InferenceSession
    #: Bound weights and large constants by input name (numpy views kept alive).
    weights: Mapping[str, np.ndarray]
    #: Buffers onnxruntime reads but does not own (initializers given with
    #: ``add_initializer``): dropping them while the session lives would crash it.
    keepalive: list[Any] = field(default_factory=list)
    #: True when the session was created from a saved session in the cache.
    from_saved: bool = False
    #: Resolves to the saved entry's directory (None if saving failed) while this stage's
    #: session is being saved; None when nothing is saved.
    save: concurrent.futures.Future[Path | None] | None = None


class _Binding:
    """An ``IOBinding`` bound through onnxruntime's C object where it has one: the Python
    wrapper re-validates every value on every bind (~4 us each, about a hundred binds per
    decode step), which pullweights has done once already."""

    __slots__ = ("_bound", "_c", "binding")

    def __init__(self, session: ort.InferenceSession) -> None:
        self.binding = session.io_binding()
        c = getattr(self.binding, "_iobinding", None)
        self._c = c if c is not None and hasattr(c, "bind_ortvalue_input") else None
        #: The value bound to each input (a KV cache, a table: the same every step).
        self._bound: dict[str, ort.OrtValue] = {}

    def input(self, name: str, value: ort.OrtValue) -> None:
        if self._bound.get(name) is value:
            return  # bound already (onnxruntime keeps an input bound until rebound)
        self._bound[name] = value
        c_value = getattr(value, "_ortvalue", None)
        if self._c is not None and c_value is not None:
            self._c.bind_ortvalue_input(name, c_value)  # the C binding keeps it alive
        else:
            self.binding.bind_ortvalue_input(name, value)

    def output(self, name: str, value: ort.OrtValue) -> None:
        c_value = getattr(value, "_ortvalue", None)
        if self._c is not None and c_value is not None:
            self._c.bind_ortvalue_output(name, c_value)
        else:
            self.binding.bind_ortvalue_output(name, value)

    def output_on_cpu(self, name: str) -> None:
        """Let onnxruntime allocate output ``name`` on the CPU."""
        if self._c is not None:
            self._c.bind_output(name, _cpu_device())
        else:
            self.binding.bind_output(name, "cpu")

    def outputs(self, wanted: Sequence[bool]) -> list[ort.OrtValue | None]:
        """The outputs of the last run, in order; None where not ``wanted`` (the wrapper
        builds a Python value for every output, KV caches written in place included)."""
        if self._c is None:
            values = self.binding.get_outputs()
            return [v if w else None for v, w in zip(values, wanted, strict=True)]
        vector = self._c.get_outputs()
        return [ort.OrtValue(vector[i]) if w else None for i, w in enumerate(wanted)]

    def run(self, session: ort.InferenceSession) -> None:
        """Run ``session`` (the one this binding was made for) with these bindings."""
        c_session = getattr(session, "_sess", None)
        if self._c is not None and c_session is not None:
            c_session.run_with_iobinding(self._c, None)
        else:
            session.run_with_iobinding(self.binding)

    def clear_outputs(self) -> None:
        if self._c is not None:
            self._c.clear_binding_outputs()
        else:
            self.binding.clear_binding_outputs()


@functools.cache
def _cpu_device() -> Any:
    """onnxruntime's C device object for CPU memory (made once: the wrapper makes one per
    bind)."""
    return ort.OrtDevice.make("cpu", 0)._get_c_device()


class _StageRunner:
    """Runs one stage through pooled bindings whose weights stay bound."""

    def __init__(self, stage: CompiledStage) -> None:
        self.stage = stage
        self.name = stage.lowered.name
        self.session = stage.session
        self.origins = stage.lowered.origins
        self.inputs = list(stage.lowered.inputs)
        self.outputs = list(stage.lowered.outputs)
        self._weights = {
            name: ort.OrtValue.ortvalue_from_numpy(arr) for name, arr in stage.weights.items()
        }
        self._pool: list[_Binding] = []
        self._lock = threading.Lock()

    def _binding(self) -> _Binding:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        binding = _Binding(self.session)
        for name, value in self._weights.items():
            binding.input(name, value)
        return binding

    def run(self, values: dict[str, ort.OrtValue], targets: Mapping[str, ort.OrtValue]) -> None:
        """Read this stage's inputs from ``values`` and add its outputs to it; outputs
        named in ``targets`` are written into those values."""
        binding = self._binding()
        try:
            for name in self.inputs:
                binding.input(name, values[name])
            wanted = []
            for name in self.outputs:
                target = targets.get(name)
                if target is not None:
                    binding.output(name, target)  # written in place: not read back
                else:
                    binding.output_on_cpu(name)
                wanted.append(target is None)
            try:
                binding.run(self.session)
            except Exception as exc:
                where = f" in stage {self.name!r}" if self.name else ""
                raise ComputeError(
                    f"onnxruntime failed{where}: {explain(exc, self.origins)}"
                ) from exc
            for name, value in zip(self.outputs, binding.outputs(wanted), strict=True):
                values[name] = value if value is not None else targets[name]
        finally:
            binding.clear_outputs()
            with self._lock:
                self._pool.append(binding)


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
        self._runners = [_StageRunner(stage) for stage in self.stages]
        self._output_names = list(self.outputs)
        #: The input shapes of the last call that passed :meth:`check_inputs` (a decode
        #: step has the same shapes as the one before).
        self._checked: Mapping[str, tuple[tuple[int, ...], str]] = {}
        #: Run before every call: each file that weights are mapped views of is unchanged
        #: (a truncated map would crash the process with SIGBUS).
        self.source_checks = mapped_file_checks(
            ref.payload.source for ref in lowered.weights.values() if ref.payload.transform is None
        )
        #: Payloads this graph's load found in the weight cache / transformed itself.
        self.cache_hits = 0
        self.transformed = 0

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
        self.check_inputs({n: (a.shape, a.dtype.name) for n, a in arrays.items()})
        self._check_sources()
        values = {n: ort.OrtValue.ortvalue_from_numpy(a) for n, a in arrays.items()}
        results = await joined(self._run, values, {})
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
        results = await joined(self._run, values, targets)
        return {
            name: outputs[name] if name in outputs else Tensor.wrap_output(results[name])
            for name in self._output_names
        }

    def _check_sources(self) -> None:
        for check in self.source_checks:
            check()

    def _run(
        self, values: dict[str, ort.OrtValue], targets: Mapping[str, ort.OrtValue]
    ) -> dict[str, ort.OrtValue]:
        for runner in self._runners:
            runner.run(values, targets)
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
