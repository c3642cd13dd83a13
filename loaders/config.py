"""The hyper-parameters of a decoder-only LLM, read from GGUF metadata.

One dataclass, :class:`ModelConfig`, holds what every architecture file needs; the keys
follow llama.cpp's ``{arch}.*`` names. Facts a file does not state (gemma3's sliding layer
pattern, its local RoPE base) are set by the architecture file with
:func:`dataclasses.replace`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pullweights.errors import FormatError, UnsupportedError

__all__ = ["DEFAULT_CONTEXT", "ModelConfig"]

#: Context length used when the caller gives none: bounds the KV cache's memory.
DEFAULT_CONTEXT = 4096

#: Largest size, head count, window or context a model may state: onnxruntime's attention
#: kernels and the int32 sequence lengths of a step hold no more.
MAX_SIZE = 2**31 - 1
#: Largest block count (the deepest released models have ~130 blocks); every block must
#: also have its tensors in the file (:mod:`loaders.validate`).
MAX_LAYERS = 4096


@dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of one model.

    ``sliding_layers`` lists the layers that attend to the last ``sliding_window``
    positions only (query ``q`` sees key ``k`` when ``0 <= q - k < sliding_window``);
    they use ``rope_base_local`` (``rope_base`` when None). ``rope_position_scale``
    multiplies positions (linear RoPE scaling: ``1 / factor``) and ``rope_freq_factors``
    (llama3's ``rope_freqs.weight``) divide the frequencies, on the global layers.
    """

    arch: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab_size: int
    rms_eps: float
    rope_base: float
    rope_dims: int
    rope_interleaved: bool
    rope_position_scale: float = 1.0
    rope_base_local: float | None = None
    rope_freq_factors: tuple[float, ...] | None = None
    train_context: int = DEFAULT_CONTEXT
    sliding_window: int | None = None
    sliding_layers: frozenset[int] = frozenset()
    attention_scale: float | None = None
    attn_logit_softcap: float = 0.0
    final_logit_softcap: float = 0.0
    embedding_scale: float = 1.0

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    @property
    def scale(self) -> float:
        """Attention scale: ``attention_scale`` or ``1 / sqrt(head_dim)``."""
        return self.attention_scale or 1.0 / math.sqrt(self.head_dim)

    def is_sliding(self, layer: int) -> bool:
        return layer in self.sliding_layers

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, object], *, vocab_size: int) -> ModelConfig:
        """Read ``{arch}.*`` keys with llama.cpp's defaults for the optional ones.

        ``vocab_size`` is the row count of ``token_embd.weight``. A ``sliding_window`` key
        makes every layer sliding (Mistral style); architecture files refine that.

        Every value is range-checked here (sizes in ``[1, 2**31)``, at most
        :data:`MAX_LAYERS` blocks, finite positive RoPE bases, factors and epsilons, finite
        non-negative soft-caps) and the head counts against each other, before anything
        is built from them; :func:`loaders.validate.check_tensors` then checks the sizes
        against the tensors' shapes.

        Raises:
            FormatError: a required key is missing, has the wrong type or is out of range.
            UnsupportedError: a RoPE scaling type other than none or linear.
        """
        arch = _str(metadata, "general.architecture")
        key = _Keys(metadata, arch)
        hidden = key.get_int("embedding_length")
        n_heads = key.get_int("attention.head_count")
        n_kv_heads = key.get_int("attention.head_count_kv", n_heads)
        if n_heads % n_kv_heads:
            raise FormatError(
                f"GGUF metadata {arch}.attention.head_count = {n_heads} is not a multiple of "
                f"{arch}.attention.head_count_kv = {n_kv_heads}"
            )
        head_dim = key.get_int("attention.key_length", max(hidden // n_heads, 1))
        if head_dim % 2:
            raise FormatError(
                f"GGUF metadata {arch}.attention.key_length = {head_dim}: rotary embeddings "
                "need an even head size"
            )
        value_dim = key.get_int("attention.value_length", head_dim)
        if value_dim != head_dim:
            raise UnsupportedError(
                f"{arch}: attention.value_length {value_dim} differs from key_length {head_dim}"
            )
        scaling = key.get_str("rope.scaling.type", "none")
        if scaling == "linear":
            position_scale = 1.0 / key.get_float("rope.scaling.factor", positive=True)
        elif scaling == "none":
            position_scale = 1.0
        else:
            raise UnsupportedError(f"{arch}: RoPE scaling {scaling!r} (supported: none, linear)")
        window = key.optional_int("attention.sliding_window")
        n_layers = key.get_int("block_count", maximum=MAX_LAYERS)
        rope_dims = key.get_int("rope.dimension_count", head_dim)
        if rope_dims != head_dim:
            raise UnsupportedError(
                f"{arch}: partial rotary embedding ({rope_dims} of {head_dim} dims)"
            )
        return cls(
            arch=arch,
            n_layers=n_layers,
            hidden=hidden,
            n_heads=n_heads,
            n_kv_heads=n_kv_heads,
            head_dim=head_dim,
            ffn=key.get_int("feed_forward_length"),
            vocab_size=vocab_size,
            rms_eps=key.get_float("attention.layer_norm_rms_epsilon", positive=True, below=1.0),
            rope_base=key.get_float("rope.freq_base", 10000.0, positive=True),
            rope_dims=rope_dims,
            rope_interleaved=False,
            rope_position_scale=position_scale,
            train_context=key.get_int("context_length", DEFAULT_CONTEXT),
            sliding_window=window,
            sliding_layers=frozenset(range(n_layers)) if window else frozenset(),
            attn_logit_softcap=key.get_float("attn_logit_softcapping", 0.0),
            final_logit_softcap=key.get_float("final_logit_softcapping", 0.0),
        )


def _str(metadata: Mapping[str, object], name: str) -> str:
    value = metadata.get(name)
    if not isinstance(value, str):
        raise FormatError(f"GGUF metadata {name!r} must be a string, got {value!r}")
    return value


class _Keys:
    """Typed access to ``{arch}.{key}`` metadata with errors naming the key."""

    def __init__(self, metadata: Mapping[str, object], arch: str) -> None:
        self.metadata = metadata
        self.arch = arch

    def _get(self, key: str, default: object) -> object:
        name = f"{self.arch}.{key}"
        value = self.metadata.get(name, default)
        if value is None:
            raise FormatError(f"GGUF metadata {name!r} is required")
        return value

    def get_int(self, key: str, default: int | None = None, *, maximum: int = MAX_SIZE) -> int:
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= maximum:
            raise FormatError(
                f"GGUF metadata {self.arch}.{key} = {value!r}: expected an int in [1, {maximum}]"
            )
        return value

    def optional_int(self, key: str) -> int | None:
        if f"{self.arch}.{key}" not in self.metadata:
            return None
        return self.get_int(key)

    def get_float(
        self,
        key: str,
        default: float | None = None,
        *,
        positive: bool = False,
        below: float = math.inf,
    ) -> float:
        """A finite number ``>= 0`` (``> 0`` when ``positive``), less than ``below``."""
        value = self._get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FormatError(f"GGUF metadata {self.arch}.{key} = {value!r}: expected a number")
        number = float(value)
        low_ok = number > 0 if positive else number >= 0
        if not (math.isfinite(number) and low_ok and number < below):
            bound = "> 0" if positive else ">= 0"
            upper = "" if math.isinf(below) else f" and < {below:g}"
            raise FormatError(
                f"GGUF metadata {self.arch}.{key} = {value!r}: expected a finite number "
                f"{bound}{upper}"
            )
        return number

    def get_str(self, key: str, default: str) -> str:
        value = self._get(key, default)
        if not isinstance(value, str):
            raise FormatError(f"GGUF metadata {self.arch}.{key} = {value!r}: expected a string")
        return value
