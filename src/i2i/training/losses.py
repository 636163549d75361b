"""Loss functions as pure functions, matching the reference CycleGAN code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gan_loss(prediction: torch.Tensor, target_is_real: bool, mode: str = "lsgan") -> torch.Tensor:
    """The adversarial loss of a discriminator output against a real/fake label.

    lsgan: mean squared error to 1/0; vanilla: BCE with logits to 1/0 (the original
    GAN); wgangp: -mean for real, +mean for fake (the critic's Wasserstein estimate).
    """
    if mode == "wgangp":
        mean = prediction.float().mean()  # float32 under bf16 autocast too
        return -mean if target_is_real else mean
    target = torch.full_like(prediction, 1.0 if target_is_real else 0.0)
    if mode == "lsgan":
        return F.mse_loss(prediction, target)
    if mode == "vanilla":
        return F.binary_cross_entropy_with_logits(prediction, target)
    raise ValueError(f"unknown GAN loss mode {mode!r} (lsgan, vanilla, wgangp)")


def gradient_penalty(
    discriminator: nn.Module,
    real: torch.Tensor,
    fake: torch.Tensor,
    constant: float = 1.0,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """WGAN-GP penalty (Gulrajani et al. 2017) on random interpolates of real and fake.

    Returns mean((||grad D(x_hat)||_2 - constant)^2); the caller multiplies by lambda_gp.
    ``alpha``: the interpolation weights, (N, 1, 1, 1); drawn from torch's RNG when None.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    interpolates = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
    out = discriminator(interpolates)
    (grads,) = torch.autograd.grad(
        outputs=out,
        inputs=interpolates,
        grad_outputs=torch.ones_like(out),
        create_graph=True,
        retain_graph=True,
    )
    grads = grads.reshape(grads.shape[0], -1).float()
    return ((grads.norm(2, dim=1) - constant) ** 2).mean()


def reconstruction_loss(
    output: torch.Tensor, target: torch.Tensor, kind: str = "l1"
) -> torch.Tensor:
    """Cycle/identity distance: L1 (CycleGAN) or L2 (DiscoGAN-style)."""
    if kind == "l1":
        return F.l1_loss(output, target)
    if kind == "l2":
        return F.mse_loss(output, target)
    raise ValueError(f"unknown reconstruction loss {kind!r} (l1, l2)")
