"""`i2i demo`: the main job end to end on the built-in default, on a laptop CPU.

Sample data (day2dusk) → a tiny model of the chosen family (the `<family>-tiny` preset,
CycleGAN by default) → evaluation against the true translation → export to ONNX and FP16
ONNX in a model repository, with the parity report → `i2i-serve` on that repository (a
child process on 127.0.0.1) → the test images translated through it with the Python
client, timed. Prints the numbers and where everything is.

Per family: pix2pix trains on the aligned layout of the sample data (pairs); MUNIT, a
multimodal family, trains on `day2dusk-range` (dusk at a random strength) by default, is
evaluated for fidelity and diversity, and each test image comes back as several samples
(seeded styles) from the server.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

FAMILIES = ("cyclegan", "pix2pix", "unit", "munit")
# The sample task each family's demo uses unless --task says otherwise.
DEFAULT_TASKS = {"munit": "day2dusk-range"}
SAMPLES = 3  # outputs per test image through the server, for multimodal families


def run_demo(
    out: Path = Path("demo"),
    task: str | None = None,
    steps: int = 0,
    seed: int = 0,
    family: str = "cyclegan",
) -> dict:
    """Run the demo in `out` (replacing an earlier demo there); return the evaluation report."""
    from i2i.data import make_sample_dataset
    from i2i.export import export_checkpoint, format_parity
    from i2i.models import get_family
    from i2i.training import apply_overrides, load_config, train
    from i2i.training.evaluate import evaluate, format_report
    from i2i.training.loop import trainer_class

    task = task or DEFAULT_TASKS.get(family, "day2dusk")
    aligned = getattr(trainer_class(family), "paired", False)
    multimodal = get_family(family).style_dim > 0

    out = Path(out)
    data_dir, run_dir, models_dir = out / "data", out / "run", out / "models"
    translated_dir = out / "translated"
    for folder in (data_dir, run_dir, models_dir, translated_dir):
        if folder.exists():
            shutil.rmtree(folder)
    started = time.perf_counter()
    layout = "aligned pairs" if aligned else "unaligned"
    print(f"[1/5] sample data: task {task!r}, {layout} -> {data_dir}")
    make_sample_dataset(task, data_dir, seed=seed, aligned=aligned)

    cfg = load_config(f"{family}-tiny")
    overrides = [f"data.root={data_dir}", f"seed={seed}"]
    if steps:
        overrides.append(f"max_steps={steps}")
    cfg = apply_overrides(cfg, overrides)
    print(f"[2/5] training a tiny {family} model on the CPU ({family}-tiny) -> {run_dir}")
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
    samples = SAMPLES if multimodal else 1
    latencies = serve_and_translate(
        models_dir, task, data_dir / "testA", translated_dir, num_samples=samples, seed=seed
    )
    per_image = f" x {samples} styles (seeded)" if multimodal else ""
    print(
        f"      {len(latencies)} images{per_image} A2B -> {translated_dir}; latency seen by the "
        "client: "
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


def serve_and_translate(
    repository: Path, model: str, inputs: Path, out: Path, num_samples: int = 1, seed: int = 0
) -> list[float]:
    """Start i2i-serve on `repository`, translate every image of `inputs` A2B into `out`,
    stop the server (SIGTERM: it drains and exits 0); return each call's latency in ms.

    With ``num_samples`` > 1 (multimodal models) each image comes back as that many
    samples, styles seeded by ``seed``, written as ``<stem>_<k>.png``."""
    from i2i.client import Client
    from i2i.data import list_images
    from i2i.serving.process import ServerProcess

    out.mkdir(parents=True, exist_ok=True)
    latencies = []
    server = ServerProcess(repository, "--metrics-port", "-1", "--warmup-size", "64")
    with server, Client(server.target, timeout=60) as client:
        for path in list_images(inputs):
            start = time.perf_counter()
            styles: dict[str, Any] = (
                {"num_samples": num_samples, "style_seed": seed} if num_samples > 1 else {}
            )
            result = client.translate(path.read_bytes(), model=model, direction="A2B", **styles)
            latencies.append((time.perf_counter() - start) * 1e3)
            for k, image in enumerate(result.images):
                assert isinstance(image, bytes)  # PNG: the server's default for encoded inputs
                name = f"{path.stem}_{k}.png" if num_samples > 1 else f"{path.stem}.png"
                (out / name).write_bytes(image)
    if server.stop() != 0:
        raise RuntimeError("i2i-serve did not exit cleanly:\n" + "".join(list(server.log)[-20:]))
    return latencies


def run_demo_command(args: argparse.Namespace) -> int:
    from i2i.cli.common import quiet_exporter_logs

    quiet_exporter_logs()
    run_demo(out=args.out, task=args.task, steps=args.steps, seed=args.seed, family=args.family)
    return 0


def add_commands(sub: Any) -> None:
    """Register demo on the `i2i` parser's subcommands."""
    p = sub.add_parser(
        "demo",
        help="sample data, train a tiny model on the CPU, evaluate, export, serve",
        description="The main job end to end on the built-in default: writes a sample dataset, "
        "trains the family's <family>-tiny preset for a few minutes on the CPU, evaluates, "
        "exports to ONNX, serves the export with i2i-serve and translates the test images "
        "through it; prints the numbers and where everything is.",
    )
    p.add_argument(
        "--family",
        choices=FAMILIES,
        default="cyclegan",
        help="model family (default cyclegan); pix2pix trains on aligned pairs, munit gives "
        f"{SAMPLES} seeded samples per image",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument(
        "--task",
        help="sample task (default day2dusk; day2dusk-range for munit; see i2i data sample --list)",
    )
    p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run_demo_command, extras=("train", "export"))
