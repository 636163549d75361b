"""benchmarks/demo_time.py: a preset's training time beside the demo's, measured at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from i2i.data.sample import make_sample_dataset
from i2i.training.monitor import read_loss_log

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "benchmarks"))  # demo_time and its machine module

import demo_time  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("samples")
    make_sample_dataset("day2dusk", root / "D", n_train=6, n_test=2)
    make_sample_dataset("gradings", root / "G", n_train=5, n_test=1)
    # Enough images that both presets of the paired run reach 60 steps (discogan-tiny: 10
    # batches of 4 an epoch, 120 steps in all; the demo: 40 an epoch, 240 steps).
    make_sample_dataset("day2dusk", root / "D40", n_train=40, n_test=2)
    return {"D": root / "D", "G": root / "G", "D40": root / "D40"}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "data", "overrides"),
    [
        ("cogan-tiny", "D", ["n_epochs=2", "lr_step_size=4"]),
        ("stargan-tiny", "G", ["n_epochs=1", "n_epochs_decay=1", "batch_size=4"]),
        ("discogan-tiny", "D", ["n_epochs=3", "max_steps=7"]),
        ("twostep-tiny", "G", ["n_epochs=2", "batch_size=8"]),
    ],
)
def test_total_steps_are_those_i2i_train_runs(samples, tmp_path, preset, data, overrides):
    expected = demo_time.total_steps(preset, samples[data], overrides)
    cmd = [sys.executable, "-m", "i2i.cli", "train", "--config", preset, "--data",
           str(samples[data]), "--out", str(tmp_path / "run"), "--no-progress",
           "--set", "log_every=1", "--set", "data.num_workers=0"]  # fmt: skip
    for item in overrides:
        cmd += ["--set", item]
    subprocess.run(cmd, env=ENV, check=True, capture_output=True, timeout=300)
    steps = [row["step"] for row in read_loss_log(tmp_path / "run" / "losses.jsonl")]
    assert steps[-1] == expected and len(steps) == expected


def test_a_two_step_plan_with_encoder_steps_is_refused(samples) -> None:
    # Two phases of different cost are not one rate; twostep-tiny has one phase.
    with pytest.raises(SystemExit, match="two phases of different cost"):
        demo_time.total_steps("twostep", samples["G"], [])
    with pytest.raises(SystemExit, match="two phases of different cost"):
        demo_time.total_steps("twostep-tiny", samples["G"], ["loss.encoder_steps=10"])


def test_rate_is_read_inside_the_shared_window() -> None:
    times = [(10, 100.0), (20, 101.0), (30, 103.0), (40, 106.0), (50, 110.0)]
    assert demo_time.rate_in(times, 100.5, 107.0) == pytest.approx((106.0 - 101.0) / 20)
    with pytest.raises(SystemExit, match="overlapped too little"):
        demo_time.rate_in(times, 104.0, 105.0)


@pytest.mark.slow
def test_the_benchmark_pairs_a_preset_with_the_demo(samples, tmp_path) -> None:
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo_time.py"), "--data",
         str(samples["D40"]), "--presets", "discogan-tiny", "--steps", "60", "--json", str(out)],
        capture_output=True, text=True, env=ENV, check=True, timeout=600,
    )  # fmt: skip
    (row,) = json.loads(out.read_text())["rows"]
    assert row["preset"] == "discogan-tiny" and f"**{row['x_demo']:.2f}**" in done.stdout
    # Its total steps and the demo's, from the presets' schedules on 40 training images.
    assert row["steps"] == demo_time.total_steps("discogan-tiny", samples["D40"], [])
    assert row["demo_steps"] == demo_time.total_steps("cyclegan-tiny", samples["D40"], [])
    assert row["x_demo"] == pytest.approx(
        row["steps"] * row["s_per_it"] / (row["demo_steps"] * row["demo_s_per_it"])
    )
    assert min(row["window_s"], row["s_per_it"], row["demo_s_per_it"]) > 0
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "demo_time.py"), "--data", str(samples["D"]),
         "--presets", "stargan-tiny"],
        capture_output=True, text=True, env=ENV, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "pass --gradings" in bad.stderr
