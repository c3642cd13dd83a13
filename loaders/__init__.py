"""Model builders: real LLMs assembled from GGUF metadata with the pullweights builder."""
