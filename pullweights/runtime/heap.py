"""Giving freed heap memory back to the operating system.

When a session is dropped, onnxruntime frees its packed weights, but glibc's allocator
keeps freed memory of the main heap and its arenas for reuse (its mmap threshold grows
to the size of the buffers freed, so later ones of that size come from the heap), and
the process's private memory does not shrink. ``malloc_trim`` hands every free page back.
Elsewhere than glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_free_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_memory() -> bool:
    """Return freed heap memory to the OS (glibc ``malloc_trim(0)``); False if unavailable.

    Blocking for a few milliseconds; releases the GIL (a ctypes call).
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
