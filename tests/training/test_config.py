"""Training configs: presets, YAML, checked overrides."""

from __future__ import annotations

import pytest

from i2i.training import ConfigError, TrainConfig, apply_overrides, load_config
from i2i.training.config import list_presets, resume_differences


def test_presets_load_and_reference_preset_is_the_reference_recipe():
    assert {"cyclegan", "cyclegan-tiny"} <= set(list_presets())
    for name in list_presets():
        load_config(name)
    ref = load_config("configs/cyclegan.yaml")
    assert ref.to_dict() == load_config("cyclegan").to_dict()
    assert (ref.lr, ref.beta1, ref.beta2, ref.gan_mode, ref.pool_size) == (
        2e-4,
        0.5,
        0.999,
        "lsgan",
        50,
    )
    assert (ref.lambda_a, ref.lambda_b, ref.lambda_identity) == (10.0, 10.0, 0.5)
    assert (ref.n_epochs, ref.n_epochs_decay, ref.batch_size) == (100, 100, 1)
    assert (ref.data.load_size, ref.data.crop_size, ref.data.preprocess) == (
        286,
        256,
        "resize_and_crop",
    )
    assert ref.model["netG"] == "resnet_9blocks" and ref.model["dropout"] is False
    # The defaults without a file are the same recipe.
    default = TrainConfig().to_dict()
    assert {
        k: v
        for k, v in default.items()
        if k not in ("model", "data", "log_every", "sample_every", "save_every")
    } == {
        k: v
        for k, v in ref.to_dict().items()
        if k not in ("model", "data", "log_every", "sample_every", "save_every")
    }


def test_overrides_are_typed_and_checked():
    cfg = apply_overrides(load_config(None), ["lr=2e-4", "data.crop_size=64", "model.ngf=8"])
    assert cfg.lr == 2e-4 and isinstance(cfg.lr, float)
    assert cfg.data.crop_size == 64 and cfg.model["ngf"] == 8
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(cfg, ["no_such=1"])
    with pytest.raises(ConfigError, match="batch_size must be int"):
        apply_overrides(cfg, ["batch_size=big"])
    with pytest.raises(ConfigError, match="gan_mode"):
        apply_overrides(cfg, ["gan_mode=hinge"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(cfg, ["lr"])
    with pytest.raises(ConfigError, match="data.no_flip must be bool"):
        apply_overrides(cfg, ["data.no_flip=3"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="no such config file or preset"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "bad.yaml").write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    (tmp_path / "unknown.yaml").write_text("learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(tmp_path / "unknown.yaml")


def test_resume_differences_ignore_logging_keys():
    a = TrainConfig().to_dict()
    b = apply_overrides(
        TrainConfig(), ["log_every=1", "data.num_workers=0", "max_steps=9"]
    ).to_dict()
    assert resume_differences(a, b) == {}
    c = apply_overrides(TrainConfig(), ["lambda_identity=0"]).to_dict()
    assert resume_differences(a, c) == {"lambda_identity": (0.5, 0)}


def test_bad_model_options_are_config_errors(tmp_path):
    from i2i.training import train
    from tests.conftest import tiny_config, write_images

    write_images(tmp_path / "d" / "trainA", 2)
    write_images(tmp_path / "d" / "trainB", 2)
    cfg = tiny_config(tmp_path / "d")
    cfg.model["netG"] = "resnet_7blocks"
    with pytest.raises(ConfigError, match="resnet_9blocks"):
        train(cfg, tmp_path / "run")
    cfg = tiny_config(tmp_path / "d", family="nope")
    with pytest.raises(ConfigError, match="cyclegan"):
        train(cfg, tmp_path / "run")


def test_loss_options_are_checked_against_the_trainers_dataclass():
    from dataclasses import dataclass

    from i2i.training.config import loss_options

    @dataclass
    class Weights:
        lambda_l1: float = 100.0
        sharp: bool = False

    cfg = apply_overrides(load_config(None), ["family=pix2pix", "loss.lambda_l1=50"])
    assert cfg.loss == {"lambda_l1": 50}
    assert loss_options(cfg, Weights) == Weights(lambda_l1=50.0)
    cfg.loss = {"lambda_l1": "2e1"}  # YAML reads 2e1 as a string
    assert loss_options(cfg, Weights).lambda_l1 == 20.0
    cfg.loss = {"lamda_l1": 1}
    with pytest.raises(ConfigError, match=r"loss\.lamda_l1.*valid: loss\.lambda_l1, loss\.sharp"):
        loss_options(cfg, Weights)
    cfg.loss = {"sharp": 1}
    with pytest.raises(ConfigError, match="loss.sharp must be bool"):
        loss_options(cfg, Weights)


def test_lr_policy_and_weight_decay_are_validated():
    cfg = apply_overrides(load_config(None), ["lr_policy=step", "lr_step_size=10"])
    assert (cfg.lr_policy, cfg.lr_step_size, cfg.lr_gamma) == ("step", 10, 0.5)
    with pytest.raises(ConfigError, match="lr_policy"):
        apply_overrides(cfg, ["lr_policy=cosine"])
    with pytest.raises(ConfigError, match="lr_step_size must be at least 1"):
        apply_overrides(cfg, ["lr_step_size=0"])
    with pytest.raises(ConfigError, match="lr_gamma"):
        apply_overrides(cfg, ["lr_gamma=0"])
    with pytest.raises(ConfigError, match="weight_decay"):
        apply_overrides(cfg, ["weight_decay=-1"])


def test_string_keys_keep_their_text_in_overrides():
    # YAML alone would read these as False and 1.0.
    cfg = apply_overrides(load_config(None), ["amp=off", "model.netG=resnet_9blocks"])
    assert cfg.amp == "off"
    cfg = apply_overrides(load_config(None), ["data.preprocess=none"])
    assert cfg.data.preprocess == "none"
    with pytest.raises(ConfigError, match="amp='on'"):
        apply_overrides(load_config(None), ["amp=on"])


def test_keys_left_out_take_the_familys_reference_values():
    from i2i.training import config_from_dict

    unit = config_from_dict({"family": "unit", "lr": 3e-4})
    assert (unit.lr, unit.weight_decay, unit.lr_policy, unit.lr_step_size) == (
        3e-4,
        1e-4,
        "step",
        100_000,
    )
    pix2pix = config_from_dict({"family": "pix2pix"})
    assert (pix2pix.gan_mode, pix2pix.pool_size) == ("vanilla", 0)
    cyclegan = config_from_dict({})
    assert (cyclegan.gan_mode, cyclegan.pool_size, cyclegan.lr_policy) == ("lsgan", 50, "linear")
    # --set family=munit on the defaults: the same, except what the overrides set.
    munit = apply_overrides(load_config(None), ["family=munit", "lr_step_size=7"])
    assert (munit.lr, munit.lr_policy, munit.lr_step_size) == (1e-4, "step", 7)
    # The presets spell out their recipes: the defaults agree with them.
    for family in ("pix2pix", "unit", "munit"):
        preset = load_config(family).to_dict()
        bare = config_from_dict({"family": family}).to_dict()
        keys = ("lr", "weight_decay", "lr_policy", "lr_step_size", "lr_gamma", "gan_mode")
        assert {k: bare[k] for k in keys} == {k: preset[k] for k in keys}, family


def test_crops_that_the_networks_cannot_take_are_config_errors_before_training(tmp_path):
    from i2i.training import config_from_dict, train

    base = {"data": {"root": str(tmp_path), "preprocess": "crop", "crop_size": 128}}
    pix2pix = config_from_dict({**base, "family": "pix2pix", "model": {"ngf": 4, "ndf": 4}})
    with pytest.raises(ConfigError, match=r"data.crop_size=128 .*exactly 256x256"):
        train(pix2pix, tmp_path / "p2p")
    unit = config_from_dict({**base, "family": "unit", "model": {"gen_dim": 4, "dis_dim": 4}})
    unit.data.crop_size = 48  # the reference discriminators (4 layers, 3 scales) need 61 px
    with pytest.raises(ConfigError, match=r"crop_size=48 is too small .*dis_n_layer=4"):
        train(unit, tmp_path / "unit")
    assert not [p for name in ("p2p", "unit") for p in (tmp_path / name).glob("*.pt")]
