"""End to end on the built-in data: a short tiny training learns the translation.

The day2dusk task has a known true translation, so learning is measured, not eyeballed:
after 400 steps (100 training images per domain, four short epochs, the last two with the
learning rate decaying) the PSNR of each direction's 12 translated test images against the
truth must exceed that of the untranslated images by more than 0.75 dB. Deterministic for
the seed: `python benchmarks/quality.py` prints the margins of the current preset (global
skip, cycle weight 2, moving average from step 200), +11.26 dB A2B and +2.97 dB B2A
(BENCHMARKS.md, "Quality test").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from i2i.data import make_sample_dataset
from i2i.training import apply_overrides, load_config, train
from i2i.training.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_tiny_cyclegan_beats_the_identity_baseline(tmp_path):
    data = tmp_path / "data"
    make_sample_dataset("day2dusk", data, seed=0, size=64, n_train=100, n_test=12)
    cfg = apply_overrides(
        load_config("cyclegan-tiny"),
        [
            f"data.root={data}",
            "n_epochs=2",
            "n_epochs_decay=2",
            "progress=false",
            "tensorboard=false",
        ],
    )
    summary = train(cfg, tmp_path / "run")
    assert summary.step == 400
    report = evaluate(summary.checkpoint, data, out_dir=tmp_path / "run")
    for direction, rep in report["directions"].items():
        gain = rep["psnr"] - rep["identity_psnr"]
        assert gain > 0.75, (
            f"{direction}: {rep['psnr']:.2f} dB vs identity {rep['identity_psnr']:.2f} dB"
        )


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cyclegan", "pix2pix", "unit", "munit"])
def test_demo_runs_end_to_end(tmp_path, family):
    demo = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "i2i.cli", "demo", "--out", str(demo), "--steps", "6"]
        + ["--family", family],
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "A2B" in result.stdout and "eval_grid.png" in result.stdout
    for name in ("eval.json", "eval_grid.png", "run/latest.pt", "data/dataset.json"):
        assert (demo / name).is_file(), name
    layout = json.loads((demo / "data" / "dataset.json").read_text())["layout"]
    assert layout == ("aligned" if family == "pix2pix" else "unaligned")
    # The served step: every test image came back through i2i-serve, and latency was shown;
    # MUNIT's as three seeded samples each.
    tests = sorted(p.stem for p in (demo / "data" / "testA").iterdir())
    translated = sorted(p.stem for p in (demo / "translated").glob("*.png"))
    if family == "munit":
        tests = sorted(f"{t}_{k}" for t in tests for k in range(3))
        report = json.loads((demo / "eval.json").read_text())["directions"]["A2B"]
        assert 0 <= report["coverage"] <= 1
    assert translated == tests and tests
    assert "latency seen by the client: median" in result.stdout
