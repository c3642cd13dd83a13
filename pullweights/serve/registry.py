"""The models a server offers, by the name each was given on the command line.

A :class:`ModelRegistry` maps names to :class:`ServedModel` entries. An entry loads its
model once — at start (:meth:`ModelRegistry.load_all`) or on the first request that names
it — and concurrent first requests wait for the same load. A load that fails is reported
to the requests waiting for it and retried by the next one.

Names: ``NAME=SPEC`` names ``SPEC`` (a path, part paths joined by commas, a URL or an
installed model name); an installed model name is its own name; any other path or URL is
named after its file without the ``.gguf`` suffix (``models/tiny.gguf`` -> ``tiny``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from loaders import LanguageModel
from pullweights.gguf.installed import installed_model_names
from pullweights.serve.protocol import ApiError

__all__ = ["Loader", "ModelRegistry", "ServedModel", "parse_model_arg"]

Spec = str | list[str]
Loader = Callable[[Spec], Awaitable[LanguageModel]]


def parse_model_arg(arg: str) -> tuple[str, Spec]:
    """``(name, spec)`` of a command-line model argument (see the module docs)."""
    name, sep, rest = arg.partition("=")
    if sep and name and "/" not in name and rest:
        parts = rest.split(",")
        return name, parts[0] if len(parts) == 1 else parts
    if arg in installed_model_names():
        return arg, arg
    tail = PurePosixPath(arg.split("?", 1)[0].rstrip("/")).name or arg
    return tail.removesuffix(".gguf") or arg, arg


@dataclass
class ServedModel:
    """One model of the server: its name, where it comes from, and once loaded, the model."""

    name: str
    spec: Spec
    loader: Loader
    model: LanguageModel | None = None
    load_seconds: float = 0.0
    created: int = field(default_factory=lambda: int(time.time()))
    _loading: asyncio.Task[LanguageModel] | None = None

    async def get(self) -> LanguageModel:
        """The loaded model, loading it first if needed.

        Raises:
            PullWeightsError: the load failed (the next call tries again).
        """
        if self.model is not None:
            return self.model
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load())
        task = self._loading
        try:
            # Shielded: a request that gives up does not cancel the load others wait for.
            return await asyncio.shield(task)
        finally:
            if task.done() and self._loading is task and self.model is None:
                self._loading = None  # failed: the next request retries

    async def _load(self) -> LanguageModel:
        start = time.perf_counter()
        model = await self.loader(self.spec)
        self.load_seconds = time.perf_counter() - start
        self.model = model
        return model


class ModelRegistry:
    """The served models by name; :meth:`get` finds one or raises a 404 :class:`ApiError`."""

    def __init__(self, models: list[ServedModel]) -> None:
        names = [m.name for m in models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"model names given twice: {duplicates} (use NAME=SPEC)")
        self._models = {m.name: m for m in models}

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def entry(self, name: str) -> ServedModel:
        """The entry called ``name``.

        Raises:
            ApiError: 404 ``model_not_found``: no model has that name.
        """
        try:
            return self._models[name]
        except KeyError:
            raise ApiError(
                404,
                f"The model '{name}' does not exist; this server has: {', '.join(self._models)}",
                param="model",
                code="model_not_found",
            ) from None

    async def load_all(self) -> None:
        """Load every model now (one after the other, so peaks do not add up)."""
        for entry in self._models.values():
            await entry.get()
