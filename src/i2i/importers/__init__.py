"""Converters from the reference implementations' checkpoint files to i2i checkpoints."""

from .cyclegan import ImportError_, import_cyclegan
from .pix2pix import import_pix2pix

__all__ = ["ImportError_", "import_cyclegan", "import_pix2pix"]
