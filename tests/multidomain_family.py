"""A toy multi-domain family ("toy-domains") that stands in for StarGAN in export and serving tests.

It follows the registry's contract for multi-domain families exactly: options with
``domains``, ``input_nc`` and ``output_nc``; ``multi_domain=True``; ``conditional(networks,
options)`` returns a module ``forward(x float [N, C_in, H, W], domain int64 [N]) -> float
[N, C_out, H, W]``; the default translators (one fused ``to_<domain>`` per target) come from
the registry. The generator is a tiny conv net with a learned per-domain embedding added as
a per-channel bias (an ``Embedding`` lookup, ``Gather`` in ONNX), initialised large enough
that every target visibly gives a different output even untrained.

Like ``tests/multimodal_family.py``, the family is NOT registered when this module is
imported (it would join every registry-parametrised test collected afterwards):
:func:`registered` adds it for the duration of a block; fixtures use it.
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
    options_from_dict,
    register_family,
)
from i2i.models import registry as _registry

NAME = "toy-domains"
DOMAINS = ("day", "dusk", "night")
TINY_OPTIONS: dict[str, Any] = {"ngf": 4, "domains": list(DOMAINS)}


@dataclass
class ToyDomainOptions:
    """Architecture options of the toy multi-domain family."""

    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 4
    domains: tuple[str, ...] | list[str] = ()


class ToyDomainGenerator(nn.Module):
    """conv -> + embedding(domain) -> ReLU -> conv -> tanh on [-1, 1] images (N, C, H, W)."""

    def __init__(self, input_nc: int, output_nc: int, ngf: int, num_domains: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(input_nc, ngf, 3, padding=1, padding_mode="reflect")
        self.embedding = nn.Embedding(num_domains, ngf)
        nn.init.normal_(self.embedding.weight, std=1.0)  # targets differ visibly untrained
        self.conv_out = nn.Conv2d(ngf, output_nc, 3, padding=1, padding_mode="reflect")

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        bias = self.embedding(domain)[:, :, None, None]  # (N, ngf, 1, 1)
        return torch.tanh(self.conv_out(torch.relu(self.conv_in(x) + bias)))


def _build(options: ToyDomainOptions) -> dict[str, nn.Module]:
    domains = tuple(options.domains) or DOMAINS
    return {"g": ToyDomainGenerator(options.input_nc, options.output_nc, options.ngf, len(domains))}


def _conditional(networks: Mapping[str, nn.Module], options: Any) -> nn.Module:
    return networks["g"]


FAMILY = ModelFamily(
    name=NAME,
    options_type=ToyDomainOptions,
    build=_build,
    generators=("g",),
    directions={},
    shape_rule=lambda options: ShapeRule(multiple_of=4, min_size=8),
    description="test-only multi-domain family: a tiny conv net with a per-domain bias",
    multi_domain=True,
    conditional=_conditional,
)


@contextlib.contextmanager
def registered() -> Iterator[ModelFamily]:
    """The family registered for the block (left as it was if it already was)."""
    added = NAME not in _registry._FAMILIES
    if added:
        register_family(FAMILY)
    try:
        yield FAMILY
    finally:
        if added:
            _registry._FAMILIES.pop(NAME, None)


def multidomain_checkpoint(path: Path, seed: int = 0, domains: tuple[str, ...] = DOMAINS) -> Path:
    """A checkpoint of freshly initialised (seeded) tiny networks of the toy family."""
    options = {**TINY_OPTIONS, "domains": list(domains)}
    with registered():
        torch.manual_seed(seed)
        networks = create_networks(NAME, options)
        payload = make_checkpoint(
            family=NAME,
            config={"family": NAME, "model": options},
            domains=list(domains),
            networks={name: net.state_dict() for name, net in networks.items()},
            step=1,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(payload, path)


def pytorch_translate(checkpoint: Path, pixels: np.ndarray, domains: list[int]) -> np.ndarray:
    """PyTorch's translation of uint8 (N, H, W, C) pixels into domain indices ``domains``."""
    payload = torch.load(checkpoint, weights_only=True)
    with registered() as family:
        _, networks = load_trained_networks(checkpoint)
        options = options_from_dict(NAME, payload["config"]["model"])
        whole = next(iter(family.translators(networks, options).values())).translator
        with torch.inference_mode():
            return whole(torch.from_numpy(pixels), torch.tensor(domains)).numpy()
