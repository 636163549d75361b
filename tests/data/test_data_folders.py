"""Image listing and decoding: the reference's extensions, sorted recursive walk, clear errors."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.data import IMG_EXTENSIONS, DataError, list_images, load_rgb


def _write(path: Path, mode: str = "RGB", size: tuple[int, int] = (6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=0 if mode == "L" else (10, 20, 30)).save(path)
    return path


def test_extensions_follow_the_reference():
    for ext in (".jpg", ".JPG", ".jpeg", ".JPEG", ".png", ".PNG", ".ppm", ".PPM", ".bmp"):
        assert ext in IMG_EXTENSIONS
    for ext in (".BMP", ".tif", ".TIF", ".tiff", ".TIFF", ".webp"):
        assert ext in IMG_EXTENSIONS
    assert ".gif" not in IMG_EXTENSIONS


def test_list_images_is_recursive_sorted_and_skips_other_files(tmp_path):
    expected = [
        _write(tmp_path / "b.png"),
        _write(tmp_path / "a.JPG"),
        _write(tmp_path / "sub" / "deeper" / "c.bmp"),
        _write(tmp_path / "sub" / "a.ppm"),
    ]
    (tmp_path / "notes.txt").write_text("not an image")
    _write(tmp_path / "._hidden.png")  # macOS resource fork names are not images
    _write(tmp_path / ".cache" / "x.png")
    assert list_images(tmp_path) == sorted(expected)


def test_missing_and_empty_folders_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="nowhere.*not found"):
        list_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(
        DataError, match=r"empty: no images found \(looked for \.jpg, \.jpeg, \.png"
    ):
        list_images(tmp_path / "empty")


def test_load_rgb_converts_and_decodes_fully(tmp_path):
    rgba = tmp_path / "rgba.png"
    Image.new("RGBA", (5, 3), (1, 2, 3, 4)).save(rgba)
    img = load_rgb(rgba)
    assert img.mode == "RGB" and img.size == (5, 3)
    gray = load_rgb(rgba, channels=1)
    assert gray.mode == "L"
    assert np.asarray(gray).shape == (3, 5)
    with pytest.raises(ValueError, match="channels"):
        load_rgb(rgba, channels=2)


@pytest.mark.parametrize("kind", ["truncated", "garbage", "missing"])
def test_unreadable_image_is_a_data_error_naming_the_file(tmp_path, kind):
    good = _write(tmp_path / "good.png", size=(32, 32))
    bad = tmp_path / "broken.png"
    if kind == "truncated":
        bad.write_bytes(good.read_bytes()[:60])
    elif kind == "garbage":
        bad.write_bytes(b"definitely not a png" * 10)
    with pytest.raises(DataError, match="broken.png"):
        load_rgb(bad)
