"""The table of every ggml quant type that has an exact integer-code layout.

Linear formats (``Q*_0``, ``Q*_1``, K-quants, ternary) come from
:mod:`~pullweights.gguf.layouts.linear`, codebook and grid formats (``IQ*``, ``MXFP4``,
``NVFP4``) from :mod:`~pullweights.gguf.layouts.codebooks`. Types missing here (``F32``,
``F16``, ``BF16``, integer types, ``Q8_1``, ``Q8_K``, ``Q1_0``) are either plain arrays or
have no reference dequantizer in ``gguf.quants``.
"""

from __future__ import annotations

from gguf import GGMLQuantizationType

from pullweights.gguf.layouts.blocks import BlockFormat
from pullweights.gguf.layouts.codebooks import CODEBOOK_FORMATS
from pullweights.gguf.layouts.linear import LINEAR_FORMATS

__all__ = ["FORMATS", "block_format"]

#: Every format with an exact integer-code layout, by ggml type.
FORMATS: dict[GGMLQuantizationType, BlockFormat] = {**LINEAR_FORMATS, **CODEBOOK_FORMATS}


def block_format(ggml_type: GGMLQuantizationType) -> BlockFormat | None:
    """The :class:`BlockFormat` of ``ggml_type``, or None when it has no integer-code layout."""
    return FORMATS.get(GGMLQuantizationType(ggml_type))
