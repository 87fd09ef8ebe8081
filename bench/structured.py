"""Structured accumulation for nn.Sequential (being written)."""
