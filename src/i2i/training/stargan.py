"""StarGAN training (Choi et al., 2018), in the order and with the losses of yunjey/stargan.

Every step trains the discriminator d (the reference's iteration ``i``); every
``n_critic``-th step (``(i + 1) % n_critic == 0``) then trains the generator g on the same
batch. Each image of the batch gets a random target domain ``c_trg`` (uniform over the
domains) and its own interpolation weight for the gradient penalty, both drawn from the
trainer's own generator, which checkpoints store with the step counter: a resumed run is
the uninterrupted one, bit for bit.

d step (minimised: ``d = d_real + d_fake + lambda_cls * d_cls + lambda_gp * d_gp``):

- ``d_real = -mean(src(x))`` and ``d_fake = mean(src(g(x, c_trg)))``: the WGAN critic
  (with ``model.domain_critic``, src of a real image is its domain's map and src of a
  translation its target's, see :func:`i2i.models.stargan.critic_map`; so in g_fake and in
  the penalty, which uses the target's map);
- ``d_cls``: cross-entropy of d's domain logits of the real image against its domain;
- ``d_gp = mean((||grad_x_hat src(x_hat)||_2 - 1) ** 2)`` on ``x_hat = a x + (1 - a) fake``,
  ``a ~ U(0, 1)`` per image; the input gradient is taken with ``create_graph=True`` so the
  penalty's own gradient reaches d's weights.

g step (``g_total = g_fake + lambda_rec * g_rec + lambda_cls * g_cls``, d frozen):

- ``g_fake = -mean(src(g(x, c_trg)))``;
- ``g_cls``: cross-entropy of d's logits of the translation against ``c_trg``;
- ``g_rec = mean(|x - g(g(x, c_trg), c_org)|)``, the reconstruction (cycle) loss.

Logged terms are unweighted, as the reference logs them; ``d`` and ``g_total`` are the
weighted sums. The g terms appear on the steps that train g only.

Mixed precision. Under ``amp: fp16`` the input gradient of the penalty is taken of the
*scaled* critic output (so small fp16 gradients do not flush to zero) and unscaled before
the norm, which is computed in float32, as PyTorch's AMP recipe for gradient penalties
does (see :func:`input_gradient_penalty`); a step whose scaled gradients still overflow
gives an infinite penalty, and the GradScaler then skips the update and lowers its scale,
as for any other overflow. Under ``bf16`` there is no scaler.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from i2i.data import LabelledDataset, TransformOptions
from i2i.models import options_from_dict
from i2i.models.stargan import StarGANOptions, critic_map, one_hot

from . import distributed
from .config import ConfigError, TrainConfig, loss_options
from .cyclegan import set_requires_grad
from .loop import labelled_dataset
from .steps import StepHelpers

log = logging.getLogger(__name__)

# The default of TrainConfig.lambda_gp: the top-level key is CycleGAN/pix2pix's, StarGAN's
# weight is loss.lambda_gp.
_TOP_LEVEL_LAMBDA_GP = 10.0


@dataclass
class StarGANLossOptions:
    """StarGAN's loss weights and critic schedule (``loss.*`` keys; the reference's names)."""

    lambda_cls: float = 1.0  # domain classification, in both the d and the g loss
    lambda_rec: float = 10.0  # reconstruction L1, g(g(x, c_trg), c_org) against x
    lambda_gp: float = 10.0  # gradient penalty of the critic
    n_critic: int = 5  # d steps per g step
    # Not in the reference: the learning rate of g's colour transform (model.colour_transform)
    # is lr times this; its few entries start at zero and must move far (up to ~1).
    colour_lr_mult: float = 1.0

    def __post_init__(self) -> None:
        for key in ("lambda_cls", "lambda_rec", "lambda_gp", "colour_lr_mult"):
            if getattr(self, key) < 0:
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        if self.n_critic < 1:
            raise ValueError(f"n_critic must be >= 1, got {self.n_critic}")


def input_gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    x_hat: torch.Tensor,
    scaler: torch.amp.GradScaler | None = None,
) -> torch.Tensor:
    """``mean((||d critic(x_hat).sum() / d x_hat||_2 - 1) ** 2)`` over the batch,
    differentiable in the critic's weights (``create_graph=True``); ``x_hat`` must require
    grad.

    With an enabled ``scaler`` (fp16), the gradient is taken of the scaled *mean* output
    (each output's gradient is then ``scale / n``, where the sum's ``scale`` would overflow
    fp16) and multiplied by ``n / scale`` in float32: the same penalty, computed without
    underflow or overflow.
    """
    out = critic(x_hat)
    if scaler is None or not scaler.is_enabled():
        # grad_outputs of ones, as the reference's
        (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    else:
        scale = float(scaler.get_scale())
        scaled = scaler.scale(out.float().mean())
        (grad,) = torch.autograd.grad(scaled, x_hat, create_graph=True)
        grad = grad.float() * (out.numel() / scale)
    grad = grad.float().flatten(1)
    return ((grad.norm(2, dim=1) - 1.0) ** 2).mean()


class StarGANTrainer(StepHelpers):
    """Holds the optimisers, the random stream and the step counter of a StarGAN run.

    Args:
        cfg: the run's configuration (Adam settings; ``loss.*``, see StarGANLossOptions).
        networks: g and d (already on ``device``); these are what checkpoints store.
        device: where the batches go.
        wrap: turns a network into the module the step calls (DDP, torch.compile).
    """

    network_names = ("g", "d")

    def __init__(
        self,
        cfg: TrainConfig,
        networks: dict[str, nn.Module],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        if cfg.gan_mode != "wgangp":
            raise ConfigError(
                f"gan_mode={cfg.gan_mode!r}: StarGAN trains a WGAN-GP critic; set gan_mode: wgangp"
            )
        if cfg.lambda_gp != _TOP_LEVEL_LAMBDA_GP:
            raise ConfigError(
                f"lambda_gp={cfg.lambda_gp}: StarGAN's gradient-penalty weight is "
                "loss.lambda_gp; leave the top-level lambda_gp at its default"
            )
        if cfg.pool_size:
            raise ConfigError(
                f"pool_size={cfg.pool_size}: StarGAN has no image pool; set pool_size: 0"
            )
        self.cfg = cfg
        self.loss = loss_options(cfg, StarGANLossOptions)
        self.options: StarGANOptions = options_from_dict("stargan", cfg.model)
        self.num_domains = self.options.num_domains
        self.device = device
        self.networks = networks
        self.dist = distributed.current()
        wrap = wrap or (lambda m: m)
        self.g, self.d = wrap(networks["g"]), wrap(networks["d"])
        if self.loss.colour_lr_mult != 1.0 and not self.options.colour_transform:
            log.warning(
                "loss.colour_lr_mult is %s but model.colour_transform is off: g has no "
                "colour transform, so the multiplier changes nothing",
                self.loss.colour_lr_mult,
            )
        betas = (cfg.beta1, cfg.beta2)
        self.optimizers = {
            name: torch.optim.Adam(
                self._param_groups(networks[name], cfg.lr),
                lr=cfg.lr,
                betas=betas,
                weight_decay=cfg.weight_decay,
            )
            for name in ("g", "d")
        }
        self.scalers = self.make_scalers()
        # Targets and penalty interpolation weights: a stream of their own, saved with the
        # step counter, so resuming does not depend on what else drew random numbers.
        self.generator = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 11)
        self.steps = 0  # d steps done; g trains when (steps + 1) % n_critic == 0
        self.last_visuals: dict[str, torch.Tensor] = {}

    @staticmethod
    def build_dataset(
        cfg: TrainConfig, options: StarGANOptions, transform: TransformOptions
    ) -> LabelledDataset:
        """Images labelled by domain folder (see :func:`i2i.training.loop.labelled_dataset`)."""
        if transform.preprocess.endswith("crop") and transform.crop_size != options.image_size:
            raise ConfigError(
                f"data.crop_size={transform.crop_size} but model.image_size="
                f"{options.image_size}: StarGAN's discriminator is built for image_size "
                "square images; make them equal"
            )
        dataset: LabelledDataset = labelled_dataset(cfg, options, transform)
        return dataset

    def draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's random target domains (int64 (n,)) and penalty weights ((n, 1, 1, 1)),
        drawn for the global batch from the trainer's stream (the same on every rank); this
        rank's rows (see distributed.rank_slice)."""
        total = distributed.global_batch(n, self.dist)
        target = torch.randint(0, self.num_domains, (total,), generator=self.generator)
        alpha = torch.rand(total, 1, 1, 1, generator=self.generator)
        target = distributed.rank_slice(target, self.dist)
        alpha = distributed.rank_slice(alpha, self.dist)
        return target.to(self.device), alpha.to(self.device)

    def _param_groups(self, net: nn.Module, lr: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups: one, or with ``loss.colour_lr_mult`` other than
        1 two, g's colour transform (``colour_weight``, ``colour_bias``) second at ``lr``
        times the multiplier (the schedule scales both groups alike)."""
        colour_names = ("colour_weight", "colour_bias")
        colour = [p for name, p in net.named_parameters() if name in colour_names]
        if not colour or self.loss.colour_lr_mult == 1.0:
            return [{"params": list(net.parameters())}]
        rest = [p for name, p in net.named_parameters() if name not in colour_names]
        return [{"params": rest}, {"params": colour, "lr": lr * self.loss.colour_lr_mult}]

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One d step, and a g step every n_critic-th call, on ``{"image", "domain"}``."""
        x_real = self._to_device(batch["image"])
        size = self.options.image_size
        if tuple(x_real.shape[-2:]) != (size, size):
            raise ValueError(
                f"StarGAN's discriminator takes {size}x{size} images (model.image_size), got "
                f"{x_real.shape[-2]}x{x_real.shape[-1]}: crop the training images to "
                "image_size (data.crop_size)"
            )
        label_org = batch["domain"].to(self.device)
        label_trg, alpha = self.draw(x_real.shape[0])
        c_org = one_hot(label_org, self.num_domains, torch.float32)
        c_trg = one_hot(label_trg, self.num_domains, torch.float32)
        lw = self.loss
        losses: dict[str, torch.Tensor] = {}

        # Discriminator.
        set_requires_grad([self.networks["d"]], True)
        self.optimizers["d"].zero_grad(set_to_none=True)
        with self.autocast():
            out_src, out_cls = self.d(x_real)
            losses["d_real"] = -critic_map(out_src, label_org).float().mean()
            losses["d_cls"] = F.cross_entropy(out_cls.float(), label_org)
            with torch.no_grad():
                x_fake = self.g(x_real, c_trg)
            out_src, _ = self.d(x_fake)
            losses["d_fake"] = critic_map(out_src, label_trg).float().mean()
        x_hat = (alpha * x_real + (1 - alpha) * x_fake.float()).requires_grad_(True)
        # The penalty goes through the plain d: torch.compile cannot differentiate twice, and
        # under DDP the penalty's gradient still reaches the reducer, summed with the other
        # terms' into each weight's one gradient of this backward pass.
        d_plain = self.networks["d"]
        with self.autocast():
            losses["d_gp"] = input_gradient_penalty(
                lambda x: critic_map(d_plain(x)[0], label_trg), x_hat, scaler=self.scalers["d"]
            )
        loss_d = (
            losses["d_real"]
            + losses["d_fake"]
            + lw.lambda_cls * losses["d_cls"]
            + lw.lambda_gp * losses["d_gp"]
        )
        self._backward_and_step("d", loss_d)
        out = {name: float(value.detach()) for name, value in losses.items()}
        out["d"] = float(loss_d.detach())
        visuals = {"real": x_real.detach(), "fake": x_fake.detach()}

        # Generator, every n_critic-th step, with d frozen. The unwrapped d is used: under
        # DDP its gradients are not wanted (and would never be reduced).
        if (self.steps + 1) % lw.n_critic == 0:
            set_requires_grad([d_plain], False)
            self.optimizers["g"].zero_grad(set_to_none=True)
            with self.autocast():
                x_fake = self.g(x_real, c_trg)
                out_src, out_cls = d_plain(x_fake)
                g_terms = {
                    "g_fake": -critic_map(out_src, label_trg).float().mean(),
                    "g_cls": F.cross_entropy(out_cls.float(), label_trg),
                }
                x_rec = self.g(x_fake, c_org)
                g_terms["g_rec"] = torch.mean(torch.abs(x_real - x_rec.float()))
                loss_g = (
                    g_terms["g_fake"]
                    + lw.lambda_rec * g_terms["g_rec"]
                    + lw.lambda_cls * g_terms["g_cls"]
                )
            self._backward_and_step("g", loss_g)
            set_requires_grad([d_plain], True)
            out.update({name: float(value.detach()) for name, value in g_terms.items()})
            out["g_total"] = float(loss_g.detach())
            visuals = {"real": x_real.detach(), "fake": x_fake.detach(), "rec": x_rec.detach()}

        self.steps += 1
        if "rec" in visuals or "rec" not in self.last_visuals:
            self.last_visuals = visuals
        return out

    def visual_rows(self) -> Iterator[tuple[str, ...]]:
        """Rows of the sample grid: input, its translation into a random domain, and (once g
        has trained) the translation back into the input's domain."""
        yield tuple(name for name in ("real", "fake", "rec") if name in self.last_visuals)

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond networks and optimisers that an exact resume needs."""
        return {
            "steps": self.steps,
            "generator": self.generator.get_state(),
            "scalers": {name: s.state_dict() for name, s in self.scalers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.generator.set_state(state["generator"])
        for name, s in self.scalers.items():
            if state["scalers"].get(name):
                s.load_state_dict(state["scalers"][name])
