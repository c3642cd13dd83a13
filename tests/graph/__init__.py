"""Tests of the graph builder, its ops, lowering and the compiled graph."""
