"""``pullweights pull MODEL...``: fetch and prepare every weight of a model into the cache.

Like ``ollama pull``: afterwards ``pullweights run`` on the same MODEL needs no network
(the header and identity of a URL are remembered; every weight is a cache entry in the
layout the model uses). Interrupted pulls resume: committed entries are kept and skipped.
For a GGUF whose architecture has a loader the model is built exactly as ``run`` builds
it; other GGUFs get every tensor cached in the layout ``inspect`` shows.

A URL pulled before is revalidated (one 1-byte request); ``--refresh`` fetches its header
again, ``--offline`` makes no request at all. The closing report says what was fetched
over the network and what was written to the cache.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
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
    remote = parser.add_mutually_exclusive_group()
    remote.add_argument(
        "--offline", action="store_true", help="no network: use what earlier pulls remembered"
    )
    remote.add_argument(
        "--refresh",
        action="store_true",
        help="fetch a URL's header again instead of revalidating the remembered one",
    )
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


_ORIGINS = {
    "fetched": "not pulled before",
    "refreshed": "header fetched again (--refresh)",
    "changed": "changed on the server: fetched again",
    "unchanged": "unchanged on the server",
    "offline": "offline: not checked",
    "unverified": "the server could not be asked; the version pulled before",
}


@contextlib.contextmanager
def _remote_log_lines() -> Iterator[None]:
    """Show the remote sources' INFO lines (downloads) on stderr while pulling."""
    logger = logging.getLogger("pullweights.sources.remote")
    if logger.handlers:  # configured by the caller: leave it alone
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("pullweights: %(message)s"))
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _fetched_report(gguf: GGUFFile) -> str:
    """One line per remote source: how it was opened and the bytes it fetched."""
    from pullweights.sources import RemoteSource  # aiohttp (~0.15 s) loads only here

    remote = [s for s in gguf.sources if isinstance(s, RemoteSource)]
    if not remote:
        return "  fetched: nothing (local files)"
    lines = []
    for source in remote:
        line = (
            f"  fetched: {source.bytes_fetched / MB:.1f} MiB over HTTP from {source.url} "
            f"({_ORIGINS.get(source.origin, source.origin)})"
        )
        if source.local_copy is not None:
            line += f"; a complete copy, as the server has no Range support: {source.local_copy}"
        lines.append(line)
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> int:
    """Pull the model into the cache and print what was fetched and written.

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
    remote_dir = context.cache_dir / "remote"
    with MemoryMonitor() as monitor, _remote_log_lines():
        try:
            async with await open_gguf(
                model,
                remote_dir=remote_dir,
                offline=getattr(args, "offline", False),
                refresh=getattr(args, "refresh", False),
                headers=cache.headers,
            ) as gguf:
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
                fetched = _fetched_report(gguf)
        finally:
            if bar is not None:
                bar.close()
    after = cache.total_bytes()
    print(
        f"pulled {what} in {time.perf_counter() - start:.1f} s\n{fetched}\n"
        f"  wrote: {(after - before) / MB:+.1f} MiB to the weight cache {context.cache_dir} "
        f"(now {after / MB:.1f} MiB)\n"
        f"  peak private memory {monitor.peak_anonymous / MB:.0f} MiB",
        file=sys.stderr,
    )
    return 0
