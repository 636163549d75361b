"""Image-to-image translation networks and the registry of model families.

Build a family's networks by name::

    from i2i.models import create_networks, list_families

    networks = create_networks("cyclegan", ngf=32)  # {"g_ab": ..., "g_ba": ..., ...}

Each family module below registers itself when imported; add new families to this list.
"""

from i2i.models import (
    cyclegan,  # registers "cyclegan"
    munit,  # registers "munit"
    pix2pix,  # registers "pix2pix"
    stargan,  # registers "stargan"
    twostep,  # registers "twostep"
    unit,  # registers "unit"
)
from i2i.models.cyclegan import CycleGANOptions
from i2i.models.munit import MUNITOptions
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
    checked_domains,
    create_networks,
    direction_target,
    get_family,
    list_families,
    options_from_dict,
    register_family,
    target_direction,
)
from i2i.models.stargan import StarGANOptions
from i2i.models.translators import (
    DomainTranslator,
    FixedDomainTranslator,
    ImageStyleEncoder,
    ImageTranslator,
    StyleTranslator,
    domain_translators,
    translators_by_direction,
)
from i2i.models.twostep import TwoStepOptions
from i2i.models.unit import UNITOptions

__all__ = [
    "DomainTranslator",
    "FixedDomainTranslator",
    "checked_domains",
    "direction_target",
    "domain_translators",
    "target_direction",
    "DISCRIMINATOR_ARCHS",
    "GENERATOR_ARCHS",
    "CycleGANOptions",
    "ImageStyleEncoder",
    "ImageTranslator",
    "MUNITOptions",
    "ModelFamily",
    "Pix2PixOptions",
    "ShapeRule",
    "StarGANOptions",
    "StyleEncoderFactory",
    "StyleTranslator",
    "TranslatorFactory",
    "TwoStepOptions",
    "UNITOptions",
    "build_discriminator",
    "build_generator",
    "create_networks",
    "cyclegan",
    "get_family",
    "init_weights",
    "list_families",
    "munit",
    "options_from_dict",
    "pix2pix",
    "register_family",
    "stargan",
    "translators_by_direction",
    "twostep",
    "unit",
]
