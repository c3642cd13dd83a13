"""The sampler: known allocations land in the right column, children are followed, and
the sampler never outlives the profiled process."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from pullweights.events import Phase
from pullweights.profile import ProfileRecord, Sampler, profile_command, profiled

MIB = 2**20
SIZE = 200 * MIB

# Touch 200 MiB of anonymous memory, hold it, free it; then map a 200 MiB file and read
# every page of it, hold it. A mark before and after each step tells the test where to look.
ALLOCATE = """
import mmap, sys, time
import numpy as np
from pullweights import events
from pullweights.events import Phase

def hold(name):
    events.mark(Phase.READY, name)
    time.sleep(0.3)

hold("baseline")
anon = np.ones({size} // 8)
hold("anon")
del anon
hold("freed")
with open(sys.argv[1], "rb") as f:
    mapped = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
view = np.frombuffer(mapped, np.uint8)
total = int(view[::4096].sum())
hold("file")
"""


def _at_mark(record: ProfileRecord, name: str, kind: str) -> int:
    """Memory of ``kind`` in the middle of the 0.3 s hold after mark ``name``."""
    (mark,) = [m for m in record.marks if m.phase == Phase.READY and m.name == name]
    return record.samples.at(kind, mark.time + 0.15)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sampler") / "big.bin"
    rng = np.random.default_rng(0)
    with open(path, "wb") as f:
        for _ in range(SIZE // (8 * MIB)):
            f.write(rng.integers(0, 255, 8 * MIB, dtype=np.uint8).tobytes())
    return path


def test_known_allocations_land_in_the_right_column(big_file: Path) -> None:
    script = ALLOCATE.format(size=SIZE)
    record = profile_command([sys.executable, "-c", script, str(big_file)])
    assert record.status.ok, record.status
    base_private = _at_mark(record, "baseline", "private")
    base_file = _at_mark(record, "baseline", "file")
    # 200 MiB of touched anonymous memory: private grows by it, file-backed does not.
    anon_private = _at_mark(record, "anon", "private") - base_private
    assert anon_private == pytest.approx(SIZE, rel=0.10)
    assert abs(_at_mark(record, "anon", "file") - base_file) < 0.10 * SIZE
    # A 200 MiB file read through a map: file-backed grows by it, private does not.
    freed_private = _at_mark(record, "freed", "private")
    file_file = _at_mark(record, "file", "file") - _at_mark(record, "freed", "file")
    assert file_file == pytest.approx(SIZE, rel=0.10)
    assert abs(_at_mark(record, "file", "private") - freed_private) < 0.10 * SIZE
    # RSS is the sum of both kinds at every sample; nothing was swapped.
    s = record.samples
    assert all(r == p + f for r, p, f in zip(s.rss, s.private, s.file, strict=True))
    assert record.peak("private") is not None and record.peak("file") is not None


def test_in_process_block_sees_its_own_allocation() -> None:
    with profiled("numpy block") as prof:
        sampling = any(t.name == "pullweights-sampler" for t in threading.enumerate())
        data = np.ones(SIZE // 8)
        time.sleep(0.1)
    record = prof.record
    start = record.samples.private[0]
    peak = record.peak("private")
    assert peak is not None
    assert peak.nbytes - start == pytest.approx(SIZE, rel=0.10)
    assert record.status.ok and record.status.exit_code is None
    del data
    assert sampling
    assert not any(t.name == "pullweights-sampler" for t in threading.enumerate())


CHILDREN = """
import subprocess, sys
code = "import numpy as np, time; a = np.ones({size} // 8); time.sleep(0.5)"
procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(2)]
for p in procs:
    p.wait()
"""


def test_descendants_are_summed() -> None:
    record = profile_command([sys.executable, "-c", CHILDREN.format(size=SIZE)])
    assert record.status.ok
    assert max(record.samples.processes) == 3
    peak = record.peak("private")
    assert peak is not None
    # Two grandchildren of 200 MiB each, at the same time (plus the interpreters).
    assert peak.nbytes >= 2 * SIZE * 0.9


def test_sampler_stops_by_itself_when_the_process_exits() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    sampler = Sampler(proc.pid).start()
    try:
        proc.wait(timeout=60)
        assert sampler.finished.wait(timeout=60), "the sampler outlived the process"
        assert sampler._thread is not None
        sampler._thread.join(timeout=60)
        assert not sampler.running
        assert len(sampler.samples) >= 1
    finally:
        sampler.stop()
    assert sampler._reader is not None and sampler._reader.fds == {}  # every file closed


def test_no_sampler_thread_left_after_a_command() -> None:
    profile_command([sys.executable, "-c", "pass"])
    assert not any(t.name == "pullweights-sampler" for t in threading.enumerate())


def test_missing_process() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=60)
    with pytest.raises(ProcessLookupError):
        Sampler(proc.pid).start()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] != "Z"
    except OSError:
        return False


def test_in_process_sampler_is_a_process_left_out_of_the_sums() -> None:
    with profiled() as prof:
        assert prof._sampler is not None and prof._sampler.mode == "process"
        proc = prof._sampler._proc
        assert proc is not None and _alive(proc.pid)
        time.sleep(0.05)
    assert not _alive(proc.pid)
    assert set(prof.record.samples.processes) == {1}  # this process only


DIES_INSIDE = """
import os, sys, time
from pullweights.profile import profiled
with profiled() as prof:
    print(prof._sampler._proc.pid, flush=True)
    time.sleep(0.1)
    os._exit(0)  # no cleanup at all: the sampler must notice by itself
"""


def test_sampler_process_never_outlives_the_profiled_process() -> None:
    out = subprocess.run(
        [sys.executable, "-c", DIES_INSIDE], capture_output=True, text=True, timeout=120
    )
    sampler_pid = int(out.stdout.split()[0])
    for _ in range(3000):  # a hang guard, not a timing: it must end, however slowly
        if not _alive(sampler_pid):
            break
        time.sleep(0.01)
    assert not _alive(sampler_pid)


def test_thread_and_process_modes_agree() -> None:
    data = np.ones(SIZE // 8)
    try:
        for mode in ("thread", "process"):
            with Sampler(mode=mode) as sampler:  # type: ignore[arg-type]
                time.sleep(0.05)
            assert len(sampler.samples) >= 2
            assert min(sampler.samples.private) >= SIZE
    finally:
        del data


def test_status_and_smaps_rollup_agree() -> None:
    data = np.ones(SIZE // 8)
    try:
        rows = {}
        for source in ("status", "smaps_rollup"):
            with Sampler(mode="thread", source=source) as sampler:  # type: ignore[arg-type]
                pass
            rows[source] = (sampler.samples.private[-1], sampler.samples.rss[-1])
        (p1, r1), (p2, r2) = rows.values()
        assert abs(p1 - p2) < 0.02 * SIZE and abs(r1 - r2) < 0.02 * SIZE
    finally:
        del data
