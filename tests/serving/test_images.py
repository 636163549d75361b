"""Tests for request image decoding, validation, encoding and size fitting (contract 3)."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from i2i.serving.errors import InvalidArgument, ResourceExhausted
from i2i.serving.images import (
    decode_image,
    encode_image,
    fit_to_rule,
    image_to_array,
    raw_image,
    rgb_to_gray,
)
from i2i.shapes import ShapeRule

MAX_PIXELS = 1 << 20


def _noise(height: int = 24, width: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (height, width, channels), np.uint8)
    return array


def _gradient(height: int = 32, width: int = 48) -> np.ndarray:
    """A smooth RGB image that lossy codecs keep close."""
    rows = np.linspace(0, 255, height)[:, None]
    cols = np.linspace(0, 255, width)[None, :]
    return np.stack([rows + 0 * cols, 0 * rows + cols, (rows + cols) / 2], axis=2).astype(np.uint8)


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _decode(data: bytes, channels: int = 3) -> np.ndarray:
    pixels, _ = decode_image(data, channels=channels, max_pixels=MAX_PIXELS)
    return pixels


def _png_declaring(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR claims another size (CRC fixed), with 1 pixel of data."""
    data = bytearray(_save(Image.new("L", (1, 1)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at 16
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # CRC over type + data
    return bytes(data)


# --- round trips -------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_lossless_round_trip_is_exact(fmt: str) -> None:
    pixels = _noise()
    data = encode_image(pixels, fmt, quality=100)
    decoded, decoded_format = decode_image(data, channels=3, max_pixels=MAX_PIXELS)
    assert decoded_format == fmt
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, pixels)


def test_jpeg_round_trip_is_close() -> None:
    pixels = _gradient()
    data = encode_image(pixels, "jpeg")
    decoded, decoded_format = decode_image(data, channels=3, max_pixels=MAX_PIXELS)
    assert decoded_format == "jpeg"
    assert decoded.shape == pixels.shape
    assert np.abs(decoded.astype(int) - pixels).mean() < 3


@pytest.mark.parametrize("fmt", ["png", "webp"])
def test_single_channel_encodes_as_gray_and_round_trips(fmt: str) -> None:
    gray = _noise(channels=1)
    data = encode_image(gray, fmt, quality=100)
    if fmt == "png":
        assert Image.open(io.BytesIO(data)).mode == "L"
    np.testing.assert_array_equal(_decode(data, channels=1), gray)
    np.testing.assert_array_equal(_decode(data, channels=3), np.repeat(gray, 3, axis=2))


def test_encode_options_reach_the_encoder() -> None:
    pixels = _gradient()
    jpeg = Image.open(io.BytesIO(encode_image(pixels, "jpeg", quality=95)))
    assert jpeg.format == "JPEG"
    assert JpegImagePlugin.get_sampling(jpeg) == 2  # 4:2:0
    # quality 0 means the default, 90
    assert encode_image(pixels, "jpeg") == encode_image(pixels, "jpeg", quality=90)
    assert encode_image(pixels, "webp") == encode_image(pixels, "webp", quality=90)
    assert len(encode_image(pixels, "jpeg", quality=10)) < len(encode_image(pixels, "jpeg", 95))
    # Noise would not survive lossy WebP: quality 100 must be lossless, 99 must not.
    noise = _noise()
    np.testing.assert_array_equal(_decode(encode_image(noise, "webp", 100)), noise)
    assert not np.array_equal(_decode(encode_image(noise, "webp", 99)), noise)
    assert Image.open(io.BytesIO(encode_image(noise, "png"))).format == "PNG"


# --- modes -------------------------------------------------------------------------------


def test_sixteen_bit_gray_png_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)
    wide = np.tile(ramp, (8, 1))  # (8, 64)
    image = Image.fromarray(wide)
    assert image.mode == "I;16"
    data = _save(image, "PNG")
    expected = np.round(wide.astype(np.float64) * 255 / 65535).astype(np.uint8)
    gray = _decode(data, channels=1)
    np.testing.assert_array_equal(gray[:, :, 0], expected)
    assert gray.max() == 255 and gray.min() == 0
    assert len(np.unique(gray)) == 64  # a gradient, not a clipped step
    rgb = _decode(data, channels=3)
    np.testing.assert_array_equal(rgb, np.repeat(expected[:, :, None], 3, axis=2))


def test_big_endian_and_32_bit_modes_are_scaled_by_value() -> None:
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    expected = np.array([[0, 1, 128, 255]], dtype=np.uint8)
    big_endian = Image.fromarray(values.astype(">u2"))
    assert big_endian.mode == "I;16B"
    np.testing.assert_array_equal(image_to_array(big_endian, 1)[:, :, 0], expected)
    as_int32 = Image.fromarray(values.astype(np.int32))
    assert as_int32.mode == "I"
    np.testing.assert_array_equal(image_to_array(as_int32, 3)[:, :, 1], expected)
    as_float = Image.fromarray(np.array([[0.0, 1.4, 127.6, 300.0]], dtype=np.float32))
    assert as_float.mode == "F"
    np.testing.assert_array_equal(image_to_array(as_float, 1)[:, :, 0], [[0, 1, 128, 255]])


def test_gray_becomes_three_equal_channels() -> None:
    gray = _noise(channels=1)[:, :, 0]
    rgb = _decode(_save(Image.fromarray(gray), "PNG"))
    assert rgb.shape == (*gray.shape, 3)
    for channel in range(3):
        np.testing.assert_array_equal(rgb[:, :, channel], gray)


def test_one_bit_image_maps_to_black_and_white() -> None:
    bits = _noise(channels=1)[:, :, 0] > 127
    image = Image.fromarray(bits)
    assert image.mode == "1"
    rgb = _decode(_save(image, "PNG"))
    np.testing.assert_array_equal(rgb[:, :, 0], np.where(bits, 255, 0))


def test_palette_images_equal_their_rgb_conversion() -> None:
    palette = Image.fromarray(_gradient()).quantize(16)
    assert palette.mode == "P"
    expected = np.asarray(palette.convert("RGB"))
    np.testing.assert_array_equal(_decode(_save(palette, "PNG")), expected)
    # With a transparent entry: no Pillow warning, and the colour under it is kept.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decoded = _decode(_save(palette, "PNG", transparency=0))
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(image_to_array(palette.convert("PA"), 3), expected)
    np.testing.assert_array_equal(
        _decode(_save(palette, "PNG"), channels=1)[:, :, 0], np.asarray(palette.convert("L"))
    )


def test_alpha_is_dropped() -> None:
    rgba = _noise(channels=4)
    rgba[0, 0, 3] = 0  # a transparent pixel keeps its colour
    np.testing.assert_array_equal(_decode(_save(Image.fromarray(rgba), "PNG")), rgba[:, :, :3])
    gray_alpha = Image.fromarray(_noise(channels=2)[:, :, :2], mode="LA")
    np.testing.assert_array_equal(
        _decode(_save(gray_alpha, "PNG"), channels=1)[:, :, 0],
        np.asarray(gray_alpha)[:, :, 0],
    )


def test_cmyk_jpeg_decodes_to_rgb() -> None:
    cmyk = Image.new("CMYK", (32, 24), (0, 255, 255, 0))  # red
    data = _save(cmyk, "JPEG", quality=95)
    assert Image.open(io.BytesIO(data)).mode == "CMYK"
    rgb = _decode(data)
    assert rgb.shape == (24, 32, 3)
    np.testing.assert_allclose(rgb.reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=4)


@pytest.mark.parametrize("mode", ["YCbCr", "LAB", "HSV", "RGBX", "CMYK"])
def test_other_colour_modes_convert_like_pillow(mode: str) -> None:
    image = Image.fromarray(_gradient()).convert(mode)
    np.testing.assert_array_equal(image_to_array(image, 3), np.asarray(image.convert("RGB")))


def test_rgb_to_one_channel_uses_pillow_luma() -> None:
    rgb = _noise(64, 64)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(rgb_to_gray(rgb)[:, :, 0], expected)
    np.testing.assert_array_equal(_decode(encode_image(rgb, "png"), channels=1)[:, :, 0], expected)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_is_applied(fmt: str) -> None:
    pixels = _gradient(16, 32)  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    upright = _decode(_save(Image.fromarray(pixels), fmt, exif=exif, quality=95))
    assert upright.shape == (32, 16, 3)
    error = np.abs(upright.astype(int) - np.rot90(pixels, k=-1)).mean()
    assert error == 0 if fmt == "PNG" else error < 3


def test_animated_images_give_their_first_frame() -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    for fmt, ours in (("PNG", "png"), ("WEBP", "webp"), ("MPO", "jpeg")):
        options = {"lossless": True} if fmt == "WEBP" else {}
        data = _save(red, fmt, save_all=True, append_images=[blue], **options)
        assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2, fmt
        pixels, decoded_format = decode_image(data, channels=3, max_pixels=MAX_PIXELS)
        assert decoded_format == ours
        np.testing.assert_allclose(pixels.reshape(-1, 3).mean(axis=0), [255, 0, 0], atol=3)


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_rejected_by_name(fmt: str) -> None:
    data = _save(Image.fromarray(_noise()), fmt)
    with pytest.raises(InvalidArgument, match=f"image format {fmt} is not accepted") as info:
        _decode(data)
    assert "PNG, JPEG or WebP" in info.value.message


@pytest.mark.parametrize(
    "data",
    [b"", b"this is not an image" * 10, b"\x89PNG\r\n\x1a\n" + b"\0" * 40],
    ids=["empty", "garbage", "png-signature-only"],
)
def test_undecodable_bytes_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidArgument, match="the image could not be decoded"):
        _decode(data)


def test_unknown_bytes_say_what_they_are_not_without_a_repr() -> None:
    with pytest.raises(InvalidArgument) as info:
        _decode(b"<html>not found</html>")
    message = info.value.message
    assert "0x" not in message and "BytesIO" not in message  # no repr of a Python object
    assert "22 bytes (starting 3c 68 74 6d 6c 3e 6e 6f)" in message
    assert "are not a PNG, JPEG or WebP file" in message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_truncated_images_are_invalid(fmt: str) -> None:
    data = _save(Image.fromarray(_noise(48, 64)), fmt)
    assert _decode(data).shape == (48, 64, 3)  # the whole file decodes
    with pytest.raises(InvalidArgument, match="the image could not be decoded"):
        _decode(data[: len(data) // 2])


def test_header_larger_than_limit_is_refused_before_decoding() -> None:
    # 5000x5000 is under Pillow's own bomb limit, so only our header check stops it; had
    # the pixels been decoded, the 1-pixel stream would have failed as truncated instead.
    with pytest.raises(ResourceExhausted) as info:
        decode_image(_png_declaring(5000, 5000), channels=3, max_pixels=MAX_PIXELS)
    for part in ("5000x5000", str(MAX_PIXELS), "--max-image-pixels"):
        assert part in info.value.message


@pytest.mark.parametrize("side", [10_000, 50_000], ids=["pillow-warning", "pillow-error"])
def test_pillow_bomb_limits_become_resource_exhausted(side: int) -> None:
    filters_before = list(warnings.filters)
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ResourceExhausted, match="decompression-bomb limit"):
        decode_image(_png_declaring(side, side), channels=3, max_pixels=10**12)
    with pytest.raises(ResourceExhausted, match="--max-image-pixels"):
        decode_image(_png_declaring(side, side), channels=1, max_pixels=MAX_PIXELS)
    assert warnings.filters == filters_before
    assert limit_before == Image.MAX_IMAGE_PIXELS


def test_zero_sized_images_are_invalid() -> None:
    with pytest.raises(InvalidArgument):
        _decode(_png_declaring(0, 16))
    with pytest.raises(InvalidArgument, match="image size 0x4 is empty"):
        raw_image(b"", 0, 4, 3, channels=3, max_pixels=MAX_PIXELS)


# --- raw pixels --------------------------------------------------------------------------


def test_raw_pixels_convert_channels() -> None:
    rgb = _noise(8, 12)
    np.testing.assert_array_equal(
        raw_image(rgb.tobytes(), 8, 12, 3, channels=3, max_pixels=MAX_PIXELS), rgb
    )
    gray = raw_image(rgb.tobytes(), 8, 12, 3, channels=1, max_pixels=MAX_PIXELS)
    np.testing.assert_array_equal(gray[:, :, 0], np.asarray(Image.fromarray(rgb).convert("L")))
    one = _noise(8, 12, 1)
    np.testing.assert_array_equal(
        raw_image(one.tobytes(), 8, 12, 1, channels=3, max_pixels=MAX_PIXELS),
        np.repeat(one, 3, axis=2),
    )
    rgba = _noise(8, 12, 4)
    dropped = raw_image(rgba.tobytes(), 8, 12, 4, channels=3, max_pixels=MAX_PIXELS)
    assert dropped.flags.c_contiguous
    np.testing.assert_array_equal(dropped, rgba[:, :, :3])
    np.testing.assert_array_equal(
        raw_image(rgba.tobytes(), 8, 12, 4, channels=1, max_pixels=MAX_PIXELS),
        rgb_to_gray(rgba[:, :, :3]),
    )


def test_raw_wrong_byte_count_or_channels_is_invalid() -> None:
    with pytest.raises(InvalidArgument, match="needs exactly 48 bytes") as info:
        raw_image(b"\0" * 47, 4, 4, 3, channels=3, max_pixels=MAX_PIXELS)
    assert "got 47" in info.value.message
    with pytest.raises(InvalidArgument, match=r"1 \(gray\), 3 \(RGB\) or 4 \(RGBA\), got 2"):
        raw_image(b"\0" * 32, 4, 4, 2, channels=3, max_pixels=MAX_PIXELS)


def test_raw_huge_declared_size_is_refused_before_allocating() -> None:
    # 10^12 pixels could never be allocated here: the size check must come first.
    with pytest.raises(ResourceExhausted, match="1000000x1000000") as info:
        raw_image(b"\0" * 12, 1_000_000, 1_000_000, 3, channels=3, max_pixels=MAX_PIXELS)
    assert "--max-image-pixels" in info.value.message


# --- size policy -------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["pad", "resize", "reject"])
@pytest.mark.parametrize(("multiple_of", "fixed_size", "size"), [(4, None, 20), (4, 32, 32)])
def test_accepted_size_is_left_alone(
    policy: str, multiple_of: int, fixed_size: int | None, size: int
) -> None:
    pixels = _noise(size, size)
    fitted = fit_to_rule(pixels, ShapeRule(multiple_of, fixed_size), policy)
    assert fitted.pixels is pixels
    assert fitted.restore(pixels) is pixels
    with pytest.raises(ValueError, match="model output is"):  # a model that changed the size
        fitted.restore(pixels[:-4])


def test_pad_to_multiple_and_crop_back() -> None:
    pixels = _noise(17, 22)
    fitted = fit_to_rule(pixels, ShapeRule(4), "pad")
    assert fitted.pixels.shape == (20, 24, 3)
    np.testing.assert_array_equal(fitted.pixels[:17, :22], pixels)
    np.testing.assert_array_equal(fitted.pixels[17, :22], pixels[15])  # reflect, edge not repeated
    np.testing.assert_array_equal(fitted.restore(fitted.pixels), pixels)  # identity model
    one_channel_output = fitted.pixels[:, :, :1]
    assert fitted.restore(one_channel_output).shape == (17, 22, 1)


@pytest.mark.parametrize("size", [(1, 1), (2, 3), (1, 9)])
def test_pad_tiny_images(size: tuple[int, int]) -> None:
    pixels = _noise(*size)
    fitted = fit_to_rule(pixels, ShapeRule(8), "pad")
    assert fitted.pixels.shape[:2] == (8, 8 if size[1] < 8 else 16)
    np.testing.assert_array_equal(fitted.restore(fitted.pixels), pixels)


def test_pad_to_fixed_size() -> None:
    pixels = _noise(20, 24)
    fitted = fit_to_rule(pixels, ShapeRule(4, 32), "pad")
    assert fitted.pixels.shape == (32, 32, 3)
    np.testing.assert_array_equal(fitted.restore(fitted.pixels), pixels)
    with pytest.raises(InvalidArgument, match="larger than this model's fixed size 32x32") as info:
        fit_to_rule(_noise(40, 20), ShapeRule(4, 32), "pad")
    assert "size_policy RESIZE" in info.value.message


def test_resize_to_nearest_multiple_and_back() -> None:
    pixels = np.full((17, 22, 3), 77, np.uint8)
    fitted = fit_to_rule(pixels, ShapeRule(4), "resize")
    assert fitted.pixels.shape == (16, 24, 3)  # 17 -> 16, 22 -> 24
    np.testing.assert_array_equal(fitted.restore(fitted.pixels), pixels)
    assert fit_to_rule(_noise(18, 1), ShapeRule(4), "resize").pixels.shape == (20, 4, 3)  # ties up
    gray_output = fit_to_rule(_noise(18, 1), ShapeRule(4), "resize").restore(
        np.zeros((20, 4, 1), np.uint8)
    )
    assert gray_output.shape == (18, 1, 1)


def test_resize_to_fixed_size_and_back() -> None:
    pixels = _gradient(40, 20)
    fitted = fit_to_rule(pixels, ShapeRule(4, 32), "resize")
    assert fitted.pixels.shape == (32, 32, 3)
    restored = fitted.restore(fitted.pixels)
    assert restored.shape == (40, 20, 3) and restored.dtype == np.uint8
    assert np.abs(restored.astype(int) - pixels).mean() < 4


def test_reject_names_the_nearest_size() -> None:
    with pytest.raises(InvalidArgument) as info:
        fit_to_rule(_noise(17, 22), ShapeRule(4), "reject")
    for part in (
        "image size 17x22 is not accepted",
        "multiples of 4",
        "nearest accepted size: 16x24",
        "size_policy PAD or RESIZE",
    ):
        assert part in info.value.message
    with pytest.raises(InvalidArgument, match="takes exactly 32x32"):
        fit_to_rule(_noise(16, 16), ShapeRule(4, 32), "reject")


# CycleGAN's ResNet generators: multiples of 4, no side below 8.
RESNET = ShapeRule(multiple_of=4, min_size=8)


@pytest.mark.parametrize("size", [(1, 1), (4, 64), (64, 4), (3, 3)])
def test_pad_refuses_what_padding_cannot_bring_to_the_smallest_size(size: tuple[int, int]) -> None:
    with pytest.raises(InvalidArgument) as info:
        fit_to_rule(_noise(*size), RESNET, "pad")
    message = info.value.message
    assert f"image size {size[0]}x{size[1]} is too small" in message
    assert "smallest accepted size is 8x8" in message
    assert "sides need at least 5 pixels" in message and "size_policy RESIZE" in message


def test_pad_takes_a_small_side_that_pads_up_to_the_smallest_size() -> None:
    pixels = _noise(5, 62)
    fitted = fit_to_rule(pixels, RESNET, "pad")
    assert fitted.pixels.shape == (8, 64, 3)
    RESNET.check(8, 64)
    np.testing.assert_array_equal(fitted.restore(fitted.pixels), pixels)


@pytest.mark.parametrize(
    ("size", "scaled"), [((1, 1), (8, 8)), ((5, 64), (8, 64)), ((4, 30), (8, 32))]
)
def test_resize_scales_small_images_up_to_the_smallest_size(
    size: tuple[int, int], scaled: tuple[int, int]
) -> None:
    pixels = np.full((*size, 3), 90, np.uint8)
    fitted = fit_to_rule(pixels, RESNET, "resize")
    assert fitted.pixels.shape[:2] == scaled
    RESNET.check(*scaled)
    np.testing.assert_array_equal(fitted.restore(fitted.pixels), pixels)  # back to the input


def test_reject_names_the_smallest_size_and_only_a_policy_that_helps() -> None:
    with pytest.raises(InvalidArgument) as info:
        fit_to_rule(_noise(4, 64), RESNET, "reject")
    message = info.value.message
    assert "smallest accepted size: 8x8; nearest accepted size: 8x64" in message
    assert message.endswith("send size_policy RESIZE")  # padding 4 rows reaches only 4
    with pytest.raises(InvalidArgument) as info:
        fit_to_rule(_noise(6, 64), RESNET, "reject")
    assert info.value.message.endswith("size_policy PAD or RESIZE")


def test_bad_policy_and_wrong_output_size_are_bugs() -> None:
    with pytest.raises(ValueError, match="unknown size policy 'crop'"):
        fit_to_rule(_noise(16, 16), ShapeRule(4), "crop")
    fitted = fit_to_rule(_noise(17, 22), ShapeRule(4), "pad")
    with pytest.raises(ValueError, match="model output is 16x16, expected 20x24"):
        fitted.restore(_noise(16, 16))


# --- encode errors -----------------------------------------------------------------------


def test_encode_rejects_unknown_format_and_quality() -> None:
    pixels = _noise()
    with pytest.raises(InvalidArgument, match="unknown output format 'gif'") as info:
        encode_image(pixels, "gif")
    assert "png, jpeg, webp" in info.value.message
    for quality in (-1, 101):
        with pytest.raises(InvalidArgument, match=f"quality must be 1-100.*got {quality}"):
            encode_image(pixels, "jpeg", quality)
    with pytest.raises(ValueError, match="uint8"):
        encode_image(pixels.astype(np.float32), "png")
