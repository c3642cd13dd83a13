"""A tqdm bar over the bytes a load pulls, driven by the loader's progress events."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from pullweights.events import Progress, ProgressCallback

__all__ = ["load_progress_bar"]


def load_progress_bar(enabled: bool, desc: str = "loading") -> tuple[Any, ProgressCallback | None]:
    """A bar (bytes, rate, ETA; weights done) on stderr and the callback that drives it.

    Returns ``(None, None)`` when not ``enabled``; close the bar when the load ends.
    """
    if not enabled:
        return None, None
    bar = tqdm(
        total=0,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
    )

    def update(event: Progress) -> None:
        bar.total = event.bytes_total
        bar.update(event.bytes_done - bar.n)
        bar.set_postfix_str(f"{event.done}/{event.total} weights", refresh=True)

    return bar, update
