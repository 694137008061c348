"""histoeq: rotation-invariant histopathology detection with group-equivariant CNNs."""

__version__ = "0.1.0"
