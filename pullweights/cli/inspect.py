"""``pullweights inspect MODEL...``: what a GGUF file holds, read from its header only.

Prints a summary (size, version, alignment, architecture and its hyperparameters), the
metadata (long arrays summarised as ``[262144 strings]``) and one row per tensor: name,
GGML type, shape, bytes and the layout a load builds for it (the loaders' own choice:
:func:`pullweights.gguf.layouts.layout_name`).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
from gguf.constants import GGUFValueType

from pullweights.errors import PullWeightsError
from pullweights.gguf.installed import installed_model_names
from pullweights.gguf.reader import GGUFFile, GGUFTensor, ModelSpec, open_gguf
from pullweights.sources.concat import ConcatSource

__all__ = ["add_parser", "run"]

#: Arrays longer than this are summarised by their length.
SHORT_ARRAY = 16
#: Strings longer than this are shortened unless ``--metadata`` is given.
SHORT_STRING = 72
#: Elements of a long array shown with ``--metadata``.
ARRAY_HEAD = 8


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``inspect`` on the ``pullweights`` command line."""
    parser = subparsers.add_parser(
        "inspect",
        help="show a GGUF file's metadata and tensors (reads the header only)",
        description=(
            "Show what a GGUF file holds: summary, metadata and a table of tensors with the "
            "layout pullweights would use. MODEL is a path, several part paths in order, or "
            f"an installed model name ({', '.join(installed_model_names())})."
        ),
    )
    parser.add_argument("model", nargs="+", metavar="MODEL", help="path, part paths, or name")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--metadata",
        action="store_true",
        help="show all metadata: long strings in full, long arrays by their first elements",
    )
    parser.set_defaults(run=run)


async def run(args: argparse.Namespace) -> int:
    """Print the inspection of ``args.model``; return the exit status.

    Raises:
        PullWeightsError: the model cannot be opened or its header is malformed.
    """
    names: list[str] = list(args.model)
    model: ModelSpec = names[0] if len(names) == 1 else names
    async with await open_gguf(model) as gguf:
        layout = _layout_namer(gguf)
        if args.json:
            print(json.dumps(_as_json(gguf, layout, full=args.metadata), indent=2))
        else:
            title = " ".join(names)
            print("\n".join(_as_text(gguf, layout, title=title, full=args.metadata)))
    return 0


def _layout_namer(gguf: GGUFFile) -> Callable[[GGUFTensor], str]:
    """What a load builds for each tensor (:func:`~pullweights.gguf.layouts.layout_name`):
    the layout the loaders choose, the embedding table also as the output head when the
    file has no ``output.weight``, and the weights run as one stacked matmul
    (:data:`~pullweights.gguf.stacked.STACKS`)."""
    from pullweights.gguf.layouts import layout_name
    from pullweights.gguf.stacked import stack_of, stacked_transform

    tied = "output.weight" not in gguf.tensors

    def stacked(tensor: GGUFTensor) -> str:
        members = stack_of(tensor.name)
        if not members or not all(m in gguf.tensors for m in members):
            return ""
        if stacked_transform([gguf.tensors[m] for m in members]) is None:
            return ""
        return " (stacked: " + " + ".join(m.split(".")[-2] for m in members) + ")"

    def name(tensor: GGUFTensor) -> str:
        try:
            return layout_name(
                tensor.ggml_type,
                tensor.name,
                tensor.shape,
                tied_head=tied and tensor.name == "token_embd.weight",
            ) + stacked(tensor)
        except PullWeightsError as exc:
            return f"unusable ({exc})"

    return name


# -- summary ----------------------------------------------------------------------------------


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _parts(gguf: GGUFFile) -> int:
    return len(gguf.source.parts) if isinstance(gguf.source, ConcatSource) else 1


def _type_counts(tensors: Sequence[GGUFTensor]) -> list[tuple[str, int]]:
    return Counter(t.ggml_type.name for t in tensors).most_common()


def _hyperparameters(gguf: GGUFFile) -> dict[str, str]:
    """Metadata keys of the architecture (``gemma3.block_count``), by their short name."""
    arch = gguf.get("general.architecture")
    if not isinstance(arch, str):
        return {}
    prefix = arch + "."
    return {k[len(prefix) :]: k for k in gguf.metadata if k.startswith(prefix)}


# -- values -----------------------------------------------------------------------------------


def _element_name(gguf: GGUFFile, key: str) -> str:
    types = gguf.value_types[key]
    element = types[-1]
    if element == GGUFValueType.STRING:
        return "strings"
    if element == GGUFValueType.ARRAY:
        return "arrays"
    return element.name.lower()


def _scalar_text(value: object, full: bool) -> str:
    if isinstance(value, str):
        if not full and len(value) > SHORT_STRING:
            return repr(value[:SHORT_STRING]) + f"… ({len(value)} chars)"
        return repr(value)
    if isinstance(value, float):
        return f"{value:.7g}"
    if isinstance(value, np.generic):
        return _scalar_text(value.item(), full)
    if isinstance(value, list | np.ndarray):
        return repr(_plain(value))  # an array nested in an array
    return str(value)


def _value_text(gguf: GGUFFile, key: str, full: bool) -> str:
    value = gguf.metadata[key]
    if not isinstance(value, (list, np.ndarray)):
        return _scalar_text(value, full)
    n = len(value)
    if n > SHORT_ARRAY and not full:
        return f"[{n} {_element_name(gguf, key)}]"
    shown = value[:ARRAY_HEAD] if n > SHORT_ARRAY else value
    items = ", ".join(_scalar_text(v, False) for v in shown)
    more = f", … ({n - ARRAY_HEAD} more)" if n > SHORT_ARRAY else ""
    return f"[{items}{more}]"


def _json_value(gguf: GGUFFile, key: str, full: bool) -> object:
    value = gguf.metadata[key]
    if not isinstance(value, (list, np.ndarray)):
        return value
    n = len(value)
    if n <= SHORT_ARRAY:
        return _plain(value)
    summary: dict[str, object] = {"length": n, "element_type": _element_name(gguf, key)}
    if full:
        summary["head"] = _plain(value[:ARRAY_HEAD])
    return summary


def _plain(value: object) -> object:
    """``value`` with numpy arrays and scalars turned into JSON-friendly Python objects."""
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# -- output -----------------------------------------------------------------------------------


def _as_text(
    gguf: GGUFFile, layout: Callable[[GGUFTensor], str], *, title: str, full: bool
) -> list[str]:
    tensors = list(gguf.tensors.values())
    data_bytes = sum(t.nbytes for t in tensors)
    parts = _parts(gguf)
    types = ", ".join(f"{name} {count}" for name, count in _type_counts(tensors))
    lines = [
        title if title == gguf.source.name else f"{title}  ({gguf.source.name})",
        f"  size          {gguf.source.size:,} bytes ({_human(gguf.source.size)})"
        + (f" in {parts} parts" if parts > 1 else ""),
        f"  GGUF          version {gguf.version}, alignment {gguf.alignment}, "
        f"header {gguf.data_offset:,} bytes",
        f"  tensors       {len(tensors)} ({types}), {data_bytes:,} bytes",
        f"  architecture  {gguf.get('general.architecture', '?')}",
    ]
    for short, key in _hyperparameters(gguf).items():
        lines.append(f"    {short:<36} {_value_text(gguf, key, False)}")
    lines += ["", f"metadata ({len(gguf.metadata)} keys)"]
    width = max((len(k) for k in gguf.metadata), default=0)
    for key in gguf.metadata:
        lines.append(f"  {key:<{width}}  {_value_text(gguf, key, full)}")
    lines += ["", *_table(tensors, layout)]
    return lines


def _table(tensors: Sequence[GGUFTensor], layout: Callable[[GGUFTensor], str]) -> list[str]:
    header = ("name", "type", "shape", "bytes", "layout")
    rows = [
        (t.name, t.ggml_type.name, "x".join(map(str, t.shape)), f"{t.nbytes:,}", layout(t))
        for t in tensors
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    right = {3}

    def fmt(row: Sequence[str]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        return "  ".join(cells).rstrip()

    return [fmt(header), *(fmt(r) for r in rows)]


def _as_json(
    gguf: GGUFFile, layout: Callable[[GGUFTensor], str], *, full: bool
) -> dict[str, object]:
    tensors = list(gguf.tensors.values())
    return {
        "source": gguf.source.name,
        "size": gguf.source.size,
        "parts": _parts(gguf),
        "version": gguf.version,
        "alignment": gguf.alignment,
        "data_offset": gguf.data_offset,
        "architecture": gguf.get("general.architecture"),
        "hyperparameters": {
            short: _json_value(gguf, key, full) for short, key in _hyperparameters(gguf).items()
        },
        "tensor_types": dict(_type_counts(tensors)),
        "metadata": {k: _json_value(gguf, k, full) for k in gguf.metadata},
        "tensors": [
            {
                "name": t.name,
                "type": t.ggml_type.name,
                "shape": list(t.shape),
                "offset": t.offset,
                "bytes": t.nbytes,
                "layout": layout(t),
            }
            for t in tensors
        ],
    }
