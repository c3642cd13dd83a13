"""Checks that part files, concatenated in the order given, really are one GGUF file.

Parts in the wrong order parse as garbage or, worse, parse fine and transform garbage
(the header sits in the first part; only the tensor bytes are scrambled). Before anything
is transformed the header must show the concatenation is right: the first part starts
with the GGUF magic, the header parses, and the tensor data ends where the parts end.
Each failure says what the fix is. (Part names that number the parts in another order are
refused earlier, in :func:`pullweights.sources.resolve.resolve_model`.)
"""

from __future__ import annotations

from gguf.constants import GGUF_MAGIC

from pullweights.errors import FormatError
from pullweights.sources.concat import ConcatSource

__all__ = ["check_data_end", "check_first_part", "parts_hint"]

_MAGIC = GGUF_MAGIC.to_bytes(4, "little")


def parts_hint(source: ConcatSource) -> str:
    """What to do when the concatenation of ``source``'s parts is not a GGUF file."""
    return (
        f" (read as the concatenation of {len(source.parts)} part files, in the order given: "
        "if a part is missing, repeated or out of order, give every part, in order)"
    )


async def check_first_part(source: ConcatSource) -> None:
    """Refuse parts whose first is not the start of the GGUF file while another is.

    Raises:
        FormatError: naming the part that starts the file and the order to give.
    """
    starts = [await part.read(0, 4) if part.size >= 4 else b"" for part in source.parts]
    if starts[0] == _MAGIC:
        return
    first = next((i for i, start in enumerate(starts) if start == _MAGIC), None)
    if first is None:
        return  # no part starts a GGUF: the header parser says what the first one is
    names = [part.name for part in source.parts]
    raise FormatError(
        f"{names[0]}: the part files are out of order: {names[first]} (given as part "
        f"{first + 1}) starts the GGUF file, {names[0]} does not. Give {names[first]} first, "
        "then the other parts in order"
    )


def check_data_end(source: ConcatSource, data_end: int | None) -> None:
    """Refuse parts that hold more than the file: the tensor data must end at their end.

    ``data_end`` is the end of the last tensor rounded up to the alignment (``None``
    when the file has no tensors). A GGUF writer pads the last tensor to the alignment,
    so more bytes after it mean an extra part, or parts out of order. Too few bytes are
    caught by the reader's range checks of each tensor.

    Raises:
        FormatError: naming the byte counts and the fix.
    """
    if data_end is None or source.size <= data_end:
        return
    raise FormatError(
        f"{source.name}: the tensor data ends at byte {data_end}, but the parts hold "
        f"{source.size} bytes: {source.size - data_end} bytes too many" + parts_hint(source)
    )
