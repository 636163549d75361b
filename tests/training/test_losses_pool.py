"""Losses, gradient penalty, image pool and the learning-rate rule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from i2i.training.loop import linear_decay
from i2i.training.losses import gan_loss, gradient_penalty, reconstruction_loss
from i2i.training.pool import ImagePool


def test_lsgan_is_mse_to_labels():
    pred = torch.tensor([[0.5, 1.5], [1.0, -1.0]])
    assert gan_loss(pred, True, "lsgan").item() == pytest.approx(((pred - 1) ** 2).mean().item())
    assert gan_loss(pred, False, "lsgan").item() == pytest.approx((pred**2).mean().item())


def test_vanilla_is_bce_with_logits():
    pred = torch.tensor([0.0, 2.0])
    expected_real = -torch.log(torch.sigmoid(pred)).mean().item()
    expected_fake = -torch.log(1 - torch.sigmoid(pred)).mean().item()
    assert gan_loss(pred, True, "vanilla").item() == pytest.approx(expected_real, rel=1e-6)
    assert gan_loss(pred, False, "vanilla").item() == pytest.approx(expected_fake, rel=1e-6)


def test_wgangp_signs_and_unknown_mode():
    pred = torch.tensor([1.0, 3.0])
    assert gan_loss(pred, True, "wgangp").item() == -2.0
    assert gan_loss(pred, False, "wgangp").item() == 2.0
    with pytest.raises(ValueError, match="lsgan"):
        gan_loss(pred, True, "hinge")


def test_gradient_penalty_of_a_linear_critic():
    """D(x) = sum(w * x) has gradient w everywhere: the penalty is (||w|| - 1)^2."""
    torch.manual_seed(0)
    critic = nn.Conv2d(3, 1, kernel_size=4, bias=False)  # 4x4 input -> one output
    real, fake = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    gp = gradient_penalty(critic, real, fake)
    expected = (critic.weight.norm() - 1) ** 2
    assert gp.item() == pytest.approx(expected.item(), rel=1e-5)
    gp.backward()  # the penalty is differentiable w.r.t. the critic (create_graph)
    assert critic.weight.grad is not None and critic.weight.grad.abs().sum() > 0


def test_reconstruction_losses():
    a, b = torch.zeros(4), torch.tensor([1.0, -1.0, 2.0, 0.0])
    assert reconstruction_loss(a, b, "l1").item() == 1.0
    assert reconstruction_loss(a, b, "l2").item() == 1.5


def test_pool_fills_then_swaps_half_the_time():
    pool = ImagePool(size=4, seed=0)
    first = torch.arange(4, dtype=torch.float32).reshape(4, 1, 1, 1)
    assert torch.equal(pool.query(first), first)  # filling: returned unchanged
    assert len(pool.images) == 4
    swapped = 0
    n = 2000
    for i in range(n):
        new = torch.full((1, 1, 1, 1), 100.0 + i)
        out = pool.query(new)
        swapped += int(out.item() != new.item())
    assert abs(swapped / n - 0.5) < 0.05  # the reference's p > 0.5 rule
    assert len(pool.images) == 4


def test_pool_of_size_zero_passes_through_and_state_round_trips():
    assert torch.equal(ImagePool(0).query(torch.ones(2, 1, 1, 1)), torch.ones(2, 1, 1, 1))
    pool = ImagePool(size=3, seed=7)
    pool.query(torch.randn(5, 1, 2, 2))
    copy = ImagePool(size=3, seed=123)
    copy.load_state_dict(pool.state_dict())
    batch = torch.randn(6, 1, 2, 2)
    assert torch.equal(pool.query(batch), copy.query(batch))
    with pytest.raises(ValueError, match="pool size"):
        ImagePool(size=2).load_state_dict(pool.state_dict())


def test_linear_decay_matches_reference_formula():
    rule = linear_decay(100, 100)
    # epoch k (1-based) trains with rule(k - 1)
    assert [rule(k - 1) for k in (1, 50, 100)] == [1.0, 1.0, 1.0]
    assert rule(100) == pytest.approx(1 - 1 / 101)
    assert rule(199) == pytest.approx(1 / 101)
    assert all(rule(e) > 0 for e in range(200))
    assert math.isclose(rule(150), 1 - 51 / 101)
