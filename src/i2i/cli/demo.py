"""`i2i demo`: the main job end to end on the built-in default, on a laptop CPU.

Sample data (day2dusk) → a tiny CycleGAN (the `cyclegan-tiny` preset) → evaluation
against the true translation → export to ONNX and FP16 ONNX in a model repository, with
the parity report → `i2i-serve` on that repository (a child process on 127.0.0.1) → the
test images translated through it with the Python client, timed. Prints the numbers and
where everything is.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any


def run_demo(
    out: Path = Path("demo"), task: str = "day2dusk", steps: int = 0, seed: int = 0
) -> dict:
    """Run the demo in `out` (replacing an earlier demo there); return the evaluation report."""
    from i2i.data import make_sample_dataset
    from i2i.export import export_checkpoint, format_parity
    from i2i.training import apply_overrides, load_config, train
    from i2i.training.evaluate import evaluate, format_report

    out = Path(out)
    data_dir, run_dir, models_dir = out / "data", out / "run", out / "models"
    translated_dir = out / "translated"
    for folder in (data_dir, run_dir, models_dir, translated_dir):
        if folder.exists():
            shutil.rmtree(folder)
    started = time.perf_counter()
    print(f"[1/5] sample data: task {task!r} -> {data_dir}")
    make_sample_dataset(task, data_dir, seed=seed)

    cfg = load_config("cyclegan-tiny")
    overrides = [f"data.root={data_dir}", f"seed={seed}"]
    if steps:
        overrides.append(f"max_steps={steps}")
    cfg = apply_overrides(cfg, overrides)
    print(f"[2/5] training a tiny CycleGAN on the CPU -> {run_dir}")
    summary = train(cfg, run_dir)
    print(
        f"      {summary.step} steps in {summary.seconds:.0f} s ({summary.steps_per_second:.2f} it/s)"
    )

    print("[3/5] evaluating on the test split against the true translation")
    checkpoint = summary.checkpoint or run_dir / "latest.pt"
    report = evaluate(checkpoint, data_dir, out_dir=out)
    print(format_report(report))

    print(f"[4/5] exporting to ONNX and FP16 ONNX -> {models_dir}")
    version_dir, manifest = export_checkpoint(checkpoint, models_dir, task)
    print(format_parity(manifest))

    print(f"[5/5] serving {models_dir} with i2i-serve and translating the test images through it")
    latencies = serve_and_translate(models_dir, task, data_dir / "testA", translated_dir)
    print(
        f"      {len(latencies)} images A2B -> {translated_dir}; latency seen by the client: "
        f"median {statistics.median(latencies):.1f} ms, max {max(latencies):.1f} ms"
    )
    print(
        f"\ndone in {time.perf_counter() - started:.0f} s\n"
        f"  evaluation grid (input | output | truth): {out / 'eval_grid.png'}\n"
        f"  numbers: {out / 'eval.json'}\n"
        f"  training samples: {run_dir / 'samples'}   TensorBoard: tensorboard --logdir {run_dir}\n"
        f"  exported model: {version_dir} (i2i models show {models_dir} {task})\n"
        f"  translated through the server: {translated_dir}\n"
        f"  serve it yourself: i2i-serve --repository {models_dir}"
    )
    return report


def serve_and_translate(repository: Path, model: str, inputs: Path, out: Path) -> list[float]:
    """Start i2i-serve on `repository`, translate every image of `inputs` A2B into `out`,
    stop the server (SIGTERM: it drains and exits 0); return each call's latency in ms."""
    from i2i.client import Client
    from i2i.data import list_images
    from i2i.serving.process import ServerProcess

    out.mkdir(parents=True, exist_ok=True)
    latencies = []
    server = ServerProcess(repository, "--metrics-port", "-1", "--warmup-size", "64")
    with server, Client(server.target, timeout=60) as client:
        for path in list_images(inputs):
            start = time.perf_counter()
            result = client.translate(path.read_bytes(), model=model, direction="A2B")
            latencies.append((time.perf_counter() - start) * 1e3)
            image = result.images[0]
            assert isinstance(image, bytes)  # PNG: the server's default for encoded inputs
            (out / f"{path.stem}.png").write_bytes(image)
    if server.stop() != 0:
        raise RuntimeError("i2i-serve did not exit cleanly:\n" + "".join(list(server.log)[-20:]))
    return latencies


def run_demo_command(args: argparse.Namespace) -> int:
    from i2i.cli.common import quiet_exporter_logs

    quiet_exporter_logs()
    run_demo(out=args.out, task=args.task, steps=args.steps, seed=args.seed)
    return 0


def add_commands(sub: Any) -> None:
    """Register demo on the `i2i` parser's subcommands."""
    p = sub.add_parser(
        "demo",
        help="sample data, train a tiny CycleGAN on the CPU, evaluate, export, serve",
        description="The main job end to end on the built-in default: writes a sample dataset, "
        "trains configs/cyclegan-tiny settings for a few minutes on the CPU, evaluates, exports "
        "to ONNX, serves the export with i2i-serve and translates the test images through it; "
        "prints the numbers and where everything is.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--task", default="day2dusk", help="sample task (default day2dusk)")
    p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run_demo_command, extras=("train", "export"))
