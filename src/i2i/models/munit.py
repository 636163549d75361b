"""The MUNIT family (Huang et al., ECCV 2018): content and style codes, AdaIN decoders.

Networks, named as in the reference trainer (NVlabs/MUNIT, ``MUNIT_Trainer``), where
``gen_X`` and ``dis_X`` work in domain X:

=========  ==============================================================================
``gen_a``  :class:`AdaINGen` of domain A: ``encode(x_a) -> (content, style)``,
           ``decode(content, style) -> x_a``
``gen_b``  :class:`AdaINGen` of domain B
``dis_a``  :class:`~i2i.models.unit_blocks.MsImageDis` judging domain A images
``dis_b``  :class:`~i2i.models.unit_blocks.MsImageDis` judging domain B images
=========  ==============================================================================

A2B is ``gen_b.decode(gen_a.encode(x)[0], style)`` for a style code of domain B: drawn from
N(0, I) for random translations, or ``gen_b.enc_style(reference_b)`` to copy the style of
an example image (example-guided translation). B2A the other way round. Each direction
needs both generators.

The decoder is functional: ``decode`` passes the MLP's AdaIN parameters down the layers as
an argument; nothing is assigned to module attributes, so the module has no state between
calls and exports as one graph with two inputs. AdaIN and layer norm compute per-sample
statistics without batch norm or branches on the batch size (see
:mod:`i2i.models.unit_blocks`); the numbers equal the reference's.

Global skip (``global_skip``, off by default; not in the reference): as UNIT's (see
:mod:`i2i.models.unit`), every decoding returns the image that was encoded moved by the
decoder's residual, ``decode(content, style, source)``; a sampled style changes the
residual, not the picture's structure. The exported translators include the skip.

Options map to the reference's YAML as for UNIT (see :mod:`i2i.models.unit`), plus
``gen.style_dim`` -> ``style_dim`` and ``gen.mlp_dim`` -> ``mlp_dim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from i2i.models.registry import ModelFamily, register_family
from i2i.models.translators import ImageStyleEncoder, StyleTranslator
from i2i.models.unit import check_unit_options, skip_or_plain, unit_shape_rule
from i2i.models.unit_blocks import (
    MLP,
    ContentEncoder,
    Conv2dBlock,
    Decoder,
    MsImageDis,
    initialise,
)
from i2i.shapes import ShapeRule

# The style encoder halves the image four times whatever n_downsample is (the reference's
# AdaINGen passes 4); its reflect padding needs two pixels before the last halving.
STYLE_DOWNSAMPLE = 4
STYLE_MIN_SIZE = 2**STYLE_DOWNSAMPLE
DEFAULT_STYLE_DIM = 8


@dataclass
class MUNITOptions:
    """Architecture options; defaults are the reference's (configs/edges2handbags_folder.yaml).
    See the module docstrings of this module and of :mod:`i2i.models.unit` for YAML names."""

    input_dim_a: int = 3  # channels of domain A images
    input_dim_b: int = 3  # channels of domain B images
    gen_dim: int = 64
    style_dim: int = DEFAULT_STYLE_DIM
    mlp_dim: int = 256
    gen_activ: str = "relu"
    n_downsample: int = 2
    n_res: int = 4
    gen_pad_type: str = "reflect"
    dis_dim: int = 64
    dis_norm: str = "none"
    dis_activ: str = "lrelu"
    dis_n_layer: int = 4
    num_scales: int = 3
    dis_pad_type: str = "reflect"
    init: str = "kaiming"
    global_skip: bool = False  # decodings add a learned change to the encoded image

    def __post_init__(self) -> None:
        check_unit_options(self)
        for key in ("style_dim", "mlp_dim"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")

    @property
    def input_nc(self) -> int:
        """Channels of domain A images."""
        return self.input_dim_a

    @property
    def output_nc(self) -> int:
        """Channels of domain B images."""
        return self.input_dim_b


class StyleEncoder(nn.Module):
    """7x7 convolution, two 4x4 stride-2 convolutions doubling the channels, then
    ``n_downsample - 2`` more keeping them, global average pooling and a 1x1 convolution
    to ``style_dim``: (N, C, H, W) -> (N, style_dim, 1, 1)."""

    def __init__(
        self,
        n_downsample: int,
        input_dim: int,
        dim: int,
        style_dim: int,
        norm: str,
        activ: str,
        pad_type: str,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            Conv2dBlock(input_dim, dim, 7, 1, 3, norm=norm, activation=activ, pad_type=pad_type)
        ]
        for _ in range(2):
            layers.append(
                Conv2dBlock(dim, 2 * dim, 4, 2, 1, norm=norm, activation=activ, pad_type=pad_type)
            )
            dim *= 2
        for _ in range(n_downsample - 2):
            layers.append(
                Conv2dBlock(dim, dim, 4, 2, 1, norm=norm, activation=activ, pad_type=pad_type)
            )
        layers += [nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, style_dim, 1, 1, 0)]
        self.model = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class StyleDecoder(nn.Module):
    """``dec(content, mlp(style))``: a decoder driven by a style code (no state)."""

    def __init__(self, mlp: MLP, dec: Decoder) -> None:
        super().__init__()
        self.mlp = mlp
        self.dec = dec

    def forward(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        return self.dec(content, self.mlp(style))


class AdaINGen(nn.Module):
    """MUNIT's auto-encoder of one domain (the reference's ``AdaINGen``): ``enc_style``,
    ``enc_content``, ``dec`` (AdaIN residual blocks, layer-norm upsampling) and ``mlp``
    (style code -> AdaIN parameters of ``dec``). With ``global_skip`` the decoder's output
    is a residual added to the encoded image (see the module docstring)."""

    def __init__(
        self,
        input_dim: int,
        dim: int = 64,
        style_dim: int = DEFAULT_STYLE_DIM,
        n_downsample: int = 2,
        n_res: int = 4,
        activ: str = "relu",
        pad_type: str = "reflect",
        mlp_dim: int = 256,
        global_skip: bool = False,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.style_dim = style_dim
        self.global_skip = global_skip
        self.enc_style = StyleEncoder(
            STYLE_DOWNSAMPLE, input_dim, dim, style_dim, "none", activ, pad_type
        )
        self.enc_content = ContentEncoder(
            n_downsample, n_res, input_dim, dim, "in", activ, pad_type
        )
        self.dec = Decoder(
            n_downsample,
            n_res,
            self.enc_content.output_dim,
            input_dim,
            "adain",
            activ,
            pad_type,
            global_skip=global_skip,
        )
        self.mlp = MLP(style_dim, self.dec.num_adain_params, mlp_dim, 3, norm="none", activ=activ)

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(content, style)``: content (N, C', H/2**n, W/2**n), style (N, style_dim, 1, 1)."""
        return self.enc_content(images), self.enc_style(images)

    def decode(
        self, content: torch.Tensor, style: torch.Tensor, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The image of ``content`` in ``style`` ((N, style_dim) or (N, style_dim, 1, 1));
        with ``global_skip``, ``source`` (the image whose content this is) moved by the
        decoder's residual, and ``source`` is required."""
        return skip_or_plain(self.global_skip, source, self.dec(content, self.mlp(style)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The reconstruction of ``images`` from their own content and style."""
        content, style = self.encode(images)
        return self.decode(content, style, images)


def build_munit(options: MUNITOptions) -> dict[str, nn.Module]:
    """Build and initialise gen_a, gen_b, dis_a and dis_b, in the reference's order.

    From the same global torch RNG state, the weights equal the reference's networks built
    in the same order and then initialised. (The reference trainer also draws its fixed
    display style codes in between, which shifts the stream; i2i's trainer draws its own.)
    """
    o = options
    gen_a, gen_b = (
        AdaINGen(
            channels,
            o.gen_dim,
            o.style_dim,
            o.n_downsample,
            o.n_res,
            o.gen_activ,
            o.gen_pad_type,
            o.mlp_dim,
            o.global_skip,
        )
        for channels in (o.input_dim_a, o.input_dim_b)
    )
    dis_a, dis_b = (
        MsImageDis(
            channels,
            o.dis_dim,
            o.dis_n_layer,
            o.dis_norm,
            o.dis_activ,
            o.num_scales,
            o.dis_pad_type,
        )
        for channels in (o.input_dim_a, o.input_dim_b)
    )
    initialise([gen_a, gen_b], [dis_a, dis_b], o.init)
    if o.global_skip:  # after the draws, so every other weight is the one without the skip
        gen_a.dec.zero_output_layer()
        gen_b.dec.zero_output_layer()
    return {"gen_a": gen_a, "gen_b": gen_b, "dis_a": dis_a, "dis_b": dis_b}


def _generators(networks: Mapping[str, nn.Module]) -> tuple[AdaINGen, AdaINGen] | None:
    if "gen_a" not in networks or "gen_b" not in networks:
        return None
    gen_a, gen_b = networks["gen_a"], networks["gen_b"]
    assert isinstance(gen_a, AdaINGen) and isinstance(gen_b, AdaINGen)
    return gen_a, gen_b


def _translator(source: AdaINGen, target: AdaINGen) -> StyleTranslator:
    return StyleTranslator(
        source.enc_content,
        StyleDecoder(target.mlp, target.dec),
        in_channels=source.input_dim,
        out_channels=target.input_dim,
        style_dim=target.style_dim,
        global_skip=target.global_skip,
    ).eval()


def munit_translators(
    networks: Mapping[str, nn.Module], options: MUNITOptions
) -> dict[str, nn.Module]:
    """``{"A2B": ..., "B2A": ...}``: ``(uint8 [N, H, W, C_in], float32 [N, S]) -> uint8
    [N, H, W, C_out]``, the style a code of the target domain; eval mode. A direction needs
    both generators; with one missing, neither direction is built."""
    gens = _generators(networks)
    if gens is None:
        return {}
    gen_a, gen_b = gens
    return {"A2B": _translator(gen_a, gen_b), "B2A": _translator(gen_b, gen_a)}


def munit_style_encoders(
    networks: Mapping[str, nn.Module], options: MUNITOptions
) -> dict[str, nn.Module]:
    """``{"A2B": gen_b's style encoder, "B2A": gen_a's}``: uint8 [N, H, W, C] of the
    direction's target domain -> float32 [N, S]; eval mode."""
    gens = _generators(networks)
    if gens is None:
        return {}
    gen_a, gen_b = gens
    return {
        direction: ImageStyleEncoder(
            gen.enc_style, in_channels=gen.input_dim, style_dim=gen.style_dim
        ).eval()
        for direction, gen in (("A2B", gen_b), ("B2A", gen_a))
    }


def munit_shape_rule(options: object) -> ShapeRule:
    """UNIT's rule for the translators, and at least 16 pixels for the style encoder (the
    same rule holds for style images)."""
    rule = unit_shape_rule(options)
    return ShapeRule(multiple_of=rule.multiple_of, min_size=max(rule.min_size, STYLE_MIN_SIZE))


MUNIT = register_family(
    ModelFamily(
        name="munit",
        options_type=MUNITOptions,
        build=build_munit,
        generators=("gen_a", "gen_b"),
        # The generator whose decoder (and style space) produces the output; the source's
        # content encoder is needed too.
        directions={"A2B": "gen_b", "B2A": "gen_a"},
        shape_rule=munit_shape_rule,
        description="MUNIT: multimodal unpaired translation, content and style codes (AdaIN)",
        translators=munit_translators,
        style_dim=DEFAULT_STYLE_DIM,
        style_encoders=munit_style_encoders,
    )
)
