"""``pullweights pull MODEL...``: fetch and prepare every weight of a model into the cache.

Like ``ollama pull``: afterwards ``pullweights run`` on the same MODEL needs no network
(the header and identity of a URL are remembered; every weight is a cache entry in the
layout the model uses). Interrupted pulls resume: committed entries are kept and skipped.
For a GGUF whose architecture has a loader the model is built exactly as ``run`` builds
it; other GGUFs get every tensor cached in the layout ``inspect`` shows.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from pullweights.cli.progress import load_progress_bar
from pullweights.errors import CacheError
from pullweights.events import ProgressCallback
from pullweights.gguf.reader import GGUFFile, open_gguf
from pullweights.memstats import MemoryMonitor
from pullweights.runtime.context import create_context
from pullweights.runtime.puller import WeightPuller

__all__ = ["add_parser", "run"]

MB = 1024 * 1024


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``pull`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "pull",
        help="fetch a model's weights into the cache (resumable), for offline runs",
        description=(
            "Fetch and prepare every weight of MODEL (a URL, a path, part paths in order, or "
            "an installed model name) into the weight cache. Re-running resumes."
        ),
    )
    parser.add_argument("model", nargs="+", metavar="MODEL", help="URL, path(s) or name")
    parser.add_argument("--cache-dir", default=None, help="weight cache directory")
    parser.add_argument("--context", type=int, default=None, help="KV cache length for the build")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


async def _cache_tensors(gguf: GGUFFile, context: Any, progress: ProgressCallback | None) -> int:
    """Cache every tensor of a GGUF that has no loader, in its chosen layout."""
    from pullweights.gguf.layouts import choose_transform, tensor_role

    refs = {}
    for name, tensor in gguf.tensors.items():
        transform = choose_transform(tensor.ggml_type, tensor.shape, tensor_role(name))
        refs.update({f"{name}/{p}": r for p, r in tensor.payload(transform).refs().items()})
    loader = WeightPuller(context.cache, progress=progress)
    await loader.pull(refs)
    if context.cache is not None:
        context.cache.register_load(refs.values())
    return len(gguf.tensors)


async def run(args: argparse.Namespace) -> int:
    """Pull the model into the cache and print what was done.

    Raises:
        PullWeightsError: the model cannot be opened or fetched, or the cache is unusable.
    """
    from loaders import ARCHITECTURES, load_model

    model: str | list[str] = args.model if len(args.model) > 1 else args.model[0]
    context = create_context(cache_dir=args.cache_dir or "default")
    cache = context.cache
    if context.cache_dir is None or cache is None:
        raise CacheError("pull needs a cache directory")
    before = cache.total_bytes()
    start = time.perf_counter()
    bar, progress = load_progress_bar(not args.no_progress and sys.stderr.isatty(), "pulling")
    with MemoryMonitor() as monitor:
        try:
            async with await open_gguf(model, remote_dir=context.cache_dir / "remote") as gguf:
                if gguf.architecture in ARCHITECTURES:
                    llm = await load_model(
                        gguf, context=context, context_length=args.context, progress=progress
                    )
                    what = f"{llm.config.arch} model, {len(gguf.tensors)} tensors"
                    del llm
                else:
                    count = await _cache_tensors(gguf, context, progress)
                    what = f"{count} tensors ({gguf.architecture or 'no architecture'})"
                if isinstance(model, str):
                    cache.register_model(gguf.source, name=model)
        finally:
            if bar is not None:
                bar.close()
    after = cache.total_bytes()
    print(
        f"pulled {what} in {time.perf_counter() - start:.1f} s; cache {context.cache_dir} "
        f"holds {after / MB:.1f} MiB ({(after - before) / MB:+.1f} MiB); peak private "
        f"memory {monitor.peak_anonymous / MB:.0f} MiB",
        file=sys.stderr,
    )
    return 0
