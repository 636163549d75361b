"""StarGAN (Choi et al., 2018): one generator for translation between any number of domains.

The generator ``g`` takes an image and the *target* domain as one-hot label maps (one
constant channel per domain, concatenated to the image's channels) and returns the image
translated into that domain. The discriminator ``d`` is a PatchGAN with two heads: a
real/fake map (the WGAN-GP critic) and a domain classifier (logits over the domains).
Architectures follow the reference (yunjey/stargan ``model.py``):

=========  ======  ==================================================================
reference  i2i     role
=========  ======  ==================================================================
``G``      ``g``   7x7 conv, 2 strided 4x4 convs down, ``repeat_num`` residual blocks,
                   2 transposed 4x4 convs up, 7x7 conv, tanh; instance norm, ReLU,
                   zero padding, no biases (``global_skip``, ``padding``, ``upsample``:
                   see below)
``D``      ``d``   ``d_repeat_num`` strided 4x4 convs (LeakyReLU 0.01), then a 3x3 conv
                   to one real/fake map (``src``) and a conv with kernel
                   ``image_size / 2 ** d_repeat_num`` to the domain logits (``cls``)
=========  ======  ==================================================================

Domains are single labels (RaFD-style, one domain per image): the classifier is trained
with softmax cross-entropy. CelebA's multi-attribute labels (binary cross-entropy) are not
supported.

Instance norm and eval mode. The reference builds its instance norms with
``track_running_stats=True``, yet never calls ``eval()``: its sampling and ``test()`` run
the generator in training mode, so every translation it produces normalises with the
image's own statistics, and the running averages it gathers are never used. i2i builds
``g``'s instance norms with ``track_running_stats=False``: per-image statistics in
training, in eval mode, in ``i2i eval`` and in the exported graphs alike. An exported
translator therefore computes exactly the function the trained model computed (and the
reference's test images), and a translation does not depend on the rest of the batch.
A reference ``G.ckpt`` holds ``running_mean``/``running_var`` buffers that i2i's ``g``
does not have; they can be dropped on import (they never influence an output).

Global skip (``global_skip``, off by default; not in the reference). ``g`` returns
``tanh(atanh(x) + r)`` (:func:`i2i.models.networks.global_skip_output`), r the output of its
last convolution, which starts at zero: an untrained ``g`` is the identity for every target
and learns the change, as the ResNet and U-Net generators' option does. The layers and state
dict keys are the same as without it, so checkpoints of either kind load into either.

Conditional instance norm (``conditional_norm``, off by default; not in the reference). The
target reaches the reference's ``g`` only as constant label maps concatenated to the image,
and the first instance norm subtracts each channel's spatial mean, which removes a constant:
only the zero-padded border keeps the label (the reference's note on padding), so a short
run can barely tell the targets apart. With ``conditional_norm: true`` every instance norm
of ``g`` takes its scale and shift from the target (``c @ weight``, ``c @ bias``: one row per
domain, initialised to 1 and 0, conditional instance normalisation as in Dumoulin et al.,
2017), so the target conditions every layer. The norms' ``weight``/``bias`` are then
``(K, C)`` instead of ``(C,)``: checkpoints load only into a ``g`` built with the same
setting.

Critic per domain (``domain_critic``, off by default; not in the reference). The reference's
critic has one real/fake map for all domains, so a ``g`` that leaves its input unchanged
makes real-looking images, and only the classifier asks for the target; its input gradient
is an adversarial pattern rather than a colour grade. With ``domain_critic: true`` the
``src`` head has one map per domain (:func:`critic_map` picks the image's own): real images
are scored by their domain's map and translations by their target's, so each map is a
critic of one domain, as CycleGAN's discriminator of domain B is.

Reflection padding (``padding: reflect``, off by default; not in the reference). ``g``'s
convolutions pad by reflection, as CycleGAN's ResNet generator does, instead of with zeros.
There is then no zero border for ``g`` to find the image's edge by, which in short runs
drew a frame along it, and the constant label maps stay constant, so the first instance norm
removes them: the target reaches ``g`` only through ``conditional_norm``, which it is meant
to go with. The transposed convolutions crop rather than pad and are unchanged; the weights
and state dict keys are the same either way.

Resize up-sampling (``upsample: resize``, off by default; not in the reference). ``g``
doubles the resolution twice by nearest-neighbour resize and a 3x3 convolution
(:class:`i2i.models.networks.ResizeConv`, Odena et al., 2016) instead of stride-2 transposed
4x4 convolutions, whose uneven overlap prints a checkerboard, as the ResNet, U-Net and
DiscoGAN generators' option does. Only those two layers' state dict keys differ
(``main.N.conv.weight`` for ``main.N.weight``): checkpoints load only into a ``g`` built with
the same setting.

Colour transform (``colour_transform``, off by default; not in the reference; needs
``global_skip``). ``g`` returns ``tanh(atanh(x') + r)`` with ``x' = (I + W[c]) x + b[c]``
per pixel, a C x C matrix and a shift per target domain (``colour_weight`` (K, C*C) and
``colour_bias`` (K, C), started at zero, so an untrained ``g`` is still the identity),
instead of ``tanh(atanh(x) + r)``. The instance norms take away each image's own colour
statistics, so the convolutions hardly express a change that depends on a pixel's absolute
colour, such as a grade that desaturates; the transform does it per pixel, and the network
learns the rest. The skip clamps ``x'`` into +-(1 - 1e-3) as it does x, so a transformed
pixel beyond that range gives the transform no gradient. Under autocast the transform is
computed in the image's float32 (in bf16 the clamp would round to 1). The two parameters
add state dict keys: checkpoints load only into a ``g`` built with the same setting.

Sizes. ``g`` is fully convolutional: any size that is a multiple of 4 (two stride-2
downsamplings, undone exactly by the up-sampling layers), at least 8 (instance norm
needs more than one cell at the 1/4 scale). ``d``'s classifier kernel
ties it to ``image_size``, so training crops must be ``image_size`` square.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from i2i.models.networks import UPSAMPLE_MODES, _check_choice, _upsampler, global_skip_output
from i2i.models.registry import ModelFamily, checked_domains, register_family
from i2i.models.translators import domain_translators
from i2i.shapes import ShapeRule

PADDINGS = ("zero", "reflect")


def _check_padding(padding: str, conditional_norm: bool) -> None:
    """ValueError unless ``padding`` is one of PADDINGS, and reflect goes with the norms."""
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; expected one of: {', '.join(PADDINGS)}")
    if padding == "reflect" and not conditional_norm:
        raise ValueError(
            "padding: reflect needs conditional_norm: true; the first instance norm "
            "removes the constant label maps, so the norms must carry the target"
        )


def _check_colour_transform(colour_transform: bool, global_skip: bool) -> None:
    """ValueError when the colour transform is asked for without the skip it feeds."""
    if colour_transform and not global_skip:
        raise ValueError(
            "colour_transform needs global_skip: true; the transformed image is what the "
            "skip adds g's residual to"
        )


@dataclass
class StarGANOptions:
    """Architecture options, with the reference's defaults (``main.py``) and names.

    ``domains`` is filled from the data's domain folders when a config leaves it out; its
    order is the order of the one-hot labels and of the classifier's logits.
    """

    domains: tuple[str, ...] = ()
    input_nc: int = 3
    output_nc: int = 3  # must equal input_nc: g translates its own output back (rec loss)
    conv_dim: int = 64  # the reference's g_conv_dim
    repeat_num: int = 6  # g_repeat_num: residual blocks of g
    d_conv_dim: int = 64
    d_repeat_num: int = 6  # strided convolutions of d
    image_size: int = 128  # the size d is built for (its classifier kernel)
    # Not in the reference: g returns tanh(atanh(x) + residual) and its last conv starts at
    # zero, so an untrained g is the identity and learns the change (short runs).
    global_skip: bool = False
    # Not in the reference: g's instance norms take a scale and shift per target domain, so
    # the target conditions every layer (the first norm removes constant label maps).
    conditional_norm: bool = False
    # Not in the reference: d's real/fake head has one map per domain; a real image is
    # scored by its domain's map, a translation by its target's.
    domain_critic: bool = False
    # Not in the reference: "reflect" pads g's convolutions by reflection, as CycleGAN's
    # ResNet does, instead of with zeros: no border for g to draw a frame on, and the
    # constant label maps vanish in the first norm (use it with conditional_norm).
    padding: str = "zero"
    # Not in the reference: "resize" doubles the resolution by nearest-neighbour resize and
    # a 3x3 convolution instead of a transposed 4x4 one (no checkerboard).
    upsample: str = "transpose"
    # Not in the reference: the skip adds r to a per-target affine colour transform of the
    # image, (I + W[c]) x + b[c], instead of to x itself (needs global_skip).
    colour_transform: bool = False

    def __post_init__(self) -> None:
        _check_padding(self.padding, self.conditional_norm)
        _check_choice("upsample mode", self.upsample, UPSAMPLE_MODES)
        _check_colour_transform(self.colour_transform, self.global_skip)
        if isinstance(self.domains, str) or not isinstance(self.domains, (list, tuple)):
            raise ValueError(f"domains must be a list of names, got {self.domains!r}")
        self.domains = tuple(self.domains)
        if self.domains:
            checked_domains(self.domains)
        for key in ("input_nc", "output_nc"):
            if getattr(self, key) not in (1, 3):
                raise ValueError(
                    f"{key} must be 1 (grayscale) or 3 (RGB), got {getattr(self, key)}"
                )
        if self.output_nc != self.input_nc:
            raise ValueError(
                f"output_nc ({self.output_nc}) must equal input_nc ({self.input_nc}): StarGAN "
                "translates between domains of one kind of image (and back, for its "
                "reconstruction loss)"
            )
        for key in ("conv_dim", "d_conv_dim", "d_repeat_num"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if self.repeat_num < 0:
            raise ValueError(f"repeat_num must be >= 0, got {self.repeat_num}")
        cells = 2**self.d_repeat_num
        if self.image_size < cells or self.image_size % cells:
            raise ValueError(
                f"image_size ({self.image_size}) must be a multiple of 2 ** d_repeat_num "
                f"({cells}): the discriminator halves it d_repeat_num times and its "
                "classifier's kernel covers what is left"
            )

    @property
    def num_domains(self) -> int:
        """How many domains (one-hot channels, classifier logits) the networks have."""
        return len(checked_domains(self.domains))


# StarGANOptions.padding -> nn.Conv2d's padding_mode.
_PADDING_MODES: dict[str, Literal["zeros", "reflect"]] = {"zero": "zeros", "reflect": "reflect"}


def _instance_norm(channels: int) -> nn.InstanceNorm2d:
    # Per-image statistics in every mode: see the module docstring.
    return nn.InstanceNorm2d(channels, affine=True, track_running_stats=False)


class ConditionalInstanceNorm(nn.Module):
    """Instance norm whose scale and shift are the target's rows: ``IN(x) * (c @ weight) +
    (c @ bias)`` for one-hot targets c (N, K); weight (K, C) starts at 1, bias at 0."""

    def __init__(self, channels: int, num_domains: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)
        self.weight = nn.Parameter(torch.ones(num_domains, channels))
        self.bias = nn.Parameter(torch.zeros(num_domains, channels))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        c = c.to(self.weight.dtype)
        scale = (c @ self.weight).to(x.dtype)[:, :, None, None]
        shift = (c @ self.bias).to(x.dtype)[:, :, None, None]
        return self.norm(x) * scale + shift


def _norm(channels: int, num_domains: int) -> nn.Module:
    """The reference's affine instance norm, or the target's (``num_domains`` > 0)."""
    if num_domains:
        return ConditionalInstanceNorm(channels, num_domains)
    return _instance_norm(channels)


def _run(layers: nn.Sequential, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Apply ``layers`` in order, giving the target ``c`` to the layers that take it."""
    takes_target = (ConditionalInstanceNorm, ResidualBlock)
    for layer in layers:
        h = layer(h, c) if isinstance(layer, takes_target) else layer(h)
    return h


class ResidualBlock(nn.Module):
    """x + (conv 3x3, IN, ReLU, conv 3x3, IN)(x), without biases (the reference's); with
    ``num_domains`` > 0 the norms are the target's (:class:`ConditionalInstanceNorm`)."""

    def __init__(self, dim: int, num_domains: int = 0, padding: str = "zero") -> None:
        super().__init__()
        mode = _PADDING_MODES[padding]
        self.main = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False, padding_mode=mode),
            _norm(dim, num_domains),
            nn.ReLU(inplace=True),
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, bias=False, padding_mode=mode),
            _norm(dim, num_domains),
        )

    def forward(self, x: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        if c is None:
            return x + self.main(x)
        return x + _run(self.main, x, c)


class StarGANGenerator(nn.Module):
    """``g(x, c)``: x float (N, input_nc, H, W) in [-1, 1] and target labels c float (N, K)
    (one-hot) -> (N, output_nc, H, W) in [-1, 1]; H and W multiples of 4."""

    def __init__(
        self,
        input_nc: int,
        output_nc: int,
        num_domains: int,
        conv_dim: int,
        repeat_num: int,
        global_skip: bool = False,
        conditional_norm: bool = False,
        padding: str = "zero",
        upsample: str = "transpose",
        colour_transform: bool = False,
    ) -> None:
        super().__init__()
        _check_padding(padding, conditional_norm)
        _check_colour_transform(colour_transform, global_skip)
        mode = _PADDING_MODES[padding]
        if global_skip and input_nc != output_nc:
            raise ValueError(
                f"global_skip adds the input image to the output, so it needs as many input "
                f"as output channels; got input_nc={input_nc}, output_nc={output_nc}"
            )
        self.input_nc = input_nc
        self.output_nc = output_nc
        self.num_domains = num_domains
        self.global_skip = global_skip
        self.conditional_norm = conditional_norm
        k = num_domains if conditional_norm else 0  # domains of the norms (0: the reference's)
        layers: list[nn.Module] = [
            nn.Conv2d(
                input_nc + num_domains, conv_dim, 7, padding=3, bias=False, padding_mode=mode
            ),
            _norm(conv_dim, k),
            nn.ReLU(inplace=True),
        ]
        dim = conv_dim
        for _ in range(2):  # down-sampling
            layers += [
                nn.Conv2d(dim, dim * 2, 4, stride=2, padding=1, bias=False, padding_mode=mode),
                _norm(dim * 2, k),
                nn.ReLU(inplace=True),
            ]
            dim *= 2
        layers += [ResidualBlock(dim, k, padding) for _ in range(repeat_num)]
        for _ in range(2):  # up-sampling
            transpose = functools.partial(
                nn.ConvTranspose2d, dim, dim // 2, 4, stride=2, padding=1, bias=False
            )
            layers += [
                _upsampler(upsample, dim, dim // 2, False, transpose),
                _norm(dim // 2, k),
                nn.ReLU(inplace=True),
            ]
            dim //= 2
        last = nn.Conv2d(dim, output_nc, kernel_size=7, padding=3, bias=False, padding_mode=mode)
        if global_skip:  # after the other draws, so their seeded weights are kept
            nn.init.zeros_(last.weight)
        # Identity has no parameters: the state dict's keys are the same either way.
        layers += [last, nn.Identity() if global_skip else nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.colour_transform = colour_transform
        if colour_transform:  # zeros draw nothing: the seeded weights above are kept
            self.colour_weight = nn.Parameter(torch.zeros(num_domains, input_nc * input_nc))
            self.colour_bias = nn.Parameter(torch.zeros(num_domains, input_nc))

    def colour(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``(I + c @ colour_weight) x + c @ colour_bias`` per pixel: the target's affine
        colour transform of x (N, C, H, W), the identity until trained; in x's dtype, also
        under autocast."""
        if torch.is_autocast_enabled(x.device.type):
            # Autocast would run the products in bf16/fp16, where the skip's clamp to
            # 1 - 1e-3 rounds to 1 (atanh(1) = inf): keep the image's float32, as the plain
            # skip does.
            with torch.autocast(x.device.type, enabled=False):
                return self._colour(x, c)
        return self._colour(x, c)

    def _colour(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        c = c.to(x.dtype)
        matrix = torch.eye(n, dtype=x.dtype, device=x.device) + (
            c @ self.colour_weight.to(x.dtype)
        ).view(-1, n, n)
        shift = (c @ self.colour_bias.to(x.dtype))[:, :, None, None]
        return torch.einsum("nij,njhw->nihw", matrix, x) + shift

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        # Zero padding matters here: the label maps are constant, and reflection padding
        # keeps them constant, so instance norm removes them (the reference's note); with
        # padding "reflect" the target comes through the conditional norms alone.
        maps = c.to(x.dtype)[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        h = torch.cat([x, maps], dim=1)
        out = _run(self.main, h, c) if self.conditional_norm else self.main(h)
        if not self.global_skip:
            return out
        return global_skip_output(self.colour(x, c) if self.colour_transform else x, out)


class StarGANDiscriminator(nn.Module):
    """``d(x) -> (src (N, 1, H/2**r, W/2**r), cls (N, K))`` for x of ``image_size`` square;
    with ``domain_critic`` src has K maps, one per domain (see :func:`critic_map`)."""

    def __init__(
        self,
        input_nc: int,
        num_domains: int,
        image_size: int,
        conv_dim: int,
        repeat_num: int,
        domain_critic: bool = False,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        layers: list[nn.Module] = [
            nn.Conv2d(input_nc, conv_dim, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.01),
        ]
        dim = conv_dim
        for _ in range(1, repeat_num):
            layers += [
                nn.Conv2d(dim, dim * 2, kernel_size=4, stride=2, padding=1),
                nn.LeakyReLU(0.01),
            ]
            dim *= 2
        self.main = nn.Sequential(*layers)
        maps = num_domains if domain_critic else 1
        self.conv_src = nn.Conv2d(dim, maps, kernel_size=3, stride=1, padding=1, bias=False)
        kernel = image_size // 2**repeat_num
        self.conv_cls = nn.Conv2d(dim, num_domains, kernel_size=kernel, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.main(x)
        return self.conv_src(h), self.conv_cls(h).flatten(1)


def critic_map(src: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
    """d's real/fake map of each image's ``domain`` (int64 (N,)): src (N, K, h, w) ->
    (N, 1, h, w); a single-map src (the reference's critic) is returned as it is."""
    if src.shape[1] == 1:
        return src
    index = domain.to(torch.int64)[:, None, None, None].expand(-1, 1, *src.shape[2:])
    return src.gather(1, index)


def one_hot(domain: torch.Tensor, num_domains: int, dtype: torch.dtype) -> torch.Tensor:
    """int64 (N,) indices -> (N, num_domains) one-hot of ``dtype``; an index outside [0, K)
    gives a row of zeros. Built by comparison with ``arange``, so it traces into ONNX."""
    classes = torch.arange(num_domains, device=domain.device, dtype=domain.dtype)
    return (domain[:, None] == classes[None, :]).to(dtype)


class StarGANConditional(nn.Module):
    """``forward(x, domain)``: float (N, C, H, W) in [-1, 1] and int64 (N,) target indices ->
    ``g(x, one_hot(domain))``, the family's conditional module (see the registry)."""

    def __init__(self, generator: StarGANGenerator) -> None:
        super().__init__()
        self.generator = generator
        self.num_domains = generator.num_domains

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return self.generator(x, one_hot(domain, self.num_domains, x.dtype))


def build_stargan(options: StarGANOptions) -> dict[str, nn.Module]:
    """Build ``g`` and ``d`` (in the reference's order) with PyTorch's default initialisation,
    as the reference does."""
    o = options
    k = o.num_domains
    g = StarGANGenerator(
        o.input_nc, o.output_nc, k, o.conv_dim, o.repeat_num, o.global_skip, o.conditional_norm,
        o.padding, o.upsample, o.colour_transform,
    )  # fmt: skip
    d = StarGANDiscriminator(
        o.input_nc, k, o.image_size, o.d_conv_dim, o.d_repeat_num, o.domain_critic
    )
    return {"g": g, "d": d}


def stargan_conditional(networks: Mapping[str, nn.Module], options: Any) -> nn.Module:
    """The conditional translator of the registry: ``g`` with index targets, in eval mode."""
    g = networks["g"]
    if not isinstance(g, StarGANGenerator):
        raise TypeError(f"networks['g'] must be a StarGANGenerator, got {type(g).__name__}")
    if g.num_domains != options.num_domains:
        raise ValueError(
            f"g was built for {g.num_domains} domains, the options name {options.num_domains}"
        )
    return StarGANConditional(g).eval()


def stargan_translators(
    networks: Mapping[str, nn.Module], options: StarGANOptions
) -> dict[str, nn.Module]:
    """``{"to_<domain>": FixedDomainTranslator}`` around :func:`stargan_conditional`, in eval
    mode; empty when ``g`` is not in ``networks``."""
    if "g" not in networks:
        return {}
    return domain_translators(stargan_conditional(networks, options), options)


def stargan_shape_rule(options: StarGANOptions) -> ShapeRule:
    """g takes any multiple of 4 (two stride-2 convolutions, undone exactly), from 8: instance
    norm needs more than one cell at the 1/4 scale."""
    return ShapeRule(multiple_of=4, min_size=8)


STARGAN = register_family(
    ModelFamily(
        name="stargan",
        options_type=StarGANOptions,
        build=build_stargan,
        generators=("g",),
        directions={},
        shape_rule=stargan_shape_rule,
        description=(
            "StarGAN: one generator for any number of domains (target as one-hot label maps), "
            "WGAN-GP PatchGAN with a domain classifier"
        ),
        multi_domain=True,
        conditional=stargan_conditional,
        translators=stargan_translators,
    )
)
