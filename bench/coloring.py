"""Sparse Jacobians by column colouring (being written)."""
