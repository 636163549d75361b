"""Image quality metrics on uint8 images: PSNR and SSIM (Wang et al. 2004), and the
distance of samples to a one-parameter family of valid translations (multimodal eval)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

_INV_PHI = (math.sqrt(5.0) - 1.0) / 2.0  # 0.618..., the golden-section step


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error (in levels squared) between two images of equal shape."""
    if a.shape != b.shape:
        raise ValueError(f"MSE needs equal shapes, got {a.shape} and {b.shape}")
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


def psnr_of_mse(error: float, max_value: float = 255.0) -> float:
    """PSNR in dB for a mean squared error; infinite for 0 (identical images)."""
    if error == 0:
        return math.inf
    return 10.0 * math.log10(max_value**2 / error)


def psnr(a: np.ndarray, b: np.ndarray, max_value: float = 255.0) -> float:
    """Peak signal-to-noise ratio in dB between two uint8 images of equal shape."""
    if a.shape != b.shape:
        raise ValueError(f"PSNR needs equal shapes, got {a.shape} and {b.shape}")
    return psnr_of_mse(mse(a, b), max_value)


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


def nearest_members(
    samples: np.ndarray,
    member: Callable[[float], np.ndarray],
    low: float,
    high: float,
    grid: int = 33,
    tolerance: float = 1e-6,
) -> list[tuple[float, float]]:
    """For each sample, the member of a family closest to it: ``[(t, mse), ...]``.

    ``member(t)`` is the valid translation at parameter t in [low, high]. Each sample
    (``samples`` is [K, H, W, C]) is compared with ``grid`` evenly spaced members, then t
    is refined by golden-section search between the best grid point's neighbours until the
    bracket is narrower than ``tolerance * (high - low)``; the least MSE seen wins (the
    first t on a tie). Exact for families whose error is unimodal in t, as a grade of
    varying strength is (before rounding to levels, the member is linear in t).
    """
    if not low < high or grid < 2:
        raise ValueError(f"need low < high and grid >= 2, got [{low}, {high}] and {grid}")
    ts = np.linspace(low, high, grid)
    members = np.stack([member(float(t)) for t in ts]).astype(np.float64)  # (G, H, W, C)
    found = []
    for sample in samples.astype(np.float64):
        errors = ((members - sample) ** 2).reshape(grid, -1).mean(axis=1)  # (G,)
        j = int(np.argmin(errors))
        best_t, best = float(ts[j]), float(errors[j])

        def error(t: float, sample: np.ndarray = sample) -> float:
            nonlocal best_t, best
            e = float(np.mean((member(t).astype(np.float64) - sample) ** 2))
            if e < best:
                best_t, best = t, e
            return e

        a, b = float(ts[max(j - 1, 0)]), float(ts[min(j + 1, grid - 1)])
        c, d = b - _INV_PHI * (b - a), a + _INV_PHI * (b - a)
        fc, fd = error(c), error(d)
        while b - a > tolerance * (high - low) and best > 0:
            if fc <= fd:
                b, d, fd = d, c, fc
                c = b - _INV_PHI * (b - a)
                fc = error(c)
            else:
                a, c, fc = c, d, fd
                d = a + _INV_PHI * (b - a)
                fd = error(d)
        found.append((best_t, best))
    return found


def mean_pairwise_l1(samples: np.ndarray) -> float:
    """Mean absolute difference in levels (0-255) over all pairs of samples [K, ...]; 0 if K=1."""
    k = samples.shape[0]
    if k < 2:
        return 0.0
    x = samples.astype(np.float64).reshape(k, -1)
    total = sum(float(np.abs(x[i + 1 :] - x[i]).mean(axis=1).sum()) for i in range(k - 1))
    return total / (k * (k - 1) / 2)
