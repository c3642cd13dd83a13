"""``pullweights serve [MODEL ...]``: an OpenAI-compatible HTTP server for GGUF LLMs.

Each MODEL (default gemma3-270m) is served under the name it was given: an installed
model name as itself, ``NAME=SPEC`` as NAME, a path or URL as its file name without
``.gguf``. Models load before the server listens (``--lazy``: on the first request that
names them). Each model answers ``--slots`` requests at once (each its own KV cache,
memory used as it fills); more wait for a free slot. Binds 127.0.0.1:8000 by default; an
API key (``--api-key`` or ``$PULLWEIGHTS_API_KEY``) is then required as
``Authorization: Bearer KEY``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING

from pullweights.cli.model_args import DEFAULT_MODEL, add_load_arguments, load_llm
from pullweights.errors import PullWeightsError

if TYPE_CHECKING:
    from loaders import LanguageModel

__all__ = ["add_parser", "run"]

MB = 1024 * 1024


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``serve`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "serve",
        help="serve GGUF language models over an OpenAI-compatible HTTP API",
        description=(
            "An OpenAI-compatible server (/v1/chat/completions, /v1/completions, /v1/models, "
            "/health, /metrics). MODEL: an installed model name, a path, a URL, or NAME=SPEC "
            f"(SPEC: a path, comma-separated part paths, a URL); default {DEFAULT_MODEL}."
        ),
    )
    parser.add_argument("models", nargs="*", metavar="MODEL", help="models to serve")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000; 0: any free one)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("PULLWEIGHTS_API_KEY") or None,
        help="require this key as a Bearer token (default: $PULLWEIGHTS_API_KEY)",
    )
    parser.add_argument(
        "--slots", type=int, default=4, help="requests each model generates at once (4)"
    )
    parser.add_argument("--lazy", action="store_true", help="load each model on first request")
    parser.add_argument("--log-requests", action="store_true", help="an access log on stderr")
    add_load_arguments(parser)


async def run(args: argparse.Namespace) -> int:
    """Serve until interrupted.

    Raises:
        PullWeightsError: a model failed to load.
    """
    from pullweights.serve import ModelRegistry, ServedModel, parse_model_arg, serve

    if args.slots < 1:
        print(f"pullweights: error: --slots must be >= 1, got {args.slots}", file=sys.stderr)
        return 2

    async def load(spec: str | list[str]) -> LanguageModel:
        return await load_llm(spec, args, slots=args.slots)

    try:
        registry = ModelRegistry(
            [
                ServedModel(name, spec, load)
                for name, spec in map(parse_model_arg, args.models or [DEFAULT_MODEL])
            ]
        )
    except ValueError as exc:
        print(f"pullweights: error: {exc}", file=sys.stderr)
        return 2
    if args.log_requests:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)

    def ready(url: str) -> None:
        for entry in registry:
            model = entry.model
            state = (
                "loads on first request"
                if model is None
                else f"loaded in {entry.load_seconds:.1f} s, context {model.context}, "
                f"{model.slots.size} slots of up to {model.slots.slot_bytes / MB:.0f} MiB"
            )
            print(f"model {entry.name}: {state}", file=sys.stderr)
        print(f"listening on {url}  (OpenAI base URL: {url}/v1)", file=sys.stderr, flush=True)

    try:
        await serve(
            registry,
            host=args.host,
            port=args.port,
            api_key=args.api_key,
            preload=not args.lazy,
            access_log=args.log_requests,
            on_ready=ready,
        )
    except OSError as exc:
        if isinstance(exc, PullWeightsError):  # SourceError: a model could not be read
            raise
        where = f"{args.host}:{args.port}"
        print(f"pullweights: error: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    return 0
