"""Mutations of a GGUF :class:`~tests.fuzz.image.Image`, as JSON-able operations.

:func:`draw` picks the operations of one fuzz input from a seeded ``random.Random``;
:func:`apply` performs them. Keeping the two apart means a found case is stored as its
list of operations (``regressions.json``) and replays the same way whatever the random
drawing later becomes. Operations:

* ``set``: a metadata value replaced (same type, boundary values, another type);
* ``drop`` / ``add``: a metadata entry removed / a new one added (``neutral`` when the key
  is one no loader reads: the output must then not change);
* ``array``: an array truncated, emptied, extended, an element replaced or duplicated;
* ``template``: the chat template replaced by a hostile one or spliced with a fragment;
* ``tensor``: a tensor's dimension, type, offset or name changed, or the tensor dropped;
* ``bytes``: raw bytes of the header overwritten; ``truncate``: the file cut short.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
from gguf.constants import GGUFValueType

from tests.fuzz.image import Entry, Image

V = GGUFValueType
Op = dict[str, Any]

INTS = [0, 1, -1, 2, 3, 7, 255, 256, 65535, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1,
        2**63, 2**64 - 1, -(2**63)]  # fmt: skip
FLOATS = [0.0, -0.0, 1e-45, 1e-38, -1.0, 0.5, 1e38, 3.4e38, 1e308, math.nan, math.inf, -math.inf]
STRINGS = ["", "x", "llama", "gemma3", "qwen2", "gpt2", "bert", "linear", "yarn", "\0", "é" * 3,
           "\ud800", "x" * 100_000, "{{", "<start_of_turn>"]  # fmt: skip

TEMPLATES = [
    "{{ 'x' * 10000000000 }}",
    "{{ 'x' * 100000000 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 1 / 0 }}",
    "{{ 10.0 ** 400 }}",
    "{{ range(1000000) | list | length }}",
    "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
    "{% if 1 %}" * 150 + "x" + "{% endif %}" * 150,
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
    "{% endfor %}{{ ns.s }}",
    "{{ 'x' | center(10000000000) }}",
    "{{ '%10000000000s' % 'x' }}",
    "{{ '{:>10000000000}'.format('x') }}",
    "{{ ([[1]] * 100000) | sum(start=[]) | length }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ raise_exception('no') }}",
    "{% for m in messages %}{{ m.content * 1000000 }}{% endfor %}",
    "{{ messages | tojson(indent=1000000000) }}",
    "{% for %}",
    "{{ bos_token }}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}",
    "",
]
FRAGMENTS = ["{{", "}}", "{%", "%}", "{% endfor %}", "{{ x.y.z() }}", "{{ 1/0 }}",
             "{% for i in range(99999) %}", "\0", "{#"]  # fmt: skip

NEUTRAL_KEY = "fuzz.neutral"


# ------------------------------------------------------------------ drawing
def draw(rng: random.Random, image: Image) -> list[Op]:
    """One to three operations on ``image`` (a tenth of the inputs get one neutral one)."""
    if rng.random() < 0.1:
        return [{"op": "add", "key": NEUTRAL_KEY, "vtype": int(V.STRING), "value": "x",
                 "neutral": True}]  # fmt: skip
    return [_draw_one(rng, image) for _ in range(rng.choice((1, 1, 2, 3)))]


def _draw_one(rng: random.Random, image: Image) -> Op:
    kind = rng.choices(
        ["set", "drop", "add", "array", "template", "tensor", "bytes", "truncate"],
        weights=[30, 6, 3, 15, 12, 20, 10, 4],
    )[0]
    entries = image.entries
    if kind in ("set", "drop"):
        e = rng.choice(entries)
        if kind == "drop":
            return {"op": "drop", "key": e.key}
        return {"op": "set", "key": e.key, **_draw_value(rng, e)}
    if kind == "add":
        key = rng.choice([e.key for e in entries]) + rng.choice(["", ".x", "_"])
        vtype, value = _draw_scalar(rng)
        return {"op": "add", "key": key, "vtype": vtype, "value": value}
    if kind == "array":
        arrays = [e for e in entries if e.vtype == V.ARRAY]
        if arrays:
            return _draw_array(rng, rng.choice(arrays), image)
        kind = "tensor"
    if kind == "template":
        if rng.random() < 0.6:
            return {"op": "template", "text": rng.choice(TEMPLATES)}
        return {"op": "template_splice", "at": rng.random(), "text": rng.choice(FRAGMENTS)}
    if kind == "tensor" and image.tensors:
        index = rng.randrange(len(image.tensors))
        t = image.tensors[index]
        what = rng.choice(["dim", "dim", "type", "offset", "rename", "drop"])
        op: Op = {"op": "tensor", "index": index, "what": what}
        if what == "dim":
            op |= {"axis": rng.randrange(max(len(t.dims), 1)), "value": rng.choice(INTS)}
        elif what == "type":
            op["value"] = rng.choice([0, 1, 2, 8, 12, 14, 30, 39, 40, 1000, rng.randrange(50)])
        elif what == "offset":
            other = rng.choice(image.tensors).offset
            op["value"] = rng.choice([other, other + 32, rng.choice(INTS), image.data_size])
        elif what == "rename":
            op["value"] = rng.choice([
                t.name.replace("blk.0.", "blk.99."), t.name.replace("blk.", "blk.-1"),
                rng.choice(image.tensors).name, t.name + ".x", "",
            ])  # fmt: skip
        return op
    if kind == "truncate":
        return {"op": "truncate", "at": rng.random()}
    return {
        "op": "bytes",
        "at": rng.random(),
        "value": rng.randrange(256),
        "count": rng.choice([1, 1, 4, 8]),
    }


def _draw_scalar(rng: random.Random) -> tuple[int, Any]:
    choice = rng.random()
    if choice < 0.4:
        value = rng.choice(INTS)
        vtype = V.INT64 if value < 0 else V.UINT64 if value > 2**32 - 1 else V.UINT32
        return int(vtype), value
    if choice < 0.7:
        return int(rng.choice([V.FLOAT32, V.FLOAT64])), rng.choice(FLOATS)
    if choice < 0.9:
        return int(V.STRING), rng.choice(STRINGS)
    return int(V.BOOL), rng.choice([True, False])


def _draw_value(rng: random.Random, e: Entry) -> Op:
    if rng.random() < 0.2 or e.vtype == V.ARRAY:  # another type altogether
        vtype, value = _draw_scalar(rng)
        return {"vtype": vtype, "value": value}
    if e.vtype == V.STRING:
        if e.key == "general.architecture":
            return {"vtype": int(V.STRING), "value": rng.choice(STRINGS[:8])}
        return {"vtype": int(V.STRING), "value": rng.choice(STRINGS)}
    if e.vtype in (V.FLOAT32, V.FLOAT64):
        return {"vtype": int(e.vtype), "value": rng.choice(FLOATS)}
    if e.vtype == V.BOOL:
        return {"vtype": int(V.BOOL), "value": not e.value}
    value = rng.choice([*INTS, int(e.value) + rng.choice([-1, 1, 2])])  # type: ignore[call-overload]
    vtype = e.vtype
    if value < 0 and vtype in (V.UINT8, V.UINT16, V.UINT32, V.UINT64):
        vtype = V.INT64
    elif value > 2**31 - 1:
        vtype = V.UINT64
    return {"vtype": int(vtype), "value": value}


def _draw_array(rng: random.Random, e: Entry, image: Image) -> Op:
    n = len(e.value)  # type: ignore[arg-type]
    what = rng.choice(["truncate", "empty", "extend", "element", "duplicate", "shuffle"])
    op: Op = {"op": "array", "key": e.key, "what": what}
    if what == "truncate":
        op["length"] = rng.randrange(max(n, 1))
    elif what in ("element", "duplicate"):
        op["index"] = rng.randrange(max(n, 1))
        if what == "element":
            if e.etype == V.STRING:
                tokens = image.entry("tokenizer.ggml.tokens")
                pool = [*STRINGS[:12], "zzzq yyyq", "a", "a b c", " "]
                if tokens is not None and len(tokens.value) > 1:  # type: ignore[arg-type]
                    vocab = tokens.value
                    pool.append(f"{rng.choice(vocab)} {rng.choice(vocab)}")  # type: ignore[arg-type]
                op["value"] = rng.choice(pool)
            elif e.etype in (V.FLOAT32, V.FLOAT64):
                op["value"] = rng.choice(FLOATS)
            else:
                op["value"] = rng.choice([0, 1, 2, 3, 4, 5, 6, 7, 99, -1, 2**31 - 1])
    elif what == "shuffle":
        op["seed"] = rng.randrange(2**32)
    elif what == "extend":
        op["count"] = rng.choice([1, 5, 1000])
    return op


# ------------------------------------------------------------------ applying
def apply(image: Image, ops: list[Op]) -> Image:
    """``image`` with ``ops`` applied (in place; also returned)."""
    for op in ops:
        _APPLY[op["op"]](image, op)
    return image


def _set(image: Image, op: Op) -> None:
    e = image.entry(op["key"])
    if e is not None:
        e.vtype, e.value, e.etype = op["vtype"], op["value"], None


def _drop(image: Image, op: Op) -> None:
    image.entries = [e for e in image.entries if e.key != op["key"]]


def _add(image: Image, op: Op) -> None:
    image.entries.append(Entry(op["key"], op["vtype"], op["value"]))


def _array(image: Image, op: Op) -> None:
    e = image.entry(op["key"])
    if e is None or e.vtype != V.ARRAY:
        return
    items = list(e.value.tolist() if isinstance(e.value, np.ndarray) else e.value)  # type: ignore[attr-defined]
    what = op["what"]
    if what == "truncate":
        items = items[: op["length"]]
    elif what == "empty":
        items = []
    elif what == "extend" and items:
        items = items + [items[-1]] * op["count"]
    elif what == "element" and items:
        items[op["index"] % len(items)] = op["value"]
    elif what == "duplicate" and items:
        i = op["index"] % len(items)
        items[(i + 1) % len(items)] = items[i]
    elif what == "shuffle":
        random.Random(op["seed"]).shuffle(items)
    e.value = _fit(items, e)


def _fit(items: list[Any], e: Entry) -> Any:
    """Array items in a type that holds them (an element of another kind changes it)."""
    if e.etype == V.STRING:
        return [str(v) for v in items]
    if e.etype in (V.FLOAT32, V.FLOAT64):
        with np.errstate(over="ignore"):  # 1e308 as float32 is inf: that is the point
            return np.array(items, dtype=np.float64 if e.etype == V.FLOAT64 else np.float32)
    if any(v < 0 for v in items) and e.etype in (V.UINT8, V.UINT16, V.UINT32, V.UINT64):
        e.etype = V.INT32
    return items


def _template(image: Image, op: Op) -> None:
    key = "tokenizer.chat_template"
    e = image.entry(key)
    if e is None:
        e = Entry(key, V.STRING, "")
        image.entries.append(e)
    if op["op"] == "template":
        e.vtype, e.value, e.etype = V.STRING, op["text"], None
    else:
        text = e.value if isinstance(e.value, str) else ""
        cut = int(op["at"] * len(text))
        e.vtype, e.value, e.etype = V.STRING, text[:cut] + op["text"] + text[cut:], None


def _tensor(image: Image, op: Op) -> None:
    if not image.tensors:
        return
    index = op["index"] % len(image.tensors)
    t = image.tensors[index]
    what = op["what"]
    if what == "dim" and t.dims:
        t.dims[op["axis"] % len(t.dims)] = op["value"]
    elif what == "type":
        t.ggml_type = op["value"]
    elif what == "offset":
        t.offset = op["value"]
    elif what == "rename":
        t.name = op["value"]
    elif what == "drop":
        del image.tensors[index]


def _bytes(image: Image, op: Op) -> None:
    end = len(image.header())
    at = int(op["at"] * max(end - 24, 1)) + 24  # past the magic, version and counts
    image.patches.append((at, bytes([op["value"]]) * op["count"]))


def _truncate(image: Image, op: Op) -> None:
    total = len(image.header()) + image.data_size
    image.truncate = int(op["at"] * total)


_APPLY = {
    "set": _set,
    "drop": _drop,
    "add": _add,
    "array": _array,
    "template": _template,
    "template_splice": _template,
    "tensor": _tensor,
    "bytes": _bytes,
    "truncate": _truncate,
}


def is_neutral(ops: list[Op]) -> bool:
    """Whether ``ops`` change nothing any loader reads: the output must be unchanged."""
    return bool(ops) and all(op.get("neutral") for op in ops)
