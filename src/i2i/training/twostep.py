"""Two-step training (Dong et al., seed 004): an AC-GAN over all domains, then the encoder.

Step 1 (the epochs, on the labelled images): each step draws ``z ~ U(-1, 1)`` and random
target domains ``c``, makes ``fake = g(z, c)``, updates d on the real batch (real/fake
and its true domains) and the detached fakes (fake, and their drawn domains, as in the
AC-GAN paper; ``loss.d_cls_fake: false`` keeps the seed paper's equation 2, reals only),
then updates g with d frozen: real/fake toward real plus the domains it was asked for.

Step 2 (``loss.encoder_steps`` more steps, after the epochs, reading no data): g is frozen
in eval mode; each step draws a batch of ``(z, c)`` over every domain, and e learns
``MSE(e(g(z, c)), z)``. The loop calls ``step(None)`` for these steps (see
:func:`i2i.training.loop.trainer_class`, ``plan_steps``).

With ``loss.lambda_rec`` > 0 (joint step 1) e trains in step 1 too, on the photos: one
pass of g draws the samples, the photos' reconstructions ``g(e(x), s)`` and their
translations to other domains; d judges the translations beside the samples, and g and e
minimise one loss (GAN and domain terms of both, ``lambda_rec`` x L1 of the
reconstructions, and in the colour form the cross-entropy of e's domain head).

Losses, unweighted: d_real, d_fake, d_cls_real, d_cls_fake, g_gan, g_cls (step 1; joint:
also g_rec and, in the colour form, e_cls) and e_mse (step 2; the colour form: also
e_cls); ``d`` and ``g_total`` are the weighted sums minimised in step 1.

Starting at step 2: ``loss.generator_checkpoint: PATH`` loads g and d from a two-step
checkpoint (any i2i checkpoint of this family, read weights-only) and the run trains the
encoder only. The trainer state (``phase``, the latent sampler's RNG, e's optimiser and
scaler) makes resume exact in either step. e's optimiser is the trainer's own: in a joint
step 1 it runs at g's scheduled rate (set from g's before every step), in step 2 at the
constant ``lr`` (the paper's Adam for step 2), which the loop's epoch schedules do not
reach.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from i2i.checkpoint import CheckpointError, load_checkpoint
from i2i.models import options_from_dict
from i2i.models.twostep import TwoStepOptions, colour_change, sample_latents

from . import distributed
from .config import ConfigError, TrainConfig, loss_options
from .cyclegan import set_requires_grad
from .ema import GeneratorEMA
from .loop import labelled_dataset
from .losses import gan_loss
from .steps import StepHelpers

log = logging.getLogger(__name__)

GAN_MODES = ("vanilla", "lsgan")


@dataclass
class TwoStepLossOptions:
    """The two-step model's ``loss.*`` keys."""

    lambda_cls: float = 1.0  # weight of the domain-classification terms (d and g)
    d_cls_fake: bool = True  # d also classifies the fakes (AC-GAN); false: reals only
    encoder_steps: int = 20_000  # step 2's length (the paper's 20,000)
    generator_checkpoint: str = ""  # a step-1 checkpoint: skip step 1, train e on its g
    # > 0: step 1 also trains e, on the photos: L1 of g(e(x), s) to x at this weight, and
    # the translations of the photos to other domains face d like the samples do.
    lambda_rec: float = 0.0

    def __post_init__(self) -> None:
        if self.lambda_cls < 0:
            raise ValueError(f"lambda_cls must be >= 0, got {self.lambda_cls}")
        if self.lambda_rec < 0:
            raise ValueError(f"lambda_rec must be >= 0, got {self.lambda_rec}")
        if self.encoder_steps < 0:
            raise ValueError(f"encoder_steps must be >= 0, got {self.encoder_steps}")


class TwoStepTrainer(StepHelpers):
    """Holds the optimisers and the latent sampler of a two-step run and performs its steps.

    Args:
        cfg: the run's configuration (``loss.*`` as :class:`TwoStepLossOptions`).
        networks: g, d and e (already on ``device``); these are what checkpoints store.
        device: where the batches go.
        wrap: turns a network into the module the step calls (DDP, torch.compile).
    """

    network_names = ("g", "d", "e")
    average: GeneratorEMA | None = None  # the run's average of the generators (the loop sets it)
    build_dataset = staticmethod(labelled_dataset)

    def __init__(
        self,
        cfg: TrainConfig,
        networks: dict[str, nn.Module],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        if cfg.gan_mode not in GAN_MODES:
            raise ConfigError(
                f"gan_mode={cfg.gan_mode!r}: the two-step model trains with "
                f"{' or '.join(GAN_MODES)}"
            )
        self.cfg = cfg
        self.loss = loss_options(cfg, TwoStepLossOptions)
        self.options: TwoStepOptions = options_from_dict("twostep", cfg.model)
        self.device = device
        self.networks = networks
        self.dist = distributed.current()
        wrap = wrap or (lambda m: m)
        self.g, self.d, self.e = (wrap(networks[n]) for n in ("g", "d", "e"))
        betas = (cfg.beta1, cfg.beta2)

        def adam(name: str) -> torch.optim.Optimizer:
            return torch.optim.Adam(
                networks[name].parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay
            )

        # g and d follow the loop's schedule over the epochs of step 1; e is stepped here.
        self.optimizers = {"g": adam("g"), "d": adam("d")}
        self.encoder_optimizer = adam("e")
        self.scalers = self.make_scalers()
        self.scalers["e"] = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
        self.rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 11)  # z and c draws
        self.joint = self.loss.lambda_rec > 0
        self.colour = self.options.translation == "colour"
        if self.joint and self.loss.generator_checkpoint:
            raise ConfigError(
                "loss.lambda_rec trains e in step 1; a run from loss.generator_checkpoint has "
                "no step 1 (set lambda_rec: 0 there)"
            )
        self.phase = 1
        self._visuals: dict[str, torch.Tensor] = {}
        self._reconstruct: tuple[torch.Tensor, torch.Tensor] | None = None
        if self.loss.generator_checkpoint:
            self._load_generator(self.loss.generator_checkpoint)

    def plan_steps(self, data_steps: int) -> tuple[int, int]:
        """(steps that read a batch, steps in all): step 1 takes the epochs' steps, step 2
        ``encoder_steps`` more; from a generator checkpoint, step 2 only."""
        if self.loss.generator_checkpoint:
            return 0, self.loss.encoder_steps
        return data_steps, data_steps + self.loss.encoder_steps

    def _load_generator(self, path: str) -> None:
        try:
            checkpoint = load_checkpoint(path)
        except CheckpointError as exc:
            raise ConfigError(f"loss.generator_checkpoint: {exc}") from exc
        if checkpoint["family"] != "twostep":
            raise ConfigError(
                f"loss.generator_checkpoint: {path} is a {checkpoint['family']!r} checkpoint, "
                "not a two-step one"
            )
        saved = list(checkpoint["domains"])
        if saved != list(self.options.domains):
            raise ConfigError(
                f"loss.generator_checkpoint: {path} was trained on domains {saved}; this run "
                f"has {list(self.options.domains)} (set model.domains to the checkpoint's)"
            )
        if "g" not in checkpoint["networks"]:
            raise ConfigError(f"loss.generator_checkpoint: {path} holds no generator g")
        # g's moving average, where the step-1 run kept one, is the g that run's eval and
        # export use, so it is the g the encoder learns to invert; d stays raw.
        averaged = checkpoint.get("ema", {}).get("g")
        log.info(
            "step 2 inverts the %s g of %s", "averaged" if averaged is not None else "raw", path
        )
        for name in ("g", "d"):
            if name not in checkpoint["networks"]:
                continue
            state = (
                averaged if name == "g" and averaged is not None else checkpoint["networks"][name]
            )
            try:
                self.networks[name].load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(
                    f"loss.generator_checkpoint: {path}: network {name!r} does not match this "
                    f"run's model options ({str(exc).splitlines()[0]}); use the step-1 run's "
                    "model section"
                ) from exc
        log.info("step 2 from %s (step %d of its run)", path, checkpoint["step"])

    def step(self, batch: dict[str, Any] | None) -> dict[str, float]:
        """One step: step 1 on a labelled batch, step 2 (the encoder) when batch is None."""
        if batch is None:
            return self._encoder_step()
        if self.phase != 1:
            raise RuntimeError("a batch of images arrived in step 2, which trains on samples")
        return self._gan_step(batch)

    def _draw(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """n latents and target domains: drawn for the global batch from the trainer's
        stream (the same on every rank), this rank's rows (see distributed.rank_slice)."""
        z, domains = sample_latents(distributed.global_batch(n, self.dist), self.options, self.rng)
        z, domains = (
            distributed.rank_slice(z, self.dist),
            distributed.rank_slice(domains, self.dist),
        )
        return z.to(self.device), domains.to(self.device)

    def _encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(e's code, its domain logits in the colour form, else None), one call of e."""
        if self.colour:
            z, logits = self.e(x, True)
            return z, logits
        return self.e(x), None

    def _other_domains(self, labels: torch.Tensor) -> torch.Tensor:
        """A target for each photo, uniform over the domains other than its own (from the
        trainer's stream, drawn for the global batch like the latents)."""
        k = self.options.num_domains
        n = labels.shape[0]
        shift = torch.randint(1, k, (distributed.global_batch(n, self.dist),), generator=self.rng)
        return (labels + distributed.rank_slice(shift, self.dist).to(self.device)) % k

    def _translate_photos(
        self, real: torch.Tensor, labels: torch.Tensor, z: torch.Tensor, fake_labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Joint step 1: (samples g(z, c), translations of the photos, their targets, the
        reconstructions g(e(x), s), e's domain logits or None). One pass of g over the
        samples and both codes of the photos, so its batch norm sees one batch."""
        n = real.shape[0]
        targets = self._other_domains(labels)
        code, logits = self._encode(real)
        out = self.g(torch.cat((z, code, code)), torch.cat((fake_labels, targets, labels)))
        fake, moved, recon = out[:n], out[n : 2 * n], out[2 * n :]
        # Colour: the photo with the colour change between its two renderings, the function
        # inference computes (colour_translation), here with the photo's true domain as the
        # source and g's batch norm in training mode; d judges that image.
        trans = colour_change(real, recon, moved) if self.colour else moved
        return fake, trans, targets, recon, logits

    def _gan_step(self, batch: dict[str, Any]) -> dict[str, float]:
        mode, lam = self.cfg.gan_mode, self.loss.lambda_cls
        real = self._to_device(batch["image"])
        labels = batch["domain"].to(self.device)
        z, fake_labels = self._draw(real.shape[0])
        recon: torch.Tensor | None = None
        logits: torch.Tensor | None = None
        with self.autocast():
            if self.joint:
                fake, trans, targets, recon, logits = self._translate_photos(
                    real, labels, z, fake_labels
                )
                # d and g see the samples and the translations as one batch of fakes.
                fake = torch.cat((fake, trans))
                fake_labels = torch.cat((fake_labels, targets))
            else:
                fake = self.g(z, fake_labels)

        # Discriminator: real images with their domains, detached fakes with theirs.
        set_requires_grad([self.networks["d"]], True)
        self.optimizers["d"].zero_grad(set_to_none=True)
        losses: dict[str, torch.Tensor] = {}
        with self.autocast():
            src_real, cls_real = self.d(real)
            src_fake, cls_fake = self.d(fake.detach())
            losses["d_real"] = gan_loss(src_real, True, mode)
            losses["d_fake"] = gan_loss(src_fake, False, mode)
            losses["d_cls_real"] = F.cross_entropy(cls_real.float(), labels)
            losses["d_cls_fake"] = F.cross_entropy(cls_fake.float(), fake_labels)
            cls_d = losses["d_cls_real"]
            if self.loss.d_cls_fake:
                cls_d = cls_d + losses["d_cls_fake"]
            loss_d = losses["d_real"] + losses["d_fake"] + lam * cls_d
        self._backward_and_step("d", loss_d)

        # Generator, d frozen (the unwrapped d: under DDP its gradients are not wanted).
        d_plain = self.networks["d"]
        set_requires_grad([d_plain], False)
        self.optimizers["g"].zero_grad(set_to_none=True)
        with self.autocast():
            src, cls = d_plain(fake)
            losses["g_gan"] = gan_loss(src, True, mode)
            losses["g_cls"] = F.cross_entropy(cls.float(), fake_labels)
            loss_g = losses["g_gan"] + lam * losses["g_cls"]
            if recon is not None:
                losses["g_rec"] = F.l1_loss(recon.float(), real.float())
                loss_g = loss_g + self.loss.lambda_rec * losses["g_rec"]
            if logits is not None:  # e's domain head: weight 1, whatever lambda_cls says
                losses["e_cls"] = F.cross_entropy(logits.float(), labels)
                loss_g = loss_g + losses["e_cls"]
        also: list[torch.optim.Optimizer] = []
        if self.joint:
            # g and e minimise one loss: one scaler, both optimisers, e at g's scheduled rate.
            for group in self.encoder_optimizer.param_groups:
                group["lr"] = self.optimizers["g"].param_groups[0]["lr"]
            self.encoder_optimizer.zero_grad(set_to_none=True)
            also.append(self.encoder_optimizer)
        self._backward_and_step("g", loss_g, also)
        set_requires_grad([d_plain], True)

        n = real.shape[0]
        self._visuals = {"real": real.detach(), "fake": fake[:n].detach()}
        if recon is not None:
            self._visuals["translation"] = fake[n:].detach()
            self._visuals["reconstruction"] = recon.detach()
        self._reconstruct = None
        out = {name: float(value.detach()) for name, value in losses.items()}
        out["d"] = float(loss_d.detach())
        out["g_total"] = float(loss_g.detach())
        return out

    def _enter_step2(self) -> None:
        """Freeze g (eval mode: its batch norm uses the statistics step 1 gathered) and d;
        e learns at the constant ``lr`` (a joint step 1 ran it at g's scheduled rate)."""
        self.phase = 2
        for group in self.encoder_optimizer.param_groups:
            group["lr"] = self.cfg.lr
        self.networks["g"].eval()
        set_requires_grad([self.networks["g"], self.networks["d"]], False)

    def _encoder_step(self) -> dict[str, float]:
        if self.phase == 1:
            log.info("step 2: training the encoder on the generator's samples")
            if self.average is not None:
                # The exported pair is the averaged g with e: e must learn to invert that g.
                log.info("step 2 freezes the average of g (ema_decay) as g")
                self.average.adopt("g")
            self._enter_step2()
        z, domains = self._draw(self.cfg.batch_size)
        with torch.no_grad(), self.autocast():
            samples = self.networks["g"](z, domains)
        if self.cfg.channels_last:
            samples = samples.contiguous(memory_format=torch.channels_last)
        self.encoder_optimizer.zero_grad(set_to_none=True)
        out: dict[str, float] = {}
        with self.autocast():
            z_hat, logits = self._encode(samples)
            loss = F.mse_loss(z_hat.float(), z)
            out["e_mse"] = float(loss.detach())
            if logits is not None:  # e's domain head learns the samples' domains too
                e_cls = F.cross_entropy(logits.float(), domains)
                out["e_cls"] = float(e_cls.detach())
                loss = loss + e_cls
        scaler = self.scalers["e"]
        scaler.scale(loss).backward()
        scaler.step(self.encoder_optimizer)
        scaler.update()
        self._visuals = {"sample": samples.detach()}
        self._reconstruct = (z_hat.detach().float(), domains)
        return out

    @property
    def last_visuals(self) -> dict[str, torch.Tensor]:
        """The last step's images; in step 2 also g(e(sample)), made only when asked for."""
        if self._reconstruct is not None and "reconstruction" not in self._visuals:
            z_hat, domains = self._reconstruct
            with torch.no_grad():  # g is in eval mode: nothing it holds changes
                self._visuals["reconstruction"] = self.networks["g"](z_hat, domains)
        return self._visuals

    def visual_rows(self) -> Iterator[tuple[str, ...]]:
        """Step 1: real images, then fakes (with ``lambda_rec``: the photos' reconstructions
        and translations too); step 2: samples, then g(e(sample), c)."""
        if self.phase != 1:
            yield ("sample", "reconstruction")
        elif self.joint:
            yield ("real", "reconstruction", "translation", "fake")
        else:
            yield ("real", "fake")

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond networks and the g/d optimisers that an exact resume needs."""
        return {
            "phase": self.phase,
            "rng": self.rng.get_state(),
            "encoder_optimizer": self.encoder_optimizer.state_dict(),
            "scalers": {name: s.state_dict() for name, s in self.scalers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.set_state(state["rng"])
        self.encoder_optimizer.load_state_dict(state["encoder_optimizer"])
        for name, s in self.scalers.items():
            if state["scalers"].get(name):
                s.load_state_dict(state["scalers"][name])
        if int(state["phase"]) == 2:
            self._enter_step2()
