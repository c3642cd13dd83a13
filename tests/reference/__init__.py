"""Independent numpy reference of the llama, qwen2 and gemma3 architectures (the test
oracle of the pullweights loaders) and writers of tiny random-weight GGUF models.

Nothing here imports pullweights: the reference reads GGUF files with gguf-py only.
"""

from __future__ import annotations

from .numerics import EXACT, LLAMACPP, Numerics
from .numpy_llm import (
    ReferenceModel,
    reference_generate,
    reference_hidden_states,
    reference_logits,
)
from .tiny_models import TinyConfig, tiny_config, write_tiny_model

__all__ = [
    "EXACT",
    "LLAMACPP",
    "Numerics",
    "ReferenceModel",
    "TinyConfig",
    "reference_generate",
    "reference_hidden_states",
    "reference_logits",
    "tiny_config",
    "write_tiny_model",
]
