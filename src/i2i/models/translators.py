"""Translators: the inference function of one translation direction, bytes in, bytes out.

A translator is contract 2 between export and serving::

    translate(image: uint8 [N, H, W, C_in]) -> uint8 [N, H, W, C_out]

Pre- and post-processing (layout, scaling to [-1, 1], back to uint8) live inside the module,
so the exported graph carries them and PyTorch, ONNX Runtime and TensorRT all compute the
same function from the same bytes.

Rounding is round-half-to-even, as both ``torch.round`` and ONNX ``Round`` define it: a
generator output of exactly 0 maps to 127.5, which rounds to 128; 126.5 would round to 126.
Only values that land exactly on a half are affected, and the tanh of a float network
practically never does, so the choice matters for agreement between runtimes, not quality.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from i2i.models.networks import global_skip_output


def _channels(generator: nn.Module, attribute: str, given: int | None) -> int:
    if given is not None:
        channels = given
    else:
        found = getattr(generator, attribute, None)
        if not isinstance(found, int):
            raise ValueError(
                f"{type(generator).__name__} has no integer attribute {attribute!r}; pass "
                f"the number of channels to ImageTranslator explicitly"
            )
        channels = found
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels} ({attribute})")
    return channels


class ImageTranslator(nn.Module):
    """Wraps a generator into ``uint8 [N, H, W, C_in] -> uint8 [N, H, W, C_out]``.

    Args:
        generator: maps (N, C_in, H, W) in [-1, 1] to (N, C_out, H, W) in [-1, 1].
        in_channels: 1 (grayscale) or 3 (RGB); by default the generator's ``input_nc``.
        out_channels: 1 or 3; by default the generator's ``output_nc``.
    """

    def __init__(
        self,
        generator: nn.Module,
        in_channels: int | None = None,
        out_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.generator = generator
        self.in_channels = _channels(generator, "input_nc", in_channels)
        self.out_channels = _channels(generator, "output_nc", out_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if image.dtype != torch.uint8 or image.dim() != 4:
            raise ValueError(
                f"expected a uint8 image batch [N, H, W, C], got {image.dtype} with shape "
                f"{tuple(image.shape)}"
            )
        # While TorchScript traces, the check would be baked into the graph as a constant.
        if not torch.jit.is_tracing() and image.shape[-1] != self.in_channels:
            raise ValueError(
                f"expected {self.in_channels} channel(s) in the last dimension, got "
                f"shape {tuple(image.shape)}"
            )
        # Cast first, then transpose floats: TensorRT takes uint8 only as a network input or
        # output, converted from or to float before any other layer touches it.
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, C_in, H, W)
        y = self.generator(x)  # (N, C_out, H, W) in [-1, 1]
        pixels = torch.clamp(torch.round((y + 1.0) * 127.5), 0.0, 255.0)
        return pixels.permute(0, 2, 3, 1).to(torch.uint8)  # (N, H, W, C_out)


def translators_by_direction(
    networks: Mapping[str, nn.Module], directions: Mapping[str, str]
) -> dict[str, nn.Module]:
    """One :class:`ImageTranslator` (in eval mode) per direction whose generator is present.

    Directions whose generator is missing from ``networks`` are skipped: an imported
    checkpoint may hold one direction only. The generators are wrapped, not copied, and are
    switched to eval mode.
    """
    return {
        direction: ImageTranslator(networks[generator]).eval()
        for direction, generator in directions.items()
        if generator in networks
    }


def _image_to_float(image: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] in [-1, 1], checking dtype and channels."""
    if image.dtype != torch.uint8 or image.dim() != 4:
        raise ValueError(
            f"expected a uint8 image batch [N, H, W, C], got {image.dtype} with shape "
            f"{tuple(image.shape)}"
        )
    # While TorchScript traces, the check would be baked into the graph as a constant.
    if not torch.jit.is_tracing() and image.shape[-1] != channels:
        raise ValueError(
            f"expected {channels} channel(s) in the last dimension, got shape {tuple(image.shape)}"
        )
    # Cast first, then transpose floats (see ImageTranslator.forward).
    return image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0


def _float_to_image(y: torch.Tensor) -> torch.Tensor:
    """float [N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C], rounding half to even."""
    pixels = torch.clamp(torch.round((y + 1.0) * 127.5), 0.0, 255.0)
    return pixels.permute(0, 2, 3, 1).to(torch.uint8)


def _check_channels(channels: int, what: str) -> int:
    if channels not in (1, 3):
        raise ValueError(f"images must have 1 or 3 channels, got {channels} ({what})")
    return channels


class StyleTranslator(nn.Module):
    """A multimodal translator: ``(uint8 [N, H, W, C_in], float32 [N, S]) -> uint8 [N, H, W,
    C_out]`` (contract 2 with a style input).

    Args:
        content_encoder: float (N, C_in, H, W) in [-1, 1] -> content code.
        decoder: ``(content, style (N, S)) -> (N, C_out, H, W)`` in [-1, 1].
        in_channels, out_channels: 1 or 3.
        style_dim: S, the length of the style code.
        global_skip: the decoder's output is a residual: return
            :func:`~i2i.models.networks.global_skip_output` of the input image and it
            (needs ``in_channels == out_channels``).
    """

    def __init__(
        self,
        content_encoder: nn.Module,
        decoder: nn.Module,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        global_skip: bool = False,
    ) -> None:
        super().__init__()
        if style_dim < 1:
            raise ValueError(f"style_dim must be >= 1, got {style_dim}")
        self.content_encoder = content_encoder
        self.decoder = decoder
        self.in_channels = _check_channels(in_channels, "in_channels")
        self.out_channels = _check_channels(out_channels, "out_channels")
        self.style_dim = style_dim
        if global_skip and in_channels != out_channels:
            raise ValueError(
                f"global_skip adds the input image to the output, so it needs as many input "
                f"as output channels; got in_channels={in_channels}, "
                f"out_channels={out_channels}"
            )
        self.global_skip = global_skip

    def forward(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        if style.dtype != torch.float32 or style.dim() != 2:
            raise ValueError(
                f"expected a float32 style batch [N, {self.style_dim}], got {style.dtype} "
                f"with shape {tuple(style.shape)}"
            )
        if not torch.jit.is_tracing() and (
            style.shape[1] != self.style_dim or style.shape[0] != image.shape[0]
        ):
            raise ValueError(
                f"expected a style batch [N, {self.style_dim}] with the images' N = "
                f"{image.shape[0]}, got shape {tuple(style.shape)}"
            )
        x = _image_to_float(image, self.in_channels)
        y = self.decoder(self.content_encoder(x), style)
        return _float_to_image(global_skip_output(x, y) if self.global_skip else y)


class ImageStyleEncoder(nn.Module):
    """The style code of reference images: ``uint8 [N, H, W, C] -> float32 [N, S]``.

    Args:
        encoder: float (N, C, H, W) in [-1, 1] -> (N, S, ...) (e.g. (N, S, 1, 1)).
        in_channels: C, 1 or 3.
        style_dim: S.
    """

    def __init__(self, encoder: nn.Module, in_channels: int, style_dim: int) -> None:
        super().__init__()
        if style_dim < 1:
            raise ValueError(f"style_dim must be >= 1, got {style_dim}")
        self.encoder = encoder
        self.in_channels = _check_channels(in_channels, "in_channels")
        self.style_dim = style_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.encoder(_image_to_float(image, self.in_channels)).flatten(1)


class DomainTranslator(nn.Module):
    """A multi-domain translator: ``(uint8 [N, H, W, C_in], int64 [N]) -> uint8 [N, H, W,
    C_out]``, each image translated into the domain its index names.

    Args:
        conditional: ``forward(x, domain)``: float (N, C_in, H, W) in [-1, 1] and int64 (N,)
            target indices -> float (N, C_out, H, W) in [-1, 1].
        in_channels, out_channels: 1 or 3.
        num_domains: how many domains the indices may name.
    """

    def __init__(
        self, conditional: nn.Module, in_channels: int, out_channels: int, num_domains: int
    ) -> None:
        super().__init__()
        if num_domains < 2:
            raise ValueError(f"num_domains must be >= 2, got {num_domains}")
        self.conditional = conditional
        self.in_channels = _check_channels(in_channels, "in_channels")
        self.out_channels = _check_channels(out_channels, "out_channels")
        self.num_domains = num_domains

    def forward(self, image: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        if domain.dtype != torch.int64 or domain.dim() != 1:
            raise ValueError(
                f"expected int64 target domain indices [N], got {domain.dtype} with shape "
                f"{tuple(domain.shape)}"
            )
        # Checked in eager mode only: the exporters (TorchScript tracing, torch.export) cannot
        # branch on a tensor's values, and the graph's runtime rejects no index by itself.
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()):
            if domain.shape[0] != image.shape[0]:
                raise ValueError(
                    f"expected one target domain per image (N = {image.shape[0]}), got "
                    f"{domain.shape[0]}"
                )
            if bool(((domain < 0) | (domain >= self.num_domains)).any()):
                raise ValueError(
                    f"target domain indices must lie in [0, {self.num_domains}), got "
                    f"{domain.tolist()}"
                )
        x = _image_to_float(image, self.in_channels)
        return _float_to_image(self.conditional(x, domain))


class FixedDomainTranslator(nn.Module):
    """One target of a :class:`DomainTranslator`, fused: ``uint8 [N, H, W, C_in] -> uint8
    [N, H, W, C_out]`` (plain contract 2), translating every image into domain ``index``."""

    def __init__(self, translator: DomainTranslator, index: int) -> None:
        super().__init__()
        if not 0 <= index < translator.num_domains:
            raise ValueError(f"index must lie in [0, {translator.num_domains}), got {index}")
        self.translator = translator
        self.index = index
        self.in_channels = translator.in_channels
        self.out_channels = translator.out_channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # The index is a constant of the graph; N follows the batch.
        domain = torch.full_like(image[:, 0, 0, 0], self.index, dtype=torch.int64)
        return self.translator(image, domain)


def domain_translators(conditional: nn.Module, options: object) -> dict[str, nn.Module]:
    """``{"to_<domain>": FixedDomainTranslator}`` for every domain in ``options.domains``, in
    eval mode, all sharing one :class:`DomainTranslator` around ``conditional``."""
    domains = tuple(getattr(options, "domains"))  # noqa: B009 (options are any dataclass)
    whole = DomainTranslator(
        conditional,
        int(getattr(options, "input_nc")),  # noqa: B009
        int(getattr(options, "output_nc")),  # noqa: B009
        len(domains),
    ).eval()
    return {f"to_{d}": FixedDomainTranslator(whole, i).eval() for i, d in enumerate(domains)}
