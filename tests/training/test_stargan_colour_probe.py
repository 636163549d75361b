"""benchmarks/stargan_colour_probe.py runs on a real gradings sample and measures what its
docstring says (BENCHMARKS.md, StarGAN fifth round)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from i2i.data.sample import make_sample_dataset

ROOT = Path(__file__).resolve().parents[2]


def test_the_probe_reports_the_affine_bound_and_a_supervised_g(tmp_path: Path) -> None:
    make_sample_dataset("gradings", tmp_path / "G", n_train=16, n_test=4)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reports = {}
    for colour in ("true", "false"):
        done = subprocess.run(
            [sys.executable, str(ROOT / "benchmarks" / "stargan_colour_probe.py"),
             "--data", str(tmp_path / "G"), "--steps", "3", "--set", f"model.colour_transform={colour}"],
            capture_output=True, text=True, env=env, check=True, timeout=300,
        )  # fmt: skip
        reports[colour] = json.loads(done.stdout)
    report = reports["false"]
    assert "day" not in report["identity"] and report["set"] == ["model.colour_transform=false"]
    # Every grade of the sample is close to an affine map of the colour, far above the
    # identity; the sepia grade has no colour left, so the identity is far from it.
    for grade in ("dusk", "night", "sepia"):
        assert report["affine"][grade] > report["identity"][grade] + 15
    assert report["affine"]["sepia"] > 40
    # Three supervised steps already move g from the identity towards the grades.
    grades = ("dusk", "night", "sepia")
    for r in reports.values():
        gain = sum(r["supervised"][name] - r["identity"][name] for name in grades) / 3
        assert gain > 1.0, r
    assert reports["true"]["supervised"] != reports["false"]["supervised"]
    bad = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "stargan_colour_probe.py"),
         "--data", str(tmp_path / "missing")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode != 0 and "no PNG images" in bad.stderr
