"""Paired images of two domains, as pix2pix trains on them.

Two layouts are read:

- the reference's: ``<root>/<phase>/*.png``, each image A and B side by side (``[A | B]``,
  split at ``width // 2``; the width must be even);
- a folder pair: ``<root>/<phase>A/`` and ``<root>/<phase>B/`` whose files pair up by
  their path relative to the folder (``trainA/x/001.png`` with ``trainB/x/001.png``).

``<root>/<phase>/`` wins when both exist. A and B of a pair must have the same size, and
both get the same resize, crop and flip, so they stay pixel-aligned.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from i2i.data.epochs import EpochSeeded
from i2i.data.folders import DataError, list_images, load_rgb
from i2i.data.transforms import TransformOptions, apply_transform

logger = logging.getLogger(__name__)


class AlignedDataset(EpochSeeded, Dataset[dict[str, Any]]):
    """Item i is the i-th pair (sorted by path): ``{"A", "B", "A_path", "B_path"}``.

    "A" is always domain A (the left half, or ``<phase>A/``) and "B" domain B; which one
    the generator reads is the trainer's business (pix2pix's ``direction``). "A_path" and
    "B_path" are the same file in the side-by-side layout.

    Crops and flips come from ``numpy.random.default_rng([seed, epoch, index])``, drawn
    once and applied to both images, so an item depends only on those three numbers: the
    same in every DataLoader worker and after a resume. ``set_epoch`` works as in
    :class:`~i2i.data.unaligned.UnalignedDataset`.

    Args:
        root: the dataset folder, holding ``<phase>/`` or ``<phase>A/`` + ``<phase>B/``.
        phase: "train" or "test" (any name whose folders exist).
        transform: how images are resized, cropped and flipped (both halves alike).
        channels_a: 3 for RGB, 1 for grayscale images of domain A.
        channels_b: the same for domain B.
        serial: accepted for the same constructor as UnalignedDataset; pairs are fixed,
            so it changes nothing here (the loop's order uses ``data.serial`` itself).
        seed: the data seed.
        skip_bad_images: decode every file now and leave out (and log) the pairs that fail,
            instead of failing when a bad file is reached.

    Raises:
        DataError: no usable layout under ``root``, a folder is empty, file names do not
            pair up, or (with ``skip_bad_images``) no pair is readable.
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
        self.pairs = self._find_pairs()
        self.side_by_side = self.pairs[0][0] == self.pairs[0][1]
        if skip_bad_images:
            self.pairs = self._readable(self.pairs)
        self._init_epoch()

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        a_path, b_path = self.pairs[index]
        img_a, img_b = self._load_pair(a_path, b_path)
        seed = [self.seed, self.epoch, index]
        try:
            # Two generators in the same state, on images of the same size: the same crop
            # position and the same flip for both.
            real_a = apply_transform(img_a, self.transform, np.random.default_rng(seed))
            real_b = apply_transform(img_b, self.transform, np.random.default_rng(seed))
        except DataError:
            raise
        except ValueError as exc:  # e.g. an image smaller than crop_size
            raise DataError(f"{a_path}: {exc}") from exc
        return {"A": real_a, "B": real_b, "A_path": str(a_path), "B_path": str(b_path)}

    def load_pair(self, index: int) -> tuple[Image.Image, Image.Image]:
        """Pair ``index`` as stored (no resize, crop or flip): A and B in their domains' modes."""
        a_path, b_path = self.pairs[index]
        return self._load_pair(a_path, b_path)

    def _load_pair(self, a_path: Path, b_path: Path) -> tuple[Image.Image, Image.Image]:
        """Decode a pair into images of equal size, A and B in their domains' modes."""
        if a_path == b_path:
            both = load_rgb(a_path, 3 if 3 in (self.channels_a, self.channels_b) else 1)
            w, h = both.size
            if w % 2:
                raise DataError(
                    f"{a_path}: width {w} is odd; an aligned image holds A and B side by side, "
                    "two halves of equal width"
                )
            img_a = both.crop((0, 0, w // 2, h))
            img_b = both.crop((w // 2, 0, w, h))
            return _as_channels(img_a, self.channels_a), _as_channels(img_b, self.channels_b)
        img_a = load_rgb(a_path, self.channels_a)
        img_b = load_rgb(b_path, self.channels_b)
        if img_a.size != img_b.size:
            raise DataError(
                f"{a_path} is {img_a.size[0]}x{img_a.size[1]} pixels but its pair {b_path} is "
                f"{img_b.size[0]}x{img_b.size[1]}: paired images must have the same size"
            )
        return img_a, img_b

    def _find_pairs(self) -> list[tuple[Path, Path]]:
        combined = self.root / self.phase
        folder_a, folder_b = self.root / f"{self.phase}A", self.root / f"{self.phase}B"
        if combined.is_dir():
            if folder_a.is_dir() or folder_b.is_dir():
                logger.info(
                    "%s: reading the side-by-side images in %s/ (ignoring %s/ and %s/)",
                    self.root,
                    self.phase,
                    folder_a.name,
                    folder_b.name,
                )
            return [(p, p) for p in list_images(combined)]
        if not (folder_a.is_dir() and folder_b.is_dir()):
            raise DataError(
                f"{self.root}: no aligned dataset for phase {self.phase!r}; expected "
                f"{combined}/ (each image A and B side by side) or {folder_a}/ and "
                f"{folder_b}/ (pairs with equal file names)"
            )
        in_a = {p.relative_to(folder_a): p for p in list_images(folder_a)}
        in_b = {p.relative_to(folder_b): p for p in list_images(folder_b)}
        only_a, only_b = sorted(set(in_a) - set(in_b)), sorted(set(in_b) - set(in_a))
        if only_a or only_b:
            parts = []
            for folder, names in ((folder_a, only_a), (folder_b, only_b)):
                if names:
                    listed = ", ".join(str(n) for n in names[:3])
                    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                    other = folder_b if folder is folder_a else folder_a
                    parts.append(
                        f"{len(names)} file(s) in {folder}/ without a pair in {other.name}/ "
                        f"({listed}{more})"
                    )
            raise DataError(
                f"{self.root}: unpaired images: {'; '.join(parts)}. Paired folders need the "
                "same file names on both sides"
            )
        return [(in_a[name], in_b[name]) for name in sorted(in_a)]

    def _readable(self, pairs: list[tuple[Path, Path]]) -> list[tuple[Path, Path]]:
        good: list[tuple[Path, Path]] = []
        for a_path, b_path in pairs:
            try:
                self._load_pair(a_path, b_path)
            except DataError as exc:
                logger.warning("skipping unreadable pair: %s", exc)
                self.skipped.append(a_path)
            else:
                good.append((a_path, b_path))
        if not good:
            raise DataError(
                f"{self.root}: none of the {len(pairs)} pairs could be decoded (see the "
                "warnings above)"
            )
        if len(good) < len(pairs):
            logger.warning("skipped %d of %d pairs", len(pairs) - len(good), len(pairs))
        return good


def _as_channels(img: Image.Image, channels: int) -> Image.Image:
    mode = "RGB" if channels == 3 else "L"
    return img if img.mode == mode else img.convert(mode)
