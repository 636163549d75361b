"""The UNIT family (Liu et al., NIPS 2017): two VAE-like auto-encoders with a shared latent space.

Networks, named as in the reference trainer (mingyuliutw/UNIT, ``UNIT_Trainer``), where
``gen_X`` and ``dis_X`` work in domain X:

=========  ==============================================================================
``gen_a``  :class:`VAEGen` of domain A: ``encode(x_a) -> (hiddens, noise)``,
           ``decode(h) -> x_a``
``gen_b``  :class:`VAEGen` of domain B
``dis_a``  :class:`~i2i.models.unit_blocks.MsImageDis` judging domain A images
``dis_b``  :class:`~i2i.models.unit_blocks.MsImageDis` judging domain B images
=========  ==============================================================================

A2B is ``gen_b.decode(gen_a.encode(x)[0])``: A's encoder mean, decoded by B's decoder, no
noise; B2A the other way round. Each direction needs both generators.

Weight sharing. The paper ties the last layers of the two encoders and the first layers of
the two decoders, which is what makes the latent space shared (the thesis in
``seeds/000``: "the final layer of two encoders is shared ... the first layer of the
generator is shared"; the reference's ``version_02`` branch: ``n_enc_shared_blk: 1``,
``n_gen_shared_blk: 1``). With ``share=True`` (the default) the last ``n_shared``
residual blocks of the encoders (``enc.model.<last>.model.<n_res - n_shared ...>``) and the
first ``n_shared`` residual blocks of the decoders (``dec.model.0.model.<0 ...>``) are the
same module objects in ``gen_a`` and ``gen_b``; each generator's state dict still lists them
under its own keys. The reference's master branch (the code whose checkpoints
``i2i import unit`` reads) shares nothing: ``share=False``. A trainer must give each shared
parameter to its optimiser once.

Without the VAE. ``vae=False`` makes the encoders deterministic: ``encode`` returns zero
noise in training too, so every code decoded is the encoder's output, and the trainer drops
the KL terms (their weights must be 0). With the weight sharing this is the CoGAN-style
coupling of the ``cogan`` preset: two auto-encoders tied in their high-level layers, no
sampling (see docs/variants.md). The exported translation is the same either way.

Global skip (``global_skip``, off by default; not in the reference, an option for short
runs). Every decoding returns ``tanh(atanh(x) + r)``
(:func:`i2i.models.networks.global_skip_output`): ``x`` the image that was encoded (the
source of a translation, the input of a reconstruction, the translation in a cycle) and
``r`` the decoder's output, whose last convolution has no tanh and starts at zero. An
untrained generator is then the identity in both directions, and training learns the
change of the image. ``decode(h, source)`` needs the source image; the exported
translators include the skip. Needs ``input_dim_a == input_dim_b``.

Options map to the reference's YAML as: ``input_dim_a``/``input_dim_b`` (top level);
``gen.dim`` -> ``gen_dim``, ``gen.activ`` -> ``gen_activ``, ``gen.n_downsample`` ->
``n_downsample``, ``gen.n_res`` -> ``n_res``, ``gen.pad_type`` -> ``gen_pad_type``;
``dis.dim`` -> ``dis_dim``, ``dis.norm`` -> ``dis_norm``, ``dis.activ`` -> ``dis_activ``,
``dis.n_layer`` -> ``dis_n_layer``, ``dis.num_scales`` -> ``num_scales``, ``dis.pad_type``
-> ``dis_pad_type``; ``init`` (top level). ``dis.gan_type`` is a loss option of the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from i2i.models.networks import global_skip_output
from i2i.models.registry import ModelFamily, register_family
from i2i.models.translators import ImageTranslator
from i2i.models.unit_blocks import (
    ACTIVATIONS,
    INIT_TYPES,
    PAD_TYPES,
    ContentEncoder,
    Decoder,
    MsImageDis,
    ResBlocks,
    check_choice,
    initialise,
)
from i2i.shapes import ShapeRule

DIS_NORMS = ("none", "bn", "in", "ln")


@dataclass
class UNITOptions:
    """Architecture options; defaults are the reference's (configs/unit_*.yaml) plus the
    paper's weight sharing. See the module docstring for the YAML names."""

    input_dim_a: int = 3  # channels of domain A images
    input_dim_b: int = 3  # channels of domain B images
    gen_dim: int = 64  # filters of the first generator layer
    gen_activ: str = "relu"
    n_downsample: int = 2
    n_res: int = 4  # residual blocks in each encoder and each decoder
    gen_pad_type: str = "reflect"
    share: bool = True  # tie the encoders' last / decoders' first n_shared res blocks
    n_shared: int = 1
    vae: bool = True  # false: deterministic encoders, no latent noise (the cogan preset)
    dis_dim: int = 64
    dis_norm: str = "none"
    dis_activ: str = "lrelu"
    dis_n_layer: int = 4
    num_scales: int = 3
    dis_pad_type: str = "reflect"
    init: str = "kaiming"  # generators' initialisation; discriminators are gaussian
    global_skip: bool = False  # decodings add a learned change to the encoded image

    def __post_init__(self) -> None:
        check_unit_options(self)
        if self.share and not 1 <= self.n_shared <= self.n_res:
            raise ValueError(
                f"n_shared must be between 1 and n_res ({self.n_res}) when share is true, "
                f"got {self.n_shared}"
            )

    @property
    def input_nc(self) -> int:
        """Channels of domain A images."""
        return self.input_dim_a

    @property
    def output_nc(self) -> int:
        """Channels of domain B images."""
        return self.input_dim_b


def check_unit_options(options: object) -> None:
    """Checks common to UNIT and MUNIT options: channels, sizes and names."""
    for key in ("input_dim_a", "input_dim_b"):
        if getattr(options, key) not in (1, 3):
            raise ValueError(f"{key} must be 1 or 3, got {getattr(options, key)}")
    for key in ("gen_dim", "dis_dim", "dis_n_layer", "num_scales"):
        if getattr(options, key) < 1:
            raise ValueError(f"{key} must be >= 1, got {getattr(options, key)}")
    for key in ("n_downsample", "n_res"):
        if getattr(options, key) < 0:
            raise ValueError(f"{key} must be >= 0, got {getattr(options, key)}")
    for key, choices in (
        ("gen_activ", ACTIVATIONS),
        ("dis_activ", ACTIVATIONS),
        ("gen_pad_type", PAD_TYPES),
        ("dis_pad_type", PAD_TYPES),
        ("dis_norm", DIS_NORMS),
        ("init", INIT_TYPES),
    ):
        check_choice(key, getattr(options, key), choices)
    dims = getattr(options, "input_dim_a"), getattr(options, "input_dim_b")  # noqa: B009
    if getattr(options, "global_skip", False) and dims[0] != dims[1]:
        raise ValueError(
            f"global_skip adds the source image to each translation, so both domains need "
            f"as many channels; got input_dim_a={dims[0]}, input_dim_b={dims[1]}"
        )


class VAEGen(nn.Module):
    """UNIT's auto-encoder of one domain (the reference's ``VAEGen``).

    ``enc`` is a :class:`~i2i.models.unit_blocks.ContentEncoder` with instance norm,
    ``dec`` a :class:`~i2i.models.unit_blocks.Decoder` with instance-norm residual blocks.
    The latent code is Gaussian with mean ``enc(x)`` and unit variance; with ``vae=False``
    it is ``enc(x)`` itself. With ``global_skip`` the decoder's output is a residual added
    to the encoded image (see the module docstring).
    """

    def __init__(
        self,
        input_dim: int,
        dim: int = 64,
        n_downsample: int = 2,
        n_res: int = 4,
        activ: str = "relu",
        pad_type: str = "reflect",
        vae: bool = True,
        global_skip: bool = False,
    ) -> None:
        super().__init__()
        self.input_dim = input_dim
        self.vae = vae
        self.global_skip = global_skip
        self.enc = ContentEncoder(n_downsample, n_res, input_dim, dim, "in", activ, pad_type)
        self.dec = Decoder(
            n_downsample,
            n_res,
            self.enc.output_dim,
            input_dim,
            "in",
            activ,
            pad_type,
            global_skip=global_skip,
        )

    def encode(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hiddens, noise)``: the latent mean and a sample of N(0, 1) noise of its shape.

        In training mode the noise is ``randn_like(hiddens)`` (the trainer decodes
        ``hiddens + noise``); in eval mode, or without the VAE, it is zeros, so
        ``hiddens + noise`` is the mean (and no random numbers are drawn).
        """
        hiddens = self.enc(images)
        sample = self.training and self.vae
        noise = torch.randn_like(hiddens) if sample else torch.zeros_like(hiddens)
        return hiddens, noise

    def decode(self, hiddens: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        """The image ([-1, 1]) of a latent code; with ``global_skip``, ``source`` (the image
        that was encoded) moved by the decoder's residual, and ``source`` is required."""
        out = self.dec(hiddens)
        return skip_or_plain(self.global_skip, source, out)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(reconstruction, hiddens)``; the reconstruction decodes a noisy code in
        training mode and the mean in eval mode, as the reference's ``forward``."""
        hiddens, noise = self.encode(images)
        return self.decode(hiddens + noise, images), hiddens


def skip_or_plain(
    global_skip: bool, source: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """``global_skip_output(source, out)`` with the skip, else ``out``; ValueError when the
    skip has no source image, or one whose shape differs from the output's."""
    if not global_skip:
        return out
    if source is None:
        raise ValueError(
            "this generator has global_skip: decode needs the source image (the image that "
            "was encoded), decode(code, source)"
        )
    if source.shape != out.shape:
        raise ValueError(
            f"global_skip: the source image's shape {tuple(source.shape)} differs from the "
            f"decoded output's {tuple(out.shape)}"
        )
    return global_skip_output(source, out)


class UNITTranslation(nn.Module):
    """One UNIT direction on float images: ``target.dec(source.enc(x))``, the encoder mean
    (with the target's ``global_skip``, x moved by that residual).

    Holds the two generators' halves it uses (``enc``, ``dec``), so an export carries no
    unused weights.
    """

    def __init__(self, source: VAEGen, target: VAEGen) -> None:
        super().__init__()
        self.enc = source.enc
        self.dec = target.dec
        self.global_skip = target.global_skip
        self.input_nc = source.input_dim
        self.output_nc = target.input_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.dec(self.enc(x))
        return global_skip_output(x, out) if self.global_skip else out


def shared_layer_names(options: UNITOptions) -> list[str]:
    """The state-dict prefixes (within ``gen_a`` and ``gen_b``) of the tied residual blocks;
    empty when ``share`` is false."""
    if not options.share:
        return []
    last = options.n_downsample + 1  # index of the ResBlocks in enc.model
    first = options.n_res - options.n_shared
    return [f"enc.model.{last}.model.{i}" for i in range(first, options.n_res)] + [
        f"dec.model.0.model.{i}" for i in range(options.n_shared)
    ]


def _res_blocks(module: nn.Module) -> nn.Sequential:
    assert isinstance(module, ResBlocks)
    return module.model


def build_unit(options: UNITOptions) -> dict[str, nn.Module]:
    """Build and initialise gen_a, gen_b, dis_a and dis_b, in the reference's order.

    Built under a seeded global torch RNG with ``share=False`` they equal the reference
    trainer's initial networks (checked against its code, with the same key order).
    """
    o = options
    gen_a, gen_b = (
        VAEGen(
            channels,
            o.gen_dim,
            o.n_downsample,
            o.n_res,
            o.gen_activ,
            o.gen_pad_type,
            o.vae,
            o.global_skip,
        )
        for channels in (o.input_dim_a, o.input_dim_b)
    )
    if o.share:
        enc_a, enc_b = _res_blocks(gen_a.enc.model[-1]), _res_blocks(gen_b.enc.model[-1])
        for i in range(o.n_res - o.n_shared, o.n_res):
            enc_b[i] = enc_a[i]
        dec_a, dec_b = _res_blocks(gen_a.dec.model[0]), _res_blocks(gen_b.dec.model[0])
        for i in range(o.n_shared):
            dec_b[i] = dec_a[i]
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


def unit_translators(
    networks: Mapping[str, nn.Module], options: UNITOptions
) -> dict[str, nn.Module]:
    """``{"A2B": ..., "B2A": ...}``: uint8 in, uint8 out, encoder mean, eval mode.

    A direction needs both generators; with one missing, neither direction is built.
    """
    if "gen_a" not in networks or "gen_b" not in networks:
        return {}
    gen_a, gen_b = networks["gen_a"], networks["gen_b"]
    assert isinstance(gen_a, VAEGen) and isinstance(gen_b, VAEGen)
    return {
        "A2B": ImageTranslator(UNITTranslation(gen_a, gen_b)).eval(),
        "B2A": ImageTranslator(UNITTranslation(gen_b, gen_a)).eval(),
    }


def unit_shape_rule(options: object) -> ShapeRule:
    """Multiples of 2**n_downsample; the reflect-padded residual blocks need two cells of
    the smallest feature map, and the 7x7 convolutions four pixels."""
    n = int(getattr(options, "n_downsample", 2))
    return ShapeRule(multiple_of=2**n, min_size=max(4, 2 * 2**n))


UNIT = register_family(
    ModelFamily(
        name="unit",
        options_type=UNITOptions,
        build=build_unit,
        generators=("gen_a", "gen_b"),
        # The generator whose decoder produces the output; the source's encoder is needed too.
        directions={"A2B": "gen_b", "B2A": "gen_a"},
        shape_rule=unit_shape_rule,
        description="UNIT: unpaired translation through a shared latent space (VAE-GANs)",
        translators=unit_translators,
    )
)
