"""The two-step paper's augmentations: random rotation and zoom (off by default)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data.transforms import TransformOptions, apply_transform, to_tensor, zoom_in
from i2i.training import ConfigError, train
from tests.conftest import tiny_config


def _image(size: int = 32) -> Image.Image:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    pixels = np.stack([xx * 8 % 256, yy * 8 % 256, rng.integers(0, 256, (size, size))], -1)
    return Image.fromarray(pixels.astype(np.uint8))


def _opts(**changes: object) -> TransformOptions:
    return TransformOptions(preprocess="none", no_flip=True, **changes)  # type: ignore[arg-type]


def test_off_by_default_and_drawing_nothing() -> None:
    assert TransformOptions().rotate == 0.0 and TransformOptions().zoom == 0.0
    rng = np.random.default_rng(1)
    out = apply_transform(_image(), _opts(), rng)
    assert torch.equal(out, to_tensor(np.asarray(_image())))
    # No draw was made: the generator is where a fresh one of the same seed is.
    assert rng.random() == np.random.default_rng(1).random()


@pytest.mark.parametrize("changes", [{"rotate": 15.0}, {"zoom": 0.3}, {"rotate": 5, "zoom": 0.1}])
def test_rotation_and_zoom_are_random_but_repeatable(changes: dict) -> None:
    plain = apply_transform(_image(), _opts(), np.random.default_rng(2))
    a = apply_transform(_image(), _opts(**changes), np.random.default_rng(2))
    b = apply_transform(_image(), _opts(**changes), np.random.default_rng(2))
    c = apply_transform(_image(), _opts(**changes), np.random.default_rng(3))
    assert a.shape == plain.shape == (3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a, plain) and not torch.equal(a, c)


def test_zoom_in_keeps_the_size_and_the_centre() -> None:
    img = _image()
    doubled = zoom_in(img, 2.0)
    assert doubled.size == img.size
    want = img.resize((64, 64), Image.Resampling.BICUBIC).crop((16, 16, 48, 48))
    assert np.array_equal(np.asarray(doubled), np.asarray(want))
    assert zoom_in(img, 1.0) is img
    with pytest.raises(ValueError, match="factor must be >= 1"):
        zoom_in(img, 0.5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"rotate": -1.0}, r"rotate must lie in \[0, 180\]"), ({"zoom": 11.0}, "zoom must lie")],
)
def test_bad_amounts_are_refused(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _opts(**changes)


def test_a_config_with_a_bad_amount_is_a_config_error(tiny_dataset, tmp_path) -> None:
    with pytest.raises(ConfigError, match="data: rotate must lie"):
        train(tiny_config(tiny_dataset, data={"rotate": 400.0}), tmp_path / "run")
