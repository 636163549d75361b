"""The CycleGAN family (Zhu et al., 2017): two generators and two PatchGAN discriminators.

Network names differ from the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix)
and say which way each network works:

=============  ==========  ===========================================
reference      i2i         role
=============  ==========  ===========================================
``netG_A``     ``g_ab``    translates domain A to domain B
``netG_B``     ``g_ba``    translates domain B to domain A
``netD_A``     ``d_b``     judges domain B images (real B vs. g_ab(A))
``netD_B``     ``d_a``     judges domain A images (real A vs. g_ba(B))
=============  ==========  ===========================================

The state dict of each network equals the reference's, so ``latest_net_G_A.pth`` loads into
``g_ab`` as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from i2i.models.networks import (
    DISCRIMINATOR_ARCHS,
    GENERATOR_ARCHS,
    INIT_TYPES,
    NORMS,
    UNET_LEVELS,
    UPSAMPLE_MODES,
    build_discriminator,
    build_generator,
)
from i2i.models.registry import ModelFamily, register_family
from i2i.models.translators import translators_by_direction
from i2i.shapes import ShapeRule

_UNET_SIZES = {arch: 2**levels for arch, levels in UNET_LEVELS.items()}


@dataclass
class CycleGANOptions:
    """Architecture options, with the reference's CycleGAN defaults and option names."""

    input_nc: int = 3  # channels of domain A images
    output_nc: int = 3  # channels of domain B images
    ngf: int = 64
    ndf: int = 64
    netG: str = "resnet_9blocks"
    netD: str = "basic"
    n_layers_D: int = 3  # used by netD="n_layers" only
    norm: str = "instance"
    dropout: bool = False  # the reference's CycleGAN sets --no_dropout by default
    init_type: str = "normal"
    init_gain: float = 0.02
    # Not the reference's: generator options for short runs (resnet_*, unet_* and discogan).
    upsample: str = "transpose"  # "resize": nearest resize + 3x3 conv, no checkerboard
    global_skip: bool = False  # the generators learn a change of their input image

    def __post_init__(self) -> None:
        for key, value, choices in (
            ("netG", self.netG, GENERATOR_ARCHS),
            ("netD", self.netD, DISCRIMINATOR_ARCHS),
            ("norm", self.norm, NORMS),
            ("init_type", self.init_type, INIT_TYPES),
            ("upsample", self.upsample, UPSAMPLE_MODES),
        ):
            if value not in choices:
                raise ValueError(f"unknown {key} {value!r}; expected one of: {', '.join(choices)}")


def generator_shape_rule(arch: str) -> ShapeRule:
    """Image sizes a generator accepts: fixed for U-Nets, multiples of 16 for DiscoGAN's
    encoder-decoder (four halvings), multiples of 4 for ResNets.

    A ResNet generator halves the image twice and reflect-pads the 1/4-scale feature map
    by one, which needs two cells: no side below 8.
    """
    if arch in _UNET_SIZES:
        return ShapeRule(fixed_size=_UNET_SIZES[arch])
    if arch == "discogan":
        return ShapeRule(multiple_of=16, min_size=16)
    return ShapeRule(multiple_of=4, min_size=8)


def build_cyclegan(options: CycleGANOptions) -> dict[str, nn.Module]:
    """Build and initialise the four CycleGAN networks.

    They are built in the reference's order (G_A, G_B, D_A, D_B), so a seeded global torch
    RNG gives the reference's initial weights.
    """
    o = options
    g_ab = build_generator(
        o.netG, o.input_nc, o.output_nc, o.ngf, o.norm, o.dropout, o.init_type, o.init_gain,
        upsample=o.upsample, global_skip=o.global_skip,
    )  # fmt: skip
    g_ba = build_generator(
        o.netG, o.output_nc, o.input_nc, o.ngf, o.norm, o.dropout, o.init_type, o.init_gain,
        upsample=o.upsample, global_skip=o.global_skip,
    )  # fmt: skip
    d_b = build_discriminator(
        o.netD, o.output_nc, o.ndf, o.n_layers_D, o.norm, o.init_type, o.init_gain
    )
    d_a = build_discriminator(
        o.netD, o.input_nc, o.ndf, o.n_layers_D, o.norm, o.init_type, o.init_gain
    )
    return {"g_ab": g_ab, "g_ba": g_ba, "d_a": d_a, "d_b": d_b}


def cyclegan_translators(
    networks: Mapping[str, nn.Module], options: CycleGANOptions
) -> dict[str, nn.Module]:
    """``{"A2B": ImageTranslator(g_ab), "B2A": ImageTranslator(g_ba)}``, in eval mode.

    A direction whose generator is not in ``networks`` is left out.
    """
    return translators_by_direction(networks, {"A2B": "g_ab", "B2A": "g_ba"})


CYCLEGAN = register_family(
    ModelFamily(
        name="cyclegan",
        options_type=CycleGANOptions,
        build=build_cyclegan,
        generators=("g_ab", "g_ba"),
        directions={"A2B": "g_ab", "B2A": "g_ba"},
        shape_rule=lambda options: generator_shape_rule(options.netG),
        description="CycleGAN: unpaired translation between two domains, both directions",
        translators=cyclegan_translators,
    )
)
