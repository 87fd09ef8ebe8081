"""Per-sample batched Jacobian strategies (being written)."""
