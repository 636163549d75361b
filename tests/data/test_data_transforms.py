"""Preprocess modes (output sizes worked out by hand), flips, value range, conversions."""

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data import PREPROCESS_MODES, TransformOptions, apply_transform, to_tensor, to_uint8


def _image(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    return Image.fromarray(rng.integers(0, 256, size=shape, dtype=np.uint8))


def _run(img: Image.Image, seed: int = 0, **options) -> torch.Tensor:
    return apply_transform(img, TransformOptions(**options), np.random.default_rng(seed))


@pytest.mark.parametrize(
    ("size", "options", "expected_chw"),
    [
        # 100x60 (w x h) resized to 48x48, cropped to 32.
        ((100, 60), dict(preprocess="resize_and_crop", load_size=48, crop_size=32), (3, 32, 32)),
        ((100, 60), dict(preprocess="crop", load_size=48, crop_size=32), (3, 32, 32)),
        # Width 48, height int(max(48 * 60 / 100, 32)) = int(max(28.8, 32)) = 32.
        ((100, 60), dict(preprocess="scale_width", load_size=48, crop_size=32), (3, 32, 48)),
        # Height int(max(28.8, 16)) = 28: truncated, not rounded.
        ((100, 60), dict(preprocess="scale_width", load_size=48, crop_size=16), (3, 28, 48)),
        # Already 48 wide and at least crop_size tall: left as it is.
        ((48, 70), dict(preprocess="scale_width", load_size=48, crop_size=32), (3, 70, 48)),
        (
            (100, 60),
            dict(preprocess="scale_width_and_crop", load_size=48, crop_size=32),
            (3, 32, 32),
        ),
        # Nearest multiples of 4: 101 -> 100, 63 -> 64.
        ((101, 63), dict(preprocess="none"), (3, 64, 100)),
        # Halves round to even like the reference's round(): 102/4 = 25.5 -> 26, 58/4 = 14.5 -> 14.
        ((102, 58), dict(preprocess="none"), (3, 56, 104)),
        ((100, 60), dict(preprocess="none"), (3, 60, 100)),
    ],
)
def test_output_size_of_each_mode(size, options, expected_chw):
    out = _run(_image(*size), **options)
    assert tuple(out.shape) == expected_chw
    assert out.dtype == torch.float32
    assert out.min() >= -1.0 and out.max() <= 1.0


def test_every_mode_is_covered():
    assert set(PREPROCESS_MODES) == {
        "resize_and_crop",
        "crop",
        "scale_width",
        "scale_width_and_crop",
        "none",
    }


def test_grayscale_image_gives_one_channel():
    out = _run(_image(40, 30, mode="L"), load_size=24, crop_size=16)
    assert tuple(out.shape) == (1, 16, 16)


def test_flip_depends_on_the_seed_and_no_flip_turns_it_off():
    img = _image(8, 8)
    plain = to_tensor(np.asarray(img))
    mirrored = plain.flip(-1)
    flipped = []
    for seed in range(20):
        out = _run(img, seed, preprocess="none")
        assert torch.equal(out, plain) or torch.equal(out, mirrored)
        flipped.append(torch.equal(out, mirrored))
    assert any(flipped) and not all(flipped)
    for seed in range(20):
        assert torch.equal(_run(img, seed, preprocess="none", no_flip=True), plain)


def test_same_rng_seed_same_tensor_other_seed_other_crop():
    img = _image(90, 70)
    options = dict(load_size=40, crop_size=24)
    assert torch.equal(_run(img, 7, **options), _run(img, 7, **options))
    assert not all(
        torch.equal(_run(img, 7, **options), _run(img, s, **options)) for s in range(8, 12)
    )


def test_global_rngs_are_not_used():
    img = _image(50, 40)
    torch.manual_seed(0)
    np.random.seed(0)
    first = _run(img, 3, load_size=32, crop_size=16)
    torch.manual_seed(1)
    np.random.seed(1)
    assert torch.equal(first, _run(img, 3, load_size=32, crop_size=16))


def test_options_are_validated():
    with pytest.raises(ValueError, match="resize_and_crop, crop, scale_width"):
        TransformOptions(preprocess="resize")
    with pytest.raises(ValueError, match="crop_size .* larger than load_size"):
        TransformOptions(load_size=32, crop_size=64)
    with pytest.raises(ValueError, match="load_size"):
        TransformOptions(load_size=0)
    with pytest.raises(AttributeError):
        TransformOptions().crop_size = 3  # type: ignore[misc]


def test_crop_larger_than_the_image_is_a_clear_error():
    with pytest.raises(ValueError, match=r"crop_size 64 is larger than the image .*50x40"):
        _run(_image(50, 40), preprocess="crop", crop_size=64)


def test_to_tensor_matches_totensor_and_normalize():
    pixels = np.array([[[0, 128, 255]]], dtype=np.uint8)
    out = to_tensor(pixels)
    assert tuple(out.shape) == (3, 1, 1)
    expected = torch.tensor([0, 128, 255], dtype=torch.float32) / 255 * 2 - 1
    assert torch.allclose(out.flatten(), expected, atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 7, 3), (4, 6)])
def test_round_trip_is_exact(shape):
    pixels = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    back = to_uint8(to_tensor(pixels))
    assert back.dtype == np.uint8
    np.testing.assert_array_equal(back.reshape(pixels.shape), pixels)
    everything = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(to_uint8(to_tensor(everything))[..., 0], everything)


def test_to_uint8_rounds_clamps_and_takes_batches():
    levels = torch.tensor([10.6, 10.4, -20.0, 300.0])
    tensor = (levels / 127.5 - 1.0).reshape(1, 4, 1)  # (C, H, W)
    assert to_uint8(tensor).flatten().tolist() == [11, 10, 0, 255]
    batch = torch.zeros(2, 3, 4, 5)
    assert to_uint8(batch).shape == (2, 4, 5, 3)
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(4, 5))
