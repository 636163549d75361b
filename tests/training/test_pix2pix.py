"""pix2pix training: one step in the reference's order, loss options, direction, exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from i2i.checkpoint import load_checkpoint, load_trained_networks
from i2i.data import AlignedDataset
from i2i.models import get_family, options_from_dict
from i2i.training import ConfigError, train
from i2i.training.loop import trainer_class
from i2i.training.pix2pix import Pix2PixTrainer
from tests.conftest import tiny_config
from tests.data.test_data_aligned import write_pairs
from tests.training.test_resume import _assert_same_state, _losses

MODEL = {"netG": "resnet_6blocks", "netD": "n_layers", "n_layers_D": 2, "ngf": 4, "ndf": 4}


@pytest.fixture
def aligned_root(tmp_path: Path) -> Path:
    """8 side-by-side training pairs of 32 px (B is A with its channels reversed)."""
    root = tmp_path / "aligned"
    write_pairs(root, 8, size=32)
    return root


def _config(root: Path, model: dict | None = None, **changes):
    changes.setdefault("gan_mode", "vanilla")
    changes.setdefault("pool_size", 0)
    return tiny_config(root, family="pix2pix", model={**MODEL, **(model or {})}, **changes)


def _trainer_and_batch(root: Path, model: dict | None = None, **changes):
    cfg = _config(root, model, **changes)
    torch.manual_seed(cfg.seed)
    options = options_from_dict("pix2pix", cfg.model)
    networks = get_family("pix2pix").build(options)
    trainer = Pix2PixTrainer(cfg, networks, torch.device("cpu"))
    ds = Pix2PixTrainer.build_dataset(cfg, options, _transform(cfg))
    items = [ds[i] for i in range(cfg.batch_size)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("A", "B")}
    return trainer, networks, batch


def _transform(cfg):
    from i2i.data import TransformOptions

    return TransformOptions(cfg.data.preprocess, cfg.data.load_size, cfg.data.crop_size)


def test_the_loop_finds_the_trainer_and_its_dataset(aligned_root):
    assert trainer_class("pix2pix") is Pix2PixTrainer
    cfg = _config(aligned_root)
    ds = Pix2PixTrainer.build_dataset(cfg, options_from_dict("pix2pix", cfg.model), _transform(cfg))
    assert isinstance(ds, AlignedDataset) and len(ds) == 8


@pytest.mark.parametrize("gan_mode", ["vanilla", "lsgan", "wgangp"])
def test_one_step_changes_g_and_d(aligned_root, gan_mode):
    trainer, networks, batch = _trainer_and_batch(aligned_root, gan_mode=gan_mode, pool_size=2)
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in networks.items()}
    losses = trainer.step(batch)
    assert set(losses) == {"g_gan", "g_l1", "d_real", "d_fake", "d", "g_total"}
    assert all(math.isfinite(v) for v in losses.values())
    mean = (losses["d_real"] + losses["d_fake"]) / 2
    if gan_mode == "wgangp":  # plus lambda_gp times the gradient penalty
        assert losses["d"] > mean
    else:
        assert losses["d"] == pytest.approx(mean, rel=1e-6)
    for name, net in networks.items():
        params = dict(net.named_parameters())
        if gan_mode == "wgangp" and name == "d":
            # The critic's last bias shifts real and fake scores alike: zero gradient.
            params.pop([k for k in params if k.endswith("bias")][-1])
        olds = dict(zip(dict(net.named_parameters()), before[name], strict=True))
        unchanged = [k for k, p in params.items() if torch.equal(olds[k], p)]
        assert not unchanged, f"{name}: parameters did not change: {unchanged}"
    assert all(p.requires_grad for p in networks["d"].parameters())


def test_l1_weight_and_update_order(aligned_root):
    trainer, networks, batch = _trainer_and_batch(
        aligned_root, {"dropout": False}, loss={"lambda_l1": 7.0}
    )
    g_before = {k: v.clone() for k, v in networks["g"].state_dict().items()}
    d_before = {k: v.clone() for k, v in networks["d"].state_dict().items()}
    losses = trainer.step(batch)
    v = trainer.last_visuals
    assert losses["g_l1"] == pytest.approx(
        7.0 * torch.mean(torch.abs(v["fake_b"] - v["real_b"])).item(), rel=1e-5
    )
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    fake_pair = torch.cat((v["real_a"], v["fake_b"]), 1)
    with torch.no_grad():
        # G's GAN loss saw the discriminator after its update (D first, as the reference):
        # d's weights now are those (G's update leaves d alone).
        pred = networks["d"](fake_pair)
        assert losses["g_gan"] == pytest.approx(bce(pred, torch.ones_like(pred)).item(), rel=1e-5)
        # ... and D's fake loss saw the generator's output before G's update.
        networks["d"].load_state_dict(d_before)
        pred = networks["d"](fake_pair)
        assert losses["d_fake"] == pytest.approx(bce(pred, torch.zeros_like(pred)).item(), rel=1e-5)
        old_g_gan = bce(pred, torch.ones_like(pred)).item()
        assert old_g_gan != pytest.approx(losses["g_gan"], rel=1e-4)  # the check above can tell
        networks["g"].load_state_dict(g_before)
        torch.testing.assert_close(networks["g"](v["real_a"]), v["fake_b"])
    assert list(trainer.visual_rows()) == [("real_a", "fake_b", "real_b")]


def test_b_to_a_feeds_domain_b_to_the_generator(aligned_root):
    trainer, _, batch = _trainer_and_batch(aligned_root, {"direction": "BtoA"})
    trainer.step(batch)
    assert torch.equal(trainer.last_visuals["real_a"], batch["B"])
    assert torch.equal(trainer.last_visuals["real_b"], batch["A"])


def test_b_to_a_with_grayscale_domain_a(aligned_root):
    # The reference's meaning: input_nc is the generator's input, domain B under BtoA.
    cfg = _config(aligned_root, {"direction": "BtoA", "output_nc": 1})
    options = options_from_dict("pix2pix", cfg.model)
    ds = Pix2PixTrainer.build_dataset(cfg, options, _transform(cfg))
    item = ds[0]
    assert item["A"].shape[0] == 1 and item["B"].shape[0] == 3
    nets = get_family("pix2pix").build(options)
    assert nets["g"](item["B"][None]).shape == (1, 1, 32, 32)
    assert nets["d"].model[0].in_channels == 4


def test_unknown_loss_key_is_refused(aligned_root):
    with pytest.raises(ConfigError, match=r"loss.lambda_L1 .*valid: loss.lambda_l1"):
        _trainer_and_batch(aligned_root, loss={"lambda_L1": 10.0})
    with pytest.raises(ConfigError, match="lambda_l1 must be >= 0"):
        _trainer_and_batch(aligned_root, loss={"lambda_l1": -1.0})


@pytest.mark.parametrize("workers", [0, 2])
def test_resumed_run_equals_uninterrupted_run(aligned_root, tmp_path, workers):
    # 8 pairs, batch 2 -> 4 steps an epoch; 10 steps cross two epoch boundaries and the
    # start of the decay, with batch norm, dropout and a pool of fake pairs.
    changes = {"data": {"num_workers": workers}, "pool_size": 3}
    model = {"norm": "batch", "dropout": True}
    train(_config(aligned_root, model, max_steps=10, **changes), tmp_path / "full")
    train(_config(aligned_root, model, max_steps=6, **changes), tmp_path / "part")
    assert load_checkpoint(tmp_path / "part" / "latest.pt")["step"] == 6
    train(_config(aligned_root, model, max_steps=10, **changes), tmp_path / "part", resume=True)
    assert _losses(tmp_path / "part") == _losses(tmp_path / "full")
    assert [r["step"] for r in _losses(tmp_path / "full")] == list(range(1, 11))
    full = load_checkpoint(tmp_path / "full" / "latest.pt")
    _assert_same_state(full, load_checkpoint(tmp_path / "part" / "latest.pt"))
    assert set(full["networks"]) == {"g", "d"}
    payload, nets = load_trained_networks(tmp_path / "full" / "latest.pt")
    translators = get_family("pix2pix").translators(
        nets, options_from_dict("pix2pix", payload["config"]["model"])
    )
    assert set(translators) == {"A2B"}
