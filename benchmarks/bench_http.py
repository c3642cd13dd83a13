"""HttpSource.read_into against curl, from the same loopback server, in one run.

Serves one temporary file of random bytes with nginx (if installed) and with aiohttp's
static handler (a separate process), then alternates, ``--reps`` times per server:
``curl -s -o /dev/null`` of the whole file, and one ``read_into`` of the whole file into a
pre-touched numpy buffer for each receive mode (``direct``: the one-copy receive path,
``buffered``: aiohttp's reader). Prints median MB/s and the ratio to curl, and writes
``benchmarks/results/http.json``::

    .venv/bin/python benchmarks/bench_http.py --size-mib 512 --reps 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # for tests.servers when run as a script

from pullweights.sources.http import HttpSource  # noqa: E402
from pullweights.sources.http_settings import HttpSettings  # noqa: E402
from tests.servers.nginx import NginxServer, nginx_binary, wait_for_port  # noqa: E402

MiB = 1 << 20


def write_random_file(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    with path.open("wb") as f:
        for start in range(0, size, 64 * MiB):
            f.write(rng.integers(0, 256, min(64 * MiB, size - start), dtype=np.uint8).tobytes())


@contextmanager
def aiohttp_server(root: Path) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.static_aiohttp", str(root)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = int(process.stdout.readline())
        if not wait_for_port(port):
            raise RuntimeError("the aiohttp server did not start")
        yield f"http://127.0.0.1:{port}/"
    finally:
        process.terminate()
        process.wait(timeout=10)


def curl_once(url: str) -> tuple[float, float]:
    """Seconds and CPU seconds (user + system of curl) for one whole-file download."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(["curl", "-s", "-f", "-o", "/dev/null", url], check=True)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return seconds, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


async def http_once(
    url: str, out: np.ndarray, *, direct: bool, chunk: int, concurrency: int
) -> tuple[float, float]:
    """Seconds and CPU seconds (this process) for one whole-file read_into."""
    async with await HttpSource.open(
        url, settings=HttpSettings(chunk_size=chunk, concurrency=concurrency, direct_receive=direct)
    ) as source:
        cpu, started = time.process_time(), time.perf_counter()
        await source.read_into(0, memoryview(out))
        return time.perf_counter() - started, time.process_time() - cpu


def verify(out: np.ndarray, path: Path) -> None:
    reference = np.memmap(path, dtype=np.uint8, mode="r")
    if not np.array_equal(out, reference):
        raise SystemExit(f"HttpSource returned wrong bytes for {path}")


def bench_server(
    name: str, url: str, path: Path, out: np.ndarray, args: argparse.Namespace
) -> dict[str, Any]:
    """Median MB/s, ratio to curl and client CPU per GB for curl and both receive modes."""
    size = out.nbytes
    modes = ["direct", "buffered"]

    def run(client: str) -> tuple[float, float]:
        if client == "curl":
            return curl_once(url)
        return asyncio.run(
            http_once(
                url, out, direct=client == "direct", chunk=args.chunk, concurrency=args.concurrency
            )
        )

    run("curl")  # warm the page cache and the server
    for mode in modes:
        out[:] = 0
        run(mode)
        verify(out, path)
    clients = ["curl", *modes]
    times: dict[str, list[float]] = {k: [] for k in clients}
    cpu: dict[str, list[float]] = {k: [] for k in clients}
    for rep in range(args.reps):
        for client in clients[rep % 3 :] + clients[: rep % 3]:  # rotate the order
            seconds, cpu_seconds = run(client)
            times[client].append(seconds)
            cpu[client].append(cpu_seconds)
    rates = {k: [size / t / 1e6 for t in v] for k, v in times.items()}
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "server": name,
        "median_mb_s": {k: round(v) for k, v in medians.items()},
        "ratio_to_curl": {k: round(medians[k] / medians["curl"], 2) for k in clients},
        "client_cpu_s_per_gb": {
            k: round(statistics.median(cpu[k]) / (size / 1e9), 3) for k in clients
        },
        "all_mb_s": {k: [round(x) for x in v] for k, v in rates.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=8 * MiB, help="HttpSource chunk_size")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--servers", default="nginx,aiohttp")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "http.json")
    args = parser.parse_args()

    size = args.size_mib * MiB
    load_at_start = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory(prefix="pullweights-bench-") as tmp:
        root = Path(tmp)
        path = root / "blob.bin"
        write_random_file(path, size)
        out = np.ones(size, dtype=np.uint8)  # touched: page faults are not part of the read
        for name in args.servers.split(","):
            if name == "nginx":
                if nginx_binary() is None:
                    print("nginx: not installed, skipped")
                    continue
                with NginxServer(root) as nginx:
                    results.append(bench_server(name, nginx.url + path.name, path, out, args))
            elif name == "aiohttp":
                with aiohttp_server(root) as base:
                    results.append(bench_server(name, base + path.name, path, out, args))
            else:
                raise SystemExit(f"unknown server {name!r}")

    print(
        f"{args.size_mib} MiB, {args.reps} reps, chunk {args.chunk // MiB} MiB, "
        f"concurrency {args.concurrency}, load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'server':<9}{'client':<10}{'median MB/s':>12}{'vs curl':>9}{'CPU s/GB':>10}")
    for result in results:
        for client, rate in result["median_mb_s"].items():
            ratio = result["ratio_to_curl"][client]
            cpu = result["client_cpu_s_per_gb"][client]
            print(f"{result['server']:<9}{client:<10}{rate:>12}{ratio:>9.2f}{cpu:>10.3f}")
    report = {
        "benchmark": "HttpSource.read_into vs curl, loopback",
        "size_mib": args.size_mib,
        "reps": args.reps,
        "chunk_size": args.chunk,
        "concurrency": args.concurrency,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "loadavg_at_start": load_at_start,
            "loadavg_at_end": os.getloadavg(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
