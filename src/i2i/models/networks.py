"""Generators and discriminators of CycleGAN and pix2pix (and DiscoGAN's, for its preset).

The module tree mirrors ``models/networks.py`` of junyanz/pytorch-CycleGAN-and-pix2pix
layer for layer: the same ``nn.Sequential`` attributes (``model``, ``conv_block``, ``net``)
holding the same layers at the same indices. State-dict keys are therefore identical and the
reference's checkpoints load unchanged. Layers are also created and initialised in the
reference's order, so a seeded global torch RNG gives the reference's initial weights.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import nn

NormFactory = Callable[[int], nn.Module]

NORMS = ("instance", "batch", "none")
PADDING_TYPES = ("reflect", "replicate", "zero")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
GENERATOR_ARCHS = (
    "resnet_9blocks",
    "resnet_6blocks",
    "unet_128",
    "unet_256",
    "unet_32",
    "unet_64",
    "discogan",
)
DISCRIMINATOR_ARCHS = ("basic", "n_layers", "pixel", "discogan")
# How the ResNet and U-Net generators double the resolution: the reference's transposed
# convolution, or nearest-neighbour resize then a 3x3 convolution (no checkerboard).
UPSAMPLE_MODES = ("transpose", "resize")
# U-Net generators take one image size: 2**levels, which the bottleneck brings to 1x1.
UNET_LEVELS = {"unet_32": 5, "unet_64": 6, "unet_128": 7, "unet_256": 8}

_WEIGHTED_LAYERS = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)


def _check_choice(what: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; expected one of: {', '.join(choices)}")


def norm_layer(name: str) -> NormFactory:
    """Return a factory ``channels -> normalisation layer`` for ``name``."""
    _check_choice("norm", name, NORMS)
    if name == "instance":
        return functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
    if name == "batch":
        return functools.partial(nn.BatchNorm2d, affine=True, track_running_stats=True)
    return lambda _channels: nn.Identity()


def _conv_bias(norm: str) -> bool:
    """Whether a convolution followed by a norm layer has a bias, by the reference's rule.

    Batch norm has its own shift, which makes a bias redundant. The reference grants one only
    with instance norm, so with ``"none"`` those convolutions have no bias either.
    """
    return norm == "instance"


def _padding(padding_type: str) -> tuple[list[nn.Module], int]:
    """Padding layers to put before a 3x3 convolution, and the convolution's own padding."""
    _check_choice("padding type", padding_type, PADDING_TYPES)
    if padding_type == "reflect":
        return [nn.ReflectionPad2d(1)], 0
    if padding_type == "replicate":
        return [nn.ReplicationPad2d(1)], 0
    return [], 1


class ResizeConv(nn.Module):
    """Doubles H and W by nearest-neighbour resize, then a 3x3 convolution (Odena et al.,
    "Deconvolution and Checkerboard Artifacts", 2016): the ``upsample="resize"`` stand-in
    for a stride-2 transposed convolution, with the same output size, ``(N, C, H, W) ->
    (N, out_channels, 2H, 2W)``, and no uneven overlap to print a checkerboard."""

    def __init__(self, in_channels: int, out_channels: int, bias: bool = True) -> None:
        super().__init__()
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(self.up(x)))


def _upsampler(
    mode: str, in_channels: int, out_channels: int, bias: bool, transpose: Callable[[], nn.Module]
) -> nn.Module:
    """The layer that doubles the resolution: `transpose()` (the reference's) or ResizeConv."""
    _check_choice("upsample mode", mode, UPSAMPLE_MODES)
    return transpose() if mode == "transpose" else ResizeConv(in_channels, out_channels, bias)


# The global skip works in atanh space: out = tanh(atanh(x) + r), with x clamped this far
# inside (-1, 1) so atanh stays finite (|atanh| <= 3.8, an 8-bit level is 2/255 wide).
_SKIP_EPS = 1e-3


def global_skip_output(x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """``tanh(atanh(x) + residual)``: the input image moved by a residual in the generator's
    pre-tanh space. A zero residual returns x (to within 1e-3, the clamp that keeps atanh
    finite); the output stays in (-1, 1) and has a gradient everywhere."""
    x = x.clamp(-1.0 + _SKIP_EPS, 1.0 - _SKIP_EPS)
    # atanh written with log, which every ONNX consumer implements.
    return torch.tanh(0.5 * torch.log((1.0 + x) / (1.0 - x)) + residual)


def _check_global_skip(global_skip: bool, input_nc: int, output_nc: int) -> None:
    if global_skip and input_nc != output_nc:
        raise ValueError(
            f"global_skip adds the input image to the output, so it needs as many input as "
            f"output channels; got input_nc={input_nc}, output_nc={output_nc}"
        )


class ResnetBlock(nn.Module):
    """Residual block: ``x + conv_block(x)``, with two 3x3 convolutions at constant size."""

    def __init__(
        self,
        dim: int,
        padding_type: str = "reflect",
        norm: str = "batch",
        use_dropout: bool = False,
    ) -> None:
        super().__init__()
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        pad, conv_padding = _padding(padding_type)
        layers: list[nn.Module] = [
            *pad,
            nn.Conv2d(dim, dim, kernel_size=3, padding=conv_padding, bias=bias),
            make_norm(dim),
            nn.ReLU(True),
        ]
        if use_dropout:
            # Sits before the second padding, so it shifts the indices of the layers after it.
            layers.append(nn.Dropout(0.5))
        pad, conv_padding = _padding(padding_type)
        layers += [
            *pad,
            nn.Conv2d(dim, dim, kernel_size=3, padding=conv_padding, bias=bias),
            make_norm(dim),
        ]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """Johnson et al.'s generator: 2 downsamplings, ``n_blocks`` residual blocks, 2 upsamplings.

    Height and width must be multiples of 4 for the output to have the input's size.
    ``upsample="resize"`` doubles the resolution with :class:`ResizeConv` instead of
    transposed convolutions; ``global_skip`` returns :func:`global_skip_output` of the input
    and the network's pre-tanh output (the network learns a change of the input image).
    Both default to the reference's network.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
        n_blocks: int = 6,
        padding_type: str = "reflect",
        upsample: str = "transpose",
        global_skip: bool = False,
    ) -> None:
        super().__init__()
        if n_blocks < 0:
            raise ValueError(f"n_blocks must be >= 0, got {n_blocks}")
        _check_choice("padding type", padding_type, PADDING_TYPES)
        _check_choice("upsample mode", upsample, UPSAMPLE_MODES)
        _check_global_skip(global_skip, input_nc, output_nc)
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.global_skip = global_skip
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3),
            nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=bias),
            make_norm(ngf),
            nn.ReLU(True),
        ]
        channels = ngf
        for _ in range(2):  # (N, C, H, W) -> (N, 2C, H/2, W/2)
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=3, stride=2, padding=1, bias=bias),
                make_norm(channels * 2),
                nn.ReLU(True),
            ]
            channels *= 2
        layers += [ResnetBlock(channels, padding_type, norm, use_dropout) for _ in range(n_blocks)]
        for _ in range(2):  # (N, C, H, W) -> (N, C/2, 2H, 2W)
            transpose = functools.partial(
                nn.ConvTranspose2d,
                channels,
                channels // 2,
                kernel_size=3,
                stride=2,
                padding=1,
                output_padding=1,
                bias=bias,
            )
            layers += [
                _upsampler(upsample, channels, channels // 2, bias, transpose),
                make_norm(channels // 2),
                nn.ReLU(True),
            ]
            channels //= 2
        layers += [
            nn.ReflectionPad2d(3),
            nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0),
            nn.Identity() if global_skip else nn.Tanh(),  # no parameters: same keys either way
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]
        return global_skip_output(x, self.model(x)) if self.global_skip else self.model(x)


class UnetSkipConnectionBlock(nn.Module):
    """One level of the U-Net: ``x -> [x, up(submodule(down(x)))]`` along channels.

    The outermost level returns ``up(submodule(down(x)))`` alone, with a Tanh.
    """

    def __init__(
        self,
        outer_nc: int,
        inner_nc: int,
        input_nc: int | None = None,
        submodule: nn.Module | None = None,
        outermost: bool = False,
        innermost: bool = False,
        norm: str = "batch",
        use_dropout: bool = False,
        upsample: str = "transpose",
        final_tanh: bool = True,
    ) -> None:
        super().__init__()
        if outermost and innermost:
            raise ValueError("a U-Net level cannot be both outermost and innermost")
        if innermost == (submodule is not None):
            raise ValueError("the innermost U-Net level takes no submodule; every other needs one")
        self.outermost = outermost
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        if input_nc is None:
            input_nc = outer_nc
        # Created before the up-convolution, as in the reference, so seeded weights match.
        down_conv = nn.Conv2d(input_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        layers: list[nn.Module]
        up_in = inner_nc if innermost else inner_nc * 2
        up_bias = True if outermost else bias
        up_conv = _upsampler(
            upsample,
            up_in,
            outer_nc,
            up_bias,
            functools.partial(
                nn.ConvTranspose2d,
                up_in,
                outer_nc,
                kernel_size=4,
                stride=2,
                padding=1,
                bias=up_bias,
            ),
        )
        if outermost:
            assert submodule is not None
            last = nn.Tanh() if final_tanh else nn.Identity()
            layers = [down_conv, submodule, nn.ReLU(True), up_conv, last]
        elif innermost:
            layers = [
                nn.LeakyReLU(0.2, True),
                down_conv,
                nn.ReLU(True),
                up_conv,
                make_norm(outer_nc),
            ]
        else:
            assert submodule is not None
            layers = [
                nn.LeakyReLU(0.2, True),
                down_conv,
                make_norm(inner_nc),
                submodule,
                nn.ReLU(True),
                up_conv,
                make_norm(outer_nc),
            ]
            if use_dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.outermost:
            return self.model(x)
        # The in-place LeakyReLU that opens self.model overwrites x first, so the skip carries
        # the activated input. The reference does the same and its checkpoints rely on it.
        return torch.cat([x, self.model(x)], 1)


class UnetGenerator(nn.Module):
    """U-Net of ``num_downs`` levels; a ``2**num_downs`` image is 1x1 at the bottleneck.

    ``upsample`` and ``global_skip`` as for :class:`ResnetGenerator`.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_downs: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
        upsample: str = "transpose",
        global_skip: bool = False,
    ) -> None:
        super().__init__()
        if num_downs < 5:
            raise ValueError(f"num_downs must be >= 5, got {num_downs}")
        _check_choice("upsample mode", upsample, UPSAMPLE_MODES)
        _check_global_skip(global_skip, input_nc, output_nc)
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.global_skip = global_skip
        up = functools.partial(UnetSkipConnectionBlock, norm=norm, upsample=upsample)
        # Built from the innermost level outwards, as in the reference.
        block = up(ngf * 8, ngf * 8, innermost=True)
        for _ in range(num_downs - 5):
            block = up(ngf * 8, ngf * 8, submodule=block, use_dropout=use_dropout)
        for mult in (4, 2, 1):
            block = up(ngf * mult, ngf * mult * 2, submodule=block)
        self.model = up(
            output_nc,
            ngf,
            input_nc=input_nc,
            submodule=block,
            outermost=True,
            final_tanh=not global_skip,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]
        if self.global_skip:
            # The U-Net's in-place activations never touch the outermost input, so x is intact.
            return global_skip_output(x, self.model(x))
        return self.model(x)


class NLayerDiscriminator(nn.Module):
    """PatchGAN: scores overlapping patches (70x70 for ``n_layers=3``) as real or fake."""

    def __init__(
        self, input_nc: int, ndf: int = 64, n_layers: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        if n_layers < 0:
            raise ValueError(f"n_layers must be >= 0, got {n_layers}")
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2, True),
        ]
        mult = 1
        for n in range(1, n_layers):  # halve the size, double the width up to 8 * ndf
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=2, padding=1, bias=bias),
                make_norm(ndf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=1, padding=1, bias=bias),
            make_norm(ndf * mult),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)  # (N, input_nc, H, W) -> (N, 1, H', W') logits


class PixelDiscriminator(nn.Module):
    """1x1 PatchGAN: scores every pixel on its own."""

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "batch") -> None:
        super().__init__()
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        self.net = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1, stride=1, padding=0),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf, ndf * 2, kernel_size=1, stride=1, padding=0, bias=bias),
            make_norm(ndf * 2),
            nn.LeakyReLU(0.2, True),
            # No norm follows, yet the reference applies the same bias rule here.
            nn.Conv2d(ndf * 2, 1, kernel_size=1, stride=1, padding=0, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (N, input_nc, H, W) -> (N, 1, H, W) logits


DISCOGAN_DOWNSAMPLINGS = 4  # the generator's encoder and the discriminator: 64 px -> 4x4


class DiscoGANGenerator(nn.Module):
    """DiscoGAN's encoder-decoder (Kim et al. 2017; SKTBrain/DiscoGAN ``Generator``).

    Four 4x4 stride-2 convolutions (ngf, 2, 4, 8 ngf; LeakyReLU 0.2, a norm after all but
    the first), then four 4x4 stride-2 transposed convolutions back (norm and ReLU after all
    but the last). No residual blocks, no skip connections. The reference ends in a sigmoid
    for [0, 1] images; i2i's images are in [-1, 1], so this one ends in tanh. Its layers
    have no bias (batch norm follows); with instance or no norm the normalised layers get
    one by the CycleGAN rule. ``use_dropout`` (not in DiscoGAN) adds dropout 0.5 after the
    first two upsamplings, where the pix2pix U-Net has it. Sides must be multiples of 16.
    ``upsample="resize"`` and ``global_skip`` (not in DiscoGAN) as for
    :class:`ResnetGenerator`: each transposed convolution becomes a :class:`ResizeConv`
    (3x3); with the skip there is no tanh, the output is :func:`global_skip_output` of the
    input and the last upsampling's output.
    """

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        ngf: int = 64,
        norm: str = "batch",
        use_dropout: bool = False,
        global_skip: bool = False,
        upsample: str = "transpose",
    ) -> None:
        super().__init__()
        _check_choice("upsample mode", upsample, UPSAMPLE_MODES)
        _check_global_skip(global_skip, input_nc, output_nc)
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.global_skip = global_skip
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ngf, kernel_size=4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        channels = ngf
        for _ in range(DISCOGAN_DOWNSAMPLINGS - 1):  # (N, C, H, W) -> (N, 2C, H/2, W/2)
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=4, stride=2, padding=1, bias=bias),
                make_norm(channels * 2),
                nn.LeakyReLU(0.2, True),
            ]
            channels *= 2
        for i in range(DISCOGAN_DOWNSAMPLINGS - 1):  # (N, C, H, W) -> (N, C/2, 2H, 2W)
            transpose = functools.partial(
                nn.ConvTranspose2d, channels, channels // 2, 4, stride=2, padding=1, bias=bias
            )
            layers += [
                _upsampler(upsample, channels, channels // 2, bias, transpose),
                make_norm(channels // 2),
                nn.ReLU(True),
            ]
            if use_dropout and i < 2:
                layers.append(nn.Dropout(0.5))
            channels //= 2
        last = functools.partial(
            nn.ConvTranspose2d, ngf, output_nc, 4, stride=2, padding=1, bias=False
        )
        layers += [
            _upsampler(upsample, ngf, output_nc, False, last),
            nn.Identity() if global_skip else nn.Tanh(),  # no parameters: same keys either way
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, input_nc, H, W) -> (N, output_nc, H, W) in [-1, 1]; the encoder's first
        # LeakyReLU is in place but acts on the first convolution's output, never on x.
        return global_skip_output(x, self.model(x)) if self.global_skip else self.model(x)


class DiscoGANDiscriminator(nn.Module):
    """DiscoGAN's discriminator (SKTBrain/DiscoGAN ``Discriminator``), returning logits.

    Four 4x4 stride-2 convolutions (ndf, 2, 4, 8 ndf; LeakyReLU 0.2, a norm after all but
    the first) and a 4x4 convolution without padding to one channel: one score for a
    64 px image, a (H/16 - 3) x (W/16 - 3) map for larger ones. The reference applies a
    sigmoid and BCE; i2i's ``vanilla`` GAN loss is the same on the logits. Its feature-
    matching outputs are not used (see docs/variants.md). Sides must be at least 64.
    """

    min_size = 2**DISCOGAN_DOWNSAMPLINGS * 4

    def __init__(self, input_nc: int, ndf: int = 64, norm: str = "batch") -> None:
        super().__init__()
        make_norm = norm_layer(norm)
        bias = _conv_bias(norm)
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1, bias=False),
            nn.LeakyReLU(0.2, True),
        ]
        channels = ndf
        for _ in range(DISCOGAN_DOWNSAMPLINGS - 1):
            layers += [
                nn.Conv2d(channels, channels * 2, kernel_size=4, stride=2, padding=1, bias=bias),
                make_norm(channels * 2),
                nn.LeakyReLU(0.2, True),
            ]
            channels *= 2
        layers.append(nn.Conv2d(channels, 1, kernel_size=4, stride=1, padding=0, bias=False))
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"the DiscoGAN discriminator needs images of at least {self.min_size} px, "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.model(x)  # (N, input_nc, H, W) -> (N, 1, H/16 - 3, W/16 - 3) logits


def init_weights(net: nn.Module, init_type: str = "normal", init_gain: float = 0.02) -> None:
    """Initialise ``net`` in place from the global torch RNG, as the reference does.

    Convolution and linear weights are drawn by ``init_type`` (``"kaiming"`` ignores
    ``init_gain``) and their biases zeroed; BatchNorm2d weights are drawn from
    N(1, init_gain) and their biases zeroed. Seed torch first for a deterministic result.
    """
    _check_choice("init type", init_type, INIT_TYPES)

    def init_layer(module: nn.Module) -> None:
        if isinstance(module, _WEIGHTED_LAYERS):
            if init_type == "normal":
                nn.init.normal_(module.weight, 0.0, init_gain)
            elif init_type == "xavier":
                nn.init.xavier_normal_(module.weight, gain=init_gain)
            elif init_type == "kaiming":
                nn.init.kaiming_normal_(module.weight, a=0, mode="fan_in")
            else:
                nn.init.orthogonal_(module.weight, gain=init_gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d) and module.weight is not None:
            nn.init.normal_(module.weight, 1.0, init_gain)
            nn.init.zeros_(module.bias)

    # Module.apply visits layers in the reference's order, so the RNG draws line up.
    net.apply(init_layer)


def build_generator(
    arch: str,
    input_nc: int,
    output_nc: int,
    ngf: int = 64,
    norm: str = "instance",
    dropout: bool = False,
    init_type: str = "normal",
    init_gain: float = 0.02,
    upsample: str = "transpose",
    global_skip: bool = False,
) -> nn.Module:
    """Build and initialise a generator by the reference's architecture name (``netG``).

    ``upsample`` ("transpose" or "resize") and ``global_skip`` apply to the ResNet, U-Net
    and DiscoGAN generators (see :class:`ResnetGenerator`); with ``global_skip`` the last
    layer starts at zero, so the generator starts as the identity. The defaults are the
    reference's networks.
    """
    _check_choice("generator architecture", arch, GENERATOR_ARCHS)
    _check_choice("init type", init_type, INIT_TYPES)
    _check_choice("upsample mode", upsample, UPSAMPLE_MODES)
    net: nn.Module
    if arch in ("resnet_9blocks", "resnet_6blocks"):
        blocks = 9 if arch == "resnet_9blocks" else 6
        net = ResnetGenerator(
            input_nc, output_nc, ngf, norm, dropout, n_blocks=blocks,
            upsample=upsample, global_skip=global_skip,
        )  # fmt: skip
    elif arch in UNET_LEVELS:
        net = UnetGenerator(
            input_nc, output_nc, UNET_LEVELS[arch], ngf, norm, dropout,
            upsample=upsample, global_skip=global_skip,
        )  # fmt: skip
    else:
        net = DiscoGANGenerator(input_nc, output_nc, ngf, norm, dropout, global_skip, upsample)
    init_weights(net, init_type, init_gain)
    if global_skip:  # after the usual draws, so the other networks' seeded weights are kept
        last = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))][-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
    return net


def build_discriminator(
    arch: str,
    input_nc: int,
    ndf: int = 64,
    n_layers: int = 3,
    norm: str = "instance",
    init_type: str = "normal",
    init_gain: float = 0.02,
) -> nn.Module:
    """Build and initialise a discriminator by the reference's architecture name (``netD``).

    ``n_layers`` is used by ``"n_layers"`` only; ``"basic"`` is the 3-layer 70x70 PatchGAN;
    ``"discogan"`` is DiscoGAN's (64 px and larger).
    """
    _check_choice("discriminator architecture", arch, DISCRIMINATOR_ARCHS)
    _check_choice("init type", init_type, INIT_TYPES)
    net: nn.Module
    if arch == "basic":
        net = NLayerDiscriminator(input_nc, ndf, n_layers=3, norm=norm)
    elif arch == "n_layers":
        net = NLayerDiscriminator(input_nc, ndf, n_layers=n_layers, norm=norm)
    elif arch == "discogan":
        net = DiscoGANDiscriminator(input_nc, ndf, norm=norm)
    else:
        net = PixelDiscriminator(input_nc, ndf, norm=norm)
    init_weights(net, init_type, init_gain)
    return net
