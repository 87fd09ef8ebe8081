"""The correctness gate: a checked float64 reference, dtype-aware tolerances, and the audit of
the reference against finite differences of f. Nothing is timed that did not pass it."""
