"""Shared export fixtures: tiny translators, exported once per session and reused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from i2i.export import export_onnx
from i2i.export.parity import parity_images
from i2i.models import (
    ImageTranslator,
    ShapeRule,
    build_generator,
    create_networks,
    get_family,
    list_families,
    options_from_dict,
)
from i2i.models.cyclegan import generator_shape_rule
from tests.conftest import TINY_MODEL_OPTIONS as TINY_OPTIONS

# (arch, norm, input channels, output channels): both generator kinds, both norms, and
# grayscale on either side.
GENERATOR_CASES = [
    ("resnet_6blocks", "batch", 1, 3),
    ("unet_128", "instance", 3, 1),
    ("unet_128", "batch", 3, 3),
]


@dataclass
class Exported:
    """A tiny translator and its exported FP32 graph."""

    key: str
    translator: nn.Module
    shape_rule: ShapeRule
    channels: int
    path: Path
    info: dict[str, Any]
    style_dim: int = 0  # multimodal translators: S of their style input


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny networks run faster on one thread; intra-op threads only spin on two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def calibrate_batchnorm(generator: nn.Module, channels: int, size: int) -> nn.Module:
    """Give batch norm layers real running statistics, then switch to eval mode.

    Freshly initialised statistics (mean 0, variance 1) shrink the signal at every layer
    and the output is a flat grey, which any export would match; calibrated ones keep it
    alive, as a trained network's are.
    """
    layers = [m for m in generator.modules() if isinstance(m, nn.BatchNorm2d)]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a plain average over the calibration batch
    images = parity_images(np.random.default_rng(99), 4, size, size, channels)
    generator.train()
    with torch.no_grad():
        generator(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1)
    for layer in layers:
        layer.momentum = 0.1
    return generator.eval()


def generator_translator(arch: str, norm: str, in_channels: int, out_channels: int) -> nn.Module:
    """A seeded tiny (ngf 4) generator of ``arch`` wrapped as a translator."""
    torch.manual_seed(0)
    generator = build_generator(arch, in_channels, out_channels, ngf=4, norm=norm)
    rule = generator_shape_rule(arch)
    calibrate_batchnorm(generator, in_channels, rule.fixed_size or 32)
    return ImageTranslator(generator).eval()


def family_translators(name: str, seed: int = 0) -> tuple[dict[str, nn.Module], ShapeRule]:
    """A registered family's translators at its tiny options, and its shape rule."""
    family = get_family(name)
    options = options_from_dict(name, TINY_OPTIONS[name])
    torch.manual_seed(seed)
    networks = create_networks(name, options)
    return family.translators(networks, options), family.shape_rule(options)


def family_cases() -> list[str]:
    """``family/direction`` for every direction of every registered family."""
    return [
        f"{name}/{direction}"
        for name in list_families()
        for direction in get_family(name).directions
    ]


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Exported]:
    """``exported(key)``: the export of a family direction (``"cyclegan/A2B"``) or of a
    generator case (``"unet_128-batch-3-3"``), made on first use and cached."""
    folder = tmp_path_factory.mktemp("exported")
    cache: dict[str, Exported] = {}

    def get(key: str) -> Exported:
        if key not in cache:
            style_dim = 0
            if "/" in key:
                name, direction = key.split("/")
                translators, rule = family_translators(name)
                translator = translators[direction]
                style_dim = get_family(name).style_dim
            else:
                arch, norm, cin, cout = key.split("-")
                translator = generator_translator(arch, norm, int(cin), int(cout))
                rule = generator_shape_rule(arch)
            channels = int(getattr(translator, "in_channels", 3))
            path = folder / f"{key.replace('/', '.')}.onnx"
            info = export_onnx(translator, path, rule, channels, style_dim=style_dim)
            cache[key] = Exported(key, translator, rule, channels, path, info, style_dim)
        return cache[key]

    return get


def generator_keys() -> list[str]:
    return ["-".join(str(part) for part in case) for case in GENERATOR_CASES]
