"""`i2i demo`: the main job end to end on the built-in default, on a laptop CPU.

Sample data (day2dusk) → a tiny CycleGAN (the `cyclegan-tiny` preset) → evaluation
against the true translation → export to ONNX and FP16 ONNX in a model repository, with
the parity report. Prints the numbers and where everything is.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from i2i.data import make_sample_dataset
from i2i.export import export_checkpoint, format_parity
from i2i.training import apply_overrides, load_config, train
from i2i.training.evaluate import evaluate, format_report


def run_demo(
    out: Path = Path("demo"), task: str = "day2dusk", steps: int = 0, seed: int = 0
) -> dict:
    """Run the demo in `out` (replacing an earlier demo there); return the evaluation report."""
    out = Path(out)
    data_dir, run_dir, models_dir = out / "data", out / "run", out / "models"
    for folder in (data_dir, run_dir, models_dir):
        if folder.exists():
            shutil.rmtree(folder)
    started = time.perf_counter()
    print(f"[1/4] sample data: task {task!r} -> {data_dir}")
    make_sample_dataset(task, data_dir, seed=seed)

    cfg = load_config("cyclegan-tiny")
    overrides = [f"data.root={data_dir}", f"seed={seed}"]
    if steps:
        overrides.append(f"max_steps={steps}")
    cfg = apply_overrides(cfg, overrides)
    print(f"[2/4] training a tiny CycleGAN on the CPU -> {run_dir}")
    summary = train(cfg, run_dir)
    print(
        f"      {summary.step} steps in {summary.seconds:.0f} s ({summary.steps_per_second:.2f} it/s)"
    )

    print("[3/4] evaluating on the test split against the true translation")
    checkpoint = summary.checkpoint or run_dir / "latest.pt"
    report = evaluate(checkpoint, data_dir, out_dir=out)
    print(format_report(report))

    print(f"[4/4] exporting to ONNX and FP16 ONNX -> {models_dir}")
    version_dir, manifest = export_checkpoint(checkpoint, models_dir, task)
    print(format_parity(manifest))
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s\n"
        f"  evaluation grid (input | output | truth): {out / 'eval_grid.png'}\n"
        f"  numbers: {out / 'eval.json'}\n"
        f"  training samples: {run_dir / 'samples'}   TensorBoard: tensorboard --logdir {run_dir}\n"
        f"  exported model: {version_dir} (i2i models show {models_dir} {task})"
    )
    return report
