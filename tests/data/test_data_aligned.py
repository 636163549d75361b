"""AlignedDataset: both layouts, the same crop and flip for A and B, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.data import AlignedDataset, DataError, TransformOptions


def write_pairs(
    root: Path,
    n: int,
    size: int = 32,
    layout: str = "side_by_side",
    phase: str = "train",
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Write `n` pairs whose B is A with its colour channels reversed; return the arrays.

    Each A is random noise, so any crop or flip of it is recognisable.
    """
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        a = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        b = a[:, :, ::-1].copy()
        pairs.append((a, b))
        if layout == "side_by_side":
            (root / phase).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([a, b], axis=1)).save(root / phase / f"{i:03d}.png")
        else:
            for domain, img in (("A", a), ("B", b)):
                (root / f"{phase}{domain}").mkdir(parents=True, exist_ok=True)
                Image.fromarray(img).save(root / f"{phase}{domain}" / f"{i:03d}.png")
    return pairs


def _pixels(t: torch.Tensor) -> np.ndarray:
    return ((t.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)


@pytest.mark.parametrize("layout", ["side_by_side", "folders"])
def test_both_halves_get_the_same_crop_and_flip(tmp_path, layout):
    pairs = write_pairs(tmp_path, 4, size=32, layout=layout)
    ds = AlignedDataset(tmp_path, transform=TransformOptions("crop", 32, 24), seed=5)
    assert len(ds) == 4
    flips = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            item = ds[i]
            a, b = _pixels(item["A"]), _pixels(item["B"])
            assert a.shape == b.shape == (24, 24, 3)
            np.testing.assert_array_equal(b, a[:, :, ::-1])  # still aligned pixel for pixel
            src = pairs[i][0]
            # Find where the crop came from (and whether it was flipped) in the source A.
            found = [
                (y, x, flip)
                for flip in (False, True)
                for y in range(9)
                for x in range(9)
                if np.array_equal((src[:, ::-1] if flip else src)[y : y + 24, x : x + 24], a)
            ]
            assert len(found) == 1
            flips.add(found[0][2])
    assert flips == {False, True}  # the flip happens (to both halves alike)


def test_items_are_a_function_of_seed_epoch_index(tmp_path):
    write_pairs(tmp_path, 3)
    t = TransformOptions("resize_and_crop", 40, 32)
    one, two = (
        AlignedDataset(tmp_path, transform=t, seed=1),
        AlignedDataset(tmp_path, transform=t, seed=1),
    )
    one.set_epoch(2)
    two.set_epoch(2)
    assert torch.equal(one[1]["A"], two[1]["A"]) and torch.equal(one[1]["B"], two[1]["B"])
    two.set_epoch(3)
    assert not torch.equal(one[1]["A"], two[1]["A"])


def test_side_by_side_split_and_paths(tmp_path):
    pairs = write_pairs(tmp_path, 2, size=16, layout="side_by_side", phase="test")
    ds = AlignedDataset(tmp_path, phase="test", transform=TransformOptions("none", no_flip=True))
    item = ds[1]
    np.testing.assert_array_equal(_pixels(item["A"]), pairs[1][0])
    np.testing.assert_array_equal(_pixels(item["B"]), pairs[1][1])
    assert item["A_path"] == item["B_path"] == str(tmp_path / "test" / "001.png")


def test_grayscale_domain(tmp_path):
    write_pairs(tmp_path, 1, size=16)
    ds = AlignedDataset(tmp_path, transform=TransformOptions("none", no_flip=True), channels_a=1)
    item = ds[0]
    assert item["A"].shape == (1, 16, 16) and item["B"].shape == (3, 16, 16)


def test_side_by_side_wins_over_folders(tmp_path):
    write_pairs(tmp_path, 2, layout="side_by_side")
    write_pairs(tmp_path, 5, layout="folders")
    assert len(AlignedDataset(tmp_path)) == 2


def test_missing_layout_is_explained(tmp_path):
    (tmp_path / "trainA").mkdir()
    with pytest.raises(DataError, match=r"expected .*train/ \(each image A and B side by side\)"):
        AlignedDataset(tmp_path)


def test_odd_width_is_refused(tmp_path):
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((8, 17, 3), np.uint8)).save(tmp_path / "train" / "x.png")
    ds = AlignedDataset(tmp_path, transform=TransformOptions("none"))
    with pytest.raises(DataError, match="width 17 is odd"):
        ds[0]


def test_unpaired_names_are_listed(tmp_path):
    write_pairs(tmp_path, 3, layout="folders")
    (tmp_path / "trainB" / "002.png").rename(tmp_path / "trainB" / "two.png")
    with pytest.raises(
        DataError, match=r"1 file\(s\) in .*trainA/ without a pair in trainB/ \(002.png\).*two.png"
    ):
        AlignedDataset(tmp_path)


def test_pair_of_different_sizes_is_refused(tmp_path):
    write_pairs(tmp_path, 1, size=16, layout="folders")
    Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(tmp_path / "trainB" / "000.png")
    with pytest.raises(DataError, match="same size"):
        AlignedDataset(tmp_path, transform=TransformOptions("none"))[0]


def test_skip_bad_images_drops_the_pair(tmp_path):
    write_pairs(tmp_path, 3, layout="folders")
    (tmp_path / "trainB" / "001.png").write_bytes(b"not a png")
    ds = AlignedDataset(tmp_path, skip_bad_images=True)
    assert len(ds) == 2 and ds.skipped == [tmp_path / "trainA" / "001.png"]
