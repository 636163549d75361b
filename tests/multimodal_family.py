"""A toy multimodal family ("toy-style") that stands in for MUNIT in export and serving tests.

It follows the registry's contract for multimodal families exactly: translators
``forward(image uint8 [N, H, W, C], style float32 [N, S]) -> uint8 [N, H, W, C]`` and, per
direction, a style encoder of the target domain ``uint8 [N, H, W, C] -> float32 [N, S]``.
The generator is AdaIN-like: per-sample instance statistics written out by hand
(ReduceMean, Sub, Pow, Sqrt, Div in ONNX, as MUNIT's export-friendly AdaIN and layer norm
are), then a per-channel scale and shift from a Linear of the style, so the style visibly
changes the output even untrained.

The family is NOT registered when this module is imported: registering at import would
add a test-only family to ``list_families()`` for every test collected after the import,
and the registry-parametrised tests of other folders (training steps, importers) would
run on it. :func:`registered` adds it for the duration of a block instead; fixtures use it.
Tests take ``(family, checkpoint)`` pairs from :data:`MULTIMODAL_FAMILIES`, so MUNIT can
join when it lands.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from i2i.checkpoint import load_trained_networks, make_checkpoint, save_checkpoint
from i2i.models import (
    ModelFamily,
    ShapeRule,
    create_networks,
    get_family,
    options_from_dict,
    register_family,
)
from i2i.models import registry as _registry

NAME = "toy-style"
STYLE_DIM = 4


@dataclass
class ToyStyleOptions:
    """Architecture options of the toy family."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 4
    style_dim: int = STYLE_DIM


class AdaptiveNorm(nn.Module):
    """Instance statistics per sample and channel, then scale and shift from the style."""

    def __init__(self, channels: int, style_dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.affine = nn.Linear(style_dim, 2 * channels)
        self.eps = eps

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        var = ((x - mean) ** 2).mean(dim=(2, 3), keepdim=True)
        normalised = (x - mean) / torch.sqrt(var + self.eps)
        gamma, beta = self.affine(style).chunk(2, dim=1)  # (N, C) each
        return normalised * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]


class ToyGenerator(nn.Module):
    """conv -> AdaIN(style) -> ReLU -> conv -> tanh, on [-1, 1] images (N, C, H, W)."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int, style_dim: int) -> None:
        super().__init__()
        self.input_nc, self.output_nc = input_nc, output_nc
        self.conv_in = nn.Conv2d(input_nc, ngf, 3, padding=1, padding_mode="reflect")
        self.norm = AdaptiveNorm(ngf, style_dim)
        self.conv_out = nn.Conv2d(ngf, output_nc, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm(self.conv_in(x), style))
        return torch.tanh(self.conv_out(h))


class ToyStyleNet(nn.Module):
    """Strided convs, global average pool, linear: (N, C, H, W) in [-1, 1] -> (N, S)."""

    def __init__(self, input_nc: int, ngf: int, style_dim: int) -> None:
        super().__init__()
        self.input_nc = input_nc
        self.features = nn.Sequential(
            nn.Conv2d(input_nc, ngf, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(ngf, 2 * ngf, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.fc = nn.Linear(2 * ngf, style_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))  # (N, S)


class StyledTranslator(nn.Module):
    """uint8 [N, H, W, C_in] + float32 [N, S] -> uint8 [N, H, W, C_out] (contract 2)."""

    def __init__(self, generator: ToyGenerator, style_dim: int) -> None:
        super().__init__()
        self.generator = generator
        self.in_channels = generator.input_nc
        self.out_channels = generator.output_nc
        self.style_dim = style_dim

    def forward(self, image: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, C_in, H, W)
        y = self.generator(x, style.to(torch.float32))
        pixels = torch.clamp(torch.round((y + 1.0) * 127.5), 0.0, 255.0)
        return pixels.permute(0, 2, 3, 1).to(torch.uint8)  # (N, H, W, C_out)


class StyleEncoder(nn.Module):
    """uint8 [N, H, W, C] -> float32 [N, S]: the style code of an image."""

    def __init__(self, net: ToyStyleNet, style_dim: int) -> None:
        super().__init__()
        self.net = net
        self.in_channels = net.input_nc
        self.style_dim = style_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.to(torch.float32).permute(0, 3, 1, 2) / 127.5 - 1.0
        return self.net(x)


def _build(options: ToyStyleOptions) -> dict[str, nn.Module]:
    a, b, ngf, s = options.input_nc, options.output_nc, options.ngf, options.style_dim
    return {
        "g_ab": ToyGenerator(a, b, ngf, s),
        "g_ba": ToyGenerator(b, a, ngf, s),
        "s_a": ToyStyleNet(a, ngf, s),  # styles of domain A images
        "s_b": ToyStyleNet(b, ngf, s),
    }


_DIRECTIONS = {"A2B": ("g_ab", "s_b"), "B2A": ("g_ba", "s_a")}


def _translators(networks: Mapping[str, nn.Module], options: Any) -> dict[str, nn.Module]:
    style_dim = options.style_dim if options is not None else STYLE_DIM
    return {
        direction: StyledTranslator(networks[g], style_dim).eval()  # type: ignore[arg-type]
        for direction, (g, _) in _DIRECTIONS.items()
        if g in networks
    }


def _style_encoders(networks: Mapping[str, nn.Module], options: Any) -> dict[str, nn.Module]:
    style_dim = options.style_dim if options is not None else STYLE_DIM
    return {
        direction: StyleEncoder(networks[s], style_dim).eval()  # type: ignore[arg-type]
        for direction, (_, s) in _DIRECTIONS.items()
        if s in networks
    }


FAMILY = ModelFamily(
    name=NAME,
    options_type=ToyStyleOptions,
    build=_build,
    generators=("g_ab", "g_ba", "s_a", "s_b"),
    directions={"A2B": "g_ab", "B2A": "g_ba"},
    shape_rule=lambda options: ShapeRule(multiple_of=4, min_size=8),
    description="test-only multimodal family: AdaIN-like toy generator and style encoder",
    translators=_translators,
    style_dim=STYLE_DIM,
    style_encoders=_style_encoders,
)

# Multimodal families the tests run on: (name, tiny options).
MULTIMODAL_FAMILIES: dict[str, dict[str, Any]] = {
    NAME: {"ngf": 4},
    "munit": {"gen_dim": 4, "n_res": 1, "mlp_dim": 8, "dis_dim": 4, "dis_n_layer": 2},
}


@contextlib.contextmanager
def registered(name: str = NAME) -> Iterator[ModelFamily]:
    """The family registered for the block (left as it was if it already was)."""
    if name != NAME:  # a real family registers itself on import
        yield get_family(name)
        return
    added = NAME not in _registry._FAMILIES
    if added:
        register_family(FAMILY)
    try:
        yield FAMILY
    finally:
        if added:
            _registry._FAMILIES.pop(NAME, None)


def multimodal_checkpoint(path: Path, family: str = NAME, seed: int = 0) -> Path:
    """A checkpoint of freshly initialised (seeded) tiny networks of a multimodal family."""
    options = MULTIMODAL_FAMILIES[family]
    with registered(family):
        torch.manual_seed(seed)
        networks = create_networks(family, options)
        payload = make_checkpoint(
            family=family,
            config={"family": family, "model": dict(options)},
            domains=["A", "B"],
            networks={name: net.state_dict() for name, net in networks.items()},
            step=1,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(payload, path)


def pytorch_style_code(checkpoint: Path, direction: str, reference: np.ndarray) -> np.ndarray:
    """The style code (1, S) PyTorch's style encoder of `direction` computes for a uint8
    (H, W, C) reference image (of a size the encoder takes)."""
    payload = torch.load(checkpoint, weights_only=True)
    with registered(payload["family"]) as family:
        _, networks = load_trained_networks(checkpoint)
        options = options_from_dict(payload["family"], payload["config"]["model"])
        assert family.style_encoders is not None
        encoder = family.style_encoders(networks, options)[direction]
        with torch.inference_mode():
            return encoder(torch.from_numpy(reference[None])).numpy()


def pytorch_translate(
    checkpoint: Path, direction: str, pixels: np.ndarray, style: np.ndarray
) -> np.ndarray:
    """PyTorch's translation of uint8 (H, W, C) pixels with float32 (K, S) styles: (K, H, W, C)."""
    payload = torch.load(checkpoint, weights_only=True)
    with registered(payload["family"]) as family:
        _, networks = load_trained_networks(checkpoint)
        options = options_from_dict(payload["family"], payload["config"]["model"])
        translator = family.translators(networks, options)[direction]
        batch = np.repeat(pixels[None], len(style), 0)
        with torch.inference_mode():
            return translator(torch.from_numpy(batch), torch.from_numpy(style)).numpy()
