"""Memory profiling: what loading and running a model costs, phase by phase.

* :func:`profiled` — profile a block of this process (``with`` or ``async with``);
* :func:`profile_command` — profile any command as a child process;
* :class:`ProfileRecord` — what came out: memory samples (RSS, private, file-backed,
  swap, summed over the process tree, 100 per second), load events, how the run ended;
  :meth:`~ProfileRecord.write_json`, :meth:`~ProfileRecord.write_markdown` and
  :meth:`~ProfileRecord.plot` (matplotlib, the ``plot`` extra) write it out.

The command line is ``pullweights profile MODEL [PROMPT]`` / ``pullweights profile --
CMD ...``. Linux only (``/proc``).
"""

from __future__ import annotations

from pullweights.profile.analysis import AliveWeight, Peak, PhaseSummary
from pullweights.profile.api import Profiler, profiled
from pullweights.profile.command import profile_command
from pullweights.profile.record import ProfileRecord, ProfileStatus
from pullweights.profile.sampler import Sampler
from pullweights.profile.samples import KINDS, Samples

__all__ = [
    "KINDS",
    "AliveWeight",
    "Peak",
    "PhaseSummary",
    "ProfileRecord",
    "ProfileStatus",
    "Profiler",
    "Sampler",
    "Samples",
    "profile_command",
    "profiled",
]
