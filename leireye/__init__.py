"""LeirEye: a network sensor that captures, decodes and streams packets live."""

__version__ = "0.1.0"
