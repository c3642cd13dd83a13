"""Saved sessions: a stage's optimized model and prepacked weights, mapped on reload.

onnxruntime prepacks every ``MatMulNBits`` weight into a private heap buffer when a
session is created (about 310 MB for gemma3-270m). With
``session.save_external_prepacked_constant_initializers`` it can also write the optimized
model with those packed buffers in its external data file, and a session created from
that file maps them instead: loading the same stage again adds almost no private memory.

First load of a stage (no saved session for its key)
    The stage's declared initializers are staged as files in a cache staging directory —
    hard links to the weight cache's chunk files (same filesystem), copies otherwise —
    and the session is created from a model that points at them, with saving switched
    on. onnxruntime writes the optimized model, each initializer followed by its packed
    buffers in one data file; :func:`compact` rewrites that file holding only what the
    model references, every packed buffer page-aligned, and the entry is checksummed,
    flushed and published crash-safely (:mod:`pullweights.cache.sessions`).

    onnxruntime reads a packed buffer only from the file that holds its initializer's
    original bytes, and needs those bytes on every reload (measured: zeroing them gives
    wrong results; an initializer given through ``add_initializer`` instead is packed
    again on the heap and the saved copy ignored), so a saved session holds both.

Later loads (a whole saved session exists)
    The session is created from the saved model. onnxruntime still packs each weight
    once on the heap to compute the key it finds the saved copy under (measured: it
    reads the original bytes — corrupting them changes the results), then frees it, so
    loading a stage peaks at its largest packed buffer
    (:mod:`~pullweights.graph.split_matmul` bounds it).

The key covers everything that changes the saved files: the stage's model, the content
key of every weight an initializer is made of, the bytes of large constants, the
graph-optimization level and providers, the onnxruntime version and the CPU's feature
flags (packed layouts depend on the instruction set). Only CPU-only sessions are saved.

Page alignment: onnxruntime 1.31 page-aligns packed buffers of 1 MiB or more in its data
file but writes smaller ones at any offset; the packed layouts align their inner arrays
relative to the buffer's address, so a buffer mapped at another alignment than it was
packed at reads as garbage (NaN logits were measured). The rewrite page-aligns all.

Any problem reading, loading or saving falls back to compiling without a saved session
(a broken entry is removed), so results never depend on the cache. A saved session
records the weight entries it was built from and is opened only while each is whole and
unchanged (:meth:`~pullweights.cache.WeightCache.open_session`).
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import hashlib
import logging
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import onnxruntime as ort

from pullweights.cache import WeightCache
from pullweights.cache.sessions import SessionWriter
from pullweights.graph.lowering import PLACEHOLDER, LoweredStage

if TYPE_CHECKING:
    from pullweights.runtime.context import Context

__all__ = ["MODEL", "SessionSaver", "saved_session_store", "session_key"]

log = logging.getLogger("pullweights.runtime")

#: Bump when the saved files or the key change meaning.
FORMAT = 2
#: Files of a saved session.
MODEL = "model.onnx"
DATA = "model.data"
#: What onnxruntime writes (rewritten by ``finish``), and the staged input model.
_ORT_MODEL = "ort.onnx"
_ORT_DATA = "ort.data"
_INPUT_MODEL = "input.onnx"
#: Stages whose initializers (what onnxruntime packs) are smaller are not worth saving.
MIN_SAVED_BYTES = 1 << 20
#: Packed buffers are placed at multiples of this offset.
_PAGE = 4096
#: Alignment of tensor data smaller than a page.
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


def saved_session_store(context: Context, stage: LoweredStage) -> WeightCache | None:
    """The cache to save ``stage``'s session in, or None where saved sessions do not
    apply: no cache, switched off, a provider other than the CPU, or less than
    :data:`MIN_SAVED_BYTES` of initializers (nothing much to pack)."""
    cache = context.cache
    if not context.session_cache or cache is None:
        return None
    if list(context.providers) != ["CPUExecutionProvider"]:
        return None
    if stage.prepacked_bytes < MIN_SAVED_BYTES:
        return None
    return cache


def session_key(context: Context, stage: LoweredStage) -> str | None:
    """The saved-session key of ``stage`` compiled in ``context`` (40 hex digits), or None
    while the content of one of its weights is unknown (a remote weight not fetched yet:
    ask again after pulling). Weights count by content (the cache's content keys), so
    the same model under another path or URL finds the same saved session. Blocking:
    hashes local weights the cache has not indexed yet."""
    cache = context.cache
    contents: dict[str, str] = {}
    for name, ref in stage.initializer_weights.items():
        content = ref.payload.key if cache is None else cache.content_key(ref.payload, local=True)
        if content is None:
            return None
        contents[name] = content
    h = hashlib.sha256()

    def add(*items: object) -> None:
        for item in items:
            h.update(str(item).encode())
            h.update(b"\0")

    so = context.session_options()
    add("pullweights-session", FORMAT, ort.__version__, cpu_fingerprint())
    add(",".join(context.providers), int(so.graph_optimization_level))
    h.update(stage.model.SerializeToString(deterministic=True))
    for name, src in sorted(stage.initializers.items()):
        add(name, src.base, src.offset, src.descriptor)
    for name, ref in sorted(stage.initializer_weights.items()):
        add(name, contents[name], ref.part)
    for name, arr in sorted(stage.large_constants.items()):
        add(name, arr.dtype.str, arr.shape, hashlib.sha256(np.ascontiguousarray(arr)).hexdigest())
    return h.hexdigest()[:40]


def _label(stage: LoweredStage) -> str:
    sources = {ref.payload.source.name for ref in stage.initializer_weights.values()}
    names = sorted(os.path.basename(name) for name in sources)
    more = f" (+{len(names) - 1} more)" if len(names) > 1 else ""
    origin = f" from {names[0]}{more}" if names else ""
    what = f"stage {stage.name!r}: " if stage.name else ""
    return f"{what}{len(stage.initializers)} initializers{origin}"


class SessionSaver:
    """Saves the session of one stage into the cache: stage, configure, then finish.

    Example (what :mod:`pullweights.runtime.pipeline` does)::

        saver = SessionSaver(cache, key)
        model_path = saver.stage(lowered_stage, loaded)
        so = context.session_options()
        saver.configure(so)
        session = ort.InferenceSession(str(model_path), so, providers=providers)
        entry = saver.finish()   # compact, checksum, flush, publish
    """

    def __init__(self, cache: WeightCache, key: str) -> None:
        self.cache = cache
        self.key = key
        self._writer: SessionWriter = cache.session_writer(key)
        self._label = ""
        self.done: concurrent.futures.Future[Path | None] = concurrent.futures.Future()
        """Resolves to the published entry's directory, or None if saving failed."""

    # -- staging ----------------------------------------------------------------------

    def stage(self, stage: LoweredStage, loaded: Mapping[str, np.ndarray]) -> Path:
        """Write the model to compile, its initializers as files next to it; returns its path.

        ``loaded`` holds the arrays of ``stage.initializer_weights`` and
        ``stage.large_constants`` by name. Blocking (run it in a worker thread).

        Raises:
            OSError: the staging directory cannot be written.
        """
        directory = self._writer.open()
        self._writer.built_from(ref.payload for ref in stage.initializer_weights.values())
        self._label = _label(stage)
        files: dict[str, str] = {}
        for index, base in enumerate(sorted({s.base for s in stage.initializers.values()})):
            name = f"input-{index}.bin"
            self._stage_array(directory / name, stage, base, loaded[base])
            files[base] = name
        model = onnx.ModelProto()
        model.CopyFrom(stage.model)
        for tensor in model.graph.initializer:
            src = stage.initializers.get(tensor.name)
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

    def _stage_array(self, path: Path, stage: LoweredStage, base: str, array: np.ndarray) -> None:
        ref = stage.initializer_weights.get(base)
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
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", _ORT_DATA
        )
        so.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        so.add_session_config_entry("session.save_external_prepacked_constant_initializers", "1")

    # -- finishing --------------------------------------------------------------------

    def finish(self) -> Path:
        """Compact, checksum, flush and publish the saved files; returns the entry.

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
            compact(directory)
            path = self._writer.commit(self._label, f"onnxruntime {ort.__version__}")
        except BaseException as exc:
            self._writer.abort()
            if not self.done.done():
                self.done.set_result(None)
            if isinstance(exc, Exception):
                log.warning("could not save the session %s: %s", self.key, exc)
            raise
        if not self.done.done():
            self.done.set_result(path)
        return path

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


class _DataFile:
    """``model.data`` being written: ranges copied from onnxruntime's file, aligned."""

    def __init__(self, directory: Path) -> None:
        self.src = os.open(directory / _ORT_DATA, os.O_RDONLY | os.O_CLOEXEC)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        self.dst = os.open(directory / DATA, flags, 0o644)
        self.end = 0

    def copy(self, offset: int, length: int, align: int) -> int:
        start = -(-self.end // align) * align
        _copy_range(self.src, self.dst, offset, start, length)
        self.end = start + length
        return start

    def close(self) -> None:
        try:
            os.ftruncate(self.dst, self.end)
        finally:
            os.close(self.src)
            os.close(self.dst)


def compact(directory: Path) -> None:
    """Turn onnxruntime's ``ort.onnx`` + ``ort.data`` into ``model.onnx`` + ``model.data``
    holding what the model references, every packed buffer page-aligned.

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
    data = _DataFile(directory)
    try:
        for tensor in model.graph.initializer:
            if tensor.data_location != onnx.TensorProto.EXTERNAL:
                continue
            entries = {e.key: e for e in tensor.external_data}
            if entries["location"].value != _ORT_DATA:
                raise ValueError(f"initializer {tensor.name} is in {entries['location'].value}")
            if "offset" not in entries:
                entries["offset"] = tensor.external_data.add()
                entries["offset"].key, entries["offset"].value = "offset", "0"
            offset, length = int(entries["offset"].value), int(entries["length"].value)
            entries["location"].value = DATA
            # Page-aligned data is memory-mapped on load; other data is read into the heap.
            align = _PAGE if length >= _PAGE else _DATA_ALIGN
            entries["offset"].value = str(data.copy(offset, length, align))
            for key, entry in entries.items():
                if key.startswith("prepacked"):
                    packed_key, blobs = _parse_packed(entry.value)
                    moved = [f"{data.copy(o, n, _PAGE)};{n};{c}" for o, n, c in blobs]
                    entry.value = "|".join([packed_key, *moved])
    finally:
        data.close()
    (directory / MODEL).write_bytes(model.SerializeToString())
    os.unlink(directory / _ORT_MODEL)
    os.unlink(directory / _ORT_DATA)


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
