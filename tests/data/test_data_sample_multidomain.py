"""The multi-domain sample task (gradings): labelled layout, ground truth between every
pair of domains, training scenes shared by the domains but no crop in two, test scenes
apart from training, determinism."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.cli.main import main
from i2i.data import (
    GRADES,
    MULTI_DOMAIN_TASKS,
    LabelledDataset,
    dusk_grade,
    gray3,
    labelled_domains,
    make_sample_dataset,
    night_grade,
    sepia_grade,
)

DOMAINS = ("day", "dusk", "night", "sepia")


@pytest.fixture(scope="module")
def gradings(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gradings")
    make_sample_dataset("gradings", out, seed=0, size=16, n_train=5, n_test=3)
    return out


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "RGB" and img.size == (16, 16)
        return np.asarray(img)


def test_layout_and_metadata(gradings):
    info = json.loads((gradings / "dataset.json").read_text())
    assert info["task"] == "gradings" and info["layout"] == "labelled"
    assert info["domains"] == list(DOMAINS) == list(MULTI_DOMAIN_TASKS["gradings"].domains)
    assert set(info["grades"]) == set(DOMAINS)
    for domain in DOMAINS:
        assert len(os.listdir(gradings / "train" / domain)) == 5
        assert sorted(os.listdir(gradings / "test" / domain)) == [
            "scene_0000.png",
            "scene_0001.png",
            "scene_0002.png",
        ]
        assert info["counts"][f"train/{domain}"] == 5 and info["counts"][f"test/{domain}"] == 3
    # What the multi-domain trainers read: the labelled layout, domains in this order.
    assert labelled_domains(gradings) == list(DOMAINS)
    train = LabelledDataset(gradings, "train")
    assert train.counts() == dict.fromkeys(DOMAINS, 5)
    assert LabelledDataset(gradings, "test").counts() == dict.fromkeys(DOMAINS, 3)


def test_test_scenes_are_the_documented_grades_of_each_other(gradings):
    for name in os.listdir(gradings / "test" / "day"):
        day = _pixels(gradings / "test" / "day" / name)
        shown = {d: _pixels(gradings / "test" / d / name) for d in DOMAINS}
        np.testing.assert_array_equal(shown["dusk"], dusk_grade(day))
        np.testing.assert_array_equal(shown["night"], night_grade(day))
        np.testing.assert_array_equal(shown["sepia"], sepia_grade(day))
        # The domains really differ from each other on every scene.
        for i, a in enumerate(DOMAINS):
            for b in DOMAINS[i + 1 :]:
                assert np.abs(shown[a].astype(int) - shown[b].astype(int)).mean() > 2, (a, b)


def test_domains_share_training_scenes_but_no_crop(gradings):
    info = json.loads((gradings / "dataset.json").read_text())
    sources = {split: set(names) for split, names in info["sources"].items()}
    assert set(sources) == {"train", "test"}
    assert not sources["train"] & sources["test"]  # test scenes never reach training
    for split, files in info["files"].items():
        assert set(files.values()) <= sources["test" if split.startswith("test") else "train"]
        assert sorted(files) == sorted(os.listdir(gradings / split))
    # Every domain trains on crops of the same pool; no crop (source, box, flip) is in two.
    boxes = {d: {tuple(b) for b in info["crops"][f"train/{d}"].values()} for d in DOMAINS}
    for i, a in enumerate(DOMAINS):
        assert len(boxes[a]) == 5
        for b in DOMAINS[i + 1 :]:
            assert not boxes[a] & boxes[b], (a, b)
    # No training image of one domain is the grade of another domain's training image.
    day_train = [_pixels(p) for p in sorted((gradings / "train" / "day").iterdir())]
    for domain in DOMAINS[1:]:
        graded = {GRADES[domain](img).tobytes() for img in day_train}
        for path in (gradings / "train" / domain).iterdir():
            assert _pixels(path).tobytes() not in graded


def test_domains_draw_from_the_same_scenes(tmp_path):
    info = make_sample_dataset("gradings", tmp_path, seed=0, size=8, n_train=30, n_test=1)
    used = {d: set(info["files"][f"train/{d}"].values()) for d in DOMAINS}
    photos = {s for s in info["sources"]["train"] if not s.startswith("procedural-")}
    for domain in DOMAINS:  # each domain shows (nearly) every training photo
        assert len(used[domain] & photos) >= len(photos) - 1, domain


def test_grades_are_deterministic_colour_transforms():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    night = night_grade(rgb)
    # Night: darker than the day everywhere it can be, blue above red on average.
    assert night.mean() < rgb.mean() / 2
    assert night[..., 2].mean() > night[..., 0].mean()
    # Sepia depends on the luma only and is warm: R >= G >= B.
    sepia = sepia_grade(rgb)
    np.testing.assert_array_equal(sepia, sepia_grade(gray3(rgb)))
    assert (sepia[..., 0] >= sepia[..., 1]).all() and (sepia[..., 1] >= sepia[..., 2]).all()
    # Monotone in the level: a brighter gray gives a brighter night and sepia.
    ramp = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    for grade in (night_grade, sepia_grade):
        out = grade(ramp).astype(int)
        assert (np.diff(out, axis=0) >= 0).all()


def test_same_seed_same_bytes(gradings, tmp_path):
    again = tmp_path / "again"
    make_sample_dataset("gradings", again, seed=0, size=16, n_train=5, n_test=3)
    files = sorted(p.relative_to(gradings) for p in gradings.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (gradings / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_no_aligned_layout_and_no_mixing(tmp_path):
    with pytest.raises(ValueError, match="multi-domain task.*no aligned layout"):
        make_sample_dataset("gradings", tmp_path / "a", size=16, n_train=2, n_test=1, aligned=True)
    make_sample_dataset("day2dusk", tmp_path / "b", size=16, n_train=2, n_test=1)
    with pytest.raises(FileExistsError):
        make_sample_dataset("gradings", tmp_path / "b", size=16, n_train=2, n_test=1)
    # overwrite removes the two-domain folders: only the labelled layout is left.
    make_sample_dataset("gradings", tmp_path / "b", size=16, n_train=2, n_test=1, overwrite=True)
    assert sorted(os.listdir(tmp_path / "b")) == ["dataset.json", "test", "train"]


def test_cli_lists_and_writes_the_task(tmp_path, capsys):
    assert main(["data", "sample", "--list"]) == 0
    assert "gradings" in capsys.readouterr().out.split()
    out = tmp_path / "g"
    args = ["data", "sample", "--task", "gradings", "--out", str(out), "--size", "16"]
    assert main([*args, "--train", "2", "--test", "1"]) == 0
    assert "labelled layout" in capsys.readouterr().out
    assert json.loads((out / "dataset.json").read_text())["domains"] == list(DOMAINS)
    assert main([*args, "--train", "2", "--test", "1", "--aligned"]) == 2
