"""Running one stage: its session, its weights bound once, and pooled bindings.

A stage (see :mod:`pullweights.graph.stages`) is one onnxruntime session. Its runner keeps
a few ``IOBinding`` objects with the stage's weights bound once, so a call binds only what
changes: the step's inputs, the links from earlier stages and the outputs.
"""

from __future__ import annotations

import concurrent.futures
import functools
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from pullweights.errors import ComputeError
from pullweights.graph.lowering import LoweredStage

__all__ = ["Binding", "CompiledStage", "StageRunner", "cpu_device", "explain"]


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


class Binding:
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
            self._c.bind_output(name, cpu_device())
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
        self.runs(session)()

    def runs(self, session: ort.InferenceSession) -> Callable[[], None]:
        """A call that runs ``session`` with these bindings, resolved once."""
        c_session = getattr(session, "_sess", None)
        if self._c is not None and c_session is not None:
            return functools.partial(c_session.run_with_iobinding, self._c, None)
        return functools.partial(session.run_with_iobinding, self.binding)

    def clear_outputs(self) -> None:
        if self._c is not None:
            self._c.clear_binding_outputs()
        else:
            self.binding.clear_binding_outputs()


@functools.cache
def cpu_device() -> Any:
    """onnxruntime's C device object for CPU memory (made once: the wrapper makes one per
    bind)."""
    return ort.OrtDevice.make("cpu", 0)._get_c_device()


class StageRunner:
    """Runs one stage through pooled bindings whose weights stay bound."""

    def __init__(self, stage: CompiledStage) -> None:
        self.stage = stage
        self.name = stage.lowered.name
        self.session = stage.session
        self.origins = stage.lowered.origins
        self.inputs = list(stage.lowered.inputs)
        self.outputs = list(stage.lowered.outputs)
        self.weight_values = {
            name: ort.OrtValue.ortvalue_from_numpy(arr) for name, arr in stage.weights.items()
        }
        self._pool: list[Binding] = []
        self._lock = threading.Lock()

    def _binding(self) -> Binding:
        with self._lock:
            if self._pool:
                return self._pool.pop()
        binding = Binding(self.session)
        for name, value in self.weight_values.items():
            binding.input(name, value)
        return binding

    def failure(self, exc: Exception) -> ComputeError:
        """onnxruntime's error in this stage, with node names mapped to builder calls."""
        where = f" in stage {self.name!r}" if self.name else ""
        return ComputeError(f"onnxruntime failed{where}: {explain(exc, self.origins)}")

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
                raise self.failure(exc) from exc
            for name, value in zip(self.outputs, binding.outputs(wanted), strict=True):
                values[name] = value if value is not None else targets[name]
        finally:
            binding.clear_outputs()
            with self._lock:
                self._pool.append(binding)
