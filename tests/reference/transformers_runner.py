"""Run transformers' GGUF loader on GGUF files; a script for a venv with torch + transformers.

Run as ``<python> transformers_runner.py REQUESTS.json`` (a list of requests). It imports
only ``torch``, ``transformers`` (which reads the file with ``gguf`` and needs
``accelerate``), ``numpy`` and the standard library, never pullweights or this package, so
the comparison in ``test_transformers.py`` stays independent. The model is built offline
(``HF_HUB_OFFLINE=1``) in float32 with eager attention: ``AutoModelForCausalLM
.from_pretrained(folder, gguf_file=name)``, which reads the config from the metadata,
dequantizes with gguf-py and undoes llama.cpp's Q/K row permutation.

Request keys:

* ``model``: path of the GGUF file; ``out``: the ``.npz`` to write;
* ``prompts``: token-id lists, each evaluated in one pass (logits at every position);
* ``texts``: strings tokenized by transformers' own conversion of the file's tokenizer
  (``AutoTokenizer.from_pretrained(folder, gguf_file=name)``), then evaluated;
* ``config``: config attributes set before the model is built, for what the GGUF loader
  does not read (a sliding window, Llama 3.1 or linear RoPE scaling): the test passes the
  values the file was written from;
* ``model_type``: ``"mistral"`` builds transformers' Mistral model (sliding-window
  attention) from the weights and config the loader read as llama: llama.cpp writes Mistral
  files as ``llama``, and transformers' own switch to Mistral (on a ``general.name`` of
  exactly ``"mistral"``) then fails on gguf-py's tensor names ("Unknown gguf model_type:
  mistral", transformers 5.24 with gguf 0.19);
* ``control``: also evaluate ``prompts`` with the model the GGUF loader builds by itself
  (without ``config`` and ``model_type``).

The ``.npz`` holds ``logits.{i}`` (float32 ``[len, vocab]``), ``control.{i}``,
``text_ids.{j}``, ``text_logits.{j}`` and ``model_class`` (the transformers class used).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TQDM_DISABLE", "1")


# LlamaConfig fields that are not MistralConfig arguments.
_NOT_MODEL_FIELDS = {"model_type", "architectures", "quantization_config", "transformers_version"}


def _model(path: Path, overrides: dict[str, Any], model_type: str | None = None) -> Any:
    import torch  # only present in the reference venv
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    for key, value in overrides.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_pretrained(
        path.parent,
        gguf_file=path.name,
        config=config,
        dtype=torch.float32,
        attn_implementation="eager",
    )
    if model_type is None:
        return model.eval()
    if model_type != "mistral" or config.model_type != "llama":
        raise ValueError(f"model_type {model_type!r} of a {config.model_type} file")
    from transformers import MistralConfig, MistralForCausalLM

    fields = {k: v for k, v in config.to_dict().items() if k not in _NOT_MODEL_FIELDS}
    mistral = MistralForCausalLM(MistralConfig(**fields, attn_implementation="eager"))
    mistral.load_state_dict(model.state_dict(), strict=True)
    return mistral.to(torch.float32).eval()


def _logits(model: Any, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(torch.tensor([ids], dtype=torch.int64)).logits[0]
    logits: np.ndarray = out.to(torch.float32).numpy()
    return logits


def run(request: dict[str, Any]) -> None:
    """Evaluate one request's prompts and save every position's logits."""
    from transformers import AutoTokenizer

    path = Path(request["model"])
    model = _model(path, dict(request.get("config", {})), request.get("model_type"))
    result: dict[str, np.ndarray] = {"model_class": np.array(type(model).__name__)}
    prompts = [[int(t) for t in p] for p in request.get("prompts", [])]
    for i, ids in enumerate(prompts):
        result[f"logits.{i}"] = _logits(model, ids)
    texts = request.get("texts", [])
    if texts:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        for j, text in enumerate(texts):
            ids = [int(t) for t in tokenizer(text)["input_ids"]]
            result[f"text_ids.{j}"] = np.array(ids, dtype=np.int64)
            result[f"text_logits.{j}"] = _logits(model, ids)
    if request.get("control"):
        plain = _model(path, {})
        for i, ids in enumerate(prompts):
            result[f"control.{i}"] = _logits(plain, ids)
    np.savez(request["out"], **result)  # type: ignore[arg-type]


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        requests = json.load(f)
    for one in requests:
        run(one)
