"""Decode, validate and encode request images, and fit them to a model's size rule.

Pure functions on numpy arrays and Pillow images, so the servicer can run them in a thread
pool and tests can call them without a network. Every problem with a caller's image is
raised as an `i2i.serving.errors` class with a message that says what to change.

Conventions: pixel arrays are uint8, (height, width, channels), row-major, RGB or gray.
Arrays returned by the decoders may be read-only views; copy before writing in place.
"""

from __future__ import annotations

import functools
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from i2i.serving.errors import InvalidArgument, ResourceExhausted
from i2i.shapes import ShapeRule

FORMATS = ("png", "jpeg", "webp")
SIZE_POLICIES = ("pad", "resize", "reject")
DEFAULT_QUALITY = 90

# Pillow's format names -> ours. MPO is how Pillow names a JPEG that carries extra
# pictures (many phone cameras write them); its first picture is an ordinary JPEG.
_PILLOW_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp"}
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_GRAY_MODES = ("1", "L", "LA", "La")
# Modes whose colours need the palette's alpha to convert without a Pillow warning.
_PALETTE_MODES = ("P", "PA")
# ITU-R 601-2 luma in 16-bit fixed point, exactly as Pillow's convert("L") computes it.
_LUMA_WEIGHTS = np.array([19595, 38470, 7471], dtype=np.uint32)


def decode_image(data: bytes, *, channels: int, max_pixels: int) -> tuple[np.ndarray, str]:
    """Decode PNG, JPEG or WebP bytes into the pixels a model takes.

    The EXIF orientation is applied (phone photos come out upright), animated images give
    their first frame, and the alpha channel, if any, is ignored: the colour under a
    transparent pixel is used as it is.

    Args:
        data: the encoded file.
        channels: what the model takes: 1 (gray) or 3 (RGB).
        max_pixels: the largest height * width accepted; checked from the file's header
            before any pixel is decoded.

    Returns:
        uint8 pixels (height, width, channels) and the format: "png", "jpeg" or "webp".

    Raises:
        InvalidArgument: empty, corrupt or truncated data, a format other than PNG, JPEG or
            WebP, or an image of zero size.
        ResourceExhausted: the image has more than ``max_pixels`` pixels, or more than
            Pillow's own decompression-bomb limit.
    """
    _check_channels(channels)
    if not data:
        raise InvalidArgument("the image could not be decoded: the image data is empty")
    try:
        # Pillow warns (DecompressionBombWarning) above Image.MAX_IMAGE_PIXELS and raises
        # above twice that; make the warning an error here without touching the global
        # limit. catch_warnings swaps process-wide filters, so two threads can interleave;
        # the worst outcome is a warning left as a warning, and the max_pixels check below
        # still stops the image before it is decoded.
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                fmt = _accepted_format(image.format)
                _check_size(image.height, image.width, max_pixels)
                image.load()  # the pixels are decoded here; truncated data raises here
                ImageOps.exif_transpose(image, in_place=True)
                pixels = image_to_array(image, channels)
    except (InvalidArgument, ResourceExhausted):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ResourceExhausted(_bomb_message(error, max_pixels)) from error
    except UnidentifiedImageError as error:  # its message is a repr of our BytesIO: say more
        raise InvalidArgument(
            f"the image could not be decoded: its {len(data)} bytes (starting "
            f"{data[:8].hex(' ')}) are not a PNG, JPEG or WebP file, nor any image format "
            "Pillow knows. Send the file's bytes as they are (not base64 text or a path)."
        ) from error
    except MemoryError:
        raise
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ...) on bad data
        raise InvalidArgument(
            f"the image could not be decoded: {error}. Send a complete PNG, JPEG or WebP file."
        ) from error
    return pixels, fmt


def raw_image(
    pixels: bytes,
    height: int,
    width: int,
    declared_channels: int,
    *,
    channels: int,
    max_pixels: int,
) -> np.ndarray:
    """Check raw row-major uint8 pixels (height, width, declared_channels) and convert them.

    Args:
        pixels: the bytes, height * width * declared_channels of them.
        height: rows.
        width: columns.
        declared_channels: 1 (gray), 3 (RGB) or 4 (RGBA; the alpha channel is ignored).
        channels: what the model takes: 1 or 3. Gray becomes RGB by repetition, RGB becomes
            gray by ITU-R 601-2 luma (as Pillow's "L").
        max_pixels: the largest height * width accepted; checked before any allocation.

    Returns:
        uint8 pixels (height, width, channels).

    Raises:
        InvalidArgument: a zero size, an unsupported channel count, or a byte count that
            does not match the declared shape.
        ResourceExhausted: height * width is more than ``max_pixels``.
    """
    _check_channels(channels)
    if declared_channels not in (1, 3, 4):
        raise InvalidArgument(
            f"raw image channels must be 1 (gray), 3 (RGB) or 4 (RGBA), got {declared_channels}"
        )
    _check_size(height, width, max_pixels)
    expected = height * width * declared_channels
    if len(pixels) != expected:
        raise InvalidArgument(
            f"raw image of {height}x{width}x{declared_channels} needs exactly {expected} bytes "
            f"(uint8, row-major, height x width x channels), got {len(pixels)}"
        )
    array = np.frombuffer(pixels, dtype=np.uint8).reshape(height, width, declared_channels)
    if declared_channels == 4:
        array = array[:, :, :3]
    return _match_channels(array, channels)


def image_to_array(image: Image.Image, channels: int) -> np.ndarray:
    """A loaded Pillow image of any mode -> uint8 (height, width, channels); alpha ignored.

    16-bit samples are scaled by value (65535 -> 255), not clipped as Pillow's convert
    would. Mode "I" (32-bit integer) is read as 16-bit samples, which is what PNG's 16-bit
    gray used to load as; mode "F" (float) follows Pillow's 0-255 convention.
    """
    _check_channels(channels)
    mode = image.mode
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        # (H, W) uint16 in either byte order, or int32 for "I": native uint32 in 0..65535
        samples = np.clip(np.asarray(image), 0, 65535).astype(np.uint32)
        gray = ((samples * 255 + 32767) // 65535).astype(np.uint8)
        return _match_channels(gray[:, :, None], channels)
    if mode == "F":
        gray = np.clip(np.rint(np.asarray(image, dtype=np.float32)), 0, 255).astype(np.uint8)
        return _match_channels(gray[:, :, None], channels)
    if mode in _GRAY_MODES:
        gray_image = image if mode == "L" else image.convert("L")
        return _match_channels(np.asarray(gray_image)[:, :, None], channels)
    if mode in _PALETTE_MODES:
        rgb = np.asarray(image.convert("RGBA"))[:, :, :3]
    else:  # RGB, RGBA, RGBX, CMYK, YCbCr, LAB, HSV, ...
        rgb = np.asarray(image if mode == "RGB" else image.convert("RGB"))
    return _match_channels(rgb, channels)


def rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> uint8 (H, W, 1) by ITU-R 601-2 luma, bit-exact with Pillow's "L"."""
    weighted = rgb.astype(np.uint32) @ _LUMA_WEIGHTS  # (H, W)
    return ((weighted + 0x8000) >> 16).astype(np.uint8)[:, :, None]


def encode_image(pixels: np.ndarray, fmt: str, quality: int = 0) -> bytes:
    """Encode uint8 (H, W, 1|3) pixels as PNG, JPEG or WebP; one channel encodes as gray.

    Args:
        pixels: the image.
        fmt: "png" (lossless), "jpeg" (4:2:0 chroma subsampling) or "webp".
        quality: JPEG and WebP quality 1-100; 0 means the default (90). WebP at 100 is
            lossless. PNG ignores it.

    Raises:
        InvalidArgument: an unknown format or a quality outside 0-100.
        ValueError: pixels that are not uint8 (H, W, 1|3); a bug upstream, not the caller's.
    """
    if fmt not in FORMATS:
        raise InvalidArgument(
            f"unknown output format {fmt!r}: the formats are {', '.join(FORMATS)} (or raw)"
        )
    if not 0 <= quality <= 100:
        raise InvalidArgument(
            f"output quality must be 1-100, or 0 for the default ({DEFAULT_QUALITY}), got {quality}"
        )
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] not in (1, 3):
        raise ValueError(
            f"expected uint8 pixels (H, W, 1|3), got {pixels.dtype} {tuple(pixels.shape)}"
        )
    image = Image.fromarray(
        np.ascontiguousarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    )
    quality = quality or DEFAULT_QUALITY
    buffer = io.BytesIO()
    if fmt == "png":
        # Level 1 is several times faster than Pillow's default 6 and the file only a little
        # larger: on a server, latency matters more than bytes on the wire.
        image.save(buffer, "PNG", compress_level=1)
    elif fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality, subsampling="4:2:0")
    elif quality == 100:
        # For lossless WebP "quality" is the compression effort; a middle value keeps it fast.
        image.save(buffer, "WEBP", lossless=True, quality=50)
    else:
        image.save(buffer, "WEBP", quality=quality)
    return buffer.getvalue()


@dataclass(frozen=True)
class Fitted:
    """An image at a size the model accepts, and how to bring the model's output back.

    Attributes:
        pixels: (H', W', C), the size the model accepts.
        restore: maps a model output (H', W', C_out) back to the input's (H, W, C_out).
    """

    pixels: np.ndarray
    restore: Callable[[np.ndarray], np.ndarray]


def fit_to_rule(pixels: np.ndarray, rule: ShapeRule, policy: str) -> Fitted:
    """Bring (H, W, C) pixels to a size the model accepts, following the size policy.

    Run before the image joins a batch, so a size the network cannot take is the caller's
    INVALID_ARGUMENT, never a failed batch.

    Args:
        pixels: the decoded image.
        rule: the sizes the model accepts (multiples, a fixed size, a smallest side).
        policy: "pad" reflect-pads bottom and right up to the next multiple (or the fixed
            size) and crops the output back; "resize" resizes (bicubic) to the nearest
            accepted size, scaling small images up to the smallest, and the output back;
            "reject" refuses sizes the model does not accept.

    Raises:
        InvalidArgument: policy "reject" and a size the model does not accept; policy
            "pad" and an image larger than the model's fixed size, or one that padding to
            the next multiple leaves below the smallest accepted size.
        ValueError: an unknown policy (a bug upstream).
    """
    if policy not in SIZE_POLICIES:
        raise ValueError(f"unknown size policy {policy!r}; expected one of {SIZE_POLICIES}")
    height, width = pixels.shape[:2]
    nearest = rule.nearest(height, width)
    if rule.fixed_size is not None:
        ceiling = nearest
    else:
        m = rule.multiple_of
        ceiling = (-(-height // m) * m, -(-width // m) * m)
    too_small = min(ceiling) < rule.smallest  # padding alone cannot reach the smallest size
    if ceiling == (height, width) and not too_small:
        return Fitted(pixels, functools.partial(_unchanged, size=(height, width)))

    if policy == "reject":
        raise InvalidArgument(
            f"image size {height}x{width} is not accepted: {_rule_words(rule, nearest)}; "
            f"{_remedy(too_small, 'resize it')}"
        )
    if policy == "pad":
        if rule.fixed_size is not None and (height > rule.fixed_size or width > rule.fixed_size):
            raise InvalidArgument(
                f"image size {height}x{width} is larger than this model's fixed size "
                f"{rule.fixed_size}x{rule.fixed_size}, so it cannot be padded; resize it or send "
                "size_policy RESIZE"
            )
        if too_small:
            side = rule.smallest
            raise InvalidArgument(
                f"image size {height}x{width} is too small for this model: its smallest "
                f"accepted size is {side}x{side}, and padding (size_policy PAD) only rounds "
                f"each side up to a multiple of {rule.multiple_of}, so sides need at least "
                f"{side - rule.multiple_of + 1} pixels; send a larger image, or size_policy "
                "RESIZE to scale it up"
            )
        return _pad(pixels, ceiling)

    def restore(output: np.ndarray) -> np.ndarray:
        _check_output(output, nearest)
        return _resize(output, (height, width))

    return Fitted(_resize(pixels, nearest), restore)


def _rule_words(rule: ShapeRule, nearest: tuple[int, int]) -> str:
    """What the rule accepts, for an error message about an image it does not."""
    if rule.fixed_size is not None:
        return f"this model takes exactly {rule.fixed_size}x{rule.fixed_size}"
    m, smallest, near = rule.multiple_of, rule.smallest, f"{nearest[0]}x{nearest[1]}"
    if smallest > m:
        return (
            f"height and width must be multiples of {m} and at least {smallest} (smallest "
            f"accepted size: {smallest}x{smallest}; nearest accepted size: {near})"
        )
    return f"height and width must be multiples of {m} (nearest accepted size: {near})"


def _remedy(too_small: bool, own: str) -> str:
    """The size policies that would take the image (padding cannot reach the smallest)."""
    return f"{own} or send size_policy {'RESIZE' if too_small else 'PAD or RESIZE'}"


def _pad(pixels: np.ndarray, size: tuple[int, int]) -> Fitted:
    height, width = pixels.shape[:2]
    pad = ((0, size[0] - height), (0, size[1] - width)) + ((0, 0),) * (pixels.ndim - 2)
    # numpy's "reflect" reflects again and again when the pad is wider than the image and
    # repeats the edge of a one-pixel side, so tiny images pad without error.
    padded = np.pad(pixels, pad, mode="reflect")

    def restore(output: np.ndarray) -> np.ndarray:
        _check_output(output, size)
        return np.ascontiguousarray(output[:height, :width])

    return Fitted(padded, restore)


def _resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bicubic resize of uint8 (H, W, C) to ``size`` (height, width), channel by channel."""
    if pixels.shape[:2] == size:
        return pixels
    target = (size[1], size[0])  # Pillow takes (width, height)
    if pixels.ndim == 3 and pixels.shape[2] == 3:
        return np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels)).resize(target, Image.Resampling.BICUBIC)
        )
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(pixels[:, :, c])).resize(
                target, Image.Resampling.BICUBIC
            )
        )
        for c in range(pixels.shape[2])
    ]
    return np.stack(channels, axis=2)


def _check_output(output: np.ndarray, size: tuple[int, int]) -> None:
    if output.shape[:2] != size:
        raise ValueError(
            f"model output is {output.shape[0]}x{output.shape[1]}, expected {size[0]}x{size[1]}"
        )


def _unchanged(output: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    _check_output(output, size)
    return output


def _accepted_format(pillow_format: str | None) -> str:
    fmt = _PILLOW_FORMATS.get(pillow_format or "")
    if fmt is None:
        raise InvalidArgument(
            f"image format {pillow_format or 'unknown'} is not accepted: send PNG, JPEG or "
            "WebP, or raw pixels"
        )
    return fmt


def _check_size(height: int, width: int, max_pixels: int) -> None:
    if height < 1 or width < 1:
        raise InvalidArgument(f"image size {height}x{width} is empty: send at least 1x1 pixels")
    if height * width > max_pixels:
        raise ResourceExhausted(
            f"image size {height}x{width} ({height * width} pixels) is more than this "
            f"server's limit of {max_pixels} pixels (set by the server's --max-image-pixels); "
            "send a smaller image"
        )


def _bomb_message(error: Exception, max_pixels: int) -> str:
    """Pillow refused the header's size before our own check could see it."""
    found = str(error).rstrip(".")
    limit = Image.MAX_IMAGE_PIXELS  # None would mean Pillow checks nothing
    if limit is None or max_pixels <= limit:
        # Pillow only complains above its limit, so the image is above ours as well.
        return (
            f"the image is more than this server's limit of {max_pixels} pixels (set by the "
            f"server's --max-image-pixels): {found}; send a smaller image"
        )
    return (
        f"the image is more than Pillow's decompression-bomb limit of "
        f"{limit} pixels, which caps the server's --max-image-pixels "
        f"({max_pixels}): {found}; send a smaller image"
    )


def _check_channels(channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"a model takes 1 or 3 channels, got {channels}")


def _match_channels(array: np.ndarray, channels: int) -> np.ndarray:
    """uint8 (H, W, 1|3) -> (H, W, channels), contiguous."""
    have = array.shape[2]
    if have == channels:
        return np.ascontiguousarray(array)
    if channels == 3:
        return np.repeat(array, 3, axis=2)
    return rgb_to_gray(array)
