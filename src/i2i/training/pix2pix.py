"""One pix2pix training step, in the reference implementation's order.

Names, with the reference's in brackets: g [netG] maps the input domain to the output
domain, d [netD] judges (input, output) pairs concatenated on channels. ``real_a`` is the
generator's input and ``real_b`` its target, whatever the ``direction``: for ``BtoA`` they
are the batch's "B" and "A" (the reference's ``set_input``). Losses: g_gan [loss_G_GAN],
g_l1 [loss_G_L1, already times lambda_l1], d_real [loss_D_real], d_fake [loss_D_fake],
d [loss_D = (d_fake + d_real) / 2, plus lambda_gp times the gradient
penalty for wgangp].

Order of one step (the reference's optimize_parameters): forward ``fake_b = g(real_a)``;
update d on the detached fake pair (through the pool; pix2pix's pool_size is 0) and the
real pair; then update g with d frozen: GAN loss of the fake pair + lambda_l1 * L1(fake_b,
real_b).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from i2i.data import AlignedDataset, TransformOptions
from i2i.models import options_from_dict
from i2i.models.pix2pix import Pix2PixOptions, domain_channels

from . import distributed
from .config import TrainConfig, loss_options
from .cyclegan import penalty_weights, set_requires_grad
from .losses import gan_loss, gradient_penalty
from .pool import ImagePool
from .steps import StepHelpers


@dataclass
class Pix2PixLossOptions:
    """The pix2pix loss weights under ``loss:`` in a config (the reference's names)."""

    lambda_l1: float = 100.0  # weight of L1(fake_b, real_b) [--lambda_L1]

    def __post_init__(self) -> None:
        if self.lambda_l1 < 0:
            raise ValueError(f"lambda_l1 must be >= 0, got {self.lambda_l1}")


class Pix2PixTrainer(StepHelpers):
    """Holds the optimisers (and the pair pool) of a pix2pix run and performs its steps.

    Args:
        cfg: the run's configuration (GAN mode, optimiser settings; ``loss.lambda_l1``).
        networks: g and d (already on `device`); these are what checkpoints store.
        device: where the batches go.
        wrap: turns a network into the module the step calls (DDP, torch.compile);
            identity by default.
    """

    network_names = ("g", "d")
    paired = True  # trains on aligned pairs (see build_dataset)

    def __init__(
        self,
        cfg: TrainConfig,
        networks: dict[str, nn.Module],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        self.cfg = cfg
        self.loss = loss_options(cfg, Pix2PixLossOptions)
        self.device = device
        self.networks = networks
        self.dist = distributed.current()
        self.b_to_a = options_from_dict("pix2pix", cfg.model).direction == "BtoA"
        wrap = wrap or (lambda m: m)
        self.g, self.d = wrap(networks["g"]), wrap(networks["d"])
        betas = (cfg.beta1, cfg.beta2)
        self.optimizers = {
            "g": torch.optim.Adam(
                networks["g"].parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay
            ),
            "d": torch.optim.Adam(
                networks["d"].parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay
            ),
        }
        self.pool = ImagePool(cfg.pool_size, seed=cfg.seed * 1_000_003 + 3)  # fake pairs
        self.scalers = self.make_scalers()
        self.last_visuals: dict[str, torch.Tensor] = {}

    @staticmethod
    def build_dataset(
        cfg: TrainConfig, options: Pix2PixOptions, transform: TransformOptions
    ) -> AlignedDataset:
        """The training pairs: ``<root>/train/`` side by side, or ``trainA/`` + ``trainB/``."""
        channels_a, channels_b = domain_channels(options)
        return AlignedDataset(
            cfg.data.root,
            phase="train",
            transform=transform,
            channels_a=channels_a,
            channels_b=channels_b,
            serial=cfg.data.serial,
            seed=cfg.seed,
            skip_bad_images=cfg.data.skip_bad_images,
        )

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step on a batch {"A": (N,C,H,W), "B": (N,C,H,W)}; returns losses."""
        mode = self.cfg.gan_mode
        source, target = ("B", "A") if self.b_to_a else ("A", "B")
        real_a, real_b = self._to_device(batch[source]), self._to_device(batch[target])
        with self.autocast():
            fake_b = self.g(real_a)

        # Discriminator: the fake pair (detached, through the pool) and the real pair.
        set_requires_grad([self.networks["d"]], True)
        self.optimizers["d"].zero_grad(set_to_none=True)
        losses: dict[str, torch.Tensor] = {}
        with self.autocast():
            fake_ab = self.pool.query(torch.cat((real_a, fake_b), 1)).detach()
            real_ab = torch.cat((real_a, real_b), 1)
            losses["d_fake"] = gan_loss(self.d(fake_ab), False, mode)
            losses["d_real"] = gan_loss(self.d(real_ab), True, mode)
            loss_d = (losses["d_fake"] + losses["d_real"]) * 0.5
            if mode == "wgangp":
                alpha = penalty_weights(real_ab, self.dist)
                loss_d = loss_d + self.cfg.lambda_gp * gradient_penalty(
                    self.d, real_ab, fake_ab, alpha=alpha
                )
        self._backward_and_step("d", loss_d)

        # Generator, with the discriminator frozen. The unwrapped discriminator is used here:
        # under DDP its gradients are not wanted (and would never be reduced).
        d_plain = self.networks["d"]
        set_requires_grad([d_plain], False)
        self.optimizers["g"].zero_grad(set_to_none=True)
        with self.autocast():
            losses["g_gan"] = gan_loss(d_plain(torch.cat((real_a, fake_b), 1)), True, mode)
            losses["g_l1"] = F.l1_loss(fake_b, real_b) * self.loss.lambda_l1
            loss_g = losses["g_gan"] + losses["g_l1"]
        self._backward_and_step("g", loss_g)
        set_requires_grad([d_plain], True)

        self.last_visuals = {
            "real_a": real_a.detach(),
            "fake_b": fake_b.detach(),
            "real_b": real_b.detach(),
        }
        out = {name: float(value.detach()) for name, value in losses.items()}
        out["d"] = float(loss_d.detach())
        out["g_total"] = float(loss_g.detach())
        return out

    def visual_rows(self) -> Iterator[tuple[str, ...]]:
        """Rows of the sample grid: input, output, truth."""
        yield ("real_a", "fake_b", "real_b")

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond networks and optimisers that an exact resume needs."""
        return {
            "pool": self.pool.state_dict(),
            "scalers": {name: s.state_dict() for name, s in self.scalers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool.load_state_dict(state["pool"], self.device)
        for name, s in self.scalers.items():
            if state["scalers"].get(name):
                s.load_state_dict(state["scalers"][name])
