"""Cutting a lowered graph into stages: consecutive runs of nodes, each its own session.

A stage is compiled as soon as *its own* weights have arrived, while later stages' bytes
are still being read, downloaded or transformed; at run time the stages are chained, the
values crossing a cut handed from one session to the next as onnxruntime values.

What makes a stage expensive to compile is the weights onnxruntime prepacks (declared
initializers: ``MatMulNBits`` parts); their bytes also bound what a cold load holds on
the heap at once. So cuts are placed by those bytes:

``"auto"``
    Walk the builder's marked stages (``GraphBuilder.stage``) in order and close a
    stage when the next mark would take it past the target (:func:`target_bytes`); a
    single mark larger than the target is cut between its nodes. Unmarked graphs are
    cut between nodes.
``"marked"``
    Exactly the marked stages (unmarked ops join the stage before them).
``int``
    At most that many stages of about equal bytes (1: one session).

Any prefix of the builder's node list is a valid cut: ops are recorded in a
topological order, because an op can only use operands that already exist.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pullweights.errors import GraphError

__all__ = [
    "MAX_AUTO_STAGES",
    "MIN_STAGE_BYTES",
    "StagePlan",
    "StageSpan",
    "partition",
    "target_bytes",
]

StagePlan = Literal["auto", "marked"] | int

#: ``"auto"`` makes no stage smaller than this (in prepacked bytes) ...
MIN_STAGE_BYTES = 32 << 20
#: ... and no more stages than this (each costs a session run per call).
MAX_AUTO_STAGES = 12


@dataclass(frozen=True)
class StageSpan:
    """Nodes ``start:stop`` of the node list, named after the marks they cover."""

    name: str
    start: int
    stop: int


def target_bytes(total: int) -> int:
    """Prepacked bytes per stage for ``"auto"``: ``total / MAX_AUTO_STAGES``, at least
    :data:`MIN_STAGE_BYTES`."""
    return max(MIN_STAGE_BYTES, -(-total // MAX_AUTO_STAGES))


def partition(
    units: Sequence[int],
    costs: Sequence[int],
    unit_names: Mapping[int, str],
    plan: StagePlan,
) -> list[StageSpan]:
    """Cut nodes into stages.

    Args:
        units: the stage mark of every node, in node order (marks are nondecreasing
            integers; consecutive nodes with one mark form a unit).
        costs: prepacked bytes each node brings (counted at a weight's first use).
        unit_names: the name of each mark ("" for unmarked runs).
        plan: see the module docs.

    Raises:
        GraphError: ``plan`` is not ``"auto"``, ``"marked"`` or a positive int.
    """
    n = len(units)
    if n == 0:
        return []
    spans = _spans(units, costs, unit_names, plan)
    if len(spans) == 1 and not any(unit_names.get(u) for u in units):
        return [StageSpan("", 0, n)]  # one unmarked stage: the whole graph, unnamed
    return _numbered(spans)


def _numbered(spans: list[StageSpan]) -> list[StageSpan]:
    """Stages that share a name (the pieces of a unit cut apart) numbered ``"head 2/3"``:
    every stage's events, saved session and profile rows are told apart."""
    counts = Counter(s.name for s in spans)
    seen: Counter[str] = Counter()
    out = []
    for s in spans:
        if counts[s.name] > 1:
            seen[s.name] += 1
            s = StageSpan(f"{s.name} {seen[s.name]}/{counts[s.name]}".strip(), s.start, s.stop)
        out.append(s)
    return out


def _spans(
    units: Sequence[int], costs: Sequence[int], unit_names: Mapping[int, str], plan: StagePlan
) -> list[StageSpan]:
    n = len(units)
    if plan == "marked":
        return _marked(units, unit_names)
    if isinstance(plan, bool) or not (plan == "auto" or (isinstance(plan, int) and plan >= 1)):
        raise GraphError(f"build: stages must be 'auto', 'marked' or an int >= 1, got {plan!r}")
    total = sum(costs)
    if plan == "auto":
        target = target_bytes(total)
        limit = MAX_AUTO_STAGES
    else:
        assert isinstance(plan, int)
        if plan == 1 or total == 0:
            return [StageSpan(_name(units, unit_names, 0, n, 0), 0, n)]
        target = -(-total // plan)
        limit = plan
    cuts = _greedy_cuts(units, costs, target)
    while len(cuts) + 1 > limit:  # rounding made one too many: merge the smallest pair
        cuts.pop(_cheapest_merge(cuts, costs, n))
    bounds = [0, *cuts, n]
    return [
        StageSpan(_name(units, unit_names, a, b, i), a, b)
        for i, (a, b) in enumerate(itertools.pairwise(bounds))
    ]


def _greedy_cuts(units: Sequence[int], costs: Sequence[int], target: int) -> list[int]:
    """Cut positions: before a unit that would take the stage past ``target``, and inside
    a unit (before a costly node) when the unit alone is larger than ``target``."""
    cuts: list[int] = []
    acc = 0
    i, n = 0, len(units)
    while i < n:
        j = i
        while j < n and units[j] == units[i]:
            j += 1
        unit_cost = sum(costs[i:j])
        if acc and acc + unit_cost > target:
            cuts.append(i)
            acc = 0
        if unit_cost <= target or unit_cost == 0:
            acc += unit_cost
        else:
            for k in range(i, j):
                if acc and costs[k] and acc + costs[k] > target:
                    cuts.append(k)
                    acc = 0
                acc += costs[k]
        i = j
    return [c for c in cuts if 0 < c < n]


def _cheapest_merge(cuts: list[int], costs: Sequence[int], n: int) -> int:
    """Index in ``cuts`` whose removal joins the two cheapest neighbouring stages."""
    bounds = [0, *cuts, n]
    sizes = [sum(costs[a:b]) for a, b in itertools.pairwise(bounds)]
    pair = [sizes[i] + sizes[i + 1] for i in range(len(sizes) - 1)]
    return pair.index(min(pair))


def _marked(units: Sequence[int], unit_names: Mapping[int, str]) -> list[StageSpan]:
    spans: list[StageSpan] = []
    start = 0
    for i in range(1, len(units) + 1):
        if i < len(units) and units[i] == units[start]:
            continue
        if i < len(units) and not unit_names.get(units[i]):
            continue  # unmarked ops join the stage before them
        spans.append(StageSpan(unit_names.get(units[start], ""), start, i))
        start = i
    if len(spans) > 1 and not spans[0].name:  # unmarked ops before the first mark
        spans[:2] = [StageSpan(spans[1].name, 0, spans[1].stop)]
    return [StageSpan(s.name or f"stage {i}", s.start, s.stop) for i, s in enumerate(spans)]


def _name(
    units: Sequence[int], unit_names: Mapping[int, str], start: int, stop: int, index: int
) -> str:
    names: list[str] = []
    for u in units[start:stop]:
        name = unit_names.get(u, "")
        if name and (not names or names[-1] != name):
            names.append(name)
    if not names:
        return f"stage {index}"
    return names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
