"""The two-step conditional GAN + encoder (Dong et al., "Unsupervised Image-to-Image
Translation with Generative Adversarial Networks", seed 004).

Step 1 trains an auxiliary-classifier conditional GAN over all domains: ``g(z, c)`` makes
an image of domain ``c`` from ``z ~ U(-1, 1)^z_dim``; ``d(x)`` says real or fake and which
domain. Step 2 trains the encoder ``e`` on ``g``'s own samples so that ``e(g(z, c)) ~ z``
(tanh output, the range of ``z``). Translation into domain ``t`` is ``g(e(x), t)``, from
any domain to any domain.

=========  ========================================================================
``g``      :class:`ConditionalGenerator`: DCGAN transposed convolutions, (z, c) -> image
``d``      :class:`ACDiscriminator`: DCGAN convolutions, image -> (real/fake logit [N],
           domain logits [N, K])
``e``      :class:`LatentEncoder`: the discriminator's trunk, image -> tanh [N, z_dim]
=========  ========================================================================

The domain condition is a learnt embedding of ``embed_dim`` values (5 in the paper) or a
one-hot vector (``condition: onehot``), concatenated to ``z``. Both are a table lookup
(ONNX Gather), so exported graphs have no data-dependent branches.

Sizes. The networks work at ``image_size`` only (a power of two, 16 or more; 64 in the
paper): ``g`` starts at 4x4 and doubles ``log2(image_size) - 2`` times, ``d`` and ``e``
halve the same number of times. The shape rule is therefore a fixed size.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from i2i.models.networks import init_weights
from i2i.models.registry import ExportGraph, ModelFamily, checked_domains, register_family
from i2i.models.translators import _float_to_image, _image_to_float, domain_translators
from i2i.shapes import ShapeRule

log = logging.getLogger(__name__)

CONDITIONS = ("embedding", "onehot")
TRANSLATIONS = ("direct", "colour")
COLOUR_EPS = 1e-3  # the colour gain's pull toward 1 (see colour_change)
MAX_MULT = 8  # DCGAN's widest layer: 8 x ngf (or ndf) filters


@dataclass
class TwoStepOptions:
    """Architecture options; defaults are the paper's (64x64, z of 100, embedding of 5)."""

    domains: tuple[str, ...] = ()  # filled from the data's domain folders when left out
    input_nc: int = 3  # channels of every domain's images
    output_nc: int = 3  # must equal input_nc: e reads what g writes
    z_dim: int = 100
    condition: str = "embedding"  # or "onehot"
    embed_dim: int = 5  # values of the domain embedding (condition "embedding")
    image_size: int = 64
    ngf: int = 64  # filters of g's last hidden layer (DCGAN's ngf)
    ndf: int = 64  # filters of d's first layer
    nef: int = 64  # filters of e's first layer
    init_gain: float = 0.02  # DCGAN's N(0, 0.02) initialisation
    # "direct": the paper's g(e(x), t). "colour": g renders e(x) in the source domain s
    # and in t, and the photo gets the colour change between the two renderings (a gain
    # and offset per channel, see colour_translation); s comes from e's own classifier
    # (IcGAN's E_y: e gains a domain head).
    translation: str = "direct"

    def __post_init__(self) -> None:
        if isinstance(self.domains, str) or not isinstance(self.domains, (list, tuple)):
            raise ValueError(f"domains must be a list of names, got {self.domains!r}")
        self.domains = tuple(self.domains)
        if self.domains:
            checked_domains(self.domains)
        if self.condition not in CONDITIONS:
            raise ValueError(
                f"unknown condition {self.condition!r}; expected one of: {', '.join(CONDITIONS)}"
            )
        if self.translation not in TRANSLATIONS:
            raise ValueError(
                f"unknown translation {self.translation!r}; expected one of: "
                f"{', '.join(TRANSLATIONS)}"
            )
        for key in ("input_nc", "output_nc"):
            if getattr(self, key) not in (1, 3):
                raise ValueError(
                    f"{key} must be 1 (grayscale) or 3 (RGB), got {getattr(self, key)}"
                )
        if self.input_nc != self.output_nc:
            raise ValueError(
                f"input_nc ({self.input_nc}) and output_nc ({self.output_nc}) must be equal: "
                "the encoder reads the generator's images"
            )
        for key in ("z_dim", "embed_dim", "ngf", "ndf", "nef"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        size = self.image_size
        if size < 16 or size & (size - 1):
            raise ValueError(f"image_size must be a power of two, 16 or more, got {size}")

    @property
    def num_domains(self) -> int:
        """K, the number of domains (0 while ``domains`` is not set)."""
        return len(self.domains)

    @property
    def n_scales(self) -> int:
        """How many times g doubles (and d, e halve) between 4x4 and image_size."""
        return self.image_size.bit_length() - 1 - 2


def _mult(k: int) -> int:
    return min(2**k, MAX_MULT)


class DomainCode(nn.Module):
    """Domain index [N] (int64) -> condition vector [N, dim]: a learnt embedding or one-hot."""

    def __init__(self, num_domains: int, condition: str, embed_dim: int) -> None:
        super().__init__()
        self.condition = condition
        if condition == "embedding":
            self.embedding: nn.Embedding | None = nn.Embedding(num_domains, embed_dim)
            self.dim = embed_dim
        else:
            self.embedding = None
            self.register_buffer("eye", torch.eye(num_domains), persistent=False)
            self.dim = num_domains

    def forward(self, domain: torch.Tensor) -> torch.Tensor:
        if self.embedding is not None:
            return self.embedding(domain)
        eye = self.eye
        assert isinstance(eye, torch.Tensor)
        return F.embedding(domain, eye)


class ConditionalGenerator(nn.Module):
    """DCGAN generator G(z, c): ``z`` [N, z_dim] and domain [N] -> image [N, C, S, S]."""

    def __init__(self, options: TwoStepOptions) -> None:
        super().__init__()
        o = options
        self.z_dim = o.z_dim
        self.output_nc = o.output_nc
        self.code = DomainCode(o.num_domains, o.condition, o.embed_dim)
        n = o.n_scales
        channels = o.ngf * _mult(n - 1)
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(o.z_dim + self.code.dim, channels, 4, 1, 0, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(True),
        ]
        for i in range(1, n):
            out = o.ngf * _mult(n - 1 - i)
            layers += [
                nn.ConvTranspose2d(channels, out, 4, 2, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(True),
            ]
            channels = out
        layers += [nn.ConvTranspose2d(channels, o.output_nc, 4, 2, 1, bias=False), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        x = torch.cat((z, self.code(domain).to(z.dtype)), dim=1)
        return self.model(x[:, :, None, None])


def _trunk(input_nc: int, nf: int, n_scales: int) -> tuple[nn.Sequential, int]:
    """DCGAN's discriminator body: image S x S -> [N, channels, 4, 4]; returns (body, channels)."""
    layers: list[nn.Module] = [
        nn.Conv2d(input_nc, nf, 4, 2, 1, bias=False),
        nn.LeakyReLU(0.2, True),
    ]
    channels = nf
    for k in range(1, n_scales):
        out = nf * _mult(k)
        layers += [
            nn.Conv2d(channels, out, 4, 2, 1, bias=False),
            nn.BatchNorm2d(out),
            nn.LeakyReLU(0.2, True),
        ]
        channels = out
    return nn.Sequential(*layers), channels


class ACDiscriminator(nn.Module):
    """AC-GAN discriminator: image -> (real/fake logit [N], domain logits [N, K])."""

    def __init__(self, options: TwoStepOptions) -> None:
        super().__init__()
        self.model, channels = _trunk(options.input_nc, options.ndf, options.n_scales)
        self.source = nn.Conv2d(channels, 1, 4, 1, 0)
        self.classes = nn.Conv2d(channels, options.num_domains, 4, 1, 0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.model(x)
        return self.source(h).flatten(), self.classes(h).flatten(1)


class LatentEncoder(nn.Module):
    """The encoder E: image [N, C, S, S] -> z [N, z_dim] in (-1, 1) (tanh).

    With ``translation: colour`` it also names the image's domain (IcGAN's E_y): a
    second head on the same trunk, domain logits [N, K], returned with
    ``forward(x, domain_logits=True)``.
    """

    def __init__(self, options: TwoStepOptions) -> None:
        super().__init__()
        self.input_nc = options.input_nc
        self.z_dim = options.z_dim
        self.model, channels = _trunk(options.input_nc, options.nef, options.n_scales)
        self.head = nn.Conv2d(channels, options.z_dim, 4, 1, 0)
        self.classes: nn.Conv2d | None = None
        if options.translation == "colour":
            self.classes = nn.Conv2d(channels, options.num_domains, 4, 1, 0)

    def forward(self, x: torch.Tensor, domain_logits: bool = False) -> Any:
        """z [N, z_dim]; with ``domain_logits``, (z, domain logits [N, K]) from one pass of
        the trunk (needs the domain head, ``translation: colour``). A flag of forward,
        not a second method, so that DDP sees both calls."""
        h = self.model(x)
        z = torch.tanh(self.head(h).flatten(1))
        if not domain_logits:
            return z
        if self.classes is None:
            raise RuntimeError("this encoder has no domain head (model.translation: direct)")
        return z, self.classes(h).flatten(1)


def colour_change(
    x: torch.Tensor, source: torch.Tensor, target: torch.Tensor, eps: float = COLOUR_EPS
) -> torch.Tensor:
    """x [N, C, H, W] with the colour change from ``source`` to ``target`` (two renderings
    of x, same shape), clamped to [-1, 1].

    Per image and channel, the least-squares gain and offset that map the source
    rendering's values onto the target's are applied to x: the picture stays x's, and every
    pixel's value moves as the renderings say this channel moves between the domains. The
    gain is drawn toward 1 by ``eps`` (ridge: (cov + eps) / (var + eps)), so a flat channel
    keeps x's contrast and two equal renderings give x back. Means and products only, so
    the ONNX graph is plain arithmetic.
    """
    # In float32 whatever the autocast: means of a half-precision image lose levels.
    x, source, target = x.float(), source.float(), target.float()
    mean_s = source.mean(dim=(2, 3), keepdim=True)
    mean_t = target.mean(dim=(2, 3), keepdim=True)
    centred = source - mean_s
    cov = (centred * (target - mean_t)).mean(dim=(2, 3), keepdim=True)
    var = (centred * centred).mean(dim=(2, 3), keepdim=True)
    gain = (cov + eps) / (var + eps)
    return ((x - mean_s) * gain + mean_t).clamp(-1.0, 1.0)


def colour_translation(
    x: torch.Tensor,
    z: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    generator: nn.Module,
) -> torch.Tensor:
    """x translated from domains ``source`` to ``target`` [N] through g's renderings of its
    code z in both (one pass of g over both halves): :func:`colour_change`."""
    n = x.shape[0]
    both = generator(torch.cat((z, z)), torch.cat((target, source)))
    return colour_change(x, both[n:], both[:n])


class TwoStepTranslation(nn.Module):
    """Translation into domain c: float x [N, C, S, S] in [-1, 1], target domains [N] ->
    image; G(E(x), c) (``direct``) or :func:`colour_translation` from E's source domain
    (``colour``)."""

    def __init__(self, encoder: nn.Module, generator: nn.Module, colour: bool = False) -> None:
        super().__init__()
        self.e = encoder
        self.g = generator
        self.colour = colour
        self.input_nc = int(getattr(encoder, "input_nc"))  # noqa: B009
        self.output_nc = int(getattr(generator, "output_nc"))  # noqa: B009

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        if not self.colour:
            return self.g(self.e(x), domain)
        z, logits = self.e(x, True)
        return colour_translation(x, z, logits.argmax(1), domain, self.g)


def build_twostep(options: TwoStepOptions) -> dict[str, nn.Module]:
    """Build and initialise g, d and e (DCGAN's N(0, init_gain) weights, BN N(1, init_gain))."""
    if options.num_domains < 2:
        raise ValueError(
            "the two-step model needs its domains (model.domains, at least 2); a training "
            f"run fills them from the data's domain folders, got {list(options.domains)}"
        )
    networks: dict[str, nn.Module] = {
        "g": ConditionalGenerator(options),
        "d": ACDiscriminator(options),
        "e": LatentEncoder(options),
    }
    for net in networks.values():
        init_weights(net, "normal", options.init_gain)
    return networks


def twostep_conditional(networks: Mapping[str, nn.Module], options: TwoStepOptions) -> nn.Module:
    """G(E(x), c) over float tensors (the registry's ``conditional``), in eval mode."""
    missing = [n for n in ("g", "e") if n not in networks]
    if missing:
        raise ValueError(f"two-step translation needs networks g and e; missing {missing}")
    colour = options.translation == "colour"
    return TwoStepTranslation(networks["e"], networks["g"], colour).eval()


def twostep_translators(
    networks: Mapping[str, nn.Module], options: TwoStepOptions
) -> dict[str, nn.Module]:
    """``{"to_<domain>": fused G(E(x), domain)}`` per domain; empty without both g and e
    (every direction needs both)."""
    if "g" not in networks or "e" not in networks:
        return {}
    return domain_translators(twostep_conditional(networks, options), options)


class ImageLatentEncoder(nn.Module):
    """The exported encoder graph: uint8 image [N, S, S, C] -> float32 z [N, z_dim], E on
    the image scaled to [-1, 1] exactly as the fused translators scale it; with e's domain
    head (``translation: colour``) also float32 domain logits [N, K], the source domain a
    client needs to compose the colour translation from the parts."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.e = encoder
        self.in_channels = int(getattr(encoder, "input_nc"))  # noqa: B009
        self.domain_logits = getattr(encoder, "classes", None) is not None

    def forward(self, image: torch.Tensor) -> Any:
        return self.e(_image_to_float(image, self.in_channels), self.domain_logits)


class LatentImageGenerator(nn.Module):
    """The exported generator graph: float32 z [N, z_dim] and int64 domain [N] -> uint8
    image [N, S, S, C], G's output rounded exactly as the fused translators round it."""

    def __init__(self, generator: nn.Module) -> None:
        super().__init__()
        self.g = generator

    def forward(self, z: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        return _float_to_image(self.g(z, domain))


def twostep_graphs(
    networks: Mapping[str, nn.Module], options: TwoStepOptions
) -> dict[str, ExportGraph]:
    """The encoder (``image`` -> ``z``, and ``domain_logits`` in the colour form) and
    generator (``z``, ``domain`` -> ``image``) graphs that export writes beside the fused
    translators; empty without both g and e."""
    if "g" not in networks or "e" not in networks:
        return {}
    size, channels, k = options.image_size, options.input_nc, options.num_domains
    encoder = ImageLatentEncoder(networks["e"]).eval()
    encoder_outputs = ("z", "domain_logits") if encoder.domain_logits else ("z",)

    def images(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        rng = torch.Generator().manual_seed(seed)
        shape = (batch, size, size, channels)
        return (torch.randint(0, 256, shape, generator=rng, dtype=torch.int64).to(torch.uint8),)

    def latents(batch: int, seed: int) -> tuple[torch.Tensor, ...]:
        rng = torch.Generator().manual_seed(seed)
        z = torch.rand(batch, options.z_dim, generator=rng) * 2.0 - 1.0
        start = int(torch.randint(0, k, (1,), generator=rng))
        return z, (torch.arange(batch, dtype=torch.int64) + start) % k  # every target in turn

    return {
        "encoder": ExportGraph(encoder, ("image",), encoder_outputs, images),
        "generator": ExportGraph(
            LatentImageGenerator(networks["g"]).eval(), ("z", "domain"), ("image",), latents
        ),
    }


def sample_latents(
    n: int, options: TwoStepOptions, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z ~ U(-1, 1) [n, z_dim], domains uniform over K [n]) on the CPU, from ``generator``."""
    z = torch.rand(n, options.z_dim, generator=generator) * 2.0 - 1.0
    domains = torch.randint(0, options.num_domains, (n,), generator=generator)
    return z, domains


@torch.no_grad()
def latent_mse(
    networks: Mapping[str, nn.Module],
    options: TwoStepOptions,
    seed: int,
    n_samples: int = 256,
    batch_size: int = 64,
) -> float:
    """MSE(E(G(z, c)), z) over ``n_samples`` held-out draws (z ~ U(-1, 1), random domains)
    from ``seed``, both networks in eval mode (their modes are restored afterwards)."""
    g, e = networks["g"], networks["e"]
    modes = (g.training, e.training)
    g.eval()
    e.eval()
    device = next(e.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    try:
        while count < n_samples:
            n = min(batch_size, n_samples - count)
            z, domains = sample_latents(n, options, rng)
            z, domains = z.to(device), domains.to(device)
            error = F.mse_loss(e(g(z, domains)).float(), z, reduction="sum")
            total += float(error) / options.z_dim
            count += n
    finally:
        g.train(modes[0])
        e.train(modes[1])
    return total / count


def twostep_metrics(
    networks: Mapping[str, nn.Module], options: TwoStepOptions, seed: int
) -> dict[str, float]:
    """``{"latent_mse": ...}``: the encoder's error on held-out generator samples."""
    return {"latent_mse": latent_mse(networks, options, seed)}


def twostep_shape_rule(options: Any) -> ShapeRule:
    """Exactly image_size x image_size: the networks have no other size."""
    return ShapeRule(fixed_size=int(getattr(options, "image_size", 64)))


TWOSTEP = register_family(
    ModelFamily(
        name="twostep",
        options_type=TwoStepOptions,
        build=build_twostep,
        generators=("g", "e"),
        directions={},
        shape_rule=twostep_shape_rule,
        description=(
            "two-step: AC-GAN G(z, c) over all domains, then an encoder E on G's samples; "
            "any domain to any, G(E(x), c)"
        ),
        multi_domain=True,
        conditional=twostep_conditional,
        translators=twostep_translators,
        metrics=twostep_metrics,
        graphs=twostep_graphs,
    )
)
