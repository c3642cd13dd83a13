"""Benchmarks: side-by-side measurements against the usual ways of doing the same job."""
