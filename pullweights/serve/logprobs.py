"""Log probabilities of generated tokens in the OpenAI shapes (chat and legacy completions).

A token's log probability is taken from the model's raw distribution at that step
(``log_softmax`` of the logits, before temperature, top-k/top-p or a repetition penalty),
as vLLM reports it; the alternatives are the ``n`` most likely tokens of that distribution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from loaders import Step
from loaders.tokenizer import Tokenizer

__all__ = ["chat_logprobs", "completion_logprobs", "token_logprobs"]


def token_logprobs(step: Step, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The chosen token's log probability and the ``top`` most likely ``(id, logprob)``."""
    logits = np.asarray(step.logits, dtype=np.float64)
    peak = logits.max()
    log_total = peak + np.log(np.exp(logits - peak).sum())
    chosen = float(logits[step.token] - log_total)
    if top <= 0:
        return chosen, []
    ids = np.argpartition(-logits, top - 1)[:top] if top < logits.shape[0] else np.arange(top)
    ids = ids[np.argsort(-logits[ids], kind="stable")]
    return chosen, [(int(i), float(logits[i] - log_total)) for i in ids]


def _token(tokenizer: Tokenizer, token: int) -> tuple[str, list[int]]:
    raw = tokenizer.token_bytes(token, skip_special=False)
    return raw.decode("utf-8", errors="replace"), list(raw)


def chat_logprobs(tokenizer: Tokenizer, steps: Sequence[Step], top: int) -> dict[str, Any]:
    """``{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}, ...]}``."""
    content = []
    for step in steps:
        chosen, alternatives = token_logprobs(step, top)
        text, raw = _token(tokenizer, step.token)
        entry: dict[str, Any] = {"token": text, "logprob": chosen, "bytes": raw}
        entry["top_logprobs"] = [
            dict(zip(("token", "bytes"), _token(tokenizer, i), strict=True), logprob=lp)
            for i, lp in alternatives
        ]
        content.append(entry)
    return {"content": content, "refusal": None}


def completion_logprobs(
    tokenizer: Tokenizer, steps: Sequence[Step], top: int, offset: int
) -> dict[str, Any]:
    """``{"tokens", "token_logprobs", "top_logprobs", "text_offset"}``; ``offset`` is the
    text length generated before these steps."""
    tokens, logprobs, tops, offsets = [], [], [], []
    for step in steps:
        chosen, alternatives = token_logprobs(step, top)
        text = _token(tokenizer, step.token)[0]
        tokens.append(text)
        logprobs.append(chosen)
        tops.append({_token(tokenizer, i)[0]: lp for i, lp in alternatives})
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }
