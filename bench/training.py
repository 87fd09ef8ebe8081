"""Jacobian penalties inside a training step (being written)."""
