"""Fixed wiring for repeated calls of one shape: what a decode step runs through.

A general call of a staged graph binds, for every stage, its inputs and outputs, lets
onnxruntime allocate each link (a value one stage makes and a later one reads), reads the
links back as Python values and clears the bindings. For one token per step through 12
stages that Python costs ~1.4 ms a step (qwen2.5-0.5b, 2 threads, ~50 ms a step): after
a run that streamed a stage's weights through the CPU caches, even a few Python calls are
slow. :class:`FixedWiring` is made from a call whose input shapes repeat the call before
(a decode step after a decode step): each stage gets its own binding with the links bound
once to the buffers that call made, so a later call of the same shapes binds only the
inputs whose values changed and makes one call into onnxruntime per stage.

A link is wired only when the builder's descriptor gives its shape from the input shapes
alone (every dimension a number or a dimension of an input) and the call it is made from
produced that very shape, so a later call of the same input shapes writes a link of the
same shape into the same buffer. A graph with a link whose shape depends on input values,
or whose links take more than :data:`WIRED_LINK_BYTES`, is never wired.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import onnxruntime as ort

from pullweights.descriptor import Dim, TensorDescriptor
from pullweights.runtime.runner import Binding, StageRunner

__all__ = ["WIRED_LINK_BYTES", "FixedWiring", "Signature", "dim_sizes"]

#: The links' bytes a wiring may keep between calls (a decode step's are a few KiB; a
#: 2,048-token prompt's hidden states, 12 links of 2,048 x 896 floats, would be 88 MiB).
WIRED_LINK_BYTES = 16 << 20

#: What a wiring is made for: the input shapes and dtypes, and which outputs are
#: written into the caller's tensors.
Signature = tuple[tuple[tuple[str, tuple[tuple[int, ...], str]], ...], frozenset[str]]


def dim_sizes(
    inputs: Mapping[str, TensorDescriptor], shapes: Mapping[str, tuple[tuple[int, ...], str]]
) -> dict[Dim, int]:
    """The size of every symbolic dimension of ``inputs`` in a call of ``shapes``."""
    sizes: dict[Dim, int] = {}
    for name, desc in inputs.items():
        for want, actual in zip(desc.shape, shapes[name][0], strict=True):
            if isinstance(want, Dim):
                sizes[want] = actual
    return sizes


def _shape(desc: TensorDescriptor, sizes: Mapping[Dim, int]) -> tuple[int, ...] | None:
    """``desc``'s shape under ``sizes``; None when a dimension is not an input's."""
    shape = []
    for d in desc.shape:
        if isinstance(d, Dim):
            if d not in sizes:
                return None
            shape.append(sizes[d])
        else:
            shape.append(d)
    return tuple(shape)


@dataclass
class _Step:
    """One stage's part of a wiring."""

    runner: StageRunner
    binding: Binding
    #: Runs the stage with :attr:`binding` (resolved once).
    run: Callable[[], None]
    #: Graph outputs made fresh on every call (never written into a returned value).
    fresh: list[str]
    #: For each of the stage's outputs: read back after the run.
    wanted: list[bool]


class FixedWiring:
    """Every stage bound once for calls of one :data:`Signature` (see the module docs).

    A call first rebinds, in every stage that reads it, each input or target whose value
    is not the one bound (a decode step's token, position and lengths; a KV cache of
    another slot), then runs the stages back to back.

    Not thread-safe: the graph runs a wiring for one call at a time (a call that finds it
    busy takes the general path).
    """

    def __init__(
        self,
        signature: Signature,
        steps: Sequence[_Step],
        readers: Mapping[str, list[Binding]],
        writers: Mapping[str, list[Binding]],
        targets: Mapping[str, ort.OrtValue],
    ) -> None:
        self.signature = signature
        self._steps = list(steps)
        #: Stages' bindings by the graph input (or graph output made fresh) they read,
        #: and by the caller's output they write.
        self._readers = readers
        self._writers = writers
        self._bound: dict[str, ort.OrtValue] = {}
        self._targets = dict(targets)

    @classmethod
    def make(
        cls,
        signature: Signature,
        runners: Sequence[StageRunner],
        graph_outputs: Mapping[str, TensorDescriptor],
        sizes: Mapping[Dim, int],
        values: Mapping[str, ort.OrtValue],
        targets: Mapping[str, ort.OrtValue],
    ) -> FixedWiring | None:
        """A wiring for ``signature`` from a general call's ``values`` (every input,
        link and output it made); None when a link cannot be wired."""
        links: dict[str, ort.OrtValue] = {}
        total = 0
        for runner in runners:
            for name, desc in runner.stage.lowered.outputs.items():
                if name in graph_outputs:
                    continue
                value = values[name]
                shape = _shape(desc, sizes)
                if shape is None or tuple(value.shape()) != shape:
                    return None
                total += math.prod(shape) * desc.numpy_dtype.itemsize
                links[name] = value
        if total > WIRED_LINK_BYTES:
            return None
        steps = []
        readers: dict[str, list[Binding]] = {}
        writers: dict[str, list[Binding]] = {}
        for runner in runners:
            binding = Binding(runner.session)
            for name, weight in runner.weight_values.items():
                binding.input(name, weight)
            for name in runner.inputs:
                if name in links:
                    binding.input(name, links[name])
                else:
                    readers.setdefault(name, []).append(binding)
            fresh = []
            for name in runner.outputs:  # bound in order: get_outputs' order
                if name in targets:
                    binding.output(name, targets[name])
                    writers.setdefault(name, []).append(binding)
                elif name in links:
                    binding.output(name, links[name])
                else:
                    binding.output_on_cpu(name)
                    fresh.append(name)
            wanted = [name in fresh for name in runner.outputs]
            steps.append(_Step(runner, binding, binding.runs(runner.session), fresh, wanted))
        return cls(signature, steps, readers, writers, targets)

    def run(
        self, values: dict[str, ort.OrtValue], targets: Mapping[str, ort.OrtValue]
    ) -> dict[str, ort.OrtValue]:
        """One call of this wiring's signature: ``values`` holds the graph's inputs; the
        graph's outputs are added to it (those in ``targets`` written into them)."""
        _rebind(values, self._bound, self._readers, Binding.input)
        _rebind(targets, self._targets, self._writers, Binding.output)
        for step in self._steps:
            for name in step.fresh:
                step.binding.output_on_cpu(name)  # a new value: the last may be held
            try:
                step.run()
            except Exception as exc:
                raise step.runner.failure(exc) from exc
            if step.fresh:
                outputs = step.binding.outputs(step.wanted)
                made = {
                    name: value
                    for name, value in zip(step.runner.outputs, outputs, strict=True)
                    if value is not None
                }
                values.update(made)
                _rebind(made, self._bound, self._readers, Binding.input)
        values.update(targets)
        return values


def _rebind(
    values: Mapping[str, ort.OrtValue],
    bound: dict[str, ort.OrtValue],
    bindings: Mapping[str, list[Binding]],
    bind: Callable[[Binding, str, ort.OrtValue], None],
) -> None:
    """Bind in ``bindings`` every value of ``values`` that is not the one in ``bound``."""
    for name, value in values.items():
        if bound.get(name) is not value:
            for binding in bindings.get(name, ()):
                bind(binding, name, value)
            bound[name] = value
