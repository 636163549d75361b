"""Images labelled by domain, for the multi-domain families (two-step, StarGAN).

Two layouts are read, the first that is present:

- ``<root>/<phase>/<domain>/*.png``: one folder per domain, any number of domains;
- ``<root>/<phase>A/``, ``<root>/<phase>B/``, ...: the unaligned layout, whose folder
  suffixes are the domain names (so a CycleGAN dataset trains a two-domain model as is).

Domains are sorted by name; a domain's index is its position in that order unless the
caller passes the model's own list (a resumed or exported model keeps its order).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from i2i.data.epochs import EpochSeeded
from i2i.data.folders import (
    DataError,
    is_image_file,
    list_images,
    load_rgb,
    readable_images,
)
from i2i.data.transforms import TransformOptions, apply_transform

logger = logging.getLogger(__name__)


def domain_folders(root: str | os.PathLike[str], phase: str = "train") -> dict[str, Path]:
    """``{domain: folder}`` of a labelled dataset, sorted by domain name.

    Raises:
        DataError: neither layout is there, naming what was looked for.
    """
    root = Path(root)
    nested = root / phase
    if nested.is_dir():
        found = {
            p.name: p
            for p in sorted(nested.iterdir())
            if p.is_dir() and not p.name.startswith(".") and any(map(is_image_file, p.iterdir()))
        }
        if found:
            return found
    flat: dict[str, Path] = {}
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name.startswith(phase) and len(p.name) > len(phase):
                flat[p.name[len(phase) :]] = p
    if flat:
        return flat
    raise DataError(
        f"{root}: no labelled images: expected one folder of images per domain in "
        f"{nested}/<domain>/ (or {root}/{phase}A/, {root}/{phase}B/, ...)"
    )


def labelled_domains(root: str | os.PathLike[str], phase: str = "train") -> list[str]:
    """The domain names of a labelled dataset, sorted (see :func:`domain_folders`)."""
    return list(domain_folders(root, phase))


class LabelledDataset(EpochSeeded, Dataset[dict[str, Any]]):
    """Every image of every domain once per epoch, with its domain's index.

    Items are ``{"image": float32 (C, H, W) in [-1, 1], "domain": int64 scalar tensor,
    "path": str}``. Crops and flips come from ``numpy.random.default_rng([seed, epoch,
    index])``, as in :class:`~i2i.data.unaligned.UnalignedDataset`, so workers and resumed
    runs see the same data.

    Args:
        root: the dataset folder.
        phase: "train" or "test".
        transform: how images are resized, cropped and flipped.
        channels: 3 for RGB, 1 for grayscale.
        domains: the model's domain names in its order; None takes the folders' (sorted).
            Every name must have a folder; folders not named are left out (with a warning).
        seed: the data seed.
        skip_bad_images: decode every file now and leave out (and log) those that fail.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        phase: str = "train",
        transform: TransformOptions = TransformOptions(),  # noqa: B008 (frozen, immutable)
        channels: int = 3,
        domains: Sequence[str] | None = None,
        seed: int = 0,
        skip_bad_images: bool = False,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        self.root = Path(root)
        self.phase = phase
        self.transform = transform
        self.channels = channels
        self.seed = int(seed)
        folders = domain_folders(root, phase)
        names = list(folders) if domains is None else list(domains)
        missing = [d for d in names if d not in folders]
        if missing:
            raise DataError(
                f"{self.root}: no {phase} images for domain(s) {', '.join(missing)} of the "
                f"model (found: {', '.join(folders)})"
            )
        extra = [d for d in folders if d not in names]
        if extra:
            logger.warning("leaving out folders that are not domains of the model: %s", extra)
        self.domains = names
        self.items: list[tuple[Path, int]] = []
        self.skipped: list[Path] = []
        for index, name in enumerate(names):
            paths = list_images(folders[name])
            if skip_bad_images:
                paths, skipped = readable_images(paths, channels, str(folders[name]))
                self.skipped.extend(skipped)
            self.items.extend((p, index) for p in paths)
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.items)

    def counts(self) -> dict[str, int]:
        """How many images each domain has."""
        out = dict.fromkeys(self.domains, 0)
        for _, index in self.items:
            out[self.domains[index]] += 1
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        path, domain = self.items[index]
        img = load_rgb(path, self.channels)
        try:
            image = apply_transform(img, self.transform, rng)
        except DataError:
            raise
        except ValueError as exc:  # e.g. an image smaller than crop_size
            raise DataError(f"{path}: {exc}") from exc
        return {
            "image": image,
            "domain": torch.tensor(domain, dtype=torch.int64),
            "path": str(path),
        }
