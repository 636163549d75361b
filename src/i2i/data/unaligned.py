"""Unpaired images of two domains (`<root>/<phase>A`, `<root>/<phase>B`), as for CycleGAN."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from i2i.data.epochs import EpochSeeded
from i2i.data.folders import DataError, list_images, load_rgb, readable_images
from i2i.data.transforms import TransformOptions, apply_transform

logger = logging.getLogger(__name__)


class UnalignedDataset(EpochSeeded, Dataset[dict[str, Any]]):
    """Item i pairs A[i % len(A)] with B[i % len(B)] (serial) or a random B.

    Randomness (the B index, crops, flips) comes from
    `numpy.random.default_rng([seed, epoch, index])`, so an item depends only on those
    three numbers: the same in every DataLoader worker, and again after a resume. The
    epoch lives in shared memory, so `set_epoch` reaches workers that already exist
    (`persistent_workers=True`); call it before iterating over the loader, as with
    `DistributedSampler.set_epoch`.

    Args:
        root: the dataset folder, holding `<phase>A/` and `<phase>B/`.
        phase: "train" or "test" (any name whose folders exist).
        transform: how images are resized, cropped and flipped.
        channels_a: 3 for RGB, 1 for grayscale images of domain A.
        channels_b: the same for domain B.
        serial: pair images in order instead of drawing a random B.
        seed: the data seed.
        skip_bad_images: decode every file now and leave out (and log) those that fail,
            instead of failing when a bad file is reached.

    Raises:
        DataError: a domain folder is missing or empty (or, with `skip_bad_images`,
            holds no readable image).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        phase: str = "train",
        transform: TransformOptions = TransformOptions(),  # noqa: B008 (frozen, immutable)
        channels_a: int = 3,
        channels_b: int = 3,
        serial: bool = False,
        seed: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        for name, channels in (("channels_a", channels_a), ("channels_b", channels_b)):
            if channels not in (1, 3):
                raise ValueError(f"{name} must be 1 (grayscale) or 3 (RGB), got {channels}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.root = Path(root)
        self.phase = phase
        self.transform = transform
        self.channels_a = channels_a
        self.channels_b = channels_b
        self.serial = serial
        self.seed = int(seed)
        self.skipped: list[Path] = []
        self.a_paths = self._domain_images("A")
        self.b_paths = self._domain_images("B")
        if skip_bad_images:
            self.a_paths = self._readable(self.a_paths, channels_a, "A")
            self.b_paths = self._readable(self.b_paths, channels_b, "B")
        self._init_epoch()

    def __len__(self) -> int:
        return max(len(self.a_paths), len(self.b_paths))

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        a_path = self.a_paths[index % len(self.a_paths)]
        n_b = len(self.b_paths)
        b_index = index % n_b if self.serial else int(rng.integers(n_b))
        b_path = self.b_paths[b_index]
        real_a = self._prepare(a_path, self.channels_a, rng)
        real_b = self._prepare(b_path, self.channels_b, rng)
        return {"A": real_a, "B": real_b, "A_path": str(a_path), "B_path": str(b_path)}

    def _prepare(self, path: Path, channels: int, rng: np.random.Generator) -> torch.Tensor:
        img = load_rgb(path, channels)
        try:
            return apply_transform(img, self.transform, rng)
        except DataError:
            raise
        except ValueError as exc:  # e.g. an image smaller than crop_size
            raise DataError(f"{path}: {exc}") from exc

    def _domain_images(self, domain: str) -> list[Path]:
        try:
            return list_images(self.root / f"{self.phase}{domain}")
        except DataError as exc:
            raise DataError(
                f"{exc}; an unaligned dataset needs {self.root / (self.phase + 'A')}/ "
                f"and {self.root / (self.phase + 'B')}/"
            ) from None

    def _readable(self, paths: list[Path], channels: int, domain: str) -> list[Path]:
        good, skipped = readable_images(paths, channels, str(self.root / (self.phase + domain)))
        self.skipped.extend(skipped)
        return good
