"""Which saved sessions a load opened, so the next load can open them before its graph exists.

A *plan* is the list of saved sessions (:mod:`pullweights.runtime.saved`) one load used,
in the order of its stages — each one's key, stage name and packed bytes — kept as a
blob (:mod:`.blobs`) of kind ``session-plan`` under a digest of the caller's *plan key*
(for an LLM: the architecture, the GGUF's source identities and the load options; see
:mod:`pullweights.runtime.prefetch`). A plan is only a hint: a load opens the sessions it
names while it builds its graph, then uses those whose keys its stages really have. A
missing, damaged or stale plan costs that head start and nothing else. At most
:data:`MAX_PLANS` are kept, the least recently used removed first (each is a few hundred
bytes).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pullweights.cache.blobs import blob_key, read_blob, touch_blob, trim_blobs, write_blob

__all__ = ["MAX_PLANS", "PlannedSession", "SessionPlans"]

#: Most plans kept.
MAX_PLANS = 64
#: The blob kind of a plan.
KIND = "session-plan"
_SESSION_KEY = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class PlannedSession:
    """One saved session of a plan."""

    key: str
    #: The name of the stage it was the session of (for progress and profiles).
    stage: str
    #: That stage's prepacked bytes, and its largest initializer's (what opening it
    #: packs at once: :attr:`~pullweights.graph.lowering.LoweredStage.largest_prepacked`).
    nbytes: int
    largest: int


class SessionPlans:
    """The session plans of one cache directory (``get``/``put`` by plan key). Blocking."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def get(self, plan_key: str) -> list[PlannedSession] | None:
        """The sessions stored for ``plan_key`` in stage order, or None (none, or not
        readable as a plan)."""
        data = read_blob(self.root, KIND, blob_key(plan_key))
        if data is None:
            return None
        try:
            sessions = [PlannedSession(**s) for s in json.loads(data)["sessions"]]
        except (ValueError, KeyError, TypeError):
            return None
        if not all(
            isinstance(s.key, str)
            and _SESSION_KEY.match(s.key)
            and isinstance(s.stage, str)
            and isinstance(s.nbytes, int)
            and isinstance(s.largest, int)
            for s in sessions
        ):
            return None
        touch_blob(self.root, KIND, blob_key(plan_key))
        return sessions

    def put(self, plan_key: str, sessions: Sequence[PlannedSession]) -> None:
        """Keep ``sessions`` as the plan of ``plan_key`` (nothing if the cache cannot be
        written)."""
        body = json.dumps({"plan": plan_key, "sessions": [asdict(s) for s in sessions]}).encode()
        if write_blob(self.root, KIND, blob_key(plan_key), body):
            trim_blobs(self.root, KIND, MAX_PLANS)
