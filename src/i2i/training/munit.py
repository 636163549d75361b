"""MUNIT training (Huang et al. 2018), in the order and with the losses of NVlabs/MUNIT.

Networks, with the reference's names: gen_a and gen_b split an image into content and
style (``encode(x) -> (content, style)``, style of shape (N, S, 1, 1)) and decode a
content with a style through AdaIN (``decode(content, style) -> image``); dis_a and dis_b
are multi-scale discriminators.

One step, as the reference's training loop: ``dis_update`` then ``gen_update`` on the
same batch, each drawing its own random styles s_a, s_b ~ N(0, I) from torch's global RNG
(saved in checkpoints, so a resumed run draws the same styles).

- dis_update: translate with random styles (x_ba = G_a(c_b, s_a), x_ab = G_b(c_a, s_b))
  and train both discriminators, real against translated: ``gan_w * (dis_a + dis_b)``.
- gen_update: within-domain image reconstruction (recon_x), cross-domain translation
  with random styles, then re-encoding of the translations: content reconstruction
  (recon_c: the translation keeps its source's content) and style reconstruction
  (recon_s: the random style is recovered), the adversarial terms, and optionally the
  explicit style-augmented cycle (cycrecon_x: decode the re-encoded content with the
  original style) and the domain-invariant perceptual term (vgg).

Reported losses carry the reference's attribute names without ``loss_`` and are
unweighted, as the reference logs them; ``gen_total`` and ``dis_total`` are the weighted
sums that are minimised.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from . import distributed
from .config import TrainConfig
from .unit import (
    TwoDomainTrainer,
    _model_options,
    check_nonnegative,
    multiscale_gen_loss,
    recon_criterion,
)


@dataclass
class MUNITLossOptions:
    """MUNIT's loss weights (``loss.*`` keys), with the reference configs' names.

    Defaults are those of the reference's default config (edges2handbags_folder.yaml);
    its summer2winter and synthia2cityscape configs set ``recon_x_cyc_w: 10`` (and the
    latter ``vgg_w: 1``). ``vgg_weights``: a local VGG16 state dict, needed when ``vgg_w``
    > 0 (never downloaded; see :mod:`i2i.training.vgg`).

    ``reuse_translations``: the discriminators' update takes the generators' update's
    translations (detached, the same random styles) instead of translating the batch once
    more with styles of its own, as the reference does: one translation pass fewer per
    step, and one pair of styles drawn instead of two.
    """

    gan_w: float = 1.0
    recon_x_w: float = 10.0
    recon_s_w: float = 1.0
    recon_c_w: float = 1.0
    recon_x_cyc_w: float = 0.0
    vgg_w: float = 0.0
    vgg_weights: str = ""
    reuse_translations: bool = False

    def __post_init__(self) -> None:
        check_nonnegative(self)


class MUNITGenerators(nn.Module):
    """gen_a and gen_b as one module, so DDP and torch.compile see the whole computation.

    ``forward(x_a, x_b, s_a, s_b)`` returns the translations with the given styles; with
    ``full`` also the within-domain reconstructions (unless ``recon`` is false) and the
    re-encodings of the translations and, with ``cycle``, the style-augmented cycle
    reconstructions. Every decoding gets the image whose content it decodes (used by
    ``model.global_skip``).
    """

    def __init__(self, gen_a: nn.Module, gen_b: nn.Module) -> None:
        super().__init__()
        # Any: the networks' encode/decode are not part of nn.Module's type.
        self.gen_a: Any = gen_a
        self.gen_b: Any = gen_b

    def forward(
        self,
        x_a: torch.Tensor,
        x_b: torch.Tensor,
        s_a: torch.Tensor,
        s_b: torch.Tensor,
        full: bool = False,
        cycle: bool = False,
        recon: bool = True,
    ) -> dict[str, torch.Tensor]:
        c_a, s_a_prime = self.gen_a.encode(x_a)
        c_b, s_b_prime = self.gen_b.encode(x_b)
        out = {
            "c_a": c_a,
            "c_b": c_b,
            "x_ba": self.gen_a.decode(c_b, s_a, x_b),
            "x_ab": self.gen_b.decode(c_a, s_b, x_a),
        }
        if not full:
            return out
        if recon:
            out["x_a_recon"] = self.gen_a.decode(c_a, s_a_prime, x_a)
            out["x_b_recon"] = self.gen_b.decode(c_b, s_b_prime, x_b)
        c_b_recon, s_a_recon = self.gen_a.encode(out["x_ba"])
        c_a_recon, s_b_recon = self.gen_b.encode(out["x_ab"])
        out.update(c_a_recon=c_a_recon, c_b_recon=c_b_recon)
        out.update(s_a_recon=s_a_recon, s_b_recon=s_b_recon)
        if cycle:
            out["x_aba"] = self.gen_a.decode(c_a_recon, s_a_prime, out["x_ab"])
            out["x_bab"] = self.gen_b.decode(c_b_recon, s_b_prime, out["x_ba"])
        return out


class MUNITTrainer(TwoDomainTrainer):
    """Holds the optimisers of a MUNIT run and performs its steps (see the module docstring)."""

    loss_options_type = MUNITLossOptions

    def __init__(
        self,
        cfg: TrainConfig,
        networks: dict[str, nn.Module],
        device: torch.device,
        wrap: Callable[[nn.Module], nn.Module] | None = None,
    ) -> None:
        super().__init__(cfg, networks, device, wrap)
        self.style_dim = int(_model_options(cfg).style_dim)
        self.gens = self.wrap(MUNITGenerators(networks["gen_a"], networks["gen_b"]))
        # Fixed styles for the sample grid (the reference fixes its display styles too),
        # from their own generator so that drawing them leaves the training RNG alone.
        g = torch.Generator().manual_seed(cfg.seed)
        self.display_styles = torch.randn(4, self.style_dim, 1, 1, generator=g).to(device)

    def _random_styles(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """s_a, s_b ~ N(0, I), (n, S, 1, 1) each, from the global RNG (the reference's order),
        drawn for the global batch; this rank's rows (see distributed.rank_slice)."""
        total = distributed.global_batch(n, self.dist)
        s_a = torch.randn(total, self.style_dim, 1, 1, device=self.device)
        s_b = torch.randn(total, self.style_dim, 1, 1, device=self.device)
        return distributed.rank_slice(s_a, self.dist), distributed.rank_slice(s_b, self.dist)

    def step(self, batch: dict[str, Any]) -> dict[str, float]:
        """One step (dis_update, then gen_update) on {"A": (N,C,H,W), "B": ...}; losses.

        With ``recon_x_w`` 0 the within-domain reconstructions (decodings of their own) are
        not computed nor logged, as the cycle at ``recon_x_cyc_w`` 0; with
        ``reuse_translations`` the generators' forward pass runs first and the
        discriminators learn from its translations.
        """
        w = self.loss
        x_a, x_b = self._to_device(batch["A"]), self._to_device(batch["B"])
        cycle, recon = w.recon_x_cyc_w > 0, w.recon_x_w > 0

        def translate(s_a: torch.Tensor, s_b: torch.Tensor) -> dict[str, torch.Tensor]:
            out = self.gens(x_a, x_b, s_a, s_b, full=True, cycle=cycle, recon=recon)
            return out | {"s_a": s_a, "s_b": s_b}  # type: ignore[no-any-return]

        n = x_a.shape[0]
        # Each pass draws its styles when it runs: the reference's order without reuse.
        losses, shared = self._translate_and_update_dis(
            x_a,
            x_b,
            lambda: translate(*self._random_styles(n)),
            lambda: self.gens(x_a, x_b, *self._random_styles(n)),
        )

        dis_a, dis_b = self.networks["dis_a"], self.networks["dis_b"]
        mode = self.cfg.gan_mode
        styles = self._random_styles(n) if shared is None else None

        def compute() -> dict[str, torch.Tensor]:
            out = shared if styles is None else translate(*styles)
            assert out is not None
            s_a, s_b = out["s_a"], out["s_b"]
            terms = {}
            if recon:
                terms["gen_recon_x_a"] = recon_criterion(out["x_a_recon"], x_a)
                terms["gen_recon_x_b"] = recon_criterion(out["x_b_recon"], x_b)
            terms |= {
                "gen_recon_s_a": recon_criterion(out["s_a_recon"], s_a),
                "gen_recon_s_b": recon_criterion(out["s_b_recon"], s_b),
                "gen_recon_c_a": recon_criterion(out["c_a_recon"], out["c_a"]),
                "gen_recon_c_b": recon_criterion(out["c_b_recon"], out["c_b"]),
                "gen_adv_a": multiscale_gen_loss(dis_a, out["x_ba"], mode),
                "gen_adv_b": multiscale_gen_loss(dis_b, out["x_ab"], mode),
            }
            if cycle:
                terms["gen_cycrecon_x_a"] = recon_criterion(out["x_aba"], x_a)
                terms["gen_cycrecon_x_b"] = recon_criterion(out["x_bab"], x_b)
            if self.vgg is not None:
                terms["gen_vgg_a"] = self._perceptual(out["x_ba"], x_b)
                terms["gen_vgg_b"] = self._perceptual(out["x_ab"], x_a)
            return terms

        weights = {
            "gen_recon_x_a": w.recon_x_w,
            "gen_recon_x_b": w.recon_x_w,
            "gen_recon_s_a": w.recon_s_w,
            "gen_recon_s_b": w.recon_s_w,
            "gen_recon_c_a": w.recon_c_w,
            "gen_recon_c_b": w.recon_c_w,
            "gen_adv_a": w.gan_w,
            "gen_adv_b": w.gan_w,
            "gen_cycrecon_x_a": w.recon_x_cyc_w,
            "gen_cycrecon_x_b": w.recon_x_cyc_w,
            "gen_vgg_a": w.vgg_w,
            "gen_vgg_b": w.vgg_w,
        }
        losses.update(self._gen_update(compute, weights))
        return self._finish_step(x_a, x_b, losses)

    def _make_visuals(self, x_a: torch.Tensor, x_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """As the reference's ``sample``: reconstructions, two fixed styles, and example-guided
        translations (the style of the other domain's image in the batch)."""
        gen_a: Any = self.networks["gen_a"]
        gen_b: Any = self.networks["gen_b"]
        n = x_a.shape[0]
        c_a, s_a_prime = gen_a.encode(x_a)
        c_b, s_b_prime = gen_b.encode(x_b)
        style1, style2 = (s.expand(n, -1, -1, -1) for s in self.display_styles[:2])
        style3, style4 = (s.expand(n, -1, -1, -1) for s in self.display_styles[2:])
        return {
            "x_a": x_a,
            "x_a_recon": gen_a.decode(c_a, s_a_prime, x_a),
            "x_ab_1": gen_b.decode(c_a, style1, x_a),
            "x_ab_2": gen_b.decode(c_a, style2, x_a),
            "x_ab_ref": gen_b.decode(c_a, s_b_prime, x_a),
            "x_b": x_b,
            "x_b_recon": gen_b.decode(c_b, s_b_prime, x_b),
            "x_ba_1": gen_a.decode(c_b, style3, x_b),
            "x_ba_2": gen_a.decode(c_b, style4, x_b),
            "x_ba_ref": gen_a.decode(c_b, s_a_prime, x_b),
        }

    def visual_rows(self) -> Iterator[tuple[str, ...]]:
        """Rows: input, reconstruction, two fixed styles, the style of the other image."""
        yield ("x_a", "x_a_recon", "x_ab_1", "x_ab_2", "x_ab_ref")
        yield ("x_b", "x_b_recon", "x_ba_1", "x_ba_2", "x_ba_ref")
