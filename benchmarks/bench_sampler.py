"""Rate and overhead of the profiler's memory sampler (``pullweights.profile.Sampler``).

Each workload is timed with and without the sampler, in interleaved pairs (the order
alternates) so machine noise hits both alike; reported are medians, the overhead as
``median(with) / median(without) - 1`` and the median of the per-pair ratios, and the
sampling rate reached while the workload ran, and the CPU time the sampler itself used
(its process, or this process while it samples a child) per second profiled — a figure
that other load on the machine does not blur, unlike the timings. Every workload holds
``--resident-mib`` of touched memory.

* ``python-loop``: a pure-Python loop in this process, the sampler a thread of it
  (``pullweights.profile.profiled``): the GIL and one core are shared;
* ``ort-2-threads``: an onnxruntime MatMul on 2 intra-op threads in this process, the
  sampler a thread of it: every core is busy;
* ``child-python-loop``: the loop in a child process sampled from this one
  (``pullweights.profile.profile_command``, i.e. ``pullweights profile -- CMD``); the
  child reports its own time.

    python -m benchmarks.bench_sampler [--repeats 7] [--seconds 1.0] [--resident-mib 1024]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).parent / "results" / "sampler.json"


def python_loop(iterations: int) -> float:
    """Seconds for ``iterations`` rounds of pure-Python arithmetic."""
    start = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += (i * 7) % 13
    return time.perf_counter() - start


def _calibrate(fn: Callable[[int], float], seconds: float) -> int:
    n = 1000
    while fn(n) < seconds / 4:
        n *= 2
    return int(n * seconds / fn(n))


def _ort_matmul() -> Callable[[int], float]:
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "mm",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [512, 512]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [512, 512]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [512, 512])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(model.SerializeToString(), options, ["CPUExecutionProvider"])
    a = np.ones((512, 512), np.float32)

    def run(iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            session.run(None, {"a": a, "b": a})
        return time.perf_counter() - start

    return run


CHILD = """
import sys, time, numpy as np
held = np.ones({resident} // 8)
from benchmarks.bench_sampler import python_loop
print(python_loop({iterations}))
"""


def _cpu(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def _child(iterations: int, resident: int, profiled: bool) -> tuple[float, float, float]:
    """(seconds the child's loop took, sampling rate, CPU seconds of this process while
    it sampled the child) for one child run."""
    from pullweights.profile import profile_command

    argv = [sys.executable, "-c", CHILD.format(resident=resident, iterations=iterations)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    if not profiled:
        out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
        return float(out.stdout.split()[-1]), 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="bench-sampler-") as tmp:
        path = Path(tmp, "stdout")
        with open(path, "w") as sink:
            before = _cpu(resource.RUSAGE_SELF)
            record = profile_command(argv, env=env, stdout=sink)
            cpu = _cpu(resource.RUSAGE_SELF) - before
        seconds = float(path.read_text().split()[-1])
    return seconds, record.samples.rate_hz(), cpu / record.duration


def measure(name: str, run: Callable[[bool], tuple[float, float]], repeats: int) -> dict[str, Any]:
    """Interleaved pairs of ``run(sampled)``; medians and overhead."""
    plain: list[float] = []
    sampled: list[float] = []
    rates: list[float] = []
    cpu: list[float] = []
    for rep in range(repeats):
        for with_sampler in (False, True) if rep % 2 == 0 else (True, False):
            seconds, rate, cpu_fraction = run(with_sampler)
            (sampled if with_sampler else plain).append(seconds)
            if with_sampler:
                rates.append(rate)
                cpu.append(cpu_fraction)
    ratios = [s / p for s, p in zip(sampled, plain, strict=True)]
    result = {
        "workload": name,
        "repeats": repeats,
        "median_without_s": statistics.median(plain),
        "median_with_s": statistics.median(sampled),
        "overhead": statistics.median(sampled) / statistics.median(plain) - 1,
        "median_pair_overhead": statistics.median(ratios) - 1,
        "rate_hz_median": statistics.median(rates),
        "rate_hz_min": min(rates),
        "sampler_cpu_fraction": statistics.median(cpu),
        "without_s": plain,
        "with_s": sampled,
    }
    print(
        f"{name}: {result['median_without_s']:.3f} s without, {result['median_with_s']:.3f} s "
        f"with ({result['overhead'] * 100:+.2f}%), {result['rate_hz_median']:.1f} Hz",
        file=sys.stderr,
    )
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="pairs per workload")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one workload run")
    parser.add_argument("--resident-mib", type=int, default=1024, help="memory each run holds")
    parser.add_argument("--interval", type=float, default=0.01, help="sampler interval")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    from pullweights.profile import profiled

    resident = args.resident_mib * 2**20
    held = np.ones(resident // 8)  # touched: resident for the whole benchmark
    loop_n = _calibrate(python_loop, args.seconds)
    matmul = _ort_matmul()
    matmul_n = _calibrate(matmul, args.seconds)

    def in_process(fn: Callable[[int], float], n: int) -> Callable[[bool], tuple[float, float]]:
        def run(with_sampler: bool) -> tuple[float, float, float]:
            if not with_sampler:
                return fn(n), 0.0, 0.0
            before = _cpu(resource.RUSAGE_CHILDREN)  # the sampler process, once reaped
            with profiled(interval=args.interval) as prof:
                seconds = fn(n)
            cpu = _cpu(resource.RUSAGE_CHILDREN) - before
            return seconds, prof.record.samples.rate_hz(), cpu / prof.record.duration

        return run

    results = [
        measure("python-loop", in_process(python_loop, loop_n), args.repeats),
        measure("ort-2-threads", in_process(matmul, matmul_n), args.repeats),
        measure(
            "child-python-loop",
            lambda sampled: _child(loop_n, resident, sampled),
            args.repeats,
        ),
    ]
    del held
    print(
        "\n| workload | without | with sampler | overhead (medians) | median of pairs | rate "
        "| sampler CPU |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['workload']} | {r['median_without_s']:.3f} s | {r['median_with_s']:.3f} s | "
            f"{r['overhead'] * 100:+.2f}% | {r['median_pair_overhead'] * 100:+.2f}% | "
            f"{r['rate_hz_median']:.1f} Hz (min {r['rate_hz_min']:.1f}) | "
            f"{r['sampler_cpu_fraction'] * 100:.2f}% of a core |"
        )
    doc = {
        "setup": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "cpus": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
