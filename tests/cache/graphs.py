"""A small quantized model for end-to-end cache tests: two MatMulNBits layers from a GGUF.

Built with the session-cache tests' helpers (``tests.graph.test_session_cache``): Q8_0
and Q4_0 matrices repacked by the layout transforms, so a load writes transformed weight
entries and a saved session. The reference output is a build without any cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pullweights.runtime.graph import Graph
from tests.graph.test_session_cache import Q, build, context, reference, run, write_gguf

__all__ = ["SHAPES", "load", "reference_output", "small_gguf"]

#: (type, N, K): 2048 -> 512 -> 512; enough packed bytes for a saved session.
SHAPES = [(Q.Q8_0, 512, 2048), (Q.Q4_0, 512, 512)]


def small_gguf(path: Path, seed: int = 0) -> Path:
    write_gguf(path, 0, seed=seed, shapes=SHAPES)
    return path


async def load(
    cache_dir: Path | None, model: Path | str, *, remember: bool = False, sessions: bool = True
) -> tuple[Graph, np.ndarray]:
    """Build ``model`` (a path or URL) with the cache in ``cache_dir``; its output. With
    ``remember`` a URL's header is remembered in the cache's ``remote/``; without
    ``sessions`` nothing is saved (and a local file's weight entries stay: with saved
    sessions they are dropped once saved, the sessions holding those bytes)."""
    remote = cache_dir / "remote" if remember and cache_dir is not None else None
    graph = await build(context(cache_dir, session_cache=sessions), model, remote_dir=remote)
    out = await run(graph)
    await graph.saved()  # the background save is done (or failed) before the test goes on
    return graph, out


async def reference_output(path: Path) -> np.ndarray:
    """The output of a build without a cache, checked against ``gguf.quants``."""
    _graph, out = await load(None, path)
    x = np.random.default_rng(1).standard_normal((5, 2048)).astype(np.float32)
    names = [(f"w{i}", kind) for i, (kind, _n, _k) in enumerate(SHAPES)]
    want = reference(path, names, x)
    # accuracy_level 4 quantizes activations to int8: a loose, stated tolerance.
    np.testing.assert_allclose(out, want, rtol=0.05, atol=0.05 * float(np.abs(want).max()))
    return out
