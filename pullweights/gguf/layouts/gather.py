"""Embedding lookups on the MatMulNBits layout with ``com.microsoft.GatherBlockQuantized``.

onnxruntime's CPU ``GatherBlockQuantized`` takes ``uint8`` data with ``bits`` 2, 4 or 8,
packed least-significant first along the last axis, ``uint8`` zero points packed the same
way and one scale per block: exactly the bytes of
:class:`~pullweights.gguf.layouts.matmul_nbits.MatMulNBitsTransform`, with ``B`` viewed as
``[N, n_blocks * block_size * bits / 8]`` (a reshape, no copy). A token embedding table
therefore never has to be dequantized as a whole, and a tied output head reads the same
payload through ``MatMulNBits``. Only the rows gathered are dequantized, inside the op.

Graph for one lookup (``ids`` of any shape ``I``)::

    E = GatherBlockQuantized(data=B as data_shape, ids, scales, zero_points,
                             bits, block_size, gather_axis=0, quantize_axis=1)   # [I, K]
    # formats with mins (has_mins) subtract the gathered mins per block:
    E = Reshape(Reshape(E, [I, n_blocks, block_size]) - Unsqueeze(Gather(mins, ids), -1),
                [I, K])

Unlike ONNX ``Gather``, an out-of-range id yields a row of zeros. Measured: the op reads
its initializers in place (a 185 MiB Q8_0 262144 x 640 table fed through
``add_initializer`` over a memory map added 0 MiB of private memory), while ``MatMulNBits``
on the same bytes prepacks a private copy (221 MiB) - the price of a fast tied head.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from pullweights.gguf.layouts.blocks import F32
from pullweights.gguf.layouts.matmul_nbits import MatMulNBitsTransform, unpack_codes

__all__ = ["GatherSpec", "gather_rows", "gather_spec"]


@dataclass(frozen=True)
class GatherSpec:
    """How to feed a :class:`MatMulNBitsTransform`'s parts to ``GatherBlockQuantized``.

    ``data_shape`` is the shape to view part ``B`` as; ``scales`` and ``zero_points`` are
    used as they are; ``attributes`` are the node's attributes; ``has_mins`` says whether
    the ``mins`` part must be gathered and subtracted per block.
    """

    data_shape: tuple[int, int]
    attributes: Mapping[str, int]
    has_mins: bool


def gather_spec(t: MatMulNBitsTransform) -> GatherSpec:
    """The ``GatherBlockQuantized`` view of a MatMulNBits layout."""
    return GatherSpec(
        data_shape=(t.n, t.k * t.bits // 8),
        attributes={
            "bits": t.bits,
            "block_size": t.block_size,
            "gather_axis": 0,
            "quantize_axis": 1,
        },
        has_mins=t.has_mins,
    )


def gather_rows(
    t: MatMulNBitsTransform, parts: Mapping[str, np.ndarray], ids: npt.NDArray[np.integer]
) -> F32:
    """Numpy reference of the lookup: ``float32[*ids.shape, K]``, decoding only those rows."""
    flat = np.asarray(ids).reshape(-1)
    rows = parts["B"].reshape(t.n, -1)[flat]
    codes = unpack_codes(rows, t.bits).reshape(-1, t.n_blocks, t.block_size)
    zp = unpack_codes(parts["zero_points"][flat], t.bits)[:, : t.n_blocks]
    scales = parts["scales"][flat][..., None]
    w: F32 = (codes.astype(np.float32) - zp[..., None].astype(np.float32)) * scales
    if t.has_mins:
        w = w - parts["mins"][flat][..., None]
    return w.reshape(*np.shape(ids), t.k)
