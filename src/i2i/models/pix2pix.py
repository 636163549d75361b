"""The pix2pix family (Isola et al., 2017): one generator and a conditional PatchGAN.

Paired translation: each training image of domain A comes with its true translation in
domain B, and the generator learns that one mapping with an adversarial loss plus L1 to
the truth. Network names, with the reference's (junyanz/pytorch-CycleGAN-and-pix2pix):

=========  ======  ==========================================================
reference  i2i     role
=========  ======  ==========================================================
``netG``   ``g``   translates the input domain to the output domain
``netD``   ``d``   judges (input, output) pairs: ``input_nc + output_nc`` channels
=========  ======  ==========================================================

The state dict of ``g`` equals the reference's, so ``latest_net_G.pth`` loads as it is.

Direction and channels. ``direction`` is the reference's ``--direction``: ``AtoB``
trains ``g`` to map domain A (the left half of an aligned image, or ``trainA/``) to
domain B, ``BtoA`` the reverse. ``input_nc`` and ``output_nc`` keep the reference's
meaning too: the channels of the generator's input and output, so domain A has
``input_nc`` channels for ``AtoB`` and ``output_nc`` channels for ``BtoA``
(:func:`domain_channels`). The translator is named ``"A2B"`` or ``"B2A"`` after the
direction. :attr:`ModelFamily.directions` has to be static, so it names ``"A2B"`` only;
code that must be right for ``BtoA`` models asks :func:`pix2pix_direction` or the
``translators`` factory, whose keys follow the options.

Eval mode. Exported and served pix2pix models (and ``i2i eval``) run the generator in eval
mode: batch norm uses the running statistics gathered in training and dropout is off,
so a translation is deterministic and does not depend on the rest of the batch. The
reference's ``test.py`` instead runs the generator in train mode unless ``--eval`` is
given: batch norm normalises with the statistics of the test batch (of one image, by
default) and dropout stays on, which is the pix2pix paper's source of noise. The two
therefore give different images from the same weights. To compare with the reference,
run its ``test.py --eval``; to get a model whose eval-mode output is what training
optimised, train with ``model.norm: instance`` (per-image statistics, identical in both
modes) and, if wanted, ``model.dropout: false``. i2i does not export the train-mode
behaviour: its outputs would change with the batch the server happens to form.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import nn

from i2i.models.cyclegan import generator_shape_rule
from i2i.models.networks import (
    DISCRIMINATOR_ARCHS,
    GENERATOR_ARCHS,
    INIT_TYPES,
    NORMS,
    UPSAMPLE_MODES,
    build_discriminator,
    build_generator,
)
from i2i.models.registry import ModelFamily, register_family
from i2i.models.translators import translators_by_direction

PIX2PIX_DIRECTIONS = ("AtoB", "BtoA")


@dataclass
class Pix2PixOptions:
    """Architecture options, with the reference's pix2pix defaults and option names.

    ``input_nc`` / ``output_nc`` are the channels of the generator's input and output (the
    reference's meaning): domains A and B for ``AtoB``, B and A for ``BtoA``.
    """

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 64
    ndf: int = 64
    netG: str = "unet_256"
    netD: str = "basic"
    n_layers_D: int = 3  # used by netD="n_layers" only
    norm: str = "batch"
    dropout: bool = True  # the reference's pix2pix keeps dropout in the U-Net
    init_type: str = "normal"
    init_gain: float = 0.02
    direction: str = "AtoB"
    # Not the reference's: generator options for short runs (as CycleGANOptions).
    upsample: str = "transpose"
    global_skip: bool = False

    def __post_init__(self) -> None:
        for key, value, choices in (
            ("netG", self.netG, GENERATOR_ARCHS),
            ("netD", self.netD, DISCRIMINATOR_ARCHS),
            ("norm", self.norm, NORMS),
            ("init_type", self.init_type, INIT_TYPES),
            ("direction", self.direction, PIX2PIX_DIRECTIONS),
            ("upsample", self.upsample, UPSAMPLE_MODES),
        ):
            if value not in choices:
                raise ValueError(f"unknown {key} {value!r}; expected one of: {', '.join(choices)}")
        for key in ("input_nc", "output_nc"):
            if getattr(self, key) not in (1, 3):
                raise ValueError(
                    f"{key} must be 1 (grayscale) or 3 (RGB), got {getattr(self, key)}"
                )


def pix2pix_direction(options: Pix2PixOptions) -> str:
    """The translator's direction name: ``"A2B"`` for ``AtoB``, ``"B2A"`` for ``BtoA``."""
    return "B2A" if options.direction == "BtoA" else "A2B"


def domain_channels(options: Pix2PixOptions) -> tuple[int, int]:
    """(channels of domain A, channels of domain B) under the options' direction."""
    if options.direction == "BtoA":
        return options.output_nc, options.input_nc
    return options.input_nc, options.output_nc


def build_pix2pix(options: Pix2PixOptions) -> dict[str, nn.Module]:
    """Build and initialise ``g`` and ``d``, in the reference's order (netG, then netD)."""
    o = options
    g = build_generator(
        o.netG,
        o.input_nc,
        o.output_nc,
        o.ngf,
        o.norm,
        o.dropout,
        o.init_type,
        o.init_gain,
        upsample=o.upsample,
        global_skip=o.global_skip,
    )
    d = build_discriminator(
        o.netD, o.input_nc + o.output_nc, o.ndf, o.n_layers_D, o.norm, o.init_type, o.init_gain
    )
    return {"g": g, "d": d}


def pix2pix_translators(
    networks: Mapping[str, nn.Module], options: Pix2PixOptions
) -> dict[str, nn.Module]:
    """``{"A2B" or "B2A": ImageTranslator(g)}`` (after ``options.direction``), in eval mode.

    Empty when ``g`` is not in ``networks``.
    """
    return translators_by_direction(networks, {pix2pix_direction(options): "g"})


PIX2PIX = register_family(
    ModelFamily(
        name="pix2pix",
        options_type=Pix2PixOptions,
        build=build_pix2pix,
        generators=("g",),
        # Static: a BtoA model's translator is "B2A" (see pix2pix_translators).
        directions={"A2B": "g"},
        shape_rule=lambda options: generator_shape_rule(options.netG),
        description=(
            "pix2pix: paired translation, one direction (A2B; B2A with model.direction BtoA), "
            "U-Net + conditional PatchGAN"
        ),
        translators=pix2pix_translators,
    )
)
