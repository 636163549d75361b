"""Converters from the reference implementations' checkpoint files to i2i checkpoints."""

from .cyclegan import ImportError_, import_cyclegan
from .pix2pix import import_pix2pix
from .unit import import_munit, import_reference, import_unit

__all__ = [
    "ImportError_",
    "import_cyclegan",
    "import_munit",
    "import_pix2pix",
    "import_reference",
    "import_unit",
]
