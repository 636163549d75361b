"""Image quality metrics on uint8 images: PSNR and SSIM (Wang et al. 2004)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(a: np.ndarray, b: np.ndarray, max_value: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images of equal shape."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if mse == 0:
        return math.inf
    return 10.0 * math.log10(max_value**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return torch.outer(g, g)


def ssim(a: np.ndarray, b: np.ndarray, max_value: float = 255.0) -> float:
    """Mean SSIM over channels, 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03.

    Computed on the 'valid' region of the window, as the original SSIM code does.
    """
    if a.shape != b.shape:
        raise ValueError(f"SSIM needs equal shapes, got {a.shape} and {b.shape}")
    if a.ndim == 2:
        a, b = a[:, :, None], b[:, :, None]
    x = torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1).unsqueeze(1)  # (C, 1, H, W)
    y = torch.from_numpy(b.astype(np.float64)).permute(2, 0, 1).unsqueeze(1)
    size = min(11, a.shape[0], a.shape[1])
    window = _gaussian_window(size).reshape(1, 1, size, size)
    c1, c2 = (0.01 * max_value) ** 2, (0.03 * max_value) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sxx = F.conv2d(x * x, window) - mu_x**2
    syy = F.conv2d(y * y, window) - mu_y**2
    sxy = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2)
    )
    return float(ssim_map.mean())
