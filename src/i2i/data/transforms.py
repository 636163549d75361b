"""The reference's preprocessing (resize, crop, scale width, flip) without torchvision,
plus the two-step paper's random rotation and zoom (off by default).

Every random choice is drawn from an explicit `numpy.random.Generator`, never from a
global RNG, so the same generator state gives the same tensor in any process: that is
what lets DataLoader workers and a resumed run reproduce the data exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

PREPROCESS_MODES: tuple[str, ...] = (
    "resize_and_crop",
    "crop",
    "scale_width",
    "scale_width_and_crop",
    "none",
)

# `none` still rounds sizes to a multiple of this (ResNet generators down/up-sample by 4).
SIZE_BASE = 4


@dataclass(frozen=True)
class TransformOptions:
    """How images are prepared for training (the reference's --preprocess, sizes, --no_flip).

    Args:
        preprocess: one of `PREPROCESS_MODES`.
        load_size: the size images are resized to (the width for the scale_width modes).
        crop_size: the side of the random square crop.
        no_flip: turn off the random horizontal flip.
        rotate: rotate by a random angle in [-rotate, rotate] degrees after the flip (0:
            off); corners the rotation uncovers are black, so pair it with ``zoom``.
        zoom: zoom in by a random factor in [1, 1 + zoom] about the centre, keeping the
            size (0: off).

    With ``rotate`` and ``zoom`` off nothing more is drawn from the generator, so the
    other settings give the same images as before these options existed.
    """

    preprocess: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    no_flip: bool = False
    rotate: float = 0.0
    zoom: float = 0.0

    def __post_init__(self) -> None:
        if self.preprocess not in PREPROCESS_MODES:
            raise ValueError(
                f"unknown preprocess mode {self.preprocess!r}; "
                f"valid modes: {', '.join(PREPROCESS_MODES)}"
            )
        for name in ("load_size", "crop_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.preprocess in ("resize_and_crop", "scale_width_and_crop") and (
            self.crop_size > self.load_size
        ):
            raise ValueError(
                f"crop_size ({self.crop_size}) is larger than load_size ({self.load_size}): "
                f"preprocess {self.preprocess!r} resizes to load_size before cropping"
            )
        for name, limit in (("rotate", 180.0), ("zoom", 10.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not 0.0 <= value <= limit:
                raise ValueError(f"{name} must lie in [0, {limit:g}], got {value!r}")


def apply_transform(
    img: Image.Image, opts: TransformOptions, rng: np.random.Generator
) -> torch.Tensor:
    """Resize/crop/flip `img` as `opts` says and return a float32 (C, H, W) tensor in [-1, 1].

    A mode "L" image gives one channel, anything else is converted to RGB (three).

    Raises:
        ValueError: the crop is larger than the image after resizing (mode "crop"), or
            the image is too small for mode "none".
    """
    if img.mode not in ("L", "RGB"):
        img = img.convert("RGB")
    mode = opts.preprocess
    if mode == "resize_and_crop":
        img = img.resize((opts.load_size, opts.load_size), Image.Resampling.BICUBIC)
    elif mode.startswith("scale_width"):
        img = scale_width(img, opts.load_size, opts.crop_size)
    elif mode == "none":
        img = make_multiple_of(img, SIZE_BASE)

    if mode.endswith("crop"):
        img = random_crop(img, opts.crop_size, rng)

    if not opts.no_flip and rng.random() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if opts.rotate > 0:
        angle = float(rng.uniform(-opts.rotate, opts.rotate))
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC)
    if opts.zoom > 0:
        img = zoom_in(img, float(rng.uniform(1.0, 1.0 + opts.zoom)))
    return to_tensor(np.asarray(img))


def zoom_in(img: Image.Image, factor: float) -> Image.Image:
    """Enlarge ``img`` by ``factor`` (>= 1, BICUBIC) and crop its centre back to its size."""
    if factor < 1:
        raise ValueError(f"zoom factor must be >= 1, got {factor}")
    w, h = img.size
    zw, zh = max(w, round(w * factor)), max(h, round(h * factor))
    if (zw, zh) == (w, h):
        return img
    big = img.resize((zw, zh), Image.Resampling.BICUBIC)
    x, y = (zw - w) // 2, (zh - h) // 2
    return big.crop((x, y, x + w, y + h))


def scale_width(img: Image.Image, width: int, min_height: int) -> Image.Image:
    """Resize to `width`, keeping the aspect ratio but at least `min_height` tall.

    The reference's `__scale_width`: the height is truncated to an integer, and an image
    already `width` wide and at least `min_height` tall is returned untouched.
    """
    ow, oh = img.size
    if ow == width and oh >= min_height:
        return img
    height = int(max(width * oh / ow, min_height))
    return img.resize((width, height), Image.Resampling.BICUBIC)


def make_multiple_of(img: Image.Image, base: int = SIZE_BASE) -> Image.Image:
    """Resize (BICUBIC) each side to the nearest multiple of `base` (the reference's
    `__make_power_2`, which rounds half to even like Python's `round`)."""
    ow, oh = img.size
    w, h = int(round(ow / base) * base), int(round(oh / base) * base)
    if w == 0 or h == 0:
        raise ValueError(f"image of {ow}x{oh} pixels is too small to round to a multiple of {base}")
    if (w, h) == (ow, oh):
        return img
    return img.resize((w, h), Image.Resampling.BICUBIC)


def random_crop(img: Image.Image, size: int, rng: np.random.Generator) -> Image.Image:
    """A random `size`x`size` crop, every position equally likely."""
    w, h = img.size
    if size > w or size > h:
        raise ValueError(
            f"crop_size {size} is larger than the image after resizing ({w}x{h} pixels); "
            "use a smaller crop_size, a larger load_size or another preprocess mode"
        )
    x = int(rng.integers(0, w - size + 1))
    y = int(rng.integers(0, h - size + 1))
    return img.crop((x, y, x + size, y + size))


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, C) or (H, W) pixels → float32 (C, H, W) in [-1, 1].

    Same numbers as torchvision's ToTensor followed by Normalize(0.5, 0.5).
    """
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 array, got {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"expected an (H, W, C) or (H, W) array, got shape {array.shape}")
    if not array.flags.writeable:  # e.g. np.asarray(PIL image); torch wants writable memory
        array = array.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)  # (C, H, W)
    return tensor.to(torch.float32).div(255.0).sub(0.5).div(0.5)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """float (C, H, W) or (N, C, H, W) in [-1, 1] → uint8 (H, W, C) or (N, H, W, C).

    Values are rounded to the nearest level (not truncated) and clamped to [0, 255].
    """
    if tensor.ndim not in (3, 4):
        raise ValueError(f"expected a (C, H, W) or (N, C, H, W) tensor, got {tuple(tensor.shape)}")
    levels = (tensor.detach().to("cpu", torch.float32) + 1.0) * 127.5
    levels = levels.round().clamp(0, 255).to(torch.uint8)
    return levels.movedim(-3, -1).contiguous().numpy()
