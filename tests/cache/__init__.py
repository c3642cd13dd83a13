"""Tests of the on-disk weight cache (pullweights.cache) and ``pullweights cache``."""
