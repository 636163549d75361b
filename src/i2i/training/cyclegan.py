"""One CycleGAN training step, in the reference implementation's order.

Names, with the reference's in brackets: g_ab [netG_A] maps A to B, g_ba [netG_B] maps
B to A, d_b [netD_A] tells real B from fake B, d_a [netD_B] tells real A from fake A.
Losses: gan_ab [loss_G_A], gan_ba [loss_G_B], cycle_a, cycle_b, idt_ab [loss_idt_A: g_ab
fed real B], idt_ba [loss_idt_B], d_b [loss_D_A], d_a [loss_D_B].

Order of one step (as the reference's optimize_parameters): forward both cycles;
update both generators with the discriminators frozen; then update both discriminators
on real images and on fakes drawn through the image pools.

``loss.n_critic`` (default 1: the above, every step) trains the discriminators more often
than the generators, as WGAN-GP critics are: the generators are updated on steps 1,
1 + n_critic, 1 + 2 n_critic, ... (counting from 1; the step above), and every other step
only updates the discriminators, on fakes of the current generators. Such a step reports
the generator losses of the last generator step along with its own discriminator losses,
and the sample images stay those of the last generator step. The step counter is part of
the trainer's state, so a resumed run keeps the schedule.

Options for short runs (``loss.*``, all off by default, so the reference recipe is unchanged):
``loss.lr_warmup_steps`` ramps both optimisers' learning rates linearly from 1/W to 1 of the
scheduled rate over the first W steps (:func:`warmup_factor`; the logged ``lr_*`` stays the
scheduled rate); ``loss.identity_boost`` B with ``loss.identity_boost_steps`` S weighs the
identity term ``lambda_identity * B`` at the first step, decaying linearly to
``lambda_identity`` at step S (:func:`identity_weight`), which holds the generators near the
identity while the discriminators are still learning.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from . import distributed
from .config import ConfigError, TrainConfig, loss_options
from .losses import gan_loss, gradient_penalty, reconstruction_loss
from .pool import ImagePool
from .steps import StepHelpers


@dataclass
class CycleGANLossOptions:
    """CycleGAN's ``loss.*`` keys. Its loss weights are top-level keys (``lambda_a``,
    ``lambda_b``, ``lambda_identity``, ``cycle_loss``, ``lambda_gp``); this holds the rest.

    ``n_critic``: discriminator updates per generator update (1: CycleGAN's alternation;
    the DualGAN preset's WGAN-GP critic takes more).
    """

    n_critic: int = 1
    lr_warmup_steps: int = 0  # 0: no warm-up
    identity_boost: float = 1.0  # 1: lambda_identity throughout
    identity_boost_steps: int = 0

    def __post_init__(self) -> None:
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be at least 1, got {self.n_critic}")
        if self.lr_warmup_steps < 0 or self.identity_boost_steps < 0:
            raise ValueError(
                "lr_warmup_steps and identity_boost_steps must be >= 0, got "
                f"{self.lr_warmup_steps} and {self.identity_boost_steps}"
            )
        if self.identity_boost < 1.0:
            raise ValueError(f"identity_boost must be at least 1, got {self.identity_boost}")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """The learning-rate multiplier of step `step` (counting from 0): (step + 1) / W for the
    first W steps, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


def identity_weight(step: int, base: float, boost: float, boost_steps: int) -> float:
    """The identity weight of step `step` (from 0): base * boost at step 0, linearly down to
    base at step `boost_steps`, base after."""
    if boost_steps <= 0 or boost == 1.0:
        return base
    left = max(0.0, 1.0 - step / boost_steps)
    return base * (1.0 + (boost - 1.0) * left)


def set_requires_grad(nets: list[nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class CycleGANTrainer(StepHelpers):
    """Holds the optimisers and image pools of a CycleGAN run and performs its steps.

    Args:
        cfg: the run's configuration (loss weights, GAN mode, optimiser settings).
        networks: g_ab, g_ba, d_a, d_b (already on `device`); these are what checkpoints store.
        device: where the batches go.
        wrap: turns a network into the module the step calls (DDP, torch.compile);
            identity by default.
    """

    network_names = ("g_ab", "g_ba", "d_a", "d_b")

    def __init__(
        self,
        cfg: TrainConfig,
        networks: dict[str, nn.Module],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        allowed = {f.name for f in fields(CycleGANLossOptions)}
        misplaced = [key for key in cfg.loss if key not in allowed]
        if misplaced:
            raise ConfigError(
                f"loss: CycleGAN takes its loss weights from the top-level keys (lambda_a, "
                f"lambda_b, lambda_identity, cycle_loss, lambda_gp); its loss section takes "
                f"{', '.join('loss.' + k for k in sorted(allowed))} only, not "
                f"loss.{', loss.'.join(misplaced)}"
            )
        _check_crop_fits_discriminators(cfg)
        self.cfg = cfg
        self.loss = loss_options(cfg, CycleGANLossOptions)
        self.device = device
        self.networks = networks
        self.dist = distributed.current()
        wrap = wrap or (lambda m: m)
        self.g_ab, self.g_ba = wrap(networks["g_ab"]), wrap(networks["g_ba"])
        self.d_a, self.d_b = wrap(networks["d_a"]), wrap(networks["d_b"])
        betas = (cfg.beta1, cfg.beta2)
        self.optimizers = {
            "g": torch.optim.Adam(
                itertools.chain(networks["g_ab"].parameters(), networks["g_ba"].parameters()),
                lr=cfg.lr,
                betas=betas,
                weight_decay=cfg.weight_decay,
            ),
            # Reference order: D_A (our d_b) then D_B (our d_a).
            "d": torch.optim.Adam(
                itertools.chain(networks["d_b"].parameters(), networks["d_a"].parameters()),
                lr=cfg.lr,
                betas=betas,
                weight_decay=cfg.weight_decay,
            ),
        }
        self.pool_a = ImagePool(cfg.pool_size, seed=cfg.seed * 1_000_003 + 1)  # fakes of A
        self.pool_b = ImagePool(cfg.pool_size, seed=cfg.seed * 1_000_003 + 2)  # fakes of B
        self.scalers = self.make_scalers()
        self.last_visuals: dict[str, torch.Tensor] = {}
        self.steps_done = 0  # steps taken, for the n_critic schedule
        self.last_g_losses: dict[str, float] = {}  # reported again on critic-only steps

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One optimisation step on a batch {"A": (N,C,H,W), "B": (N,C,H,W)}; returns losses.

        Updates the generators and then the discriminators, or with ``loss.n_critic`` > 1
        only the discriminators on all but every n_critic-th step (see the module docstring).
        """
        factor = warmup_factor(self.steps_done, self.loss.lr_warmup_steps)
        if factor == 1.0:
            return self._step(batch)
        scheduled = [
            [group["lr"] for group in opt.param_groups] for opt in self.optimizers.values()
        ]
        try:
            for opt in self.optimizers.values():
                for group in opt.param_groups:
                    group["lr"] *= factor
            return self._step(batch)
        finally:  # the schedulers own the rate: give it back unchanged
            for opt, rates in zip(self.optimizers.values(), scheduled, strict=True):
                for group, rate in zip(opt.param_groups, rates, strict=True):
                    group["lr"] = rate

    def _step(self, batch: dict[str, Any]) -> dict[str, float]:
        """The step itself, at the learning rates the optimisers hold now."""
        cfg = self.cfg
        real_a, real_b = self._to_device(batch["A"]), self._to_device(batch["B"])
        generator_step = self.steps_done % self.loss.n_critic == 0
        lambda_identity = identity_weight(
            self.steps_done,
            cfg.lambda_identity,
            self.loss.identity_boost,
            self.loss.identity_boost_steps,
        )
        self.steps_done += 1
        if not generator_step:
            return self._critic_step(real_a, real_b)
        with self.autocast():
            fake_b = self.g_ab(real_a)
            rec_a = self.g_ba(fake_b)
            fake_a = self.g_ba(real_b)
            rec_b = self.g_ab(fake_a)

        # Generators, with the discriminators frozen. The unwrapped discriminators are used
        # here: under DDP their gradients are not wanted (and would never be reduced).
        d_a_plain, d_b_plain = self.networks["d_a"], self.networks["d_b"]
        set_requires_grad([d_a_plain, d_b_plain], False)
        self.optimizers["g"].zero_grad(set_to_none=True)
        losses: dict[str, torch.Tensor] = {}
        with self.autocast():
            if lambda_identity > 0:
                idt_ab = self.g_ab(real_b)
                idt_ba = self.g_ba(real_a)
                losses["idt_ab"] = (
                    reconstruction_loss(idt_ab, real_b, cfg.cycle_loss)
                    * cfg.lambda_b
                    * lambda_identity
                )
                losses["idt_ba"] = (
                    reconstruction_loss(idt_ba, real_a, cfg.cycle_loss)
                    * cfg.lambda_a
                    * lambda_identity
                )
            losses["gan_ab"] = gan_loss(d_b_plain(fake_b), True, cfg.gan_mode)
            losses["gan_ba"] = gan_loss(d_a_plain(fake_a), True, cfg.gan_mode)
            losses["cycle_a"] = reconstruction_loss(rec_a, real_a, cfg.cycle_loss) * cfg.lambda_a
            losses["cycle_b"] = reconstruction_loss(rec_b, real_b, cfg.cycle_loss) * cfg.lambda_b
            loss_g = sum(losses.values(), torch.zeros((), device=self.device))
        self._backward_and_step("g", loss_g)

        # Discriminators, on real images and pooled fakes.
        set_requires_grad([d_a_plain, d_b_plain], True)
        losses.update(self._update_discriminators(real_a, real_b, fake_a, fake_b))

        self.last_visuals = {
            "real_a": real_a.detach(),
            "fake_b": fake_b.detach(),
            "rec_a": rec_a.detach(),
            "real_b": real_b.detach(),
            "fake_a": fake_a.detach(),
            "rec_b": rec_b.detach(),
        }
        out = {name: float(value.detach()) for name, value in losses.items()}
        out["g_total"] = float(loss_g.detach())
        self.last_g_losses = {k: v for k, v in out.items() if k not in ("d_a", "d_b")}
        return out

    def _critic_step(self, real_a: torch.Tensor, real_b: torch.Tensor) -> dict[str, float]:
        """Update only the discriminators, on fakes of the current generators."""
        with torch.no_grad(), self.autocast():
            fake_b = self.g_ab(real_a)
            fake_a = self.g_ba(real_b)
        losses = self._update_discriminators(real_a, real_b, fake_a, fake_b)
        out = dict(self.last_g_losses)
        out.update({name: float(value.detach()) for name, value in losses.items()})
        return out

    def _update_discriminators(
        self,
        real_a: torch.Tensor,
        real_b: torch.Tensor,
        fake_a: torch.Tensor,
        fake_b: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One optimiser step of both discriminators: real images against pooled fakes."""
        self.optimizers["d"].zero_grad(set_to_none=True)
        with self.autocast():
            d_b = self._discriminator_loss(self.d_b, real_b, self.pool_b.query(fake_b))
            d_a = self._discriminator_loss(self.d_a, real_a, self.pool_a.query(fake_a))
        self._backward_and_step("d", d_b + d_a)
        return {"d_b": d_b, "d_a": d_a}

    def _discriminator_loss(
        self, net: nn.Module, real: torch.Tensor, fake: torch.Tensor
    ) -> torch.Tensor:
        mode = self.cfg.gan_mode
        loss = (gan_loss(net(real), True, mode) + gan_loss(net(fake.detach()), False, mode)) * 0.5
        if mode == "wgangp":
            alpha = penalty_weights(real, self.dist)
            loss = loss + self.cfg.lambda_gp * gradient_penalty(net, real, fake, alpha=alpha)
        return loss

    def visual_rows(self) -> Iterator[tuple[str, ...]]:
        """Rows of the sample grid: each row a sequence of visual names."""
        yield ("real_a", "fake_b", "rec_a")
        yield ("real_b", "fake_a", "rec_b")

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond networks and optimisers that an exact resume needs."""
        return {
            "pool_a": self.pool_a.state_dict(),
            "pool_b": self.pool_b.state_dict(),
            "scalers": {name: s.state_dict() for name, s in self.scalers.items()},
            "steps_done": self.steps_done,
            "last_g_losses": dict(self.last_g_losses),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pool_a.load_state_dict(state["pool_a"], self.device)
        self.pool_b.load_state_dict(state["pool_b"], self.device)
        # Checkpoints from before n_critic lack the counter; they could only have n_critic 1,
        # where it has no effect.
        self.steps_done = int(state.get("steps_done", 0))
        self.last_g_losses = dict(state.get("last_g_losses", {}))
        for name, s in self.scalers.items():
            if state["scalers"].get(name):
                s.load_state_dict(state["scalers"][name])


def penalty_weights(real: torch.Tensor, info: distributed.DistInfo) -> torch.Tensor:
    """The gradient penalty's interpolation weights, (N, 1, 1, 1) ~ U(0, 1), from torch's
    RNG: drawn for the global batch, this rank's rows (the draw of one process otherwise)."""
    n = distributed.global_batch(real.shape[0], info)
    alpha = torch.rand(n, 1, 1, 1, device=real.device, dtype=real.dtype)
    return distributed.rank_slice(alpha, info)


def _check_crop_fits_discriminators(cfg: TrainConfig) -> None:
    """ConfigError, before any step, when training crops are smaller than DiscoGAN's
    discriminator takes (64 px)."""
    from i2i.models.networks import DiscoGANDiscriminator

    if cfg.model.get("netD") != "discogan":
        return
    if cfg.data.preprocess not in ("crop", "resize_and_crop", "scale_width_and_crop"):
        return  # whole images: their size is only known when they are read
    least = DiscoGANDiscriminator.min_size
    if cfg.data.crop_size < least:
        raise ConfigError(
            f"data.crop_size={cfg.data.crop_size} is too small for model.netD=discogan, which "
            f"takes images of at least {least} px: use larger crops or another netD"
        )
