"""Operands: the values a graph builder passes between ops."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pullweights.descriptor import Shape, TensorDescriptor
from pullweights.dtypes import DataType

if TYPE_CHECKING:
    from pullweights.graph.core import BuilderCore

__all__ = ["Operand"]


class Operand:
    """A tensor in a graph under construction: a data type, a (maybe symbolic) shape, and
    the op that made it. Operands are created by :class:`GraphBuilder` methods only."""

    __slots__ = ("builder", "descriptor", "name", "origin")

    def __init__(
        self, builder: BuilderCore, name: str, descriptor: TensorDescriptor, origin: str
    ) -> None:
        self.builder = builder
        self.name = name
        self.descriptor = descriptor
        self.origin = origin

    @property
    def dtype(self) -> DataType:
        return self.descriptor.dtype

    @property
    def shape(self) -> Shape:
        return self.descriptor.shape

    @property
    def rank(self) -> int:
        return len(self.descriptor.shape)

    def __repr__(self) -> str:
        return f"Operand({self.origin}: {self.descriptor})"
