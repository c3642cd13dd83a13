"""pullweights against transformers' GGUF loader on tiny llama, Mistral and Llama 3 files.

A third implementation of the llama family, independent of pullweights and of the numpy
reference: transformers reads the GGUF file itself (config from the metadata, gguf-py's
dequantizers, llama.cpp's Q/K permutation undone) and runs its own PyTorch modelling code
(rotate-half RoPE, its own RoPE scaling and sliding-window masks) in float32. It runs in
its own venv (``transformers_runner.py``, a subprocess, like llama.cpp), found at
``$PULLWEIGHTS_TRANSFORMERS_PYTHON``, else ``/work/transformers-venv/bin/python``, else this
interpreter; every test is skipped when none imports torch, transformers and accelerate.
Marked ``reference`` (not in the default run): ``pytest -m reference``.

Files (``tiny_models.py``, random weights, SentencePiece tiny vocabulary): llama; Mistral
(``llama`` with ``attention.sliding_window`` 8, every layer sliding); Llama 3 (RoPE base
5e5 and Llama 3.1 RoPE scaling, stored as ``rope_freqs.weight``); llama with linear RoPE
scaling. transformers' GGUF loader reads none of those three extras, so the runner sets
them on its config from the parameters the file was written from (never from pullweights),
and builds transformers' Mistral model for the sliding window; a control run without them
shows that each extra changes the logits far beyond the tolerance, so the check can fail.

pullweights loads with ``accuracy_level=0`` (exact float activations). Its logits at
every position of two prompts (24 and 40 random ids; 40 > the window), of the 40-id prompt
fed through the KV cache (a 5-token prefill then one token at a time; two chunks of 20),
and of two texts (tokenized by both, same ids required) must agree with transformers'
within ``TOLERANCE`` times the largest |logit|, and so must the numpy reference's: float32
rounding only, as all three dequantize the same bytes to the same values. Measured
(``-s`` prints each case): pullweights at most 2.0e-6 relative (mistral Q4_K), the numpy
reference at most 6.6e-7.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from loaders import LanguageModel, load_model
from pullweights.runtime.context import create_context

from .numpy_llm import ReferenceModel
from .subprocess_runner import run_requests
from .tiny_models import Llama3Rope, TinyConfig, tiny_config, vocab_for, write_tiny_model

pytestmark = pytest.mark.reference

#: max |pullweights - transformers| / max |transformers logit| allowed (float32 rounding).
TOLERANCE = 1e-5
#: a control (transformers without the file's sliding window / RoPE scaling) must differ
#: from pullweights by more than this many tolerances somewhere.
CONTROL_MARGIN = 100.0
DEFAULT_PYTHON = Path("/work/transformers-venv/bin/python")
RUNNER = Path(__file__).with_name("transformers_runner.py")
PROMPT_LENGTHS = (24, 40)
PREFILL = 5
CONTEXT = 64
TEXTS = ("The capital of France is Paris", "Hello world, the cat and the dog on the model")
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Case:
    """One tiny file: a llama-family variant in one quantization."""

    family: str  # "llama", "mistral", "llama3"
    quant: str | None
    overrides: dict[str, Any] = field(default_factory=dict)  # TinyConfig fields
    variant: str = ""  # what the overrides beyond the family's vary, for the test id
    texts: bool = False  # also compare the tokenizers on TEXTS

    @property
    def id(self) -> str:
        return "-".join(p for p in (self.family, self.variant, self.quant or "F32") if p)

    def config(self) -> TinyConfig:
        return tiny_config("llama", quant=self.quant, **self.overrides)


MISTRAL: dict[str, Any] = {"name": "tiny-mistral", "sliding_window": 8}
LLAMA3: dict[str, Any] = {"name": "tiny-llama3", "rope_base": 5e5, "llama3_rope": Llama3Rope()}
# Tiny shapes: 2 layers, hidden 64, 4 heads of 16, 2 KV heads, ffn 128 (K-quants: hidden
# 256, heads of 64, ffn 512), vocabulary 404.
CASES = [
    Case("llama", None, texts=True),
    Case("llama", "Q8_0", {"n_kv_heads": 4}, "mha"),
    Case("llama", "mixed"),  # Q8_0, Q6_K, Q5_0, Q4_0 and Q4_K tensors in one file
    Case("llama", "Q4_K", {"tie_embeddings": True}, "tied"),
    Case("llama", "Q4_K", {"rope_linear_factor": 4.0}, "linear-rope"),
    Case("mistral", None, MISTRAL, texts=True),
    Case("mistral", "Q4_K", MISTRAL),
    # Mistral Nemo style: head_dim (32, attention.key_length) != hidden / heads (16)
    Case("mistral", "F16", MISTRAL | {"head_dim": 32, "write_head_dim": True}, "head32"),
    Case("llama3", None, LLAMA3),
    Case("llama3", "Q6_K", LLAMA3 | {"n_kv_heads": 1}, "mqa"),
    Case("llama3", "Q8_0", LLAMA3),
]


def hf_request(case: Case, path: Path) -> dict[str, Any]:
    """The runner request for ``case``: prompts, and the facts transformers does not read."""
    c = case.config()
    overrides: dict[str, Any] = {}
    request: dict[str, Any] = {"model": str(path), "prompts": prompts(case)}
    if c.sliding_window is not None:
        overrides["sliding_window"] = c.sliding_window
        request["model_type"] = "mistral"
    if c.llama3_rope is not None:
        overrides["rope_parameters"] = c.llama3_rope.hf_parameters(c.rope_base)
    if c.rope_linear_factor is not None:
        overrides["rope_parameters"] = {
            "rope_type": "linear",
            "rope_theta": c.rope_base,
            "factor": c.rope_linear_factor,
        }
    request["config"] = overrides
    request["control"] = bool(overrides)
    if case.texts:
        request["texts"] = list(TEXTS)
    return request


def prompts(case: Case) -> list[list[int]]:
    """Random ids over the whole vocabulary, one list per ``PROMPT_LENGTHS``."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    vocab = len(vocab_for(case.config()).tokens)
    return [[int(t) for t in rng.integers(0, vocab, n)] for n in PROMPT_LENGTHS]


def _interpreter() -> Path:
    """The first Python that imports the reference packages, else skip."""
    env = os.environ.get("PULLWEIGHTS_TRANSFORMERS_PYTHON")
    candidates = [Path(env)] if env else [DEFAULT_PYTHON, Path(sys.executable)]
    reasons = []
    for python in candidates:
        if not python.exists():
            reasons.append(f"{python}: not found")
            continue
        probe = subprocess.run(
            [str(python), "-c", "import torch, transformers, accelerate, gguf"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if probe.returncode == 0:
            return python
        last = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        reasons.append(f"{python}: {last}")
    pytest.skip(
        "transformers reference not installed (see README, Development): " + "; ".join(reasons)
    )


@pytest.fixture(scope="module")
def transformers_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Write every case's file and evaluate them all in one runner process."""
    python = _interpreter()
    work = tmp_path_factory.mktemp("transformers")
    requests, paths = [], {}
    for case in CASES:
        path = write_tiny_model(
            work / f"{case.id}.gguf", "llama", quant=case.quant, **case.overrides
        )
        paths[case.id] = path
        request = hf_request(case, path)
        request["out"] = str(work / f"{case.id}.npz")
        requests.append(request)
    outputs = run_requests(
        python, RUNNER, requests, work / "requests.json", env={"HF_HUB_OFFLINE": "1"}
    )
    return {
        case.id: {"path": paths[case.id], **arrays}
        for case, arrays in zip(CASES, outputs, strict=True)
    }


async def _load(path: Path, tmp_path: Path) -> LanguageModel:
    context = create_context(cache_dir=tmp_path / "cache")
    return await load_model(str(path), context=context, accuracy_level=0, context_length=CONTEXT)


def _relative(got: F32, expected: F32) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_logits_match_transformers(
    case: Case, transformers_results: dict[str, Any], tmp_path: Path
) -> None:
    hf = transformers_results[case.id]
    expected_class = "MistralForCausalLM" if case.family == "mistral" else "LlamaForCausalLM"
    assert str(hf["model_class"]) == expected_class
    model = await _load(hf["path"], tmp_path)
    reference = ReferenceModel(hf["path"])
    stats: dict[str, Any] = {"case": case.id}
    for i, ids in enumerate(prompts(case)):
        expected = hf[f"logits.{i}"]
        got = await model.forward(ids, all_logits=True)
        model.reset()
        assert got.shape == expected.shape
        rel = _relative(got, expected)
        stats[f"prompt{i}"] = {
            "max_abs_logit": float(np.abs(expected).max()),
            "max_abs_diff": float(np.abs(got - expected).max()),
            "rel_diff": rel,
        }
        assert rel < TOLERANCE, (case.id, i, rel)
        numpy_rel = _relative(reference.logits(ids).astype(np.float32), expected)
        stats[f"prompt{i}"]["numpy_rel_diff"] = numpy_rel
        assert numpy_rel < TOLERANCE, (case.id, i, numpy_rel)
        if f"control.{i}" in hf and i == len(PROMPT_LENGTHS) - 1:
            control = _relative(got, hf[f"control.{i}"])
            stats["control_rel_diff"] = control
            assert control > CONTROL_MARGIN * TOLERANCE, (case.id, control)

    # The long prompt again through the KV cache: a short prefill then token by token,
    # and two chunks of 20 (the second attends to a cache longer than the window).
    ids, full = prompts(case)[-1], hf[f"logits.{len(PROMPT_LENGTHS) - 1}"]
    steps = [(await model.forward(ids[:PREFILL]))[0]]
    steps += [(await model.forward([t]))[0] for t in ids[PREFILL:]]
    model.reset()
    stats["decode_rel_diff"] = _relative(np.stack(steps), full[PREFILL - 1 :])
    half = len(ids) // 2
    chunks = [await model.forward(ids[:half], all_logits=True)]
    chunks.append(await model.forward(ids[half:], all_logits=True))
    stats["chunked_rel_diff"] = _relative(np.concatenate(chunks), full)
    print(json.dumps(stats))
    assert stats["decode_rel_diff"] < TOLERANCE, stats
    assert stats["chunked_rel_diff"] < TOLERANCE, stats


@pytest.mark.parametrize("case", [c for c in CASES if c.texts], ids=lambda c: c.id)
async def test_tokenizer_and_text_logits_match_transformers(
    case: Case, transformers_results: dict[str, Any], tmp_path: Path
) -> None:
    """transformers converts the tiny SentencePiece vocabulary itself: same ids, same logits."""
    hf = transformers_results[case.id]
    model = await _load(hf["path"], tmp_path)
    for j, text in enumerate(TEXTS):
        ids = model.tokenizer.encode(text)
        assert ids == hf[f"text_ids.{j}"].tolist(), text
        got = await model.forward(ids, all_logits=True)
        model.reset()
        assert _relative(got, hf[f"text_logits.{j}"]) < TOLERANCE
