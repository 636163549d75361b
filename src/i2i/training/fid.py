"""FID and KID of translated images, with torchmetrics and a local Inception weights file.

The Fréchet Inception Distance (Heusel et al. 2017) and the Kernel Inception Distance
(Bińkowski et al. 2018) compare the distribution of a set of outputs with that of real
images of the target domain, through the 2048 pool features of the FID Inception network
(the TensorFlow ``inception-2015-12-05`` graph as ported to PyTorch by pytorch-fid and
torch-fidelity). KID is torchmetrics' ``KernelInceptionDistance``; FID is torchmetrics'
``FrechetInceptionDistance`` for sets of more than 2048 images, and the same distance
computed exactly through the sets' low-rank covariances for smaller ones (seconds instead of
a minute of a 2048 x 2048 eigendecomposition on the CPU; see :func:`frechet_distance`).

The network is :class:`FIDInceptionV3`, written here with torch-fidelity's architecture and
parameter names, because torch-fidelity's own class cannot be imported without torchvision
(its package ``__init__`` imports it), and torchvision is no dependency of i2i. Its weights
come only from a file the user names: the standard ``pt_inception-2015-12-05-6726825d.pth``
of pytorch-fid (the same file torch-fidelity publishes as
``weights-inception-2015-12-05-6726825d.pth``); nothing is ever downloaded. README
"Evaluate" says where to get it.

Images are fed as torchmetrics' own Inception feeds them: uint8, resized to 299x299
(bilinear, antialiased), scaled by ``(x - 128) / 128``; a grayscale image is repeated to RGB.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

INPUT_SIZE = 299  # the Inception network's input side
NUM_FEATURES = 2048  # the pool features FID and KID compare
KID_SUBSETS = 100  # torchmetrics' (and torch-fidelity's) default number of KID subsets
KID_SUBSET_SIZE = 1000  # their default subset size; capped at the smaller set's size
WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/" + WEIGHTS_NAME
)


class FIDError(ValueError):
    """FID/KID cannot be computed as asked (too few images, a bad weights file)."""


class InceptionWeightsError(FIDError):
    """The Inception weights file is missing or is not the FID Inception's state dict."""


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as TensorFlow's), ReLU."""

    def __init__(self, c_in: int, c_out: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 3x3 average pool: padded zeros are not counted."""
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                double,
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )


class InceptionB(nn.Module):
    """35x35 -> 17x17 reduction."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        double = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), double, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions."""

    def __init__(self, c_in: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, col = (
            {"kernel_size": (1, 7), "padding": (0, 3)},
            {
                "kernel_size": (7, 1),
                "padding": (3, 0),
            },
        )
        self.branch1x1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            double = layer(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """17x17 -> 8x8 reduction."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches; ``max_pool`` for the last one (Mixed_7c),
    whose pooled branch the TensorFlow graph max-pools instead of averaging."""

    def __init__(self, c_in: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        row, col = (
            {"kernel_size": (1, 3), "padding": (0, 1)},
            {
                "kernel_size": (3, 1),
                "padding": (1, 0),
            },
        )
        self.branch1x1 = BasicConv2d(c_in, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, **row)
        self.branch3x3_2b = BasicConv2d(384, 384, **col)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, **row)
        self.branch3x3dbl_3b = BasicConv2d(384, 384, **col)
        self.branch_pool = BasicConv2d(c_in, 192, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        dbl = torch.cat([self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception v3: uint8 [N, 3, H, W] -> float32 pool features [N, 2048].

    Parameter names are those of pytorch-fid's and torch-fidelity's weights file (``fc``,
    the 1008-class head, is kept so that file loads strictly; FID does not use it).
    """

    num_features = NUM_FEATURES

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(NUM_FEATURES, 1008)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(
                f"the Inception network takes uint8 [N, 3, H, W], got {images.dtype} "
                f"{tuple(images.shape)}"
            )
        x = F.interpolate(
            images.to(torch.float32),
            size=(INPUT_SIZE, INPUT_SIZE),
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
        x = (x - 128) / 128
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


def _where_to_get() -> str:
    return (
        f"use the FID Inception weights {WEIGHTS_NAME} ({WEIGHTS_URL}; torch-fidelity's "
        "weights-inception-2015-12-05-6726825d.pth is the same file), see README 'Evaluate'"
    )


def load_inception(
    path: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> FIDInceptionV3:
    """The FID Inception network with the weights of a local file, in eval mode.

    Raises:
        InceptionWeightsError: the file does not exist, is not a PyTorch file of tensors, or
            is not the FID Inception's state dict (names the missing and unexpected keys).
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "file not found"
        raise InceptionWeightsError(f"{path}: Inception weights {what}; {_where_to_get()}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise InceptionWeightsError(
            f"{path}: not a PyTorch state dict of tensors ({exc}); {_where_to_get()}"
        ) from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InceptionWeightsError(
            f"{path}: not an Inception state dict (expected a dict of name -> tensor, got "
            f"{type(state).__name__}); {_where_to_get()}"
        )
    network = FIDInceptionV3()
    expected = network.state_dict()
    # Old saves lack BatchNorm's num_batches_tracked counters; the network fills them.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        details = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong))
            if keys
        )
        raise InceptionWeightsError(
            f"{path}: not the FID Inception v3 state dict ({details}); {_where_to_get()}"
        )
    network.load_state_dict(state, strict=False)
    return network.to(device).eval().requires_grad_(False)


def as_rgb_batch(images: Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 HWC images of one size as uint8 [N, 3, H, W] (grayscale repeated to RGB)."""
    batch = torch.from_numpy(np.stack([np.asarray(i, dtype=np.uint8) for i in images]))
    if batch.ndim == 3:
        batch = batch.unsqueeze(-1)
    if batch.shape[-1] == 1:
        batch = batch.expand(*batch.shape[:-1], 3)
    if batch.shape[-1] != 3:
        raise ValueError(f"FID/KID take RGB or grayscale images, got {batch.shape[-1]} channels")
    return batch.permute(0, 3, 1, 2).contiguous()


class _Precomputed(nn.Module):
    """torchmetrics' ``feature`` module for features computed beforehand: the identity."""

    def __init__(self, num_features: int = NUM_FEATURES) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, metric: Any = None) -> float:
    """FID between two float64 feature sets [N, D]: ``|mu_r - mu_f|^2 + tr(S_r + S_f -
    2 (S_r S_f)^(1/2))`` with the unbiased covariances, as torchmetrics computes it.

    torchmetrics' ``FrechetInceptionDistance`` (``metric``, the class) takes the
    eigenvalues of the D x D product S_r S_f: O(D^3), about a minute for D = 2048 on two
    CPU cores. With fewer images than D (a usual test set) both covariances have low rank,
    S = A A^T with A the centred features over sqrt(N - 1) (D x N), and the same trace is
    exact and cheap: tr (S_r S_f)^(1/2) is the sum of the singular values of A_r^T A_f
    (N_r x N_f), since the non-zero eigenvalues of A_r A_r^T A_f A_f^T are those of
    (A_r^T A_f)(A_r^T A_f)^T. Larger sets go to torchmetrics.
    """
    n_real, n_fake = len(real), len(fake)
    if metric is not None and min(n_real, n_fake) > real.shape[1]:
        fid = metric(feature=_Precomputed(real.shape[1]))
        fid.update(real, real=True)
        fid.update(fake, real=False)
        return float(fid.compute())
    a = (real - real.mean(0)) / math.sqrt(n_real - 1)
    b = (fake - fake.mean(0)) / math.sqrt(n_fake - 1)
    mean_term = float((real.mean(0) - fake.mean(0)).square().sum())
    trace_term = float(a.square().sum() + b.square().sum())
    cross = float(torch.linalg.svdvals(a @ b.T).sum())
    return mean_term + trace_term - 2 * cross


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """torch's global generator seeded for a block, and restored after it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class InceptionScorer:
    """Inception features of image sets, and FID/KID between two sets of features."""

    def __init__(
        self,
        weights: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        kid_subsets: int = KID_SUBSETS,
        kid_subset_size: int = KID_SUBSET_SIZE,
        seed: int = 0,
        batch_size: int = 16,
    ) -> None:
        for name, value in (("kid_subsets", kid_subsets), ("kid_subset_size", kid_subset_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        # torchmetrics is imported only when FID/KID are asked for, but before any work.
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        self._fid_metric = FrechetInceptionDistance
        self._kid_metric = KernelInceptionDistance
        self.weights = Path(weights)
        self.device = torch.device(device)
        self.network = load_inception(weights, self.device)
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.seed = seed
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """float64 [N, 2048] pool features of uint8 HWC images (any sizes, RGB or gray)."""
        out = []
        # Each image is resized to 299 on its own, so sizes may differ; same-size runs batch.
        start = 0
        while start < len(images):
            shape = images[start].shape[:2]
            stop = start + 1
            while (
                stop < len(images)
                and stop - start < self.batch_size
                and images[stop].shape[:2] == shape
            ):
                stop += 1
            batch = as_rgb_batch(images[start:stop]).to(self.device)
            out.append(self.network(batch).to("cpu", torch.float64))
            start = stop
        if not out:
            return torch.zeros(0, NUM_FEATURES, dtype=torch.float64)
        return torch.cat(out)

    def scores(self, real: torch.Tensor, fake: torch.Tensor, what: str) -> dict[str, Any]:
        """``{"fid", "kid_mean", "kid_std", "kid_subset_size"}`` between two feature sets.

        KID draws ``kid_subsets`` subsets of min(kid_subset_size, real count, fake count)
        features from each set (seeded), so a small test set still gets a KID.

        Raises:
            FIDError: a set has fewer than 2 images (``what`` names the comparison).
        """
        n_real, n_fake = len(real), len(fake)
        if min(n_real, n_fake) < 2:
            raise FIDError(
                f"{what}: FID and KID need at least 2 images in each set, got {n_fake} "
                f"translated and {n_real} real image(s)"
            )
        subset_size = min(self.kid_subset_size, n_real, n_fake)
        with warnings.catch_warnings():
            # "will save all extracted features in buffer": features are small here.
            warnings.filterwarnings("ignore", message=".*save all extracted features.*")
            kid = self._kid_metric(
                feature=_Precomputed(), subsets=self.kid_subsets, subset_size=subset_size
            )
        kid.update(real, real=True)
        kid.update(fake, real=False)
        with _seeded(self.seed):
            kid_mean, kid_std = kid.compute()
        value = frechet_distance(real, fake, self._fid_metric)
        if not math.isfinite(value):
            raise FIDError(f"{what}: FID is not finite ({value}); the features are degenerate")
        return {
            "fid": value,
            "kid_mean": float(kid_mean),
            "kid_std": float(kid_std),
            "kid_subset_size": subset_size,
        }
