"""Converters from the reference implementations' checkpoint files to i2i checkpoints."""

from .cyclegan import ImportError_, import_cyclegan
from .unit import import_munit, import_reference, import_unit

__all__ = ["ImportError_", "import_cyclegan", "import_munit", "import_reference", "import_unit"]
