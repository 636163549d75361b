"""`i2i eval` of a multi-domain model: every ordered pair of domains against the same scene
in the target domain, the identity baseline per pair, means, and the family's own metrics.

The toy family (tests/toy_multidomain.py) can be made exact: ``to_<t>(x) = x + offset[t]``
(levels). On a labelled test split where domain d is a base image plus ``offset[d]``, the
translation of a source-s image into t is off by exactly ``offset[s]`` levels everywhere,
so every pair's PSNR is known in closed form: 20 log10(255 / |offset[s]|).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.checkpoint import load_trained_networks
from i2i.cli.main import main
from i2i.data import DataError, make_sample_dataset
from i2i.models import options_from_dict
from i2i.training.evaluate import evaluate, format_report
from i2i.training.metrics import psnr, ssim
from tests.toy_multidomain import FAMILY, registered, toy_checkpoint, toy_metrics

OFFSETS = {"base": 0, "bright": 40, "dark": -30}
GRADINGS = ("day", "dusk", "night", "sepia")


def _db(levels: float) -> float:
    """PSNR of a constant error of `levels` (inf for 0)."""
    return math.inf if levels == 0 else 20 * math.log10(255 / abs(levels))


@pytest.fixture(scope="module")
def offset_data(tmp_path_factory) -> Path:
    """test/<domain>/img_k.png: a base image in [70, 150] plus the domain's offset."""
    root = tmp_path_factory.mktemp("offsets")
    rng = np.random.default_rng(0)
    for k in range(3):
        base = rng.integers(70, 151, size=(12, 16, 3))
        for domain, offset in OFFSETS.items():
            folder = root / "test" / domain
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray((base + offset).astype(np.uint8)).save(folder / f"img_{k}.png")
    return root


@pytest.fixture(scope="module")
def gradings(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gradings")
    make_sample_dataset("gradings", root, seed=0, size=16, n_train=1, n_test=3)
    return root


def _read(path: Path, mode: str = "RGB") -> np.ndarray:
    with Image.open(path) as img:
        array = np.asarray(img.convert(mode))
    return array[:, :, None] if array.ndim == 2 else array


def test_every_ordered_pair_in_closed_form(tmp_path, offset_data):
    domains = list(OFFSETS)
    ckpt = toy_checkpoint(tmp_path / "toy.pt", domains, offsets=list(OFFSETS.values()))
    with registered():
        report = evaluate(ckpt, offset_data, out_dir=tmp_path / "eval", grid_images=2)
    assert report["multi_domain"] and report["domains"] == domains
    expected_pairs = [f"{s}->{t}" for s in domains for t in domains if s != t]
    assert list(report["pairs"]) == expected_pairs
    for name, rep in report["pairs"].items():
        s, t = rep["source"], rep["target"]
        assert name == f"{s}->{t}" and rep["direction"] == f"to_{t}" and rep["images"] == 3
        assert rep["psnr"] == pytest.approx(_db(OFFSETS[s]))
        assert rep["identity_psnr"] == pytest.approx(_db(OFFSETS[s] - OFFSETS[t]))
        assert rep["cycle_psnr"] == pytest.approx(_db(OFFSETS[s] + OFFSETS[t]))
        assert [item["file"] for item in rep["per_image"]] == [
            "img_0.png",
            "img_1.png",
            "img_2.png",
        ]
    # From base every translation is exact: infinite PSNR, SSIM 1, well above the baseline.
    exact = report["pairs"]["base->bright"]
    assert exact["psnr"] == math.inf and exact["ssim"] == pytest.approx(1.0)
    assert exact["identity_ssim"] < 1.0
    # Per target: the mean over its sources (the finite ones); over all pairs likewise.
    to_bright = report["directions"]["to_bright"]
    assert to_bright["sources"] == ["base", "dark"] and to_bright["images"] == 6
    assert to_bright["psnr"] == pytest.approx(_db(30))
    finite = [_db(OFFSETS[s]) for s in domains for t in domains if s != t and OFFSETS[s]]
    assert report["mean"]["pairs"] == 6
    assert report["mean"]["psnr"] == pytest.approx(np.mean(finite))
    # The family's own numbers, as its hook computes them for the loaded model.
    with registered():
        payload, networks = load_trained_networks(ckpt)
        options = options_from_dict(FAMILY.name, payload["config"]["model"])
    assert report["family_metrics"] == pytest.approx(toy_metrics(networks, options, 0))
    assert report["family_metrics"]["bias_levels"] == pytest.approx(70 / 3, rel=1e-5)
    # eval.json: infinite PSNR as null; the grid: 2 scenes x 3 sources, input + 3 targets.
    saved = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert saved["pairs"]["base->bright"]["psnr"] is None
    assert saved["pairs"]["bright->dark"]["psnr"] == pytest.approx(_db(40))
    grid = _read(tmp_path / "eval" / "eval_grid.png")
    assert grid.shape == (2 + 6 * (12 + 2), 2 + 4 * (16 + 2), 3)


def test_gradings_task_every_pair_with_the_identity_baseline(tmp_path, gradings, capsys):
    ckpt = toy_checkpoint(tmp_path / "run" / "latest.pt", GRADINGS, seed=3)
    out = tmp_path / "eval"
    with registered():
        code = main(["eval", str(ckpt), "--data", str(gradings), "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "eval.json").read_text())
    assert len(report["pairs"]) == 12 and report["mean"]["pairs"] == 12
    names = sorted(os.listdir(gradings / "test" / "day"))
    for rep in report["pairs"].values():
        s, t = rep["source"], rep["target"]
        assert rep["images"] == 3 and f"{s} -> {t}" in printed
        # The identity baseline is the source scene against the same scene in the target.
        pairs = [
            (_read(gradings / "test" / s / n), _read(gradings / "test" / t / n)) for n in names
        ]
        assert rep["identity_psnr"] == pytest.approx(np.mean([psnr(a, b) for a, b in pairs]))
        assert rep["identity_ssim"] == pytest.approx(np.mean([ssim(a, b) for a, b in pairs]))
        assert math.isfinite(rep["psnr"]) and -1 <= rep["ssim"] <= 1
        assert math.isfinite(rep["cycle_psnr"])
    # A random model is not the grade: its numbers differ from the baseline's.
    assert report["mean"]["psnr"] != pytest.approx(report["mean"]["identity_psnr"])
    assert set(report["directions"]) == {f"to_{d}" for d in GRADINGS}
    assert "mean of 12 pairs" in printed and "to_sepia" in printed
    assert "family metrics" in printed and "bias_levels" in printed
    assert set(report["family_metrics"]) == {"bias_levels", "noise_output_mean"}
    assert (out / "eval_grid.png").is_file()


def test_max_images_and_grayscale(tmp_path, gradings):
    ckpt = toy_checkpoint(tmp_path / "gray.pt", GRADINGS, input_nc=1, output_nc=1)
    with registered():
        report = evaluate(ckpt, gradings, max_images=2)
    rep = report["pairs"]["day->sepia"]
    assert rep["images"] == 2
    # Read as PIL "L" on both sides: the baseline is that of the luma images.
    names = sorted(os.listdir(gradings / "test" / "day"))[:2]
    expected = [
        psnr(_read(gradings / "test" / "day" / n, "L"), _read(gradings / "test" / "sepia" / n, "L"))
        for n in names
    ]
    assert rep["identity_psnr"] == pytest.approx(np.mean(expected))
    # Gray in, RGB out: the baseline repeats the gray input; no cycle (channels differ).
    ckpt = toy_checkpoint(tmp_path / "colour.pt", GRADINGS, input_nc=1, output_nc=3)
    with registered():
        report = evaluate(ckpt, gradings, max_images=1)
    rep = report["pairs"]["sepia->day"]
    name = sorted(os.listdir(gradings / "test" / "sepia"))[0]
    gray = np.repeat(_read(gradings / "test" / "sepia" / name, "L"), 3, axis=2)
    assert rep["identity_psnr"] == pytest.approx(
        psnr(gray, _read(gradings / "test" / "day" / name))
    )
    assert rep["cycle_psnr"] is None and math.isfinite(rep["psnr"])


def test_missing_domains_and_two_domain_data_are_clear_errors(tmp_path, gradings):
    ckpt = toy_checkpoint(tmp_path / "x.pt", ["day", "noon"])
    with registered(), pytest.raises(DataError, match="domain.*noon.*test split has: day, dusk"):
        evaluate(ckpt, gradings)
    empty = tmp_path / "empty"
    empty.mkdir()
    with registered(), pytest.raises(DataError, match="test/<domain>/ folders"):
        evaluate(ckpt, empty)


def test_two_domain_sample_data_uses_its_truth_folders(tmp_path):
    data = tmp_path / "d2d"
    make_sample_dataset("day2dusk", data, size=16, n_train=1, n_test=2)
    ckpt = toy_checkpoint(tmp_path / "ab.pt", ["A", "B"], offsets=[0, 0])  # the identity
    with registered():
        report = evaluate(ckpt, data)
    for name, rep in report["pairs"].items():
        # An identity model scores exactly the identity baseline against truth/A2B, B2A.
        assert rep["images"] == 2 and rep["psnr"] == pytest.approx(rep["identity_psnr"]), name
        assert rep["cycle_psnr"] == math.inf


def test_a_bad_metrics_hook_is_named(tmp_path, offset_data):
    bad = dataclasses.replace(FAMILY, name="toy-md-bad", metrics=lambda n, o, s: {"x": "high"})
    ckpt = toy_checkpoint(tmp_path / "bad.pt", list(OFFSETS), family=bad)
    with registered(bad), pytest.raises(ValueError, match="toy-md-bad.*'x' is not a number"):
        evaluate(ckpt, offset_data)


def test_format_report_of_a_two_domain_model_has_no_pair_table(tmp_path):
    from tests.conftest import untrained_checkpoint

    data = tmp_path / "d2d"
    make_sample_dataset("day2dusk", data, size=16, n_train=1, n_test=1)
    report = evaluate(untrained_checkpoint(tmp_path / "c.pt"), data)
    assert "pairs" not in report and "family_metrics" not in report
    text = format_report(report)
    assert text.splitlines()[0].startswith("direction") and "->" not in text
