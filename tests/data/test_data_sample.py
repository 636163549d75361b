"""Built-in sample data: layout, determinism, test scenes apart from training, domains that
share scenes but no crop, correct truth, no download."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.data import (
    MULTI_DOMAIN_TASKS,
    SAMPLE_TASKS,
    DataError,
    UnalignedDataset,
    dusk_grade,
    dusk_grade_strength,
    gray3,
    make_sample_dataset,
    sample_task_names,
    translation_ranges,
)
from i2i.data import sample as sample_module

SMALL = dict(size=16, n_train=6, n_test=3)
FOLDERS = ("trainA", "trainB", "testA", "testB", "truth/A2B", "truth/B2A")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    made = {}
    for task in sample_task_names():
        out = tmp_path_factory.mktemp(task)
        make_sample_dataset(task, out, seed=0, **SMALL)
        made[task] = out
    return made


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == "RGB"
        return np.asarray(img)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_registry_has_the_known_tasks():
    assert {"day2dusk", "gray2color", "day2dusk-range", "gradings"} <= set(sample_task_names())
    assert set(SAMPLE_TASKS) | set(MULTI_DOMAIN_TASKS) == set(sample_task_names())


@pytest.mark.parametrize("task", ["day2dusk", "gray2color", "day2dusk-range"])
def test_layout_counts_sizes_and_json(datasets, task):
    root = datasets[task]
    info = json.loads((root / "dataset.json").read_text())
    expected = {"trainA": 6, "trainB": 6, "testA": 3, "testB": 3, "truth/A2B": 3, "truth/B2A": 3}
    for folder, count in expected.items():
        names = sorted(os.listdir(root / folder))
        assert len(names) == count and all(n.endswith(".png") for n in names)
        for name in names:
            assert _pixels(root / folder / name).shape == (16, 16, 3)
    assert sorted(os.listdir(root / "truth/A2B")) == sorted(os.listdir(root / "testA"))
    assert sorted(os.listdir(root / "truth/B2A")) == sorted(os.listdir(root / "testB"))
    assert info["task"] == task and info["seed"] == 0 and info["size"] == 16
    assert info["layout"] == "unaligned"
    assert info["counts"] == {"trainA": 6, "trainB": 6, "testA": 3, "testB": 3}
    assert set(info["domains"]) == {"A", "B"} and set(info["directions"]) == {"A2B", "B2A"}
    assert info["description"]
    # The folders are what UnalignedDataset reads.
    assert len(UnalignedDataset(root, phase="test")) == 3


def test_test_sources_disjoint_from_training_and_recorded(datasets):
    info = json.loads((datasets["day2dusk"] / "dataset.json").read_text())
    assert info["format_version"] == 2
    sources = {split: set(names) for split, names in info["sources"].items()}
    assert set(sources) == {"train", "test"}
    assert not sources["train"] & sources["test"]
    every_photo = {name for group in sample_module.PHOTO_GROUPS for name in group}
    assert every_photo <= sources["train"] | sources["test"]
    # Both views of one scene stay together.
    assert any({"motorcycle_left.png", "motorcycle_right.png"} <= s for s in sources.values())
    for folder, files in info["files"].items():
        split = "train" if folder.startswith("train") else "test"
        assert set(files.values()) <= sources[split]
        assert sorted(files) == sorted(os.listdir(datasets["day2dusk"] / folder))
        assert {box[0] for box in info["crops"][folder].values()} <= sources[split]


def _crop_of(box: list, size: int) -> np.ndarray:
    """The crop a dataset.json "crops" entry names, cut again from its source photo."""
    source, x, y, side, flipped = box
    with Image.open(sample_module.photo_folder() / source) as img:
        crop = img.convert("RGB").resize(
            (size, size), Image.Resampling.LANCZOS, box=(x, y, x + side, y + side)
        )
    return np.asarray(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flipped else crop)


@pytest.mark.parametrize("task", ["day2dusk", "day2dusk-range"])
def test_domains_share_training_scenes_but_no_crop(tmp_path, task):
    """The only systematic difference between trainA and trainB is the translation: both
    are cut from the same training photos, but no crop (source, box, flip) is in both."""
    root = tmp_path / task
    info = make_sample_dataset(task, root, seed=0, size=16, n_train=40, n_test=8)
    used = {f: {box[0] for box in info["crops"][f].values()} for f in ("trainA", "trainB")}
    # The domains show the same scenes: most training photos appear in both domains.
    photos = {s for s in info["sources"]["train"] if not s.startswith("procedural-")}
    assert len(used["trainA"] & used["trainB"] & photos) >= len(photos) - 1
    boxes = {f: {tuple(box) for box in info["crops"][f].values()} for f in info["crops"]}
    assert len(boxes["trainA"]) == len(boxes["trainB"]) == 40  # all different
    assert not boxes["trainA"] & boxes["trainB"]
    # Pixels agree: the A image of a crop is never the source of a B image.
    render_b = SAMPLE_TASKS[task].render_b
    a_as_b = {render_b(_pixels(p)).tobytes() for p in (root / "trainA").iterdir()}
    assert not any(_pixels(p).tobytes() in a_as_b for p in (root / "trainB").iterdir())
    a_pixels = {_pixels(p).tobytes() for p in (root / "trainA").iterdir()}
    b_truths = {_pixels(p).tobytes() for p in (root / "truth/B2A").iterdir()}
    assert not a_pixels & b_truths
    # The record is the crop: cut again from the photo, it is the domain-A image.
    for name, box in info["crops"]["trainA"].items():
        if not box[0].startswith("procedural-"):
            np.testing.assert_array_equal(_crop_of(box, 16), _pixels(root / "trainA" / name))
    # Test crops never reach training: their sources are no training source.
    test_sources = {box[0] for f in ("testA", "testB") for box in info["crops"][f].values()}
    assert test_sources and not test_sources & set(info["sources"]["train"])
    train_pixels = {
        _pixels(p).tobytes() for f in ("trainA", "trainB") for p in (root / f).iterdir()
    }
    for folder in ("testA", "testB", "truth/A2B", "truth/B2A"):
        assert not any(_pixels(p).tobytes() in train_pixels for p in (root / folder).iterdir())


def test_same_seed_byte_identical_other_seed_different(datasets, tmp_path):
    again = tmp_path / "again"
    make_sample_dataset("day2dusk", again, seed=0, **SMALL)
    assert _files(again) == _files(datasets["day2dusk"])
    other = tmp_path / "other"
    make_sample_dataset("day2dusk", other, seed=1, **SMALL)
    first, second = _files(datasets["day2dusk"]), _files(other)
    assert first.keys() == second.keys()
    pngs = [k for k in first if k.endswith(".png")]
    assert sum(first[k] != second[k] for k in pngs) > len(pngs) // 2


def test_gray2color_truth(datasets):
    root = datasets["gray2color"]
    for name in os.listdir(root / "testB"):
        np.testing.assert_array_equal(
            _pixels(root / "truth/B2A" / name), gray3(_pixels(root / "testB" / name))
        )
    for name in os.listdir(root / "testA"):
        gray = _pixels(root / "testA" / name)
        np.testing.assert_array_equal(gray, gray3(_pixels(root / "truth/A2B" / name)))
    for folder in ("trainA", "testA"):
        for path in (root / folder).iterdir():
            pixels = _pixels(path)
            assert (pixels == pixels[..., :1]).all()  # R = G = B
    color = _pixels(next((root / "trainB").iterdir()))
    assert not (color == color[..., :1]).all()


def test_gray3_is_rounded_601_luma():
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 200, 30]]], dtype=np.uint8)
    expected = [76, 150, 29, round(0.299 * 10 + 0.587 * 200 + 0.114 * 30)]
    assert gray3(rgb)[0, :, 0].tolist() == expected


def test_day2dusk_truth(datasets):
    root = datasets["day2dusk"]
    for name in os.listdir(root / "testB"):
        graded = dusk_grade(_pixels(root / "truth/B2A" / name)).astype(int)
        assert np.abs(graded - _pixels(root / "testB" / name)).max() <= 1
    for name in os.listdir(root / "testA"):
        expected = dusk_grade(_pixels(root / "testA" / name))
        np.testing.assert_array_equal(_pixels(root / "truth/A2B" / name), expected)


def test_dusk_grade_is_monotone_darker_and_warmer():
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)  # (256, 3)
    graded = dusk_grade(levels).astype(int)
    assert (np.diff(graded, axis=0) >= 0).all()
    assert graded.mean() < levels.mean()
    red, green, blue = graded[200]
    assert red > green > blue  # white light turns warm


def test_unknown_task_and_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="day2dusk.*gray2color|gray2color.*day2dusk"):
        make_sample_dataset("horse2zebra", tmp_path)
    with pytest.raises(ValueError, match="size"):
        make_sample_dataset("day2dusk", tmp_path, size=2)
    with pytest.raises(ValueError, match="seed"):
        make_sample_dataset("day2dusk", tmp_path, seed=-1)
    with pytest.raises(ValueError, match="n_test"):
        make_sample_dataset("day2dusk", tmp_path, n_test=0)


def test_refuses_to_mix_with_an_existing_dataset(tmp_path):
    make_sample_dataset("gray2color", tmp_path, size=8, n_train=3, n_test=2)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_sample_dataset("gray2color", tmp_path, size=8, n_train=2, n_test=1)
    make_sample_dataset("gray2color", tmp_path, size=8, n_train=2, n_test=1, overwrite=True)
    assert len(os.listdir(tmp_path / "trainA")) == 2


def test_missing_scikit_image_says_how_to_install(monkeypatch):
    monkeypatch.setattr(sample_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install scikit-image"):
        sample_module.photo_folder()


def test_data_package_imports_neither_skimage_nor_torchvision(tmp_path):
    code = (
        "import sys; from i2i.data import make_sample_dataset; "
        f"make_sample_dataset('day2dusk', {str(tmp_path)!r}, size=8, n_train=1, n_test=1); "
        "bad = [m for m in ('skimage', 'torchvision') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(sample_module.__file__).parents[2]))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# ---- the aligned (paired) layout


@pytest.fixture(scope="module")
def aligned(tmp_path_factory) -> dict[str, Path]:
    made = {}
    for task in ("day2dusk", "gray2color", "day2dusk-range"):
        out = tmp_path_factory.mktemp(f"aligned-{task}")
        make_sample_dataset(task, out, seed=0, aligned=True, **SMALL)
        made[task] = out
    return made


@pytest.mark.parametrize("task", ["day2dusk", "gray2color"])
def test_aligned_layout_pairs_halves_and_truth(aligned, task):
    root = aligned[task]
    info = json.loads((root / "dataset.json").read_text())
    assert info["layout"] == "aligned" and info["counts"] == {"train": 6, "test": 3}
    assert sorted(os.listdir(root)) == sorted(
        ["train", "test", "testA", "testB", "truth", "dataset.json"]
    )
    assert len(os.listdir(root / "train")) == 6
    names = sorted(os.listdir(root / "test"))
    assert len(names) == 3
    for folder in ("testA", "testB", "truth/A2B", "truth/B2A"):
        assert sorted(os.listdir(root / folder)) == names
    render_b = SAMPLE_TASKS[task].render_b
    for folder in ("train", "test"):
        for path in (root / folder).iterdir():
            pair = _pixels(path)
            assert pair.shape == (16, 32, 3)
            a, b = pair[:, :16], pair[:, 16:]  # split at w // 2, as the pix2pix reader does
            # B is the true translation of A: the same crop rendered into domain B.
            if task == "day2dusk":
                np.testing.assert_array_equal(b, dusk_grade(a))
            else:
                np.testing.assert_array_equal(a, gray3(b))
            if folder == "test":
                np.testing.assert_array_equal(_pixels(root / "testA" / path.name), a)
                np.testing.assert_array_equal(_pixels(root / "testB" / path.name), b)
                np.testing.assert_array_equal(_pixels(root / "truth/A2B" / path.name), b)
                np.testing.assert_array_equal(_pixels(root / "truth/B2A" / path.name), a)
                assert render_b(a).shape == b.shape


def test_aligned_sources_disjoint_and_test_crops_shared_with_unaligned(aligned, datasets):
    info = json.loads((aligned["day2dusk"] / "dataset.json").read_text())
    train, test = set(info["sources"]["train"]), set(info["sources"]["test"])
    assert not train & test
    assert set(info["files"]["train"].values()) <= train
    assert set(info["files"]["test"].values()) <= test
    unaligned = json.loads((datasets["day2dusk"] / "dataset.json").read_text())
    assert test == set(unaligned["sources"]["test"])
    assert train == set(unaligned["sources"]["train"])
    # The test pairs are the unaligned testA crops: both layouts score the same images.
    testa = sorted((datasets["day2dusk"] / "testA").iterdir())
    for path, name in zip(testa, sorted(info["files"]["test"]), strict=True):
        left = _pixels(aligned["day2dusk"] / "test" / name)[:, :16]
        np.testing.assert_array_equal(left, _pixels(path))


def test_aligned_is_deterministic(aligned, tmp_path):
    again = tmp_path / "again"
    make_sample_dataset("day2dusk-range", again, seed=0, aligned=True, **SMALL)
    assert _files(again) == _files(aligned["day2dusk-range"])
    other = tmp_path / "other"
    make_sample_dataset("day2dusk-range", other, seed=3, aligned=True, **SMALL)
    assert _files(other)["train/pair_0000.png"] != _files(again)["train/pair_0000.png"]


def test_aligned_and_unaligned_do_not_mix(tmp_path):
    make_sample_dataset("day2dusk", tmp_path, size=8, n_train=2, n_test=1, aligned=True)
    with pytest.raises(FileExistsError, match="train, test"):
        make_sample_dataset("day2dusk", tmp_path, size=8, n_train=2, n_test=1)
    make_sample_dataset("day2dusk", tmp_path, size=8, n_train=2, n_test=1, overwrite=True)
    assert not (tmp_path / "train").exists() and (tmp_path / "trainA").is_dir()


# ---- the multimodal task: a known family of valid translations


def test_dusk_grade_strength_family():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(dusk_grade_strength(rgb, 1.0), dusk_grade(rgb))
    np.testing.assert_array_equal(dusk_grade_strength(rgb, 0.0), rgb)
    levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1)
    weak, strong = dusk_grade_strength(levels, 0.3), dusk_grade_strength(levels, 0.9)
    assert (np.diff(weak.astype(int), axis=0) >= 0).all()
    assert strong.astype(int).sum() < weak.astype(int).sum()  # stronger is darker
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dusk_grade_strength(rgb, 1.5)


@pytest.mark.parametrize("layout", ["unaligned", "aligned"])
def test_multimodal_task_records_strengths_and_renders_them(datasets, aligned, layout):
    root = datasets["day2dusk-range"] if layout == "unaligned" else aligned["day2dusk-range"]
    info = json.loads((root / "dataset.json").read_text())
    family = info["valid_translations"]["A2B"]
    low, high, mid = family["low"], family["high"], family["truth"]
    assert family["function"] == "i2i.data.sample.dusk_grade_strength"
    assert 0 <= low < mid < high <= 1
    strengths = info["strengths"]
    assert set(strengths) == ({"trainB", "testB"} if layout == "unaligned" else {"train", "test"})
    every_t = [t for folder in strengths.values() for t in folder.values()]
    assert all(low <= t <= high for t in every_t) and len(set(every_t)) == len(every_t)
    for folder, by_name in strengths.items():
        assert sorted(by_name) == sorted(os.listdir(root / folder))
        for name, t in by_name.items():
            if layout == "aligned":
                pair = _pixels(root / folder / name)
                source, b = pair[:, :16], pair[:, 16:]
            else:  # day's rendering is the source crop itself, which truth/B2A holds
                source = _pixels(root / "truth/B2A" / name) if folder == "testB" else None
                b = _pixels(root / folder / name)
            if source is not None:
                np.testing.assert_array_equal(b, dusk_grade_strength(source, t))
    # truth/A2B is the mid-range member of the family.
    for name in os.listdir(root / "testA"):
        a = _pixels(root / "testA" / name)
        np.testing.assert_array_equal(
            _pixels(root / "truth/A2B" / name), dusk_grade_strength(a, mid)
        )
    ranges = translation_ranges(root)
    assert set(ranges) == {"A2B"} and (ranges["A2B"].low, ranges["A2B"].high) == (low, high)


def test_translation_ranges_of_plain_and_foreign_datasets(datasets, tmp_path):
    assert translation_ranges(datasets["day2dusk"]) == {}
    assert translation_ranges(tmp_path) == {}  # no dataset.json: any user dataset
    info = json.loads((datasets["day2dusk-range"] / "dataset.json").read_text())
    info["valid_translations"]["A2B"]["function"] = "os.system"
    (tmp_path / "dataset.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="not a family this i2i knows"):
        translation_ranges(tmp_path)


def test_cli_data_sample_aligned(tmp_path):
    out = tmp_path / "pairs"
    env = dict(os.environ, PYTHONPATH=str(Path(sample_module.__file__).parents[2]))
    args = ["--task", "gray2color", "--out", str(out), "--size", "8", "--train", "3"]
    result = subprocess.run(
        [sys.executable, "-m", "i2i.cli", "data", "sample", *args, "--test", "2", "--aligned"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "aligned layout" in result.stdout
    assert json.loads((out / "dataset.json").read_text())["layout"] == "aligned"
    assert len(os.listdir(out / "train")) == 3 and len(os.listdir(out / "testB")) == 2
    with Image.open(out / "train" / "pair_0000.png") as img:
        assert img.size == (16, 8)
