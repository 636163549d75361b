"""A toy multi-domain family ("toy-md") for the multi-domain eval and demo tests.

It follows the registry's contract for multi-domain families: options with ``domains``,
``input_nc``, ``output_nc``; ``multi_domain=True``; ``conditional(networks, options)``, a
module ``forward(x float [N, C_in, H, W] in [-1, 1], domain int64 [N]) -> float [N, C_out,
H, W]``. Its output is ``x + residual(x) + bias[domain]``: a tiny conv net plus a learned
per-domain, per-channel bias, so a test can set the weights to make a translation exact
(zero residual, a bias equal to the offset between two domains). It also has the
``metrics`` hook, whose numbers `i2i eval` must report.

Like tests/multimodal_family.py, the family is NOT registered on import (the
registry-parametrised tests would then run on it): :func:`registered` adds it for a block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.models import ModelFamily, ShapeRule, create_networks, register_family
from i2i.models import registry as _registry
from i2i.training.loop import labelled_dataset

NAME = "toy-md"


@dataclass
class ToyMultiDomainOptions:
    """Architecture options of the toy multi-domain family."""

    domains: tuple[str, ...] = ()
    input_nc: int = 3
    output_nc: int = 3
    ngf: int = 4


class ToyConditional(nn.Module):
    """x + conv(relu(conv(x))) + bias[domain], on [-1, 1] images (N, C, H, W)."""

    def __init__(self, options: ToyMultiDomainOptions) -> None:
        super().__init__()
        c_in, c_out, ngf = options.input_nc, options.output_nc, options.ngf
        self.skip = c_in == c_out
        self.conv_in = nn.Conv2d(c_in, ngf, 3, padding=1)
        self.conv_out = nn.Conv2d(ngf, c_out, 3, padding=1)
        self.bias = nn.Parameter(torch.zeros(max(len(options.domains), 2), c_out))

    def forward(self, x: torch.Tensor, domain: torch.Tensor) -> torch.Tensor:
        y = self.conv_out(torch.relu(self.conv_in(x))) + self.bias[domain][:, :, None, None]
        return x + y if self.skip else y

    def set_exact_offsets(self, offsets: Sequence[float]) -> None:
        """Zero the residual and set ``bias[d]`` to ``offsets[d]`` levels (0-255 scale)."""
        with torch.no_grad():
            for conv in (self.conv_in, self.conv_out):
                conv.weight.zero_()
                conv.bias.zero_()
            for d, offset in enumerate(offsets):
                self.bias[d].fill_(offset / 127.5)


def _build(options: ToyMultiDomainOptions) -> dict[str, nn.Module]:
    return {"g": ToyConditional(options)}


def _conditional(networks: Mapping[str, nn.Module], options: Any) -> nn.Module:
    return networks["g"]


def toy_metrics(networks: Mapping[str, nn.Module], options: Any, seed: int) -> dict[str, float]:
    """The mean absolute per-domain bias (levels) and the output's mean on seeded noise."""
    g = networks["g"]
    assert isinstance(g, ToyConditional)
    noise = torch.randn(2, options.input_nc, 8, 8, generator=torch.Generator().manual_seed(seed))
    domain = torch.zeros(2, dtype=torch.int64)
    with torch.no_grad():
        out = g(noise.to(g.bias.device), domain.to(g.bias.device))
    return {
        "bias_levels": float(g.bias.detach().abs().mean()) * 127.5,
        "noise_output_mean": float(out.mean()),
    }


FAMILY = ModelFamily(
    name=NAME,
    options_type=ToyMultiDomainOptions,
    build=_build,
    generators=("g",),
    directions={},
    shape_rule=lambda options: ShapeRule(multiple_of=1, min_size=4),
    description="test-only multi-domain family: a residual conv net plus a per-domain bias",
    multi_domain=True,
    conditional=_conditional,
    metrics=toy_metrics,
)


@contextlib.contextmanager
def registered(family: ModelFamily = FAMILY) -> Iterator[ModelFamily]:
    """``family`` registered for the block (left as it was if it already was)."""
    added = family.name not in _registry._FAMILIES
    if added:
        register_family(family)
    try:
        yield family
    finally:
        if added:
            _registry._FAMILIES.pop(family.name, None)


def toy_checkpoint(
    path: Path,
    domains: Sequence[str],
    offsets: Sequence[float] | None = None,
    family: ModelFamily = FAMILY,
    seed: int = 0,
    **options: Any,
) -> Path:
    """A checkpoint of the toy: seeded random weights, or with ``offsets`` the exact model
    ``x + offsets[target]`` (levels) of :meth:`ToyConditional.set_exact_offsets`."""
    model = {"domains": list(domains), **options}
    with registered(family):
        torch.manual_seed(seed)
        networks = create_networks(family.name, model)
        if offsets is not None:
            g = networks["g"]
            assert isinstance(g, ToyConditional)
            g.set_exact_offsets(offsets)
        payload = make_checkpoint(
            family=family.name,
            config={"family": family.name, "model": model},
            domains=list(domains),
            networks={name: net.state_dict() for name, net in networks.items()},
            step=1,
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(payload, path)


class ToyTrainer:
    """A trainer for the toy (the loop's trainer interface): L1 between ``to_<own domain>``
    and the image, one Adam optimiser; on the labelled training data."""

    build_dataset = staticmethod(labelled_dataset)

    def __init__(
        self, cfg: Any, networks: Mapping[str, nn.Module], device: torch.device, wrap: Any = None
    ) -> None:
        self.g = networks["g"]
        self.device = device
        self.optimizers = {"g": torch.optim.Adam(self.g.parameters(), lr=cfg.lr)}
        self.last_visuals: dict[str, torch.Tensor] = {}

    def step(self, batch: Mapping[str, Any]) -> dict[str, float]:
        """One optimiser step; the losses."""
        x = batch["image"].to(self.device)
        domain = batch["domain"].to(self.device)
        loss = (self.g(x, domain) - x).abs().mean()
        self.optimizers["g"].zero_grad()
        loss.backward()
        self.optimizers["g"].step()
        return {"l1": float(loss.detach())}

    def visual_rows(self) -> list[tuple[str, ...]]:
        return []

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing beyond the networks and optimiser, which the loop saves."""
