"""Every error pullweights raises.

Callers catch by what went wrong, never by which dependency noticed it::

    PullWeightsError
    ├── GraphError            a graph was built wrongly (bad operand, shape or dtype mismatch)
    ├── CompileError          onnxruntime refused the lowered graph
    ├── ComputeError          bad inputs at compute time (missing, wrong dtype, out of bounds)
    ├── SourceError           bytes could not be read from where a weight lives
    │   └── FetchError        an HTTP transfer failed (status, connection, timeout)
    ├── IntegrityError        bytes arrived but are wrong (length, Content-Range, checksum,
    │   │                     an object that changed between requests)
    │   └── RemoteChangedError  the remote object's validator changed mid-load
    ├── FormatError           a file is malformed (names the field and byte offset)
    ├── UnsupportedError      a valid input we do not handle (quant type, architecture, op)
    └── CacheError            the on-disk cache cannot be used (full disk, corrupt entry)

Errors raised by aiohttp, onnxruntime and the OS are translated at one boundary each and
chained with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "CompileError",
    "ComputeError",
    "FetchError",
    "FormatError",
    "GraphError",
    "IntegrityError",
    "PullWeightsError",
    "RemoteChangedError",
    "SourceError",
    "UnsupportedError",
]


class PullWeightsError(Exception):
    """Root of every error pullweights raises."""


class GraphError(PullWeightsError, ValueError):
    """A graph was built wrongly; the message names the op and its operands."""


class CompileError(PullWeightsError):
    """onnxruntime could not create a session from the lowered graph."""


class ComputeError(PullWeightsError, ValueError):
    """Inputs given to ``compute`` do not match the graph (name, dtype, shape, bounds)."""


class SourceError(PullWeightsError, OSError):
    """Bytes could not be read from a weight's source (missing file, range outside it)."""


class FetchError(SourceError):
    """An HTTP transfer failed: bad status, connection error, timeout."""


class IntegrityError(PullWeightsError):
    """Bytes were received but are not the bytes asked for."""


class RemoteChangedError(IntegrityError):
    """A remote object changed (ETag / Last-Modified) between requests of one load."""


class FormatError(PullWeightsError, ValueError):
    """A file is malformed; the message names the field and its byte offset."""


class UnsupportedError(PullWeightsError):
    """A valid input that pullweights does not handle (quant type, architecture, op)."""


class CacheError(PullWeightsError):
    """The on-disk weight cache cannot be read or written."""
