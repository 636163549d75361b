"""MUNIT training: one step, random styles, the cycle option, the perceptual term, resume."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from i2i.data import TransformOptions
from i2i.models import options_from_dict
from i2i.training.config import ConfigError, TrainConfig, load_config, loss_options
from i2i.training.munit import MUNITLossOptions
from i2i.training.vgg import REFERENCE_NAMES, VGG16Features, load_perceptual_network
from tests.training.test_unit import (
    assert_every_network_learns,
    assert_exact_resume,
    assert_terms_match,
    differ,
    family_config,
    hand_dis_loss,
    hand_gen_loss,
    l1,
    trainer_and_batch,
)

MUNIT_LOSSES = {
    "dis_a",
    "dis_b",
    "dis_total",
    "gen_recon_x_a",
    "gen_recon_x_b",
    "gen_recon_s_a",
    "gen_recon_s_b",
    "gen_recon_c_a",
    "gen_recon_c_b",
    "gen_adv_a",
    "gen_adv_b",
    "gen_total",
}


@pytest.fixture(scope="module")
def vgg_files(tmp_path_factory) -> dict[str, Path]:
    """A random-init VGG16 saved in torchvision's layout and in the references' layout."""
    folder = tmp_path_factory.mktemp("vgg")
    torch.manual_seed(0)
    features = VGG16Features().features.state_dict()
    torchvision = {f"features.{k}": v for k, v in features.items()}
    torchvision["classifier.0.weight"] = torch.zeros(2, 2)  # ignored, as in the real file
    index_to_name = {i: n for n, i in REFERENCE_NAMES.items()}
    reference = {
        f"{index_to_name[int(k.split('.')[0])]}.{k.split('.')[1]}": v for k, v in features.items()
    }
    paths = {"torchvision": folder / "vgg16.pth", "reference": folder / "vgg16.weight"}
    torch.save(torchvision, paths["torchvision"])
    torch.save(reference, paths["reference"])
    return paths


@pytest.mark.parametrize("gan_mode", ["lsgan", "vanilla"])
def test_one_step_changes_every_network(tiny_dataset, gan_mode):
    trainer, networks, batch = trainer_and_batch(
        family_config("munit", tiny_dataset, gan_mode=gan_mode)
    )
    losses: dict[str, float] = {}
    assert_every_network_learns(networks, lambda: losses.update(trainer.step(batch)))
    assert set(losses) == MUNIT_LOSSES
    assert all(math.isfinite(v) for v in losses.values())
    w = MUNITLossOptions()
    assert (w.gan_w, w.recon_x_w, w.recon_s_w, w.recon_c_w, w.recon_x_cyc_w, w.vgg_w) == (
        1.0, 10.0, 1.0, 1.0, 0.0, 0.0,
    )  # fmt: skip
    expected = sum(
        weight * (losses[f"gen_{name}_a"] + losses[f"gen_{name}_b"])
        for name, weight in (("adv", 1), ("recon_x", 10), ("recon_s", 1), ("recon_c", 1))
    )
    assert losses["gen_total"] == pytest.approx(expected, rel=1e-5)


MUNIT_HAND_WEIGHTS = {
    "gan_w": 1.5,
    "recon_x_w": 3.0,
    "recon_s_w": 0.7,
    "recon_c_w": 0.4,
    "recon_x_cyc_w": 2.5,
}


@pytest.mark.parametrize("gan_mode", ["lsgan", "vanilla"])
def test_every_loss_term_matches_the_reference_trainer_by_hand(tiny_dataset, gan_mode):
    """Each logged term of one step, recomputed as the reference's MUNIT_Trainer does.

    Following NVlabs/MUNIT trainer.py line by line with the networks' own encode/decode
    and the discriminators' per-scale outputs (not i2i's loss code): dis_update on the
    initial networks, then gen_update with the initial generators and the discriminators
    after the dis step. Each update draws s_a then s_b from the global RNG first; the cycle
    is on, so x_aba and x_bab (decoded with the encoded styles s_a_prime, s_b_prime) count.
    """
    cfg = family_config("munit", tiny_dataset, gan_mode=gan_mode, loss=MUNIT_HAND_WEIGHTS)
    trainer, networks, batch = trainer_and_batch(cfg)
    initial = copy.deepcopy(networks)
    torch.manual_seed(1234)
    logged = trainer.step(batch)
    assert all(differ(initial, networks, name) for name in networks)

    w = MUNIT_HAND_WEIGHTS
    style_dim = options_from_dict("munit", cfg.model).style_dim
    x_a, x_b = batch["A"], batch["B"]
    n = x_a.shape[0]
    gen_a, gen_b = initial["gen_a"], initial["gen_b"]
    torch.manual_seed(1234)
    with torch.no_grad():
        # dis_update: random styles, encode, decode (cross domain), D loss.
        s_a = torch.randn(n, style_dim, 1, 1)
        s_b = torch.randn(n, style_dim, 1, 1)
        c_a, _ = gen_a.encode(x_a)
        c_b, _ = gen_b.encode(x_b)
        x_ba = gen_a.decode(c_b, s_a)
        x_ab = gen_b.decode(c_a, s_b)
        dis_a = hand_dis_loss(initial["dis_a"], x_ba, x_a, gan_mode)
        dis_b = hand_dis_loss(initial["dis_b"], x_ab, x_b, gan_mode)
        expected = {
            "dis_a": dis_a,
            "dis_b": dis_b,
            "dis_total": w["gan_w"] * dis_a + w["gan_w"] * dis_b,
        }
        # gen_update, against the discriminators the dis step produced.
        d_a, d_b = networks["dis_a"], networks["dis_b"]
        s_a = torch.randn(n, style_dim, 1, 1)
        s_b = torch.randn(n, style_dim, 1, 1)
        c_a, s_a_prime = gen_a.encode(x_a)
        c_b, s_b_prime = gen_b.encode(x_b)
        x_a_recon = gen_a.decode(c_a, s_a_prime)
        x_b_recon = gen_b.decode(c_b, s_b_prime)
        x_ba = gen_a.decode(c_b, s_a)
        x_ab = gen_b.decode(c_a, s_b)
        c_b_recon, s_a_recon = gen_a.encode(x_ba)
        c_a_recon, s_b_recon = gen_b.encode(x_ab)
        x_aba = gen_a.decode(c_a_recon, s_a_prime)
        x_bab = gen_b.decode(c_b_recon, s_b_prime)
        gen = {
            "gen_recon_x_a": l1(x_a_recon, x_a),
            "gen_recon_x_b": l1(x_b_recon, x_b),
            "gen_recon_s_a": l1(s_a_recon, s_a),
            "gen_recon_s_b": l1(s_b_recon, s_b),
            "gen_recon_c_a": l1(c_a_recon, c_a),
            "gen_recon_c_b": l1(c_b_recon, c_b),
            "gen_cycrecon_x_a": l1(x_aba, x_a),
            "gen_cycrecon_x_b": l1(x_bab, x_b),
            "gen_adv_a": hand_gen_loss(d_a, x_ba, gan_mode),
            "gen_adv_b": hand_gen_loss(d_b, x_ab, gan_mode),
        }
        gen["gen_total"] = (
            w["gan_w"] * gen["gen_adv_a"]
            + w["gan_w"] * gen["gen_adv_b"]
            + w["recon_x_w"] * gen["gen_recon_x_a"]
            + w["recon_s_w"] * gen["gen_recon_s_a"]
            + w["recon_c_w"] * gen["gen_recon_c_a"]
            + w["recon_x_w"] * gen["gen_recon_x_b"]
            + w["recon_s_w"] * gen["gen_recon_s_b"]
            + w["recon_c_w"] * gen["gen_recon_c_b"]
            + w["recon_x_cyc_w"] * gen["gen_cycrecon_x_a"]
            + w["recon_x_cyc_w"] * gen["gen_cycrecon_x_b"]
        )
        expected.update(gen)
        # The adversarial terms see the updated discriminators, not the initial ones; the
        # cycle decodes with the encoded style, not the random one.
        stale = hand_gen_loss(initial["dis_a"], x_ba, gan_mode)
        random_style_cycle = l1(gen_a.decode(c_a_recon, s_a), x_a)
    assert_terms_match(logged, expected)
    if gan_mode == "lsgan":  # BCE near log 4 barely moves after one step: only LSGAN tells
        assert abs(float(stale) - logged["gen_adv_a"]) > 1e-4 * abs(logged["gen_adv_a"])
    assert float(random_style_cycle) != pytest.approx(
        logged["gen_cycrecon_x_a"], rel=1e-5, abs=1e-6
    )


def test_cycle_term_with_a_positive_weight(tiny_dataset):
    cfg = family_config("munit", tiny_dataset, loss={"recon_x_cyc_w": 10})
    trainer, _, batch = trainer_and_batch(cfg)
    out = trainer.step(batch)
    assert set(out) == MUNIT_LOSSES | {"gen_cycrecon_x_a", "gen_cycrecon_x_b"}
    assert math.isfinite(out["gen_cycrecon_x_a"]) and out["gen_cycrecon_x_b"] > 0


def test_styles_are_drawn_from_the_global_rng(tiny_dataset):
    """The same torch seed gives the same step; another seed other random styles."""

    def first_step(seed: int) -> dict[str, float]:
        trainer, _, batch = trainer_and_batch(family_config("munit", tiny_dataset))
        torch.manual_seed(seed)
        return trainer.step(batch)

    assert first_step(1) == first_step(1)
    assert first_step(1)["gen_recon_s_a"] != first_step(2)["gen_recon_s_a"]


def test_samples_show_fixed_and_example_styles(tiny_dataset):
    trainer, _, batch = trainer_and_batch(family_config("munit", tiny_dataset))
    assert trainer.last_visuals == {}
    trainer.step(batch)
    visuals = trainer.last_visuals
    assert set(visuals) == {n for row in trainer.visual_rows() for n in row}
    assert all(v.shape == batch["A"].shape for v in visuals.values())
    assert not torch.equal(visuals["x_ab_1"], visuals["x_ab_2"])  # two different styles
    assert trainer.last_visuals is visuals  # computed once per step


def test_resume_is_exact(tiny_dataset, tmp_path):
    def cfg_for(steps: int) -> TrainConfig:
        return family_config(
            "munit",
            tiny_dataset,
            max_steps=steps,
            lr_policy="step",
            lr_step_size=3,
            sample_every=2,
            loss={"recon_x_cyc_w": 10},
        )

    assert_exact_resume(cfg_for, tmp_path, total=7, stop=3)


def test_perceptual_term_needs_a_local_file(tiny_dataset, tmp_path):
    with pytest.raises(ConfigError, match=r"loss.vgg_w > 0 needs loss.vgg_weights.*never"):
        trainer_and_batch(family_config("munit", tiny_dataset, loss={"vgg_w": 1}))
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(ConfigError, match=f"loss.vgg_weights: {missing} is not a file"):
        trainer_and_batch(
            family_config("munit", tiny_dataset, loss={"vgg_w": 1, "vgg_weights": str(missing)})
        )
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read .*junk.pth"):
        load_perceptual_network(junk)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ConfigError, match="not a VGG16 state dict"):
        load_perceptual_network(tmp_path / "other.pth")
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "part.pth")
    with pytest.raises(ConfigError, match=r"lacks VGG16 layers \(0.bias, 2.bias, 2.weight"):
        load_perceptual_network(tmp_path / "part.pth")


def test_perceptual_term_changes_the_loss(tiny_dataset, vgg_files):
    def step(**loss) -> dict[str, float]:
        trainer, _, batch = trainer_and_batch(family_config("munit", tiny_dataset, loss=loss))
        return trainer.step(batch)

    plain = step()
    with_vgg = step(vgg_w=1.0, vgg_weights=str(vgg_files["torchvision"]))
    assert set(with_vgg) == set(plain) | {"gen_vgg_a", "gen_vgg_b"}
    assert with_vgg["gen_vgg_a"] > 0 and math.isfinite(with_vgg["gen_vgg_b"])
    # Same seed, same batch: everything before the generators' update is equal, and the
    # weighted total differs by exactly the perceptual terms.
    assert with_vgg["dis_total"] == plain["dis_total"]
    assert with_vgg["gen_total"] == pytest.approx(
        plain["gen_total"] + with_vgg["gen_vgg_a"] + with_vgg["gen_vgg_b"], rel=1e-5
    )


def test_vgg_layouts_and_preprocessing(vgg_files):
    tv = load_perceptual_network(vgg_files["torchvision"])
    ref = load_perceptual_network(vgg_files["reference"])
    assert not tv.caffe and ref.caffe
    for key, tensor in tv.features.state_dict().items():
        assert torch.equal(tensor, ref.features.state_dict()[key])
    assert not any(p.requires_grad for p in tv.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    # The references' relu5_3 without a fourth pool: 512 channels at 1/8 of the size.
    assert tv(x).shape == (2, 512, 4, 4)
    # The references' vgg_preprocess: RGB -> BGR, [-1, 1] -> [0, 255], minus the Caffe mean.
    bgr = torch.cat([x[:, 2:3], x[:, 1:2], x[:, 0:1]], dim=1)
    mean = torch.tensor([103.939, 116.779, 123.680]).view(1, 3, 1, 1)
    torch.testing.assert_close(ref.preprocess(x), (bgr + 1) * 255 * 0.5 - mean)
    # torchvision's: [0, 1], ImageNet mean and std.
    imagenet = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(tv.preprocess(x), ((x + 1) / 2 - imagenet) / std)


@pytest.mark.parametrize("name", ["munit", "munit-tiny"])
def test_presets_are_valid(name):
    cfg = load_config(name)
    assert cfg.family == "munit"
    assert loss_options(cfg, MUNITLossOptions) == MUNITLossOptions(**cfg.loss)
    options_from_dict("munit", cfg.model)
    TransformOptions(cfg.data.preprocess, cfg.data.load_size, cfg.data.crop_size)
