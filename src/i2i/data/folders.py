"""Finding and decoding image files: the reference's image-folder rules, with clear errors."""

from __future__ import annotations

import logging
import os
import struct
from pathlib import Path

from PIL import Image

logger = logging.getLogger(__name__)

# The reference implementation's list (data/image_folder.py); matching is by suffix and
# case-sensitive, which is why the upper-case variants are spelled out.
IMG_EXTENSIONS: tuple[str, ...] = (
    ".jpg",
    ".JPG",
    ".jpeg",
    ".JPEG",
    ".png",
    ".PNG",
    ".ppm",
    ".PPM",
    ".bmp",
    ".BMP",
    ".tif",
    ".TIF",
    ".tiff",
    ".TIFF",
    ".webp",
)

# What Pillow raises on broken, truncated or foreign files, depending on the format plugin.
_DECODE_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    EOFError,
    struct.error,
    Image.DecompressionBombError,
)


class DataError(ValueError):
    """A dataset folder or image file is missing, empty or unreadable."""


def is_image_file(name: str | os.PathLike[str]) -> bool:
    """Whether a file name ends with one of `IMG_EXTENSIONS`."""
    return str(name).endswith(IMG_EXTENSIONS)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """All image files under `folder`, recursively (following links), sorted.

    Hidden files and folders (names starting with ".", e.g. macOS "._x.jpg" forks, which
    are not images) are left out.

    Raises:
        DataError: the folder does not exist or holds no image file.
    """
    root = Path(folder)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "folder not found"
        raise DataError(f"{root}: {what} (expected a folder of images: {_extensions_hint()})")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(
            Path(dirpath) / name
            for name in filenames
            if is_image_file(name) and not name.startswith(".")
        )
    if not found:
        raise DataError(f"{root}: no images found (looked for {_extensions_hint()})")
    return sorted(found)


def load_rgb(path: str | os.PathLike[str], channels: int = 3) -> Image.Image:
    """Fully decode an image file into an RGB (channels=3) or L (channels=1) image.

    Decoding happens here, not lazily later, so a truncated or corrupt file fails now
    with its name rather than deep inside a DataLoader worker.

    Raises:
        DataError: the file cannot be read or decoded (the message names the file).
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert(mode)
    except _DECODE_ERRORS as exc:
        raise DataError(f"{path}: cannot decode image ({type(exc).__name__}: {exc})") from exc


def _extensions_hint() -> str:
    lower = sorted({ext.lower() for ext in IMG_EXTENSIONS}, key=IMG_EXTENSIONS.index)
    return ", ".join(lower)


def readable_images(paths: list[Path], channels: int, where: str) -> tuple[list[Path], list[Path]]:
    """``(readable, skipped)``: ``paths`` split by whether they decode (as ``channels``),
    each skipped file logged; DataError naming ``where`` if none decodes."""
    good: list[Path] = []
    skipped: list[Path] = []
    for path in paths:
        try:
            load_rgb(path, channels)
        except DataError as exc:
            logger.warning("skipping unreadable image: %s", exc)
            skipped.append(path)
        else:
            good.append(path)
    if not good:
        raise DataError(
            f"{where}: none of the {len(paths)} images could be decoded (see the warnings above)"
        )
    if skipped:
        logger.warning("%s: skipped %d of %d images", where, len(skipped), len(paths))
    return good, skipped
