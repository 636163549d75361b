"""UNIT training (Liu et al. 2017), in the order and with the losses of mingyuliutw/UNIT.

Networks, with the reference's names: gen_a and gen_b are VAE-like auto-encoders
(``encode(x) -> (hiddens, noise)``, ``decode(h) -> image``), dis_a and dis_b multi-scale
discriminators (``dis(x) -> [output per scale]``). With weight sharing, gen_a and gen_b
hold the same modules for the shared layers; each parameter is optimised once.

One step, as the reference's training loop: ``dis_update`` then ``gen_update`` on the
same batch, each with its own encoder noise.

- dis_update: translate with noise (x_ba = G_a(E_b(x_b) + n), x_ab likewise) and train
  both discriminators, real against translated: ``gan_w * (dis_a + dis_b)``.
- gen_update: within-domain reconstruction (recon_x), the KL term of each encoding
  (recon_kl: ``mean(mu ** 2)``, the reference's ``__compute_kl``: a unit-variance
  Gaussian posterior), the adversarial terms, and the VAE-like cycle: re-encode each
  translation, decode it back (cyc_x) and penalise the KL of the re-encoding (recon_kl_cyc);
  optionally the domain-invariant perceptual term (vgg, see :mod:`i2i.training.vgg`).

Without the VAE (``model.vae: false``, the cogan preset) the encoders add no noise, so
both updates see deterministic codes, and the four KL terms are neither computed nor
reported; their weights must be 0 (a nonzero one is a ConfigError, not silently ignored).

Reported losses carry the reference's attribute names without ``loss_`` and are
unweighted, as the reference logs them; ``gen_total`` and ``dis_total`` are the weighted
sums that are minimised.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import nn

from . import distributed
from .config import ConfigError, TrainConfig, loss_options
from .cyclegan import set_requires_grad
from .losses import gan_loss
from .steps import StepHelpers

log = logging.getLogger(__name__)

# i2i's gan_mode -> the reference's MsImageDis gan_type (vanilla is its nsgan).
MULTISCALE_GAN_MODES = {"lsgan": "lsgan", "vanilla": "nsgan"}


def check_nonnegative(options: Any) -> None:
    """ValueError naming the first negative float field of a loss-options dataclass."""
    for f in fields(options):
        value = getattr(options, f.name)
        if isinstance(value, float) and value < 0:
            raise ValueError(f"{f.name} must be >= 0, got {value}")


@dataclass
class UNITLossOptions:
    """UNIT's loss weights (``loss.*`` keys), with the reference configs' names and values.

    ``vgg_weights``: a local VGG16 state dict, needed when ``vgg_w`` > 0 (never
    downloaded; see :mod:`i2i.training.vgg` for the layouts it reads).

    ``reuse_translations``: the discriminators' update takes the generators' update's
    translations (detached) instead of translating the batch once more with noise of its
    own, as the reference does: one translation pass fewer per step. Without the VAE
    (``model.vae: false``) the two passes compute the same images, so the translations are
    always reused there and the option changes nothing.
    """

    gan_w: float = 1.0
    recon_x_w: float = 10.0
    recon_kl_w: float = 0.01
    recon_x_cyc_w: float = 10.0
    recon_kl_cyc_w: float = 0.01
    vgg_w: float = 0.0
    vgg_weights: str = ""
    reuse_translations: bool = False

    def __post_init__(self) -> None:
        check_nonnegative(self)


def multiscale_dis_loss(
    dis: nn.Module, fake: torch.Tensor, real: torch.Tensor, mode: str
) -> torch.Tensor:
    """The reference's ``MsImageDis.calc_dis_loss``: over scales, fake toward 0, real toward 1.

    lsgan: ``sum_s mean(out_fake ** 2) + mean((out_real - 1) ** 2)``; vanilla (the
    reference's nsgan): binary cross-entropy of the logits, summed the same way.
    """
    outs_fake, outs_real = dis(fake), dis(real)
    terms = [
        gan_loss(o_fake, False, mode) + gan_loss(o_real, True, mode)
        for o_fake, o_real in zip(outs_fake, outs_real, strict=True)
    ]
    return torch.stack(terms).sum()


def multiscale_gen_loss(dis: nn.Module, fake: torch.Tensor, mode: str) -> torch.Tensor:
    """The reference's ``MsImageDis.calc_gen_loss``: every scale's output toward real."""
    return torch.stack([gan_loss(out, True, mode) for out in dis(fake)]).sum()


def recon_criterion(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference's ``recon_criterion``: mean absolute difference."""
    return torch.mean(torch.abs(output.float() - target.float()))  # float32 under autocast


def kl_loss(mu: torch.Tensor) -> torch.Tensor:
    """The reference's ``__compute_kl``: KL to N(0, I) of N(mu, I), up to a constant."""
    return torch.mean(mu.float() ** 2)  # float32 under autocast


def unique_parameters(modules: Iterable[nn.Module]) -> list[nn.Parameter]:
    """Trainable parameters of ``modules`` in order, each once (shared layers appear once)."""
    seen: set[int] = set()
    out: list[nn.Parameter] = []
    for module in modules:
        for p in module.parameters():
            if p.requires_grad and id(p) not in seen:
                seen.add(id(p))
                out.append(p)
    return out


class TwoDomainTrainer(StepHelpers):
    """What the UNIT and MUNIT trainers share: optimisers, scalers, autocast, visuals.

    Subclasses set ``loss_options_type`` and implement ``step`` and ``_make_visuals``.

    Args:
        cfg: the run's configuration; loss weights in ``cfg.loss``.
        networks: gen_a, gen_b, dis_a, dis_b (already on ``device``).
        device: where the batches go.
        wrap: turns a module into what the step calls (DDP, torch.compile).
    """

    network_names = ("gen_a", "gen_b", "dis_a", "dis_b")
    loss_options_type: type[Any] = UNITLossOptions

    def __init__(
        self,
        cfg: TrainConfig,
        networks: dict[str, nn.Module],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        if cfg.gan_mode not in MULTISCALE_GAN_MODES:
            raise ConfigError(
                f"gan_mode={cfg.gan_mode!r}: {cfg.family} trains with "
                f"{' or '.join(MULTISCALE_GAN_MODES)} (the reference's lsgan and nsgan)"
            )
        missing = [n for n in self.network_names if n not in networks]
        if missing:
            raise ConfigError(f"{cfg.family}: networks {', '.join(missing)} are missing")
        _check_crop_fits_discriminators(cfg)
        self.cfg = cfg
        self.loss = loss_options(cfg, self.loss_options_type)
        self.device = device
        self.networks = networks
        self.dist = distributed.current()
        self.wrap = wrap or (lambda m: m)
        self.dis_a, self.dis_b = self.wrap(networks["dis_a"]), self.wrap(networks["dis_b"])

        def adam(modules: list[nn.Module]) -> torch.optim.Adam:
            return torch.optim.Adam(
                unique_parameters(modules),
                lr=cfg.lr,
                betas=(cfg.beta1, cfg.beta2),
                weight_decay=cfg.weight_decay,
            )

        # The reference's order: dis_opt over dis_a then dis_b, gen_opt over gen_a then gen_b.
        self.optimizers = {
            "dis": adam([networks["dis_a"], networks["dis_b"]]),
            "gen": adam([networks["gen_a"], networks["gen_b"]]),
        }
        self.scalers = self.make_scalers()
        self.vgg: nn.Module | None = None
        if self.loss.vgg_w > 0:
            from .vgg import load_perceptual_network

            options = _model_options(cfg)
            if options.input_nc != 3 or options.output_nc != 3:
                raise ConfigError(
                    f"loss.vgg_w={self.loss.vgg_w}: the perceptual term needs RGB images in "
                    f"both domains (input_nc {options.input_nc}, output_nc {options.output_nc})"
                )
            self.vgg = load_perceptual_network(self.loss.vgg_weights).to(device)
        elif self.loss.vgg_weights:
            log.warning("loss.vgg_weights is set but loss.vgg_w is 0: no perceptual term")
        # loss.reuse_translations: the discriminators learn from the generators' pass.
        self.reuse: bool = self.loss.reuse_translations
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None
        self._visuals: dict[str, torch.Tensor] | None = None

    def _translate_and_update_dis(
        self,
        x_a: torch.Tensor,
        x_b: torch.Tensor,
        full: Callable[[], dict[str, torch.Tensor]],
        fakes: Callable[[], dict[str, torch.Tensor]],
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """The discriminators' update, and the generators' pass it learnt from when reused.

        With ``self.reuse`` the generators' whole pass (``full``, with gradients) runs first,
        the discriminators learn from its (detached) translations, and it is returned for the
        generators' update; otherwise they learn from a no-grad pass of their own
        (``fakes``: the translations only, the references' order) and None is returned.
        Either callable returns a dict with ``x_ba`` and ``x_ab``.
        """
        shared: dict[str, torch.Tensor] | None = None
        if self.reuse:
            with self.autocast():
                shared = translated = full()
        else:
            with torch.no_grad(), self.autocast():
                translated = fakes()
        return self._dis_update(x_a, translated["x_ba"], x_b, translated["x_ab"]), shared

    def _dis_update(
        self, x_a: torch.Tensor, x_ba: torch.Tensor, x_b: torch.Tensor, x_ab: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Train both discriminators on real images against (detached) translations."""
        mode = self.cfg.gan_mode
        self.optimizers["dis"].zero_grad(set_to_none=True)
        with self.autocast():
            loss_a = multiscale_dis_loss(self.dis_a, x_ba.detach(), x_a, mode)
            loss_b = multiscale_dis_loss(self.dis_b, x_ab.detach(), x_b, mode)
            total = self.loss.gan_w * loss_a + self.loss.gan_w * loss_b
        self._backward_and_step("dis", total)
        return {"dis_a": loss_a, "dis_b": loss_b, "dis_total": total}

    def _gen_update(
        self, compute: Callable[[], dict[str, torch.Tensor]], weights: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        """Minimise ``sum(weights[k] * losses[k])`` over the generators, discriminators frozen.

        ``compute`` runs under autocast and returns the unweighted losses.
        """
        plain = [self.networks["dis_a"], self.networks["dis_b"]]
        set_requires_grad(plain, False)
        try:
            self.optimizers["gen"].zero_grad(set_to_none=True)
            with self.autocast():
                losses = compute()
                total = sum(
                    (weights[k] * v for k, v in losses.items()),
                    torch.zeros((), device=self.device),
                )
            self._backward_and_step("gen", total)
        finally:
            set_requires_grad(plain, True)
        losses["gen_total"] = total
        return losses

    def _perceptual(self, img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assert self.vgg is not None
        from .vgg import perceptual_loss

        return perceptual_loss(self.vgg, img, target)

    def _finish_step(
        self, x_a: torch.Tensor, x_b: torch.Tensor, losses: dict[str, torch.Tensor]
    ) -> dict[str, float]:
        self._batch = (x_a.detach(), x_b.detach())
        self._visuals = None
        return {name: float(value.detach()) for name, value in losses.items()}

    @property
    def last_visuals(self) -> dict[str, torch.Tensor]:
        """Sample images of the last step's batch, computed when first asked for.

        Computed in eval mode without gradients, inside a forked RNG: asking for them
        does not change the training's random stream (an exact resume does not depend on
        when samples were written).
        """
        if self._batch is None:
            return {}
        if self._visuals is None:
            nets = list(self.networks.values())
            modes = [net.training for net in nets]
            devices = [self.device] if self.device.type == "cuda" else []
            try:
                with torch.random.fork_rng(devices=devices), torch.no_grad():
                    for net in nets:
                        net.eval()
                    with self.autocast():
                        self._visuals = {
                            k: v.detach() for k, v in self._make_visuals(*self._batch).items()
                        }
            finally:
                for net, mode in zip(nets, modes, strict=True):
                    net.train(mode)
        return self._visuals

    def _make_visuals(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything beyond networks, optimisers and RNGs that an exact resume needs."""
        return {"scalers": {name: s.state_dict() for name, s in self.scalers.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, s in self.scalers.items():
            if state["scalers"].get(name):
                s.load_state_dict(state["scalers"][name])


def _check_crop_fits_discriminators(cfg: TrainConfig) -> None:
    """ConfigError, before any step, when the training crops are too small for the
    multi-scale discriminators (each scale halves the image; each layer halves it again)."""
    from i2i.models.unit_blocks import discriminator_min_size

    if cfg.data.preprocess not in ("crop", "resize_and_crop", "scale_width_and_crop"):
        return  # whole images: their size is only known when they are read
    options = _model_options(cfg)
    least = discriminator_min_size(options.dis_n_layer, options.num_scales)
    if cfg.data.crop_size < least:
        raise ConfigError(
            f"data.crop_size={cfg.data.crop_size} is too small for the discriminators "
            f"(model.dis_n_layer={options.dis_n_layer}, model.num_scales={options.num_scales} "
            f"need crops of at least {least} px): use larger crops, or fewer layers or scales"
        )


def _model_options(cfg: TrainConfig) -> Any:
    from i2i.models import options_from_dict

    try:
        return options_from_dict(cfg.family, cfg.model)
    except (KeyError, ValueError) as exc:
        raise ConfigError(f"model: {exc.args[0] if exc.args else exc}") from exc


class UNITGenerators(nn.Module):
    """gen_a and gen_b as one module, so DDP and torch.compile see the whole computation.

    ``forward(x_a, x_b)`` returns the noisy translations; with ``full`` also the
    within-domain reconstructions (unless ``recon`` is false), the re-encodings of the
    translations and, with ``cycle``, the cycle reconstructions. Every decoding gets the
    image that was encoded (used by ``model.global_skip``). The encoders draw their noise (in the reference's
    order: x_a, x_b, then x_ba, x_ab) from torch's global RNG; with more than one rank,
    for the global batch, each rank keeping its rows (see distributed.rank_slice).
    """

    def __init__(
        self, gen_a: nn.Module, gen_b: nn.Module, info: distributed.DistInfo | None = None
    ) -> None:
        super().__init__()
        # Any: the networks' encode/decode are not part of nn.Module's type.
        self.gen_a: Any = gen_a
        self.gen_b: Any = gen_b
        self.info = info or distributed.DistInfo()

    def _encode(self, gen: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``gen.encode(x)``, its noise drawn for the global batch under DDP."""
        if not self.info.enabled:
            return gen.encode(x)  # type: ignore[no-any-return]
        hiddens = gen.enc(x)
        if not (gen.training and gen.vae):
            return hiddens, torch.zeros_like(hiddens)
        shape = (distributed.global_batch(hiddens.shape[0], self.info), *hiddens.shape[1:])
        # randn_like fills in memory order: the global draw takes hiddens' layout (channels
        # last or not), as one process's gen.encode (randn_like(hiddens)) does.
        layout = (
            torch.channels_last
            if not hiddens.is_contiguous()
            and hiddens.is_contiguous(memory_format=torch.channels_last)
            else torch.contiguous_format
        )
        template = torch.empty(
            shape, dtype=hiddens.dtype, device=hiddens.device, memory_format=layout
        )
        noise = torch.randn_like(template)
        return hiddens, distributed.rank_slice(noise, self.info)

    def forward(
        self,
        x_a: torch.Tensor,
        x_b: torch.Tensor,
        full: bool = False,
        cycle: bool = False,
        recon: bool = True,
    ) -> dict[str, torch.Tensor]:
        h_a, n_a = self._encode(self.gen_a, x_a)
        h_b, n_b = self._encode(self.gen_b, x_b)
        out = {
            "h_a": h_a,
            "h_b": h_b,
            "x_ba": self.gen_a.decode(h_b + n_b, x_b),
            "x_ab": self.gen_b.decode(h_a + n_a, x_a),
        }
        if not full:
            return out
        if recon:
            out["x_a_recon"] = self.gen_a.decode(h_a + n_a, x_a)
            out["x_b_recon"] = self.gen_b.decode(h_b + n_b, x_b)
        h_b_recon, n_b_recon = self._encode(self.gen_a, out["x_ba"])
        h_a_recon, n_a_recon = self._encode(self.gen_b, out["x_ab"])
        out["h_a_recon"], out["h_b_recon"] = h_a_recon, h_b_recon
        if cycle:
            out["x_aba"] = self.gen_a.decode(h_a_recon + n_a_recon, out["x_ab"])
            out["x_bab"] = self.gen_b.decode(h_b_recon + n_b_recon, out["x_ba"])
        return out


class UNITTrainer(TwoDomainTrainer):
    """Holds the optimisers of a UNIT run and performs its steps (see the module docstring)."""

    loss_options_type = UNITLossOptions

    def __init__(
        self,
        cfg: TrainConfig,
        networks: dict[str, nn.Module],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        super().__init__(cfg, networks, device, wrap)
        self.vae = bool(getattr(networks["gen_a"], "vae", True))
        if not self.vae and (self.loss.recon_kl_w or self.loss.recon_kl_cyc_w):
            raise ConfigError(
                f"model.vae=false has no KL terms: set loss.recon_kl_w and "
                f"loss.recon_kl_cyc_w to 0 (got {self.loss.recon_kl_w} and "
                f"{self.loss.recon_kl_cyc_w})"
            )
        # Deterministic encoders: the discriminators' own pass would compute the same images.
        self.reuse = self.reuse or not self.vae
        self.gens = self.wrap(UNITGenerators(networks["gen_a"], networks["gen_b"], self.dist))

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One step (dis_update, then gen_update) on {"A": (N,C,H,W), "B": ...}; losses.

        With ``recon_x_w`` 0 the within-domain reconstructions (decodings of their own) are
        not computed nor logged, as the cycle at ``recon_x_cyc_w`` 0; with
        ``reuse_translations`` (always without the VAE) the generators' forward pass runs
        first and the discriminators learn from its translations.
        """
        w = self.loss
        x_a, x_b = self._to_device(batch["A"]), self._to_device(batch["B"])
        cycle, recon = w.recon_x_cyc_w > 0, w.recon_x_w > 0

        def translate() -> dict[str, torch.Tensor]:
            return self.gens(x_a, x_b, full=True, cycle=cycle, recon=recon)  # type: ignore[no-any-return]

        losses, shared = self._translate_and_update_dis(
            x_a, x_b, translate, lambda: self.gens(x_a, x_b)
        )

        dis_a, dis_b = self.networks["dis_a"], self.networks["dis_b"]
        mode = self.cfg.gan_mode

        def compute() -> dict[str, torch.Tensor]:
            out = shared if shared is not None else translate()
            terms = {}
            if recon:
                terms["gen_recon_x_a"] = recon_criterion(out["x_a_recon"], x_a)
                terms["gen_recon_x_b"] = recon_criterion(out["x_b_recon"], x_b)
            if self.vae:
                terms["gen_recon_kl_a"] = kl_loss(out["h_a"])
                terms["gen_recon_kl_b"] = kl_loss(out["h_b"])
                terms["gen_recon_kl_cyc_aba"] = kl_loss(out["h_a_recon"])
                terms["gen_recon_kl_cyc_bab"] = kl_loss(out["h_b_recon"])
            terms["gen_adv_a"] = multiscale_gen_loss(dis_a, out["x_ba"], mode)
            terms["gen_adv_b"] = multiscale_gen_loss(dis_b, out["x_ab"], mode)
            if cycle:
                terms["gen_cyc_x_a"] = recon_criterion(out["x_aba"], x_a)
                terms["gen_cyc_x_b"] = recon_criterion(out["x_bab"], x_b)
            if self.vgg is not None:
                terms["gen_vgg_a"] = self._perceptual(out["x_ba"], x_b)
                terms["gen_vgg_b"] = self._perceptual(out["x_ab"], x_a)
            return terms

        weights = {
            "gen_recon_x_a": w.recon_x_w,
            "gen_recon_x_b": w.recon_x_w,
            "gen_recon_kl_a": w.recon_kl_w,
            "gen_recon_kl_b": w.recon_kl_w,
            "gen_recon_kl_cyc_aba": w.recon_kl_cyc_w,
            "gen_recon_kl_cyc_bab": w.recon_kl_cyc_w,
            "gen_adv_a": w.gan_w,
            "gen_adv_b": w.gan_w,
            "gen_cyc_x_a": w.recon_x_cyc_w,
            "gen_cyc_x_b": w.recon_x_cyc_w,
            "gen_vgg_a": w.vgg_w,
            "gen_vgg_b": w.vgg_w,
        }
        losses.update(self._gen_update(compute, weights))
        return self._finish_step(x_a, x_b, losses)

    def _make_visuals(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """As the reference's ``sample``: the encoder means, no noise; plus the cycle."""
        gen_a: Any = self.networks["gen_a"]
        gen_b: Any = self.networks["gen_b"]
        h_a, _ = gen_a.encode(x_a)
        h_b, _ = gen_b.encode(x_b)
        x_ab, x_ba = gen_b.decode(h_a, x_a), gen_a.decode(h_b, x_b)
        return {
            "x_a": x_a,
            "x_a_recon": gen_a.decode(h_a, x_a),
            "x_ab": x_ab,
            "x_aba": gen_a.decode(gen_b.encode(x_ab)[0], x_ab),
            "x_b": x_b,
            "x_b_recon": gen_b.decode(h_b, x_b),
            "x_ba": x_ba,
            "x_bab": gen_b.decode(gen_a.encode(x_ba)[0], x_ba),
        }

    def visual_rows(self) -> Iterator[tuple[str, ...]]:
        """Rows of the sample grid: input, reconstruction, translation, cycle."""
        yield ("x_a", "x_a_recon", "x_ab", "x_aba")
        yield ("x_b", "x_b_recon", "x_ba", "x_bab")
