"""vimark: signed electronic motor-vehicle inspection marks, issued and verified over gRPC."""

__version__ = "0.1.0"
