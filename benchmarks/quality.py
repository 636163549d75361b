"""The margins tests/test_quality.py asserts, printed: PSNR gain over the untranslated input.

Runs what test_tiny_cyclegan_beats_the_identity_baseline runs (the day2dusk sample with
100 training and 12 test images per domain at 64 px, seed 0; the cyclegan-tiny preset for
2 + 2 epochs = 400 steps; `i2i.training.evaluate.evaluate`) and prints, per direction, the
PSNR of the translated test images and of the untranslated ones against the true
translation, and the gain, which the test requires to exceed its threshold.

    python benchmarks/quality.py
    python benchmarks/quality.py --json quality.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from i2i.data import make_sample_dataset
from i2i.training import apply_overrides, load_config, train
from i2i.training.evaluate import evaluate
from machine import describe, identity

THRESHOLD_DB = 0.75  # what tests/test_quality.py asserts each gain exceeds


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--json", type=Path, help="also write the machine and the report here")
    args = p.parse_args()
    ident = identity()
    print(describe(ident))
    work = Path(tempfile.mkdtemp(prefix="i2i-quality-"))
    data = work / "data"
    make_sample_dataset("day2dusk", data, seed=0, size=64, n_train=100, n_test=12)
    overrides = [f"data.root={data}", "n_epochs=2", "n_epochs_decay=2", "progress=false",
                 "tensorboard=false"]  # fmt: skip
    start = time.perf_counter()
    summary = train(apply_overrides(load_config("cyclegan-tiny"), overrides), work / "run")
    seconds = time.perf_counter() - start
    report = evaluate(summary.checkpoint, data, out_dir=work / "run")
    print(f"\n{summary.step} steps in {seconds:.0f} s; test threshold: gain > {THRESHOLD_DB} dB\n")
    print("| direction | test images | PSNR | identity PSNR | gain (dB) | SSIM | identity SSIM |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for direction, rep in report["directions"].items():
        gain = rep["psnr"] - rep["identity_psnr"]
        print(
            f"| {direction} | {rep['images']} | {rep['psnr']:.2f} | {rep['identity_psnr']:.2f} "
            f"| {gain:+.2f} | {rep['ssim']:.3f} | {rep['identity_ssim']:.3f} |"
        )
    if args.json:
        record = {"machine": ident, "steps": summary.step, "train_seconds": seconds,
                  "threshold_db": THRESHOLD_DB, "report": report}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
