"""What a model path holds when it is not a GGUF file, and what to do about it.

pullweights reads GGUF files only. When it is given something else — a directory, a
safetensors or ONNX file, a PyTorch checkpoint, a Git LFS pointer, a web page saved
instead of the file — the error names the format found (from the first bytes, or a
directory's listing), says that pullweights reads GGUF, and gives the fix. Nothing here
reads more than the bytes it is handed; the GGUF header parser and the file source call
it when they refuse a model.
"""

from __future__ import annotations

import struct
from pathlib import Path

__all__ = ["GGUF_ONLY", "describe_directory", "describe_foreign"]

#: What every message here says pullweights reads.
GGUF_ONLY = "pullweights reads GGUF models (llama.cpp's format)"

_CONVERT = (
    "convert the model with llama.cpp (python convert_hf_to_gguf.py MODEL_DIR --outfile "
    "model.gguf, run on the Hugging Face model directory) or download a .gguf build of it"
)

# Legacy llama.cpp magics, as the bytes a little-endian uint32 is stored as.
_LEGACY_GGML = (b"lmgg", b"fmgg", b"tjgg", b"algg")
# Protobuf field keys that can follow ModelProto.ir_version (field 1) in an ONNX file.
_ONNX_FIELDS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72, 0xA2, 0xCA})


def _what_and_fix(head: bytes) -> tuple[str, str] | None:
    """(format found, fix) for the first bytes of a known non-GGUF file."""
    if len(head) >= 9:
        (n,) = struct.unpack_from("<Q", head)
        if 2 <= n < 1 << 30 and head[8:9] == b"{":
            return "a safetensors file (Hugging Face weights)", _CONVERT
    if head[:4] in _LEGACY_GGML:
        return (
            "a legacy GGML/GGJT file (llama.cpp's format before GGUF, 2023)",
            "convert it with llama.cpp's convert_llama_ggml_to_gguf.py",
        )
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (a PyTorch checkpoint saved by torch.save, or an .npz)", _CONVERT
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a Python pickle (an older PyTorch checkpoint)", _CONVERT
    if len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 20 and head[2] in _ONNX_FIELDS:
        return (
            "an ONNX model",
            "pullweights builds its own onnxruntime graphs from GGUF weights: run an ONNX "
            "file with onnxruntime itself, or give the model's .gguf file",
        )
    if head[:6] == b"\x93NUMPY":
        return "a NumPy array file", "give the model's .gguf file"
    if head[:2] == b"\x1f\x8b":
        return "a gzip-compressed file", "decompress it first (gunzip FILE)"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "a zstd-compressed file", "decompress it first (zstd -d FILE)"
    text = head.lstrip().lower()
    if text.startswith(b"version https://git-lfs"):
        return (
            "a Git LFS pointer (a small text file standing for the real one)",
            "fetch the real file (git lfs pull) or download it directly",
        )
    if text.startswith((b"<!doctype html", b"<html")):
        return (
            "an HTML page, not a model file",
            "the address leads to a web page: use the file's download address (on Hugging "
            "Face: .../resolve/main/FILE.gguf, not .../blob/main/FILE.gguf)",
        )
    if text.startswith(b"{"):
        return "a JSON file (config.json, an index?)", "give the model's .gguf file"
    return None


def describe_foreign(head: bytes, name: str) -> str | None:
    """The message for a model file ``name`` whose first bytes ``head`` are not GGUF, when
    the format is recognised; None otherwise."""
    found = _what_and_fix(head)
    if found is None:
        return None
    what, fix = found
    return f"{name} is {what}, not a GGUF file. {GGUF_ONLY}: {fix}"


def describe_directory(path: str | Path, *, limit: int = 5) -> str:
    """The message for a model path that is a directory: the GGUF files in it, or what
    kind of model directory it is, and what to give instead."""
    root = Path(path)
    try:
        names = sorted(p.name for p in root.iterdir() if p.is_file())
    except OSError:
        names = []
    ggufs = [n for n in names if n.lower().endswith(".gguf")]
    if ggufs:
        shown = ", ".join(str(root / n) for n in ggufs[:limit])
        more = f" and {len(ggufs) - limit} more" if len(ggufs) > limit else ""
        return f"{root} is a directory; give one of the GGUF files in it: {shown}{more}"
    weights = [n for n in names if n.endswith((".safetensors", ".bin", ".pt", ".pth"))]
    if "config.json" in names and weights:
        return (
            f"{root} is a directory holding a Hugging Face model (config.json, "
            f"{len(weights)} weight file(s)), not a GGUF file. {GGUF_ONLY}: convert it with "
            f"llama.cpp: python convert_hf_to_gguf.py {root} --outfile model.gguf"
        )
    onnx = [n for n in names if n.endswith(".onnx")]
    if onnx:
        return (
            f"{root} is a directory of ONNX files ({', '.join(onnx[:limit])}), not a GGUF "
            f"file. {GGUF_ONLY}: give the model's .gguf file"
        )
    return f"{root} is a directory, not a GGUF file. {GGUF_ONLY}: give the path of a .gguf file"
