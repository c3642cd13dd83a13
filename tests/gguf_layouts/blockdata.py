"""Valid random ggml blocks of every quant type, for layout tests and benchmarks.

Types ``gguf.quants`` can quantize are made by quantizing random normal data; the others
from random bytes whose float16 (or e8m0) scale fields are overwritten with sane values,
so every byte pattern of the quantized payload is exercised.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

T = GGMLQuantizationType

#: Byte offsets of the float16 fields in a block, for types made from random bytes.
F16_FIELDS: dict[str, tuple[int, ...]] = {
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q8_0": (0,),
    "Q2_K": (80, 82),
    "Q3_K": (108,),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
    "TQ1_0": (52,),
    "TQ2_0": (64,),
    "IQ4_NL": (0,),
    "IQ4_XS": (0,),
    "IQ2_XXS": (0,),
    "IQ2_XS": (0,),
    "IQ2_S": (0,),
    "IQ3_XXS": (0,),
    "IQ3_S": (0,),
    "IQ1_S": (0,),
    "IQ1_M": (),
    "MXFP4": (),
    "NVFP4": (),
}

QUANTIZABLE = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "TQ1_0", "TQ2_0", "MXFP4")


def _sane_f16(rng: np.random.Generator, n: int) -> npt.NDArray[np.float16]:
    mag = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), n))
    sign = np.where(rng.random(n) < 0.2, -1.0, 1.0)
    values = (mag * sign).astype(np.float16)
    values[rng.random(n) < 0.02] = 0
    return values


def random_blocks(
    ggml_type: GGMLQuantizationType,
    shape: tuple[int, ...],
    seed: int = 0,
    *,
    from_bytes: bool = False,
) -> npt.NDArray[np.uint8]:
    """Raw bytes ``uint8[*shape[:-1], row_bytes]`` of a random tensor of numpy ``shape``."""
    rng = np.random.default_rng(seed)
    t = T(ggml_type)
    block, size = GGML_QUANT_SIZES[t]
    if t.name in QUANTIZABLE and not from_bytes:
        data = rng.standard_normal(shape).astype(np.float32) * 0.05
        data[..., :block] += 0.3  # blocks with an offset, where a min matters
        return quants.quantize(data, t)
    n_blocks = int(np.prod(shape)) // block
    raw = rng.integers(0, 256, size=(n_blocks, size), dtype=np.uint8)
    for off in F16_FIELDS[t.name]:
        raw[:, off : off + 2] = _sane_f16(rng, n_blocks).view(np.uint8).reshape(-1, 2)
    if t.name == "IQ1_M":
        d_bits = _sane_f16(rng, n_blocks).view(np.uint16)
        scales = raw[:, 48:56].copy().view(np.uint16) & np.uint16(0x0FFF)
        nib = (d_bits.reshape(-1, 1) >> np.array([0, 4, 8, 12], dtype=np.uint16)) & 0xF
        scales |= (nib << np.uint16(12)).astype(np.uint16)
        raw[:, 48:56] = scales.view(np.uint8)
    if t.name == "MXFP4":
        raw[:, 0] = rng.integers(110, 130, size=n_blocks, dtype=np.uint8)
    return raw.reshape(*shape[:-1], shape[-1] // block * size)
