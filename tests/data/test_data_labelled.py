"""The labelled layout of the multi-domain families: train/<domain>/ or trainA/, trainB/."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from i2i.data import DataError, LabelledDataset, TransformOptions, labelled_domains
from tests.conftest import write_images

CROP = TransformOptions(preprocess="crop", load_size=32, crop_size=16)


def test_nested_layout_sorted_domains_and_indices(tmp_path: Path) -> None:
    for name, n in (("night", 2), ("day", 3), ("dusk", 1)):
        write_images(tmp_path / "train" / name, n, seed=len(name) + n)
    assert labelled_domains(tmp_path) == ["day", "dusk", "night"]
    ds = LabelledDataset(tmp_path, transform=CROP)
    assert ds.counts() == {"day": 3, "dusk": 1, "night": 2}
    for i in range(len(ds)):
        item = ds[i]
        assert item["image"].shape == (3, 16, 16)
        assert Path(item["path"]).parent.name == ds.domains[int(item["domain"])]
        assert item["domain"].dtype == torch.int64


def test_the_models_order_wins_and_missing_domains_are_named(tmp_path: Path) -> None:
    write_images(tmp_path / "trainA", 2, seed=1)
    write_images(tmp_path / "trainB", 2, seed=2)
    write_images(tmp_path / "trainC", 1, seed=3)
    assert labelled_domains(tmp_path) == ["A", "B", "C"]  # the unaligned layout's suffixes
    ds = LabelledDataset(tmp_path, transform=CROP, domains=["B", "A"])  # C left out
    assert [Path(p).parent.name for p, _ in ds.items] == ["trainB"] * 2 + ["trainA"] * 2
    assert {int(ds[i]["domain"]) for i in range(2)} == {0}
    with pytest.raises(DataError, match="domain.*sepia"):
        LabelledDataset(tmp_path, domains=["A", "sepia"])
    with pytest.raises(DataError, match="one folder of images per domain"):
        labelled_domains(tmp_path / "nothing")


def test_items_depend_on_seed_epoch_and_index_only(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "a", 2, seed=1)
    write_images(tmp_path / "train" / "b", 2, seed=2)
    ds = LabelledDataset(tmp_path, transform=CROP, seed=3)
    ds.set_epoch(2)
    first = ds[1]["image"]
    ds.set_epoch(5)
    other = ds[1]["image"]
    ds.set_epoch(2)
    assert torch.equal(ds[1]["image"], first)
    assert not torch.equal(first, other)  # another epoch, another crop


def test_bad_images_are_skipped_or_fail_clearly(tmp_path: Path) -> None:
    write_images(tmp_path / "train" / "a", 2, seed=1)
    write_images(tmp_path / "train" / "b", 1, seed=2)
    bad = tmp_path / "train" / "a" / "bad.png"
    bad.write_bytes(np.arange(40, dtype=np.uint8).tobytes())
    ds = LabelledDataset(tmp_path, transform=CROP, skip_bad_images=True)
    assert ds.skipped == [bad] and len(ds) == 3
    strict = LabelledDataset(tmp_path, transform=CROP)
    bad_index = [i for i, (p, _) in enumerate(strict.items) if p == bad][0]
    with pytest.raises(DataError, match="bad.png"):
        strict[bad_index]
