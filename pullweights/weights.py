"""Weight references: where a weight's bytes are and how they become the tensor a graph needs.

A :class:`WeightRef` names one array of a :class:`Payload`. A payload is a byte range of a
:class:`~pullweights.sources.ByteSource` plus an optional :class:`Transform` that turns the
raw bytes into one or more arrays (a GGUF quant block repacked for ``MatMulNBits`` yields
``B``, ``scales`` and ``zero_points``). Declaring a reference never reads a byte; the
loader pulls payloads when a graph is built.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from pullweights.descriptor import TensorDescriptor
from pullweights.dtypes import DataType, check_dtype, to_numpy
from pullweights.errors import GraphError, SourceError
from pullweights.sources.base import ByteSource

__all__ = ["Payload", "Transform", "WeightRef", "raw_weight"]


class Transform(abc.ABC):
    """Turns the raw bytes of one payload into named arrays (pure, CPU-bound, thread-safe).

    Subclasses set ``name`` and ``version`` (part of the cache key: bump ``version``
    whenever the output bytes change) and describe their outputs up front, so graphs can be
    built before any byte is read.
    """

    name: str
    version: int = 1

    @property
    @abc.abstractmethod
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        """Descriptor of every array :meth:`apply` returns, by part name."""

    @abc.abstractmethod
    def apply(self, raw: npt.NDArray[np.uint8]) -> dict[str, np.ndarray]:
        """Transform the payload's raw bytes. Runs in a worker thread; must not block on I/O."""

    @property
    def rows(self) -> tuple[int, int] | None:
        """``(rows, raw bytes per row)`` when the transform works row by row: every output
        part is C-order with ``rows`` equal rows, and :meth:`apply_rows` turns any run of
        raw rows into the same rows of every part. None: only :meth:`apply` (whole input).
        """
        return None

    def apply_rows(
        self, raw: npt.NDArray[np.uint8], start: int, stop: int
    ) -> dict[str, np.ndarray]:
        """Rows ``start:stop`` of every part from those rows' raw bytes (only when
        :attr:`rows` is set). Lets a loader transform a large tensor in bounded pieces,
        each written to its final place before the next is made."""
        raise NotImplementedError(f"{self.name} does not work row by row")

    @property
    def params(self) -> str:
        """Parameters that change the output, for the cache key (shape, type, ...)."""
        return repr(sorted((k, repr(v)) for k, v in self.outputs.items()))


@dataclass(frozen=True, eq=False)
class Payload:
    """A byte range of a source, and the transform (if any) that turns it into arrays.

    Without a transform the payload is one array, part ``"data"``, of ``dtype`` and
    ``shape`` viewing the bytes as they are.
    """

    source: ByteSource
    offset: int
    length: int
    transform: Transform | None = None
    raw_descriptor: TensorDescriptor | None = None
    label: str = ""
    _key: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        """Raises :class:`~pullweights.errors.GraphError` (a ``ValueError``) for arguments
        of the wrong type or a descriptor that does not match the length, and
        :class:`~pullweights.errors.SourceError` for a range outside the source."""
        if not isinstance(self.source, ByteSource):
            raise GraphError(f"Payload: source must be a ByteSource, got {self.source!r}")
        for name in ("offset", "length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise GraphError(f"Payload: {name} must be an int, got {value!r}")
        if self.transform is not None and not isinstance(self.transform, Transform):
            raise GraphError(f"Payload: transform must be a Transform, got {self.transform!r}")
        if self.raw_descriptor is not None and not isinstance(
            self.raw_descriptor, TensorDescriptor
        ):
            raise GraphError(
                f"Payload: raw_descriptor must be a TensorDescriptor, got {self.raw_descriptor!r}"
            )
        if (self.transform is None) == (self.raw_descriptor is None):
            raise GraphError("a Payload needs exactly one of transform or raw_descriptor")
        if self.raw_descriptor is not None and self.raw_descriptor.nbytes != self.length:
            raise GraphError(
                f"{self.describe()}: descriptor {self.raw_descriptor} needs "
                f"{self.raw_descriptor.nbytes} bytes, the range has {self.length}"
            )
        if self.offset < 0 or self.length < 0 or self.offset + self.length > self.source.size:
            raise SourceError(
                f"{self.describe()}: byte range [{self.offset}, {self.offset + self.length}) "
                f"is outside {self.source.name} ({self.source.size} bytes)"
            )

    @property
    def outputs(self) -> Mapping[str, TensorDescriptor]:
        if self.transform is not None:
            return self.transform.outputs
        assert self.raw_descriptor is not None
        return {"data": self.raw_descriptor}

    @property
    def key(self) -> str:
        """Cache key: source identity, range, transform name, version and parameters."""
        if not self._key:
            t = self.transform
            text = "|".join(
                [
                    self.source.identity,
                    str(self.offset),
                    str(self.length),
                    t.name if t else "raw",
                    str(t.version) if t else "1",
                    t.params if t else repr(self.raw_descriptor),
                ]
            )
            self._key.append(hashlib.sha256(text.encode()).hexdigest()[:32])
        return self._key[0]

    def describe(self) -> str:
        """Where the payload lives, for error messages."""
        what = self.label or "weight"
        return f"{what} at {self.source.name}[{self.offset}:{self.offset + self.length}]"

    def ref(self, part: str = "data") -> WeightRef:
        """A reference to one output array of this payload."""
        return WeightRef(self, part)

    def refs(self) -> dict[str, WeightRef]:
        """References to every output array, by part name."""
        return {name: WeightRef(self, name) for name in self.outputs}


@dataclass(frozen=True, eq=False)
class WeightRef:
    """One array of a :class:`Payload`: what ``GraphBuilder.input(..., weight=ref)`` takes."""

    payload: Payload
    part: str = "data"

    def __post_init__(self) -> None:
        if not isinstance(self.payload, Payload):
            raise GraphError(f"WeightRef: payload must be a Payload, got {self.payload!r}")
        if self.part not in self.payload.outputs:
            raise GraphError(
                f"{self.payload.describe()} has no part {self.part!r}; "
                f"parts: {', '.join(self.payload.outputs)}"
            )

    @property
    def descriptor(self) -> TensorDescriptor:
        return self.payload.outputs[self.part]

    def describe(self) -> str:
        suffix = "" if self.part == "data" else f" (part {self.part})"
        return self.payload.describe() + suffix


def raw_weight(
    source: ByteSource,
    offset: int,
    dtype: str,
    shape: Sequence[int],
    label: str = "",
) -> WeightRef:
    """Reference ``prod(shape)`` elements of ``dtype`` stored as-is at ``offset`` in ``source``.

    Example::

        src = FileSource("weights.bin")
        w = raw_weight(src, offset=4096, dtype="float32", shape=(1024, 1024))
        x = builder.input("w", w.descriptor, weight=w)

    Raises:
        GraphError: an unknown dtype, a bad shape or offset (a ``ValueError``).
        SourceError: the range is outside ``source``.
    """
    dt: DataType = check_dtype(dtype)
    desc = TensorDescriptor(dt, shape)
    length = desc.nbytes
    return Payload(source, offset, length, raw_descriptor=desc, label=label).ref()


def view_as(buf: memoryview | np.ndarray, desc: TensorDescriptor) -> np.ndarray:
    """View raw bytes as an array of ``desc`` without copying."""
    arr = np.frombuffer(buf, dtype=to_numpy(desc.dtype), count=desc.n_elements)
    return arr.reshape(desc.static_shape)
