"""Compiled, chunked and CUDA-graph strategies (being written)."""
