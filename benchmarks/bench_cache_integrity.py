"""What integrity on the load path costs: checksums of every cache file before use.

A warm load of gemma3-270m opens ~300 MB of weight entries and ~600 MB of saved
sessions. This builds a cache of that shape (``--entries-mb`` in ``--count`` raw entries,
one saved session of ``--session-mb``), with its files in the page cache (the usual warm
case), and measures, best of ``--reps``:

* raw throughput of the candidates on one buffer: CRC-32C (``crc32c``, the one used),
  ``zlib.crc32``, SHA-256 (the content-key hash, paid only when the index misses);
* opening every entry (as the puller does, on ``--threads`` threads) and the session,
  with :attr:`WeightCache.verify_on_load` on and off: the difference is what a warm
  load pays for verification;
* hashing the entries' bytes with SHA-256 (a load whose index misses: a copy of a file).

Prints a table and writes ``benchmarks/results/cache_integrity.json``. Real figures (on
a quiet machine)::

    python benchmarks/bench_cache_integrity.py
    python benchmarks/bench_cache_integrity.py --entries-mb 30 --session-mb 60 --reps 2  # quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import crc32c
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pullweights.cache import WeightCache  # noqa: E402
from pullweights.cache.checksum import checksum, forget  # noqa: E402
from pullweights.cache.index import digest  # noqa: E402
from pullweights.descriptor import TensorDescriptor  # noqa: E402
from pullweights.sources.memory import MemorySource  # noqa: E402
from pullweights.weights import Payload  # noqa: E402

MB = 1e6


def best(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def build(
    root: Path, entries_mb: int, count: int, session_mb: int
) -> tuple[WeightCache, list[Payload], str]:
    cache = WeightCache(root, durable=False)
    rng = np.random.default_rng(0)
    per = max(1, int(entries_mb * MB) // count // 4)
    payloads = []
    for i in range(count):
        data = rng.integers(0, 1 << 30, per, dtype=np.int32).astype(np.float32)
        desc = TensorDescriptor("float32", (per,))
        payload = Payload(
            MemorySource(data.tobytes(), f"w{i}"), 0, data.nbytes, raw_descriptor=desc
        )
        with cache.writer(payload) as w:
            w.write("data", data)
        payloads.append(payload)
    key = "ab" * 20
    writer = cache.session_writer(key)
    directory = writer.open()
    writer.built_from(payloads)
    blob = rng.integers(0, 256, int(session_mb * MB), dtype=np.uint8)
    (directory / "model.data").write_bytes(blob.tobytes())
    (directory / "model.onnx").write_bytes(b"model" * 1000)
    writer.commit("bench", "bench")
    return cache, payloads, key


def throughput(reps: int) -> dict[str, float]:
    """MB/s of each hash over one 256 MiB buffer, on one core."""
    buf = np.random.default_rng(1).integers(0, 256, 256 << 20, dtype=np.uint8)
    view = memoryview(buf)

    def zlib_crc() -> None:
        crc = 0
        for start in range(0, len(view), 64 << 20):
            crc = zlib.crc32(view[start : start + (64 << 20)], crc)

    return {
        "crc32c (crc32c package)": buf.nbytes / best(lambda: checksum(buf), reps) / MB,
        "zlib.crc32": buf.nbytes / best(zlib_crc, reps) / MB,
        "sha256 (hashlib)": buf.nbytes / best(lambda: digest(buf), reps) / MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries-mb", type=int, default=300)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--session-mb", type=int, default=600)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks/results/cache_integrity.json"
    )
    args = parser.parse_args()

    rates = throughput(args.reps)
    results: dict[str, Any] = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "hardware_crc32c": bool(crc32c.hardware_based),
        "throughput_MBps": rates,
    }
    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        cache, payloads, key = build(Path(tmp), args.entries_mb, args.count, args.session_mb)
        entries_bytes = sum(e.nbytes for e in cache.entries() if e.kind == "weights")
        session_bytes = sum(e.nbytes for e in cache.entries() if e.kind == "session")
        pool = ThreadPoolExecutor(args.threads)

        def warm_load(verify: bool) -> Callable[[], None]:
            def run() -> None:
                forget()  # as a new process: nothing verified yet
                fresh = WeightCache(cache.root, durable=False)
                fresh.verify_on_load = verify
                assert fresh.open_session(key) is not None
                arrays = list(pool.map(fresh.get, payloads))
                assert all(a is not None for a in arrays)

            return run

        warm_load(True)()  # the page cache holds every file now
        on = best(warm_load(True), args.reps)
        off = best(warm_load(False), args.reps)
        sha = best(lambda: [digest(p.source.map(0, p.length)) for p in payloads], args.reps)  # type: ignore[arg-type]
        pool.shutdown()
    results.update(
        entries_MB=entries_bytes / MB,
        session_MB=session_bytes / MB,
        warm_open_verified_s=on,
        warm_open_unverified_s=off,
        verification_cost_s=on - off,
        content_hash_entries_s=sha,
    )
    print(f"hardware CRC-32C: {results['hardware_crc32c']}")
    print("| hash | MB/s (one core) |\n|---|---|")
    for name, rate in rates.items():
        print(f"| {name} | {rate:.0f} |")
    print(
        f"\nwarm open of {entries_bytes / MB:.0f} MB of entries ({args.count}) + "
        f"{session_bytes / MB:.0f} MB of session on {args.threads} threads: "
        f"{on * 1000:.0f} ms verified, {off * 1000:.0f} ms unverified "
        f"(verification {1000 * (on - off):.0f} ms); SHA-256 of the entries' bytes "
        f"(index miss) {sha * 1000:.0f} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
