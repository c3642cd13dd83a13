"""Saved sessions: a second build of the same graph maps onnxruntime's packed weights.

The weights are real GGUF tensors (Q8_0 and Q4_0, written with ``gguf.GGUFWriter``)
repacked by :class:`~pullweights.gguf.layouts.MatMulNBitsTransform`; the reference is
``gguf.quants.dequantize``.
"""

from __future__ import annotations

import gc
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from gguf import GGMLQuantizationType, GGUFWriter
from gguf.quants import dequantize, quantize

import pullweights.graph.split_matmul as split_matmul
from pullweights import Dim, GraphBuilder, TensorDescriptor, create_context
from pullweights.cache import WeightCache
from pullweights.gguf.layouts import MatMulNBitsTransform
from pullweights.gguf.reader import open_gguf
from pullweights.graph.lowering import LoweredStage, lower
from pullweights.graph.stages import StagePlan
from pullweights.memstats import MemoryMonitor, snapshot
from pullweights.runtime.context import Context
from pullweights.runtime.graph import Graph
from pullweights.runtime.prefetch import SessionPrefetch
from pullweights.runtime.saved import session_key

Q = GGMLQuantizationType
MIB = 1 << 20
DIM = 2048
SEQ = Dim("seq", 1, 8)


def _q8_0(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Random but valid Q8_0 bytes ``[n, k / 32 * 34]``: an f16 scale and 32 int8 codes."""
    scales = rng.uniform(1e-3, 4e-3, (n, k // 32, 1)).astype(np.float16)
    codes = rng.integers(-127, 128, (n, k // 32, 32), dtype=np.int8)
    return np.concatenate([scales.view(np.uint8), codes.view(np.uint8)], axis=2).reshape(n, -1)


def write_gguf(
    path: Path, layers: int, seed: int = 0, shapes: list[tuple[Q, int, int]] | None = None
) -> list[tuple[str, Q]]:
    """Matrices ``w0, w1, ...`` of ``shapes`` (type, N, K), chained (each K is the last
    N); by default ``layers`` square DIM x DIM ones: Q8_0, and every third one Q4_0."""
    rng = np.random.default_rng(seed)
    if shapes is None:
        shapes = [(Q.Q4_0 if i % 3 == 2 else Q.Q8_0, DIM, DIM) for i in range(layers)]
    w = GGUFWriter(path, arch="testarch")
    names = []
    for i, (kind, n, k) in enumerate(shapes):
        if kind == Q.Q8_0:
            data = _q8_0(rng, n, k)
        else:
            data = quantize(rng.standard_normal((n, k), dtype=np.float32) * 0.03, kind)
        w.add_tensor(f"w{i}", data, raw_dtype=kind)
        names.append((f"w{i}", kind))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return names


def reference(path: Path, names: list[tuple[str, Q]], x: np.ndarray) -> np.ndarray:
    """float64 chain of ``relu(x @ W^T)`` from ``gguf.quants.dequantize``."""
    from gguf import GGUFReader

    tensors = {t.name: t for t in GGUFReader(path).tensors}
    h = x.astype(np.float64)
    for name, kind in names:
        w = dequantize(np.asarray(tensors[name].data), kind)
        h = np.maximum(h @ w.T.astype(np.float64), 0)
    return h


async def build(
    context: Context,
    path: Path | str,
    accuracy_level: int = 4,
    remote_dir: Path | None = None,
    *,
    stages: StagePlan = "auto",
    prefetch: SessionPrefetch | None = None,
) -> Graph:
    """``relu(x @ W^T)`` through every matrix of ``path`` (or a URL), as MatMulNBits."""
    b = GraphBuilder(context)
    x = b.input("x", TensorDescriptor("float32", [SEQ, DIM]))
    h = x
    async with await open_gguf(path, remote_dir=remote_dir) as gguf:
        for name in sorted(gguf.tensors, key=lambda n: int(n[1:])):
            tensor = gguf.tensor(name)
            t = MatMulNBitsTransform(tensor.ggml_type, tensor.shape)
            refs = tensor.payload(t).refs()
            ops = {p: b.input(f"{name}.{p}", r.descriptor, weight=r) for p, r in refs.items()}
            h = b.relu(
                b.matmul_nbits(
                    h,
                    ops["B"],
                    ops["scales"],
                    ops["zero_points"],
                    k=t.k,
                    n=t.n,
                    bits=t.bits,
                    block_size=t.block_size,
                    accuracy_level=accuracy_level,
                )
            )
        return await b.build({"y": h}, stages=stages, prefetch=prefetch)


def context(cache: Path | None, session_cache: bool = True, remap: bool = True) -> Context:
    ctx = create_context("low-power", cache_dir=cache, session_cache=session_cache)
    ctx.remap_saved = remap
    return ctx


async def run(graph: Graph) -> np.ndarray:
    x = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    return (await graph.compute({"x": x}))["y"]


async def saved(graph: Graph) -> Path:
    """The one saved session entry of a one-stage graph."""
    paths = await graph.saved()
    assert len(paths) == 1 and paths[0].is_dir()
    return paths[0]


@pytest.fixture(scope="module")
def big_gguf(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Q]]]:
    """12 matrices (45 MB of GGUF): enough packed bytes to measure memory."""
    path = tmp_path_factory.mktemp("gguf") / "big.gguf"
    return path, write_gguf(path, layers=12)


@pytest.fixture(scope="module")
def gguf_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Q]]]:
    """Q8_0 and Q4_0 matrices; the Q4_0 one packs into less than 1 MiB (see
    :func:`test_saved_packed_buffers_are_page_aligned`)."""
    path = tmp_path_factory.mktemp("gguf") / "model.gguf"
    shapes = [(Q.Q8_0, DIM, DIM), (Q.Q4_0, 640, DIM), (Q.Q8_0, DIM, 640)]
    return path, write_gguf(path, 0, shapes=shapes)


def measure_build(path: str, cache: str, out: str, remap: bool) -> None:
    """Worker process: build once, report the private memory the build added (JSON on
    stdout) and save the output to ``out``. A process of its own, because memory freed
    by an earlier session stays in this process's heap and would hide new growth."""
    import asyncio
    import json

    async def main() -> dict[str, object]:
        # One tiny graph first: onnxruntime's one-time allocations do not count.
        b = GraphBuilder(context(None))
        x = b.input("x", TensorDescriptor("float32", [1, 8]))
        await (await b.build({"y": b.relu(x)})).compute({"x": np.ones((1, 8), np.float32)})
        gc.collect()
        before = snapshot()
        with MemoryMonitor(interval=0.001) as mon:
            graph = await build(context(Path(cache), remap=remap), Path(path))
        np.save(out, await run(graph))
        await graph.saved()
        return {
            "growth": mon.peak_anonymous - before.anonymous,
            "held": snapshot().anonymous - before.anonymous,
            "from_saved_session": graph.from_saved_session,
            "stages": len(graph.stages),
        }

    print(json.dumps(asyncio.run(main())))


def _measure_in_a_process(path: Path, cache: Path, out: Path, remap: bool = True) -> dict[str, Any]:
    import json
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    args = ", ".join([*(repr(str(p)) for p in (path, cache, out)), repr(remap)])
    code = f"from tests.graph.test_session_cache import measure_build; measure_build({args})"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


async def test_second_build_is_identical_and_adds_little_private_memory(
    tmp_path: Path, big_gguf: tuple[Path, list[tuple[str, Q]]]
) -> None:
    path, names = big_gguf
    cache = tmp_path / "cache"
    # Fill the weight cache (transforms are not what is measured); compare with numpy.
    expected = await run(await build(context(cache, session_cache=False), path))
    x = np.random.default_rng(1).standard_normal((5, DIM)).astype(np.float32)
    ref = reference(path, names, x)
    # int8 activations (accuracy_level 4): a few percent of the output's scale.
    np.testing.assert_allclose(expected, ref, atol=0.03 * np.abs(ref).max())

    # (Saving drops the entries the saved sessions hold: each first build gets its own
    # copy of the filled weight cache.)
    shutil.copytree(cache, tmp_path / "held-cache")
    held = _measure_in_a_process(path, tmp_path / "held-cache", tmp_path / "held.npy", remap=False)
    cold = _measure_in_a_process(path, cache, tmp_path / "cold.npy")
    warm = _measure_in_a_process(path, cache, tmp_path / "warm.npy")
    assert not cold["from_saved_session"] and warm["from_saved_session"]
    for name in ("held", "cold", "warm"):
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), expected)
    # Packed weights: ~5.3 MiB per Q8_0 matrix, ~2.7 MiB per Q4_0 one (~53 MiB in all),
    # in two stages. Without re-opening, a first build keeps them all on the heap; with
    # it, each stage's packed copies leave the heap once saved (at most one stage's are
    # held at a time); a warm build maps the saved ones and packs one matrix at a time
    # to find its saved copy, which it frees.
    print(
        f"private growth: kept {held['growth'] / MIB:.1f} MiB, cold {cold['growth'] / MIB:.1f}, "
        f"warm {warm['growth'] / MIB:.1f}; held after: {held['held'] / MIB:.1f}, "
        f"{cold['held'] / MIB:.1f}, {warm['held'] / MIB:.1f}; stages {cold['stages']}"
    )
    assert cold["stages"] == 2
    assert held["held"] > 40 * MIB
    assert cold["held"] < 0.4 * held["held"]
    assert cold["growth"] < 0.9 * held["growth"]  # measured 0.55-0.85: allocator noise
    assert warm["growth"] < 0.5 * held["growth"]


async def test_saved_packed_buffers_are_page_aligned(
    tmp_path: Path, gguf_path: tuple[Path, list[tuple[str, Q]]]
) -> None:
    """onnxruntime writes packed buffers under 1 MiB at any offset; mapped there they read
    as garbage (NaN logits on gemma3), so the saved model must point only at page-aligned
    ones. The Q4_0 640 x 2048 matrix packs into 983166 bytes, as in gemma3."""
    path, _names = gguf_path
    entry = await saved(await build(context(tmp_path), path))
    model = onnx.load(str(entry / "model.onnx"), load_external_data=False)
    packed = [
        e.value
        for t in model.graph.initializer
        for e in t.external_data
        if e.key.startswith("prepacked")
    ]
    assert len(packed) == 3
    offsets = [int(blob.split(";")[0]) for v in packed for blob in v.split("|")[1:]]
    assert offsets and all(o % 4096 == 0 for o in offsets), offsets


@pytest.mark.parametrize("damage", ["model", "truncate-data", "rejected-model"])
async def test_a_broken_saved_session_falls_back(
    tmp_path: Path, gguf_path: tuple[Path, list[tuple[str, Q]]], damage: str
) -> None:
    path, _names = gguf_path
    first = await build(context(tmp_path), path)
    expected = await run(first)
    entry = await saved(first)
    del first
    if damage == "model":
        with open(entry / "model.onnx", "r+b") as f:
            f.seek(100)
            f.write(b"\xff" * 16)
    elif damage == "truncate-data":
        os.truncate(entry / "model.data", os.path.getsize(entry / "model.data") // 2)
    else:
        # Whole and checksummed, but not a model onnxruntime accepts.
        import json

        from pullweights.cache.checksum import checksum, seal, unseal

        (entry / "model.onnx").write_bytes(b"not a model")
        record = unseal(json.loads((entry / "session.json").read_bytes()))
        record["files"]["model.onnx"] = {"size": 11, "checksum": checksum(b"not a model")}
        (entry / "session.json").write_text(json.dumps(seal(record)))
    again = await build(context(tmp_path), path)
    assert not again.from_saved_session
    np.testing.assert_array_equal(await run(again), expected)
    # The broken entry was removed and a whole one saved in its place.
    assert await saved(again) == entry
    third = await build(context(tmp_path), path)
    assert third.from_saved_session
    np.testing.assert_array_equal(await run(third), expected)


async def test_key_follows_the_model_and_the_weights(
    tmp_path: Path, gguf_path: tuple[Path, list[tuple[str, Q]]]
) -> None:
    path, _names = gguf_path
    other = tmp_path / "other.gguf"
    write_gguf(other, layers=1, seed=7)  # same graph, other weight bytes
    ctx = context(tmp_path / "cache")

    async def key(p: Path, accuracy_level: int = 4) -> str:
        b = GraphBuilder(ctx)
        x = b.input("x", TensorDescriptor("float32", [SEQ, DIM]))
        async with await open_gguf(p) as gguf:
            tensor = gguf.tensor("w0")
            t = MatMulNBitsTransform(tensor.ggml_type, tensor.shape)
            r = tensor.payload(t).refs()
            y = b.matmul_nbits(
                x,
                b.input("B", r["B"].descriptor, weight=r["B"]),
                b.input("s", r["scales"].descriptor, weight=r["scales"]),
                b.input("z", r["zero_points"].descriptor, weight=r["zero_points"]),
                k=t.k,
                n=t.n,
                bits=t.bits,
                block_size=t.block_size,
                accuracy_level=accuracy_level,
            )
            found = session_key(ctx, lower(b, {"y": y}).stages[0])
            assert found is not None  # local weights: their content is known
            return found

    base = await key(path)
    assert base == await key(path)
    assert len({base, await key(other), await key(path, accuracy_level=0)}) == 3
    fallback = create_context("fallback", cache_dir=tmp_path / "cache")
    b = GraphBuilder(fallback)
    x = b.input("x", TensorDescriptor("float32", [2]))
    lowered_a = lower(b, {"y": b.relu(x)}).stages[0]
    b = GraphBuilder(ctx)
    x = b.input("x", TensorDescriptor("float32", [2]))
    lowered_b = lower(b, {"y": b.relu(x)}).stages[0]
    assert session_key(fallback, lowered_a) != session_key(ctx, lowered_b)  # opt. level


async def test_no_cache_or_switched_off_saves_nothing(
    tmp_path: Path, gguf_path: tuple[Path, list[tuple[str, Q]]]
) -> None:
    path, _names = gguf_path
    no_cache = await build(context(None), path)
    assert await no_cache.saved() == [] and not no_cache.from_saved_session
    off = await build(context(tmp_path, session_cache=False), path)
    assert await off.saved() == [] and not off.from_saved_session
    b = GraphBuilder(context(tmp_path))  # nothing to pack: not worth an entry
    x = b.input("x", TensorDescriptor("float32", [2]))
    assert await (await b.build({"y": b.relu(x)})).saved() == []
    assert not (tmp_path / "sessions").exists()
    np.testing.assert_array_equal(await run(off), await run(no_cache))


async def test_saved_sessions_are_listed_counted_and_pruned(
    tmp_path: Path, gguf_path: tuple[Path, list[tuple[str, Q]]]
) -> None:
    path, _names = gguf_path
    entry = await saved(await build(context(tmp_path), path))
    cache = WeightCache(tmp_path)
    sessions = [e for e in cache.entries() if e.transform.endswith("session")]
    assert [e.path for e in sessions] == [entry]
    files = sum(os.path.getsize(entry / f) for f in os.listdir(entry) if f != "session.json")
    assert sessions[0].nbytes == files
    assert cache.total_bytes() == sum(e.nbytes for e in cache.entries())
    assert cache.verify() == []
    removed = cache.prune(all=True)
    assert entry in [s.path for m in removed for s in m.sessions] and not entry.exists()


async def test_large_matmul_is_split_bit_identically(
    tmp_path: Path, gguf_path: tuple[Path, list[tuple[str, Q]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MatMulNBits over the split limit becomes row pieces joined by a Concat; a weight
    that another node (a Gather) also reads becomes a bound input for that node."""
    path, _names = gguf_path
    feeds = {
        "x": np.random.default_rng(2).standard_normal((7, DIM)).astype(np.float32),
        "ids": np.array([0, 999, 5]),
    }

    async def graph(limit: int) -> tuple[LoweredStage, dict[str, np.ndarray]]:
        monkeypatch.setattr(split_matmul, "SPLIT_BYTES", limit)
        ctx = context(None)
        b = GraphBuilder(ctx)
        x = b.input("x", TensorDescriptor("float32", [SEQ, DIM]))
        ids = b.input("ids", TensorDescriptor("int64", [3]))
        async with await open_gguf(path) as gguf:
            tensor = gguf.tensor("w0")
            t = MatMulNBitsTransform(tensor.ggml_type, tensor.shape)
            r = tensor.payload(t).refs()
            w = {p: b.input(f"w.{p}", ref.descriptor, weight=ref) for p, ref in r.items()}
            y = b.matmul_nbits(
                x, w["B"], w["scales"], w["zero_points"], k=t.k, n=t.n, bits=8, block_size=32
            )
            lowered = lower(b, {"y": y, "rows": b.gather(w["B"], ids, axis=0)}, stages=1)
            g = await ctx.compile(lowered)
        return lowered.stages[0], await g.compute(feeds)

    whole, expected = await graph(64 * MIB)
    split, actual = await graph(DIM * DIM // 3 + 1)  # B is DIM * DIM bytes: 3 pieces
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name])
    assert sorted(whole.initializers) == ["w.B", "w.scales", "w.zero_points"]
    assert len(split.initializers) == 9 and "w.B" not in split.initializers
    assert "w.B" in split.bound_weights and "w.B" not in whole.bound_weights
    assert "w.B" in split.initializer_weights  # loaded to make the pieces
    ops = [n.op_type for n in split.model.graph.node]
    assert ops.count("MatMulNBits") == 3 and "Concat" in ops
    rows = sorted(split.initializers[f"w.B/rows{a}-{b}"].offset for a, b in _ranges(DIM, 3))
    assert rows == [a * DIM for a, _b in _ranges(DIM, 3)]  # byte offsets of the row pieces


def _ranges(n: int, pieces: int) -> list[tuple[int, int]]:
    per_piece = -(-n // pieces)
    rows = -(-per_piece // 64) * 64
    return [(a, min(n, a + rows)) for a in range(0, n, rows)]


@pytest.mark.parametrize("split", [False, True])
async def test_warm_build_pulls_only_bound_weights(
    tmp_path: Path,
    gguf_path: tuple[Path, list[tuple[str, Q]]],
    monkeypatch: pytest.MonkeyPatch,
    split: bool,
) -> None:
    """Weights the saved session holds are not pulled again; a weight a Gather reads
    (bound as an input once its MatMulNBits is split) still is."""
    path, _names = gguf_path
    monkeypatch.setattr(split_matmul, "SPLIT_BYTES", DIM * DIM // 3 + 1 if split else 64 * MIB)
    pulled: list[list[str]] = []

    async def build_and_run() -> tuple[Graph, dict[str, np.ndarray]]:
        events: list[str] = []
        pulled.append(events)
        b = GraphBuilder(context(tmp_path))
        x = b.input("x", TensorDescriptor("float32", [SEQ, DIM]))
        ids = b.input("ids", TensorDescriptor("int64", [2]))
        async with await open_gguf(path) as gguf:
            tensor = gguf.tensor("w0")
            t = MatMulNBitsTransform(tensor.ggml_type, tensor.shape)
            r = tensor.payload(t).refs()
            w = {p: b.input(f"w.{p}", ref.descriptor, weight=ref) for p, ref in r.items()}
            y = b.matmul_nbits(
                x, w["B"], w["scales"], w["zero_points"], k=t.k, n=t.n, bits=8, block_size=32
            )
            outputs = {"y": y, "rows": b.gather(w["B"], ids, axis=0)}
            g = await b.build(outputs, progress=lambda e: events.append(e.what))
        feeds = {"x": np.ones((2, DIM), np.float32), "ids": np.array([3, 1])}
        return g, await g.compute(feeds)

    cold, expected = await build_and_run()
    await saved(cold)
    warm, actual = await build_and_run()
    assert warm.from_saved_session
    for name in expected:
        np.testing.assert_array_equal(actual[name], expected[name])
    # One payload (B, scales and zero points of w0): pulled once for the initializers
    # and, when split, the bound input; warm, only for the bound input (a cache hit).
    assert pulled[0] == ["w0"]
    assert pulled[1] == (["w0"] if split else [])


async def test_saved_stages_drop_the_entries_they_hold(
    tmp_path: Path, gguf_path: tuple[Path, list[tuple[str, Q]]]
) -> None:
    """Once a stage is saved, cache entries of weights it only packs are a second copy of
    bytes its saved session holds: they go (a local file can make them again). A weight a
    stage also binds (here: gathered) keeps its entry."""
    path, _names = gguf_path
    first = await build(context(tmp_path), path)
    expected = await run(first)
    await first.saved()
    cache = WeightCache(tmp_path)
    assert [e for e in cache.entries() if not e.transform.endswith("session")] == []
    warm = await build(context(tmp_path), path)
    assert warm.from_saved_session
    np.testing.assert_array_equal(await run(warm), expected)
    shutil.rmtree(tmp_path / "sessions")  # a lost session: made again from the file
    again = await build(context(tmp_path), path)
    assert not again.from_saved_session and again.transformed == 3
    np.testing.assert_array_equal(await run(again), expected)
