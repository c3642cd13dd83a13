"""Counters of the server and the ``/metrics`` page (Prometheus text exposition format).

The page holds the request and token counters, per model its load time, KV cache slots
(size, lent, waiting, bytes per slot, tokens held) and the process's memory as the kernel
reports it (:func:`pullweights.memstats.snapshot`: RSS, private (anonymous) memory, peak
RSS).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from loaders import GenerationStats, LanguageModel
from pullweights.memstats import snapshot
from pullweights.serve.registry import ModelRegistry

__all__ = ["Metrics"]


@dataclass
class Metrics:
    """What the server has done since it started."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    active: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    wait_seconds: float = 0.0
    cancelled: int = 0

    def finished(self, route: str, status: int) -> None:
        """Count one answered request."""
        self.requests[route, status] += 1

    def generated(self, stats: GenerationStats) -> None:
        """Add one generation's token counts and times."""
        self.prompt_tokens += stats.prompt_tokens
        self.cached_tokens += stats.cached_tokens
        self.generated_tokens += stats.generated_tokens
        self.prefill_seconds += stats.prefill_seconds
        self.decode_seconds += stats.decode_seconds
        self.wait_seconds += stats.wait_seconds

    def render(self, registry: ModelRegistry) -> str:
        """The Prometheus text page."""
        out: list[str] = []

        def metric(name: str, kind: str, text: str, values: list[tuple[str, float]]) -> None:
            out.append(f"# HELP pullweights_{name} {text}")
            out.append(f"# TYPE pullweights_{name} {kind}")
            out.extend(f"pullweights_{name}{labels} {value:g}" for labels, value in values)

        requests = [
            (f'{{route="{route}",status="{status}"}}', float(n))
            for (route, status), n in sorted(self.requests.items())
        ]
        metric("requests_total", "counter", "Requests answered, by route and status.", requests)
        metric("requests_active", "gauge", "Requests being answered now.", [("", self.active)])
        for name, text, total in (
            ("generations_cancelled_total", "Generations the client left.", self.cancelled),
            ("prompt_tokens_total", "Prompt tokens of all generations.", self.prompt_tokens),
            ("prompt_tokens_cached_total", "Prompt tokens reused from a slot.", self.cached_tokens),
            ("generated_tokens_total", "Tokens generated.", self.generated_tokens),
            ("prefill_seconds_total", "Time spent prefilling prompts.", self.prefill_seconds),
            ("decode_seconds_total", "Time spent decoding.", self.decode_seconds),
            ("slot_wait_seconds_total", "Time spent waiting for a free slot.", self.wait_seconds),
        ):
            metric(name, "counter", text, [("", total)])
        entries = [(f'{{model="{m.name}"}}', m) for m in registry]
        metric(
            "model_loaded",
            "gauge",
            "1 once the model is loaded.",
            [(label, float(m.model is not None)) for label, m in entries],
        )
        metric(
            "model_load_seconds",
            "gauge",
            "Time the model took to load.",
            [(label, m.load_seconds) for label, m in entries if m.model is not None],
        )
        loaded = [(label, m.model) for label, m in entries if m.model is not None]
        per_model: tuple[tuple[str, str, Callable[[LanguageModel], int]], ...] = (
            ("slots", "KV cache slots the model may lend.", lambda m: m.slots.size),
            ("slots_created", "KV cache slots allocated.", lambda m: m.slots.created),
            ("slots_in_use", "KV cache slots lent now.", lambda m: m.slots.in_use),
            ("slots_peak_in_use", "Most slots lent at once.", lambda m: m.slots.peak_in_use),
            ("slots_waiting", "Generations waiting for a slot.", lambda m: m.slots.waiting),
            (
                "slot_bytes",
                "Bytes one slot reserves (touched as it fills).",
                lambda m: m.slots.slot_bytes,
            ),
            ("slot_cached_tokens", "Tokens the slots hold.", lambda m: m.slots.cached_tokens),
            ("context_tokens", "Positions one slot holds.", lambda m: m.context),
        )
        for name, text, get in per_model:
            metric(name, "gauge", text, [(label, float(get(m))) for label, m in loaded])
        mem = snapshot()
        for name, text, value in (
            ("resident_memory_bytes", "Process RSS.", mem.rss),
            ("private_memory_bytes", "Process private (anonymous) memory.", mem.anonymous),
            ("peak_resident_memory_bytes", "Peak RSS (VmHWM).", mem.peak_rss),
        ):
            metric(name, "gauge", text, [("", float(value))])
        return "\n".join(out) + "\n"
