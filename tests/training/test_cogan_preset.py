"""cogan-tiny turns on the options for short runs (global skip, no within-domain
reconstruction, cycle weight 2, a moving average) on top of CoGAN's own settings (tied
high-level layers, deterministic encoders, no KL terms); cogan.yaml, the reference recipe,
does not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from i2i.checkpoint import load_checkpoint, load_trained_networks
from i2i.models import create_networks, get_family, options_from_dict
from i2i.training import train
from i2i.training.config import apply_overrides, load_config
from i2i.training.monitor import read_loss_log
from i2i.training.unit import UNITGenerators
from tests.conftest import write_images

# The skip's clamp keeps atanh finite within 1e-3 (an 8-bit level is 2/255).
IDENTITY_TOL = 1.5e-3
# Small networks for the training test; everything else is the preset's.
TINY = [
    "model.gen_dim=4",
    "model.dis_dim=4",
    "model.dis_n_layer=2",
    "model.num_scales=2",
]
# State-dict keys of the generators (n_downsample 2, n_res 2, n_shared 1): a tied block of
# the encoder and of the decoder, and the encoder's first block, which is not tied.
TIED = ("enc.model.3.model.1.model.0.conv.weight", "dec.model.0.model.0.model.0.conv.weight")
UNTIED = "enc.model.3.model.0.model.0.conv.weight"


def test_cogan_tiny_sets_the_short_run_options() -> None:
    cfg = load_config("cogan-tiny")
    assert cfg.family == "unit"
    assert cfg.model["global_skip"] is True
    assert cfg.loss["recon_x_w"] == 0.0 and cfg.loss["recon_x_cyc_w"] == 2.0
    assert (cfg.ema_decay, cfg.ema_start) == (0.999, 200)
    # 1,400 steps on the 200-image sample (batch 1) of generators with 8 filters, the rate
    # halved every 600, as measured (in less time than the demo's 1,200 steps).
    assert (cfg.n_epochs, cfg.n_epochs_decay, cfg.batch_size) == (7, 0, 1)
    assert (cfg.lr_policy, cfg.lr_step_size, cfg.lr_gamma) == ("step", 600, 0.5)
    assert cfg.model["gen_dim"] == 8


def test_cogan_tiny_keeps_cogans_settings() -> None:
    """Tied high-level layers, deterministic encoders, no KL terms: the variant itself."""
    cfg = load_config("cogan-tiny")
    options = options_from_dict("unit", cfg.model)
    assert options.share and options.n_shared == 1 and not options.vae
    assert cfg.loss["recon_kl_w"] == cfg.loss["recon_kl_cyc_w"] == 0.0
    torch.manual_seed(0)
    nets = create_networks("unit", options)
    gen_a, gen_b = nets["gen_a"], nets["gen_b"]
    for gen in (gen_a, gen_b):
        assert gen.global_skip and not gen.vae
        assert not gen.dec.model[-1].conv.weight.any()  # starts as the identity
    # The last encoder block and the first decoder block are one module in both generators.
    assert gen_a.enc.model[-1].model[-1] is gen_b.enc.model[-1].model[-1]
    assert gen_a.dec.model[0].model[0] is gen_b.dec.model[0].model[0]
    assert gen_a.enc.model[-1].model[0] is not gen_b.enc.model[-1].model[0]


def test_untrained_cogan_tiny_is_the_identity_in_training_and_export() -> None:
    """With deterministic encoders every decoding of the trainer, and both exported
    directions, return the image that was encoded until the residual moves."""
    cfg = load_config("cogan-tiny")
    options = options_from_dict("unit", cfg.model)
    torch.manual_seed(0)
    nets = create_networks("unit", options)
    gens = UNITGenerators(nets["gen_a"], nets["gen_b"]).train()
    g = torch.Generator().manual_seed(1)
    x_a, x_b = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    with torch.no_grad():
        out = gens(x_a, x_b, full=True, cycle=True)
        again = gens(x_a, x_b)
    for key, source in (
        ("x_ab", x_a), ("x_ba", x_b), ("x_a_recon", x_a), ("x_b_recon", x_b),
        ("x_aba", x_a), ("x_bab", x_b),
    ):  # fmt: skip
        assert (out[key] - source).abs().max() < IDENTITY_TOL, key
    assert torch.equal(out["x_ab"], again["x_ab"])  # no latent noise in training either
    image = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    )
    with torch.no_grad():
        for direction, translator in get_family("unit").translators(nets, options).items():
            assert (translator(image).int() - image.int()).abs().max() <= 1, direction


def test_cogan_tiny_trains_with_the_options_and_keeps_the_tied_layers_tied(
    tmp_path: Path,
) -> None:
    """The preset (smaller networks) trains: no KL terms, the residual moves, and the tied
    blocks are equal in gen_a and gen_b in the raw weights and in the moving average."""
    root = tmp_path / "data"
    write_images(root / "trainA", 4, seed=1, size=32)
    write_images(root / "trainB", 4, seed=2, tint=(1.0, 0.8, 0.6), size=32)
    cfg = apply_overrides(
        load_config("cogan-tiny"),
        [
            *TINY,
            f"data.root={root}",
            "data.load_size=32",
            "data.crop_size=32",
            "data.num_workers=0",
            "max_steps=3",
            "ema_start=1",
            "log_every=1",
            "tensorboard=false",
            "progress=false",
        ],
    )
    train(cfg, tmp_path / "run")
    records = read_loss_log(tmp_path / "run" / "losses.jsonl")
    assert records and not any(k.startswith("gen_recon_kl") for r in records for k in r)
    assert all("gen_cyc_x_a" in r for r in records)
    payload = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert set(payload["ema"]) == {"gen_a", "gen_b"}
    last = "dec.model.5.conv.weight"  # n_downsample 2: the decoder's output convolution
    for states in (payload["networks"], payload["ema"]):
        assert states["gen_a"][last].any() and states["gen_b"][last].any()
        for key in TIED:
            assert torch.equal(states["gen_a"][key], states["gen_b"][key]), key
        assert not torch.equal(states["gen_a"][UNTIED], states["gen_b"][UNTIED])
    _, networks = load_trained_networks(tmp_path / "run" / "latest.pt")
    assert networks["gen_a"].global_skip and not networks["gen_a"].vae


def test_cogan_reference_recipe_keeps_the_reference_settings() -> None:
    cfg = load_config("cogan")
    assert "global_skip" not in cfg.model
    assert options_from_dict("unit", cfg.model).global_skip is False
    assert cfg.loss["recon_x_w"] == 10.0 and cfg.loss["recon_x_cyc_w"] == 10.0
    assert cfg.ema_decay == 0.0
