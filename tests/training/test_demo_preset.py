"""The demo's preset turns on the options for short runs; the reference recipe does not."""

from __future__ import annotations

from i2i.models import create_networks, options_from_dict
from i2i.models.networks import ResnetGenerator
from i2i.training import load_config


def test_demo_preset_sets_the_short_run_options():
    cfg = load_config("cyclegan-tiny")
    assert cfg.model["global_skip"] is True
    assert cfg.lambda_identity == 0.0 and cfg.lambda_a == cfg.lambda_b == 2.0
    assert (cfg.ema_decay, cfg.ema_start) == (0.999, 200)
    networks = create_networks("cyclegan", options_from_dict("cyclegan", cfg.model))
    assert all(networks[g].global_skip for g in ("g_ab", "g_ba"))


def test_reference_recipe_keeps_the_reference_networks_and_weights():
    cfg = load_config("cyclegan")
    options = options_from_dict("cyclegan", cfg.model)
    assert (options.upsample, options.global_skip) == ("transpose", False)
    assert cfg.loss == {} and cfg.lambda_identity == 0.5 and cfg.lambda_a == cfg.lambda_b == 10
    assert cfg.ema_decay == 0.0
    small = options_from_dict("cyclegan", dict(cfg.model, ngf=4, ndf=4))
    g = create_networks("cyclegan", small)["g_ab"]
    assert isinstance(g, ResnetGenerator) and not g.global_skip


def test_pix2pix_tiny_preset_has_the_global_skip():
    cfg = load_config("pix2pix-tiny")
    g = create_networks("pix2pix", options_from_dict("pix2pix", cfg.model))["g"]
    assert isinstance(g, ResnetGenerator) and g.global_skip


def test_stargan_tiny_preset_has_the_global_skip_and_the_reference_does_not():
    tiny = load_config("stargan-tiny")
    g = create_networks("stargan", dict(tiny.model, domains=["a", "b"]))["g"]
    assert g.global_skip and not g.main[-2].weight.any()  # starts as the identity
    reference = options_from_dict("stargan", load_config("stargan").model)
    assert reference.global_skip is False
