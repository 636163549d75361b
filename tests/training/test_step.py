"""One CycleGAN step: every network learns, losses are finite, options take effect."""

from __future__ import annotations

import math

import pytest
import torch

from i2i.data import TransformOptions, UnalignedDataset
from i2i.models import get_family, options_from_dict
from i2i.training.cyclegan import CycleGANTrainer
from tests.conftest import tiny_config


def _trainer_and_batch(root, **changes):
    cfg = tiny_config(root, **changes)
    torch.manual_seed(cfg.seed)
    options = options_from_dict("cyclegan", cfg.model)
    networks = get_family("cyclegan").build(options)
    trainer = CycleGANTrainer(cfg, networks, torch.device("cpu"))
    ds = UnalignedDataset(root, transform=TransformOptions("crop", 32, 32))
    items = [ds[i] for i in range(cfg.batch_size)]
    batch = {k: torch.stack([it[k] for it in items]) for k in ("A", "B")}
    return trainer, networks, batch


@pytest.mark.parametrize("gan_mode", ["lsgan", "vanilla", "wgangp"])
def test_one_step_changes_every_network(tiny_dataset, gan_mode):
    trainer, networks, batch = _trainer_and_batch(tiny_dataset, gan_mode=gan_mode)
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in networks.items()}
    losses = trainer.step(batch)
    expected = {
        "idt_ab",
        "idt_ba",
        "gan_ab",
        "gan_ba",
        "cycle_a",
        "cycle_b",
        "d_a",
        "d_b",
        "g_total",
    }
    assert set(losses) == expected
    assert all(math.isfinite(v) for v in losses.values())
    for name, net in networks.items():
        params = dict(net.named_parameters())
        if gan_mode == "wgangp" and name.startswith("d_"):
            # The critic's last bias adds the same constant to mean(real) and mean(fake), so
            # its Wasserstein gradient is exactly zero: it must be the only unchanged tensor.
            last_bias = [k for k in params if k.endswith("bias")][-1]
            params.pop(last_bias)
        olds = dict(zip(dict(net.named_parameters()), before[name], strict=True))
        unchanged = [k for k, p in params.items() if torch.equal(olds[k], p)]
        assert not unchanged, f"{name}: parameters did not change: {unchanged}"
    # The discriminators are trainable again after the step (frozen only during G's update).
    assert all(p.requires_grad for n in ("d_a", "d_b") for p in networks[n].parameters())


def test_wgangp_penalty_is_applied(tiny_dataset):
    def d_losses(lambda_gp):
        trainer, _, batch = _trainer_and_batch(tiny_dataset, gan_mode="wgangp", lambda_gp=lambda_gp)
        out = trainer.step(batch)
        return out["d_a"], out["d_b"]

    without, with_gp = d_losses(0.0), d_losses(10.0)
    assert with_gp[0] > without[0] and with_gp[1] > without[1]


def test_identity_loss_off_and_l2_cycle(tiny_dataset):
    trainer, _, batch = _trainer_and_batch(tiny_dataset, lambda_identity=0.0, cycle_loss="l2")
    losses = trainer.step(batch)
    assert "idt_ab" not in losses and "idt_ba" not in losses
    # lambda_a * MSE(rec_a, real_a) recomputed from the visuals of that step
    v = trainer.last_visuals
    assert losses["cycle_a"] == pytest.approx(
        10 * torch.mean((v["rec_a"] - v["real_a"]) ** 2).item(), rel=1e-5
    )


def test_generator_update_uses_reference_loss_weights(tiny_dataset):
    """g_total = gan + 10 * L1 cycles + 10 * 0.5 * L1 identities (reference defaults)."""
    trainer, _, batch = _trainer_and_batch(tiny_dataset)
    losses = trainer.step(batch)
    parts = ["idt_ab", "idt_ba", "gan_ab", "gan_ba", "cycle_a", "cycle_b"]
    assert losses["g_total"] == pytest.approx(sum(losses[p] for p in parts), rel=1e-5)
    v = trainer.last_visuals
    assert losses["cycle_b"] == pytest.approx(
        10 * (v["rec_b"] - v["real_b"]).abs().mean().item(), rel=1e-5
    )
