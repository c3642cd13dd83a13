"""Saved sessions: onnxruntime's optimized model and prepacked weights, mapped on reload.

onnxruntime prepacks every ``MatMulNBits`` weight into a private heap buffer when a
session is created (about 355 MB for gemma3-270m). With
``session.save_external_prepacked_constant_initializers`` it can also write the optimized
model with those packed buffers in its external data file, and a session created from
that file maps them instead: loading the same graph again adds almost no private memory.

First load (no saved session for the key)
    The declared initializers are staged as files in a cache staging directory — hard
    links to the weight cache's chunk files (same filesystem), copies otherwise — and the
    session is created from a model that points at them, with saving switched on. This
    is the session the caller gets: no second session is created. It costs writing the
    saved files while the session is created (the optimized model's data holds every
    initializer and its packed form: about 2.4x the GGUF size) and, transiently, one
    copy of the largest initializer, which onnxruntime reads into memory to write it.
    The saved files are then checked, fixed up (below), checksummed, flushed and
    published by a background thread, crash-safely (see
    :mod:`pullweights.cache.sessions`).

Later loads (a whole saved session exists)
    The session is created from the saved model; only the weights still bound as graph
    inputs are pulled. onnxruntime still packs each weight once on the heap to compute
    the key it finds the saved copy under, then frees it, so loading peaks at the
    largest packed buffer (:mod:`~pullweights.graph.split_matmul` bounds it).

The key covers everything that changes the saved files: the lowered model, the payload
key of every weight an initializer is made of, the bytes of large constants, the
graph-optimization level and providers, the onnxruntime version and the CPU's feature
flags (packed layouts depend on the instruction set). Only CPU-only sessions are saved.

Fix-up: onnxruntime 1.31 page-aligns packed buffers of 1 MiB or more in its data file
but writes smaller ones at any offset; the packed layouts align their inner arrays
relative to the buffer's address, so a buffer mapped at another alignment than it was
packed at reads as garbage (NaN logits were measured). Tensors with such buffers are
moved, with their buffers page-aligned, into a second data file.

Any problem reading, loading or saving falls back to compiling without a saved session
(a broken entry is removed), so results never depend on the cache.
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import hashlib
import logging
import os
import platform
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from pullweights.cache import WeightCache
from pullweights.cache.sessions import SessionWriter
from pullweights.context import Context
from pullweights.graph.lowering import PLACEHOLDER, LoweredGraph

__all__ = ["SessionSaver", "saved_session_store", "session_key"]

log = logging.getLogger("pullweights.graph")

#: Bump when the saved files or the key change meaning.
FORMAT = 1
#: Files of a saved session.
MODEL = "model.onnx"
DATA = "model.data"
ALIGNED_DATA = "model.aligned.data"
#: What onnxruntime writes before the fix-up, and the staged input model.
_ORT_MODEL = "ort.onnx"
_INPUT_MODEL = "input.onnx"
#: Graphs whose initializers (what onnxruntime packs) are smaller are not worth saving.
MIN_SAVED_BYTES = 1 << 20
#: Packed buffers not at a multiple of this offset are moved.
_PAGE = 4096
#: Alignment of tensor data in the moved file.
_DATA_ALIGN = 64


@functools.cache
def cpu_fingerprint() -> str:
    """The machine architecture and a hash of the CPU feature flags (Linux /proc/cpuinfo)."""
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    flags = " ".join(sorted(value.split()))
                    break
    except OSError:
        flags = platform.processor()
    return f"{platform.machine()}:{hashlib.sha256(flags.encode()).hexdigest()[:16]}"


def saved_session_store(context: Context, lowered: LoweredGraph) -> WeightCache | None:
    """The cache to save ``lowered``'s session in, or None where saved sessions do not
    apply: no cache, switched off, a provider other than the CPU, or less than
    :data:`MIN_SAVED_BYTES` of initializers (nothing much to pack)."""
    cache = context.cache
    if not context.session_cache or not isinstance(cache, WeightCache):
        return None
    if list(context.providers) != ["CPUExecutionProvider"]:
        return None
    if sum(src.nbytes for src in lowered.initializers.values()) < MIN_SAVED_BYTES:
        return None
    return cache


def session_key(context: Context, lowered: LoweredGraph) -> str:
    """The saved-session key of ``lowered`` compiled in ``context`` (40 hex digits)."""
    h = hashlib.sha256()

    def add(*items: object) -> None:
        for item in items:
            h.update(str(item).encode())
            h.update(b"\0")

    so = context.session_options()
    add("pullweights-session", FORMAT, ort.__version__, cpu_fingerprint())
    add(",".join(context.providers), int(so.graph_optimization_level))
    h.update(lowered.model.SerializeToString(deterministic=True))
    for name, src in sorted(lowered.initializers.items()):
        add(name, src.base, src.offset, src.descriptor)
    for name, ref in sorted(lowered.initializer_weights.items()):
        add(name, ref.payload.key, ref.part)
    for name, arr in sorted(lowered.large_constants.items()):
        add(name, arr.dtype.str, arr.shape, hashlib.sha256(np.ascontiguousarray(arr)).hexdigest())
    return h.hexdigest()[:40]


def _label(lowered: LoweredGraph) -> str:
    sources = {ref.payload.source.name for ref in lowered.initializer_weights.values()}
    names = sorted(os.path.basename(name) for name in sources)
    more = f" (+{len(names) - 1} more)" if len(names) > 1 else ""
    origin = f" from {names[0]}{more}" if names else ""
    return f"{len(lowered.initializers)} initializers{origin}"


class SessionSaver:
    """Saves the session of one compile into the cache: stage, configure, then finish.

    Example (what :func:`~pullweights.graph.compiled.compile_graph` does)::

        saver = SessionSaver(cache, key)
        model_path = saver.stage(lowered, loaded)
        so = context.session_options()
        saver.configure(so)
        session = ort.InferenceSession(str(model_path), so, providers=providers)
        saver.finish_in_background()   # fix up, checksum, flush, publish
    """

    def __init__(self, cache: WeightCache, key: str) -> None:
        self.cache = cache
        self.key = key
        self._writer: SessionWriter = cache.session_writer(key)
        self._label = ""
        self.done: concurrent.futures.Future[Path | None] = concurrent.futures.Future()
        """Resolves to the published entry's directory, or None if saving failed."""

    # -- staging ----------------------------------------------------------------------

    def stage(self, lowered: LoweredGraph, loaded: Mapping[str, np.ndarray]) -> Path:
        """Write the model to compile, its initializers as files next to it; returns its path.

        ``loaded`` holds the arrays of ``lowered.initializer_weights`` and
        ``lowered.large_constants`` by name. Blocking (run it in a worker thread).

        Raises:
            OSError: the staging directory cannot be written.
        """
        directory = self._writer.open()
        self._label = _label(lowered)
        files: dict[str, str] = {}
        for index, base in enumerate(sorted({s.base for s in lowered.initializers.values()})):
            name = f"input-{index}.bin"
            self._stage_array(directory / name, lowered, base, loaded[base])
            files[base] = name
        model = onnx.ModelProto()
        model.CopyFrom(lowered.model)
        for tensor in model.graph.initializer:
            src = lowered.initializers.get(tensor.name)
            if src is None:
                continue
            entries = {e.key: e for e in tensor.external_data}
            if entries.get("location") is None or entries["location"].value != PLACEHOLDER:
                raise OSError(f"initializer {tensor.name} is not a placeholder")
            entries["location"].value = files[src.base]
            entries["offset"].value = str(src.offset)
        path = directory / _INPUT_MODEL
        path.write_bytes(model.SerializeToString())
        return path

    def _stage_array(self, path: Path, lowered: LoweredGraph, base: str, array: np.ndarray) -> None:
        ref = lowered.initializer_weights.get(base)
        chunk = None if ref is None else self.cache.part_file(ref.payload, ref.part)
        if chunk is not None:
            try:
                os.link(chunk, path)
                if os.stat(path).st_size == array.nbytes:
                    return
                os.unlink(path)
            except OSError as exc:  # another filesystem, no hard links, evicted meanwhile
                log.debug("cannot link %s: %s; copying", chunk, exc)
        with open(path, "wb") as f:
            flat = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            for start in range(0, flat.size, 64 << 20):
                f.write(flat[start : start + (64 << 20)])

    def configure(self, so: ort.SessionOptions) -> None:
        """Switch on saving the optimized model and packed weights into the staging."""
        directory = self._writer.directory
        assert directory is not None
        so.optimized_model_filepath = str(directory / _ORT_MODEL)
        so.add_session_config_entry("session.optimized_model_external_initializers_file_name", DATA)
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")

    # -- finishing --------------------------------------------------------------------

    def finish(self) -> Path:
        """Fix up, checksum, flush and publish the saved files; returns the entry.

        Raises:
            OSError: writing failed; ValueError: onnxruntime's files are not as expected.
            Either way the staging is discarded.
        """
        directory = self._writer.directory
        assert directory is not None
        try:
            for item in os.listdir(directory):
                if item == _INPUT_MODEL or item.startswith("input-"):
                    os.unlink(directory / item)
            fix_up(directory)
            return self._writer.commit(self._label, f"onnxruntime {ort.__version__}")
        except BaseException:
            self._writer.abort()
            raise

    def finish_in_background(self) -> None:
        """Run :meth:`finish` in a (non-daemon) thread; :attr:`done` tells the outcome."""
        threading.Thread(target=self._finish_logged, name="pullweights-session-save").start()

    def _finish_logged(self) -> None:
        try:
            path = self.finish()
        except Exception as exc:
            log.warning("could not save the session %s: %s", self.key, exc)
            self.done.set_result(None)
            return
        self.done.set_result(path)

    def abort(self) -> None:
        """Discard the staging (nothing is saved)."""
        self._writer.abort()
        if not self.done.done():
            self.done.set_result(None)


def _parse_packed(value: str) -> tuple[str, list[tuple[int, int, str]]]:
    """``key|offset;length;checksum|...`` (onnxruntime's prepacked external data entry)."""
    key, sep, rest = value.partition("|")
    if not sep or not key:
        raise ValueError(f"unexpected prepacked entry {value!r}")
    blobs = []
    for item in rest.split("|"):
        offset, length, crc = item.split(";")
        blobs.append((int(offset), int(length), crc))
    return key, blobs


def fix_up(directory: Path) -> None:
    """Turn onnxruntime's saved ``ort.onnx`` + ``model.data`` into ``model.onnx`` whose
    packed buffers are all page-aligned (moving misaligned tensors to a second file).

    Raises:
        ValueError: the model is not as expected (another location, subgraphs, a format
            of packed entries this code does not know).
    """
    model = onnx.load(str(directory / _ORT_MODEL), load_external_data=False)
    for node in model.graph.node:
        if any(
            a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
            for a in node.attribute
        ):
            raise ValueError(f"node {node.name} has a subgraph; not saved")
    moves: list[tuple[onnx.TensorProto, dict[str, onnx.StringStringEntryProto]]] = []
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        entries = {e.key: e for e in tensor.external_data}
        if entries["location"].value != DATA:
            raise ValueError(f"initializer {tensor.name} is in {entries['location'].value}")
        packed = [_parse_packed(e.value) for k, e in entries.items() if k.startswith("prepacked")]
        if any(offset % _PAGE for _key, blobs in packed for offset, _n, _c in blobs):
            moves.append((tensor, entries))
    if moves:
        _move(directory, moves)
    (directory / MODEL).write_bytes(model.SerializeToString())
    os.unlink(directory / _ORT_MODEL)


def _move(
    directory: Path, moves: list[tuple[onnx.TensorProto, dict[str, onnx.StringStringEntryProto]]]
) -> None:
    """Copy each tensor's data and packed buffers into :data:`ALIGNED_DATA`, aligned."""
    src = os.open(directory / DATA, os.O_RDONLY | os.O_CLOEXEC)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    dst = os.open(directory / ALIGNED_DATA, flags, 0o644)
    end = 0

    def copy(offset: int, length: int, align: int) -> int:
        nonlocal end
        start = -(-end // align) * align
        _copy_range(src, dst, offset, start, length)
        end = start + length
        return start

    try:
        for tensor, entries in moves:
            entries["location"].value = ALIGNED_DATA
            if "offset" not in entries:
                entries["offset"] = tensor.external_data.add()
                entries["offset"].key, entries["offset"].value = "offset", "0"
            start = copy(int(entries["offset"].value), int(entries["length"].value), _DATA_ALIGN)
            entries["offset"].value = str(start)
            for name, entry in entries.items():
                if name.startswith("prepacked"):
                    key, blobs = _parse_packed(entry.value)
                    moved = [f"{copy(o, n, _PAGE)};{n};{c}" for o, n, c in blobs]
                    entry.value = "|".join([key, *moved])
        os.ftruncate(dst, end)
    finally:
        os.close(src)
        os.close(dst)


def _copy_range(src: int, dst: int, offset: int, to: int, length: int) -> None:
    """Copy ``length`` bytes between files, in the kernel where it can."""
    done = 0
    while done < length:
        try:
            n = os.copy_file_range(src, dst, length - done, offset + done, to + done)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                raise
            data = os.pread(src, min(length - done, 8 << 20), offset + done)
            n = os.pwrite(dst, data, to + done) if data else 0
        if n <= 0:
            raise OSError(errno.EIO, f"short copy at offset {offset + done}")
        done += n
