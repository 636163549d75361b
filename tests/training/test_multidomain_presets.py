"""The multi-domain tiny presets turn on StarGAN's options for short runs; the reference
recipes do not."""

from __future__ import annotations

import torch

from i2i.models import create_networks, options_from_dict
from i2i.models.stargan import ConditionalInstanceNorm
from i2i.training import load_config


def test_stargan_tiny_sets_the_short_run_options_and_the_reference_does_not() -> None:
    tiny = load_config("stargan-tiny")
    nets = create_networks("stargan", dict(tiny.model, domains=["a", "b", "c"]))
    g, d = nets["g"], nets["d"]
    assert g.global_skip and not g.main[-2].weight.any()  # starts as the identity
    assert any(isinstance(m, ConditionalInstanceNorm) for m in g.modules())
    assert d.conv_src.out_channels == 3  # a critic map per domain
    assert (tiny.loss["lambda_rec"], tiny.loss["n_critic"]) == (10.0, 5)
    convs = [m for m in g.modules() if type(m) is torch.nn.Conv2d]
    assert {c.padding_mode for c in convs} == {"reflect"}
    assert (tiny.lr, tiny.ema_decay, tiny.ema_start) == (1e-3, 0.99, 1200)
    assert g.colour_transform and not g.colour_weight.any() and not g.colour_bias.any()
    # Sizes and a colour rate that fit the demo's time (BENCHMARKS.md, "Fitting the demo's
    # time"): 8 filters in g, its colour transform at 10x the rate.
    assert g.main[0].out_channels == 8 and tiny.loss["colour_lr_mult"] == 10.0
    assert "colour_lr_mult" not in paper_loss()
    paper = load_config("stargan")
    reference = options_from_dict("stargan", paper.model)
    assert (reference.global_skip, reference.conditional_norm, reference.domain_critic) == (
        False,
        False,
        False,
    )
    assert reference.padding == "zero" and paper.ema_decay == 0.0
    assert reference.upsample == "transpose" and not reference.colour_transform


def paper_loss() -> dict:
    return load_config("stargan").loss


def test_twostep_presets_keep_the_papers_model() -> None:
    tiny, paper = load_config("twostep-tiny"), load_config("twostep")
    reference = options_from_dict("twostep", paper.model)
    assert reference.z_dim == 100 and reference.translation == "direct"
    assert paper.ema_decay == 0.0 and "lambda_rec" not in paper.loss
    assert paper.loss["encoder_steps"] == 20_000
    # The tiny preset trains e on the photos in step 1 and translates by colour
    # (BENCHMARKS.md, "The two-step model with its encoder on the photos").
    small = options_from_dict("twostep", tiny.model)
    assert small.z_dim == 32 and small.translation == "colour"
    assert (tiny.loss["lambda_rec"], tiny.loss["encoder_steps"], tiny.lr) == (10.0, 0, 1e-3)
