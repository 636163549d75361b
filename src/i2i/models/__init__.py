"""Image-to-image translation networks and the registry of model families.

Build a family's networks by name::

    from i2i.models import create_networks, list_families

    networks = create_networks("cyclegan", ngf=32)  # {"g_ab": ..., "g_ba": ..., ...}

Each family module below registers itself when imported; add new families to this list.
"""

from i2i.models import (
    cyclegan,  # registers "cyclegan"
    pix2pix,  # registers "pix2pix"
)
from i2i.models.cyclegan import CycleGANOptions
from i2i.models.networks import (
    DISCRIMINATOR_ARCHS,
    GENERATOR_ARCHS,
    build_discriminator,
    build_generator,
    init_weights,
)
from i2i.models.pix2pix import Pix2PixOptions
from i2i.models.registry import (
    ModelFamily,
    ShapeRule,
    StyleEncoderFactory,
    TranslatorFactory,
    create_networks,
    get_family,
    list_families,
    options_from_dict,
    register_family,
)
from i2i.models.translators import ImageTranslator, translators_by_direction

__all__ = [
    "DISCRIMINATOR_ARCHS",
    "GENERATOR_ARCHS",
    "CycleGANOptions",
    "ImageTranslator",
    "ModelFamily",
    "Pix2PixOptions",
    "ShapeRule",
    "StyleEncoderFactory",
    "TranslatorFactory",
    "build_discriminator",
    "build_generator",
    "create_networks",
    "cyclegan",
    "get_family",
    "init_weights",
    "list_families",
    "options_from_dict",
    "pix2pix",
    "register_family",
    "translators_by_direction",
]
