"""``pullweights export MODEL OUT.onnx [--external-data]``: the graph pullweights builds
for a GGUF LLM, with its transformed weights, as a standard ONNX model for plain
onnxruntime and other ONNX tools (see :mod:`pullweights.export`)."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parser", "run"]


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``export`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "export",
        help="write a GGUF LLM as a standard ONNX model (weights embedded or external data)",
        description=(
            "Build MODEL's decoder graph as pullweights runs it, pull and transform its "
            "weights, and write OUT.onnx loadable by plain onnxruntime (weights inside, or "
            "with --external-data in OUT.onnx.data)."
        ),
    )
    parser.add_argument("model", nargs="+", metavar="MODEL", help="path(s), URL or installed name")
    parser.add_argument("out", metavar="OUT.onnx", help="the ONNX file to write")
    parser.add_argument("--external-data", action="store_true", help="weights in OUT.onnx.data")
    parser.add_argument("--context", type=int, default=None, help="KV cache length")
    parser.add_argument(
        "--accuracy-level", type=int, choices=range(5), default=None,
        help="MatMulNBits accuracy level (default 4: int8 activations; 0: exact)",
    )  # fmt: skip
    parser.add_argument("--cache-dir", default=None, help="weight cache to reuse transforms")
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    """Export and print what was written.

    Raises:
        PullWeightsError: the model cannot be opened or built, or is too large to embed.
    """
    from pullweights.export import export_model

    model: str | list[str] = args.model if len(args.model) > 1 else args.model[0]
    written = await export_model(
        model, args.out, external_data=args.external_data, context_length=args.context,
        accuracy_level=args.accuracy_level, cache_dir=args.cache_dir,
    )  # fmt: skip
    sizes = ", ".join(f"{p} ({p.stat().st_size / 2**20:.1f} MiB)" for p in written)
    print(f"wrote {sizes}", file=sys.stderr)
    return 0
