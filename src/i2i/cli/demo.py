"""`i2i demo`: the main job end to end on the built-in default, on a laptop CPU.

Sample data (day2dusk) → a tiny model of the chosen family (the `<family>-tiny` preset,
CycleGAN by default) → evaluation against the true translation → export to ONNX and FP16
ONNX in a model repository, with the parity report → `i2i-serve` on that repository (a
child process on 127.0.0.1) → the test images translated through it with the Python
client, timed. Prints the numbers and where everything is.

Per family: pix2pix trains on the aligned layout of the sample data (pairs); MUNIT, a
multimodal family, trains on `day2dusk-range` (dusk at a random strength) by default, is
evaluated for fidelity and diversity, and each test image comes back as several samples
(seeded styles) from the server. A multi-domain family (twostep, stargan) trains on the
multi-domain `gradings` task (day, dusk, night, sepia in the labelled layout), is evaluated
per ordered pair of domains, and the first domain's test images are translated through the
server into every other domain (directions `to_<domain>`).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FAMILIES = ("cyclegan", "pix2pix", "unit", "munit", "twostep", "stargan")
# The sample task each family's demo uses unless --task says otherwise.
DEFAULT_TASKS = {"munit": "day2dusk-range"}
MULTI_DOMAIN_TASK = "gradings"  # the default task of a multi-domain family
SAMPLES = 3  # outputs per test image through the server, for multimodal families


def run_demo(
    out: Path = Path("demo"),
    task: str | None = None,
    steps: int = 0,
    seed: int = 0,
    family: str = "cyclegan",
    config: str | Path | None = None,
) -> dict:
    """Run the demo in `out` (replacing an earlier demo there); return the evaluation report.

    `config` is the training preset or YAML file (default: the family's `<family>-tiny`).

    Raises:
        ConfigError: the family is unknown or has no tiny preset (before anything is written).
    """
    from i2i.data import domain_folders, make_sample_dataset
    from i2i.export import export_checkpoint, format_parity
    from i2i.models import get_family
    from i2i.training import ConfigError, apply_overrides, load_config, train
    from i2i.training.config import resolve_config_path
    from i2i.training.evaluate import evaluate, format_report
    from i2i.training.loop import trainer_class

    try:
        spec = get_family(family)
    except KeyError as exc:
        raise ConfigError(f"i2i demo --family: {exc.args[0]}") from None
    preset = config if config is not None else f"{family}-tiny"
    try:
        resolve_config_path(preset)
    except ConfigError as exc:
        raise ConfigError(
            f"the demo of family {family!r} trains its tiny preset configs/{family}-tiny.yaml, "
            f"which this installation lacks ({exc})"
        ) from None
    multi_domain = spec.multi_domain
    task = task or (MULTI_DOMAIN_TASK if multi_domain else DEFAULT_TASKS.get(family, "day2dusk"))
    aligned = not multi_domain and getattr(trainer_class(family), "paired", False)
    multimodal = spec.style_dim > 0

    out = Path(out)
    data_dir, run_dir, models_dir = out / "data", out / "run", out / "models"
    translated_dir = out / "translated"
    for folder in (data_dir, run_dir, models_dir, translated_dir):
        if folder.exists():
            shutil.rmtree(folder)
    started = time.perf_counter()
    print(f"[1/5] sample data: task {task!r} -> {data_dir}")
    info = make_sample_dataset(task, data_dir, seed=seed, aligned=aligned)
    print(f"      {info['layout']} layout, domains {', '.join(_domain_names(info))}")

    cfg = load_config(preset)
    overrides = [f"data.root={data_dir}", f"seed={seed}"]
    if steps:
        overrides.append(f"max_steps={steps}")
    cfg = apply_overrides(cfg, overrides)
    print(f"[2/5] training a tiny {family} model on the CPU ({preset}) -> {run_dir}")
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
    if multi_domain:
        # The first domain's test images, into every other domain of the model.
        source, *targets = report["domains"]
        inputs = domain_folders(data_dir, "test")[source]
        directions = [f"to_{target}" for target in targets]
        what = f"{source} -> {', '.join(targets)} (to_<domain>, one folder each)"
    else:
        inputs, directions, what = data_dir / "testA", ["A2B"], "A2B"
    latencies = serve_and_translate(
        models_dir,
        task,
        inputs,
        translated_dir,
        num_samples=samples,
        seed=seed,
        directions=directions,
    )
    per_image = f" x {samples} styles (seeded)" if multimodal else ""
    print(
        f"      {len(latencies)} calls{per_image} {what} -> {translated_dir}; latency seen by "
        "the client: "
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


def _domain_names(info: dict[str, Any]) -> list[str]:
    """The domain names a sample dataset's description lists (a list, or {"A": .., "B": ..})."""
    domains = info["domains"]
    return list(domains.values()) if isinstance(domains, dict) else list(domains)


def serve_and_translate(
    repository: Path,
    model: str,
    inputs: Path,
    out: Path,
    num_samples: int = 1,
    seed: int = 0,
    directions: Sequence[str] = ("A2B",),
) -> list[float]:
    """Start i2i-serve on `repository`, translate every image of `inputs` in each of
    `directions` into `out`, stop the server (SIGTERM: it drains and exits 0); return each
    call's latency in ms.

    The outputs of the single direction A2B go into `out` itself; otherwise into
    ``out/<direction>/`` (``out/to_dusk/`` for a multi-domain model). With ``num_samples``
    > 1 (multimodal models) each image comes back as that many samples, styles seeded by
    ``seed``, written as ``<stem>_<k>.png``."""
    from i2i.client import Client
    from i2i.data import list_images
    from i2i.serving.process import ServerProcess

    out.mkdir(parents=True, exist_ok=True)
    latencies = []
    server = ServerProcess(repository, "--metrics-port", "-1", "--warmup-size", "64")
    styles: dict[str, Any] = (
        {"num_samples": num_samples, "style_seed": seed} if num_samples > 1 else {}
    )
    flat = list(directions) == ["A2B"]
    with server, Client(server.target, timeout=60) as client:
        for direction in directions:
            folder = out if flat else out / direction
            folder.mkdir(parents=True, exist_ok=True)
            for path in list_images(inputs):
                start = time.perf_counter()
                result = client.translate(
                    path.read_bytes(), model=model, direction=direction, **styles
                )
                latencies.append((time.perf_counter() - start) * 1e3)
                for k, image in enumerate(result.images):
                    assert isinstance(image, bytes)  # PNG: the server's default for encoded input
                    name = f"{path.stem}_{k}.png" if num_samples > 1 else f"{path.stem}.png"
                    (folder / name).write_bytes(image)
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
        f"{SAMPLES} seeded samples per image, twostep and stargan (multi-domain) train on "
        "the gradings task and translate into every domain",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument(
        "--task",
        help="sample task (default day2dusk; day2dusk-range for munit; gradings for twostep "
        "and stargan; see i2i data sample --list)",
    )
    p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run_demo_command, extras=("train", "export"))
