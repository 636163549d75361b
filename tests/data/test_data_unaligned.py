"""UnalignedDataset: pairing, per-item determinism (also across workers), clear data errors."""

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from i2i.data import DataError, TransformOptions, UnalignedDataset

SMALL = TransformOptions(load_size=24, crop_size=16)


def _write_images(folder: Path, count: int, seed: int, size=(40, 30)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in reversed(range(count)):  # written out of order: the dataset must sort
        path = folder / f"img_{i:02d}.png"
        pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return sorted(paths)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    _write_images(tmp_path / "trainA", 5, seed=1)
    _write_images(tmp_path / "trainB", 3, seed=2)
    return tmp_path


def _all_items(dataset: UnalignedDataset) -> list[dict]:
    return [dataset[i] for i in range(len(dataset))]


def test_length_sorted_paths_and_item_layout(root):
    ds = UnalignedDataset(root, transform=SMALL)
    assert len(ds) == 5
    assert ds.a_paths == sorted(ds.a_paths) and len(ds.b_paths) == 3
    for i, item in enumerate(_all_items(ds)):
        assert set(item) == {"A", "B", "A_path", "B_path"}
        assert item["A_path"] == str(ds.a_paths[i])
        assert item["B_path"] in {str(p) for p in ds.b_paths}
        assert item["A"].shape == item["B"].shape == (3, 16, 16)
        assert item["A"].dtype == torch.float32
    with pytest.raises(IndexError):
        ds[5]


def test_serial_pairs_in_order_random_pairs_do_not(root):
    serial = UnalignedDataset(root, transform=SMALL, serial=True)
    assert [item["B_path"] for item in _all_items(serial)] == [
        str(serial.b_paths[i % 3]) for i in range(5)
    ]
    shuffled = UnalignedDataset(root, transform=SMALL)
    in_order = [str(serial.b_paths[i % 3]) for i in range(5)]
    pairings = []
    for epoch in range(4):
        shuffled.set_epoch(epoch)
        pairings.append([item["B_path"] for item in _all_items(shuffled)])
    assert any(p != in_order for p in pairings)
    assert len({tuple(p) for p in pairings}) > 1


def test_same_seed_same_items_in_two_instances_other_seed_differs(root):
    first = _all_items(UnalignedDataset(root, transform=SMALL, seed=3))
    second = _all_items(UnalignedDataset(root, transform=SMALL, seed=3))
    for x, y in zip(first, second, strict=True):
        assert torch.equal(x["A"], y["A"]) and torch.equal(x["B"], y["B"])
        assert x["B_path"] == y["B_path"]
    other = _all_items(UnalignedDataset(root, transform=SMALL, seed=4))
    assert not all(torch.equal(x["A"], y["A"]) for x, y in zip(first, other, strict=True))


def test_other_epoch_other_crops(root):
    ds = UnalignedDataset(root, transform=SMALL)
    epoch0 = _all_items(ds)
    ds.set_epoch(1)
    assert ds.epoch == 1
    epoch1 = _all_items(ds)
    assert not all(torch.equal(x["A"], y["A"]) for x, y in zip(epoch0, epoch1, strict=True))
    ds.set_epoch(0)
    assert all(torch.equal(x["A"], y["A"]) for x, y in zip(epoch0, _all_items(ds), strict=True))


def _batches(loader: DataLoader) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    a, b, b_paths = [], [], []
    for batch in loader:
        a.append(batch["A"])
        b.append(batch["B"])
        b_paths += batch["B_path"]
    return torch.cat(a), torch.cat(b), b_paths


def test_dataloader_workers_give_the_same_data(root):
    ds = UnalignedDataset(root, transform=SMALL, seed=5)
    ds.set_epoch(2)
    in_process = _batches(DataLoader(ds, batch_size=2, num_workers=0))
    in_workers = _batches(DataLoader(ds, batch_size=2, num_workers=2))
    assert torch.equal(in_process[0], in_workers[0]) and torch.equal(in_process[1], in_workers[1])
    assert in_process[2] == in_workers[2]


def test_set_epoch_reaches_persistent_workers(root):
    ds = UnalignedDataset(root, transform=SMALL, seed=5)
    loader = DataLoader(ds, batch_size=2, num_workers=2, persistent_workers=True)
    seen = []
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        seen.append(_batches(loader))
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        expected = _batches(DataLoader(ds, batch_size=2, num_workers=0))
        assert torch.equal(seen[epoch][0], expected[0])
    assert not torch.equal(seen[0][0], seen[1][0])


def test_grayscale_domains(root):
    ds = UnalignedDataset(root, transform=SMALL, channels_a=1)
    item = ds[0]
    assert item["A"].shape == (1, 16, 16) and item["B"].shape == (3, 16, 16)
    with pytest.raises(ValueError, match="channels_b"):
        UnalignedDataset(root, channels_b=2)


def test_missing_domain_folder(tmp_path):
    _write_images(tmp_path / "trainA", 2, seed=1)
    with pytest.raises(DataError, match=r"trainB: folder not found.*needs .*trainA/ and .*trainB/"):
        UnalignedDataset(tmp_path)


def test_empty_domain_folder(root):
    (root / "testA").mkdir()
    _write_images(root / "testB", 1, seed=0)
    with pytest.raises(DataError, match=r"testA: no images found"):
        UnalignedDataset(root, phase="test")


def _add_corrupt_png(folder: Path, name: str = "img_99_broken.png") -> Path:
    good = next(folder.glob("*.png")).read_bytes()
    bad = folder / name
    bad.write_bytes(good[: len(good) // 2])  # a truncated PNG
    return bad


def test_corrupt_image_is_a_data_error_naming_the_file(root):
    bad = _add_corrupt_png(root / "trainA")
    ds = UnalignedDataset(root, transform=SMALL)
    assert ds.a_paths[-1] == bad
    with pytest.raises(DataError, match="img_99_broken.png"):
        ds[len(ds) - 1]


def test_skip_bad_images_skips_logs_and_counts(root, caplog):
    bad_a = _add_corrupt_png(root / "trainA")
    bad_b = _add_corrupt_png(root / "trainB", "zz_garbage.jpg")
    bad_b.write_bytes(b"not a jpeg at all")
    with caplog.at_level(logging.WARNING, logger="i2i.data.unaligned"):
        ds = UnalignedDataset(root, transform=SMALL, skip_bad_images=True)
    assert ds.skipped == [bad_a, bad_b]
    assert len(ds.a_paths) == 5 and len(ds.b_paths) == 3 and len(ds) == 5
    assert "img_99_broken.png" in caplog.text and "zz_garbage.jpg" in caplog.text
    _all_items(ds)  # nothing bad is left


def test_skip_bad_images_with_no_good_image_left(tmp_path):
    _write_images(tmp_path / "trainA", 2, seed=1)
    (tmp_path / "trainB").mkdir()
    (tmp_path / "trainB" / "only.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="trainB: none of the 1 images"):
        UnalignedDataset(tmp_path, skip_bad_images=True)
