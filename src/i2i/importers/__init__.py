"""Converters from the reference implementations' checkpoint files to i2i checkpoints."""

from .cyclegan import ImportError_, import_cyclegan

__all__ = ["ImportError_", "import_cyclegan"]
