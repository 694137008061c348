"""Benchmarks of the core layers (``histoeq bench layers`` / ``histoeq bench equivariance``)."""
