"""`i2i train` / `i2i-train`, `i2i data`, `i2i eval` and `i2i import`: the training stage."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from i2i.cli.common import EPILOG, UsageError, dispatch

EXTRAS = ("train",)


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="training preset (YAML), e.g. configs/cyclegan.yaml; default: the reference "
        "CycleGAN recipe. When resuming, omit it to use the run's own config.",
    )
    p.add_argument("--data", type=Path, help="dataset folder with trainA/ and trainB/ (data.root)")
    p.add_argument("--out", type=Path, help="run folder: checkpoints, logs, samples (new run)")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN",
        help="continue the run in this folder exactly where its latest checkpoint stopped",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key, e.g. --set batch_size=4 --set data.crop_size=128 "
        "--set model.ngf=32 (repeatable; keys are checked)",
    )
    p.add_argument("--max-steps", type=int, help="stop after this many steps in total (max_steps)")
    p.add_argument("--device", help="auto (default), cpu, cuda or cuda:N (device)")
    p.add_argument("--amp", choices=["off", "fp16", "bf16"], help="mixed precision (amp)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in CI logs)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_train(args: argparse.Namespace) -> int:
    from i2i.checkpoint import CheckpointManager
    from i2i.training import apply_overrides, config_from_dict, load_config, train

    resume = args.resume is not None
    if resume and args.out is not None and args.out != args.resume:
        raise UsageError("--out and --resume name different folders; --resume RUN is enough")
    out = args.resume if resume else args.out
    if out is None:
        raise UsageError("--out RUN is required for a new run (or --resume RUN)")
    if resume and args.config is None:
        # Only the config is read here; train() loads (and reports a fallback) itself.
        found = CheckpointManager(out).load_latest(mmap=True, warn=False)
        if found is None:
            raise UsageError(f"{out}: no checkpoint to resume from")
        cfg = config_from_dict(found[1]["config"])
    else:
        cfg = load_config(args.config)
    overrides = list(args.overrides)
    if args.data is not None:
        overrides.append(f"data.root={args.data}")
    if args.max_steps is not None:
        overrides.append(f"max_steps={args.max_steps}")
    if args.device is not None:
        overrides.append(f"device={args.device}")
    if args.amp is not None:
        overrides.append(f"amp={args.amp}")
    if args.no_progress:
        overrides.append("progress=false")
    cfg = apply_overrides(cfg, overrides)
    if not cfg.data.root:
        raise UsageError("--data DATASET is required (a folder with trainA/ and trainB/)")
    summary = train(cfg, out, resume=resume)
    if summary.rank != 0:
        return 0
    if summary.stopped_early:
        print(f"stopped at step {summary.step}; continue with: i2i-train --resume {out}")
        return 130
    losses = ", ".join(f"{k} {v:.3f}" for k, v in summary.last_losses.items())
    print(
        f"trained {summary.step} steps (epoch {summary.epoch}) in {summary.seconds:.1f} s, "
        f"{summary.steps_per_second:.2f} it/s\n"
        f"last losses: {losses or '-'}\n"
        f"checkpoint: {summary.checkpoint}\n"
        f"logs: {out / 'losses.jsonl'}, {out / 'tensorboard'}, samples in {out / 'samples'}"
    )
    return 0


def run_data_sample(args: argparse.Namespace) -> int:
    from i2i.data import make_sample_dataset, sample_task_names

    if args.list:
        print("\n".join(sample_task_names()))
        return 0
    if args.task is None or args.out is None:
        raise UsageError("--task and --out are required (see --list for the tasks)")
    try:
        info = make_sample_dataset(
            args.task,
            args.out,
            seed=args.seed,
            size=args.size,
            n_train=args.train,
            n_test=args.test,
            aligned=args.aligned,
        )
    except ValueError as exc:  # an unknown task, a bad count, --aligned for gradings
        raise UsageError(str(exc)) from exc
    counts = info.get("counts", {})
    print(
        f"wrote the {args.task!r} sample dataset ({info['layout']} layout) to {args.out}: "
        f"{json.dumps(counts)}"
    )
    return 0


def _checkpoint_of(run_or_checkpoint: Path) -> Path:
    if run_or_checkpoint.is_dir():
        from i2i.checkpoint import CheckpointManager

        found = CheckpointManager(run_or_checkpoint).find_latest()
        if found is None:
            raise UsageError(f"{run_or_checkpoint}: no checkpoint (latest.pt) in this run folder")
        return found
    return run_or_checkpoint


def run_eval(args: argparse.Namespace) -> int:
    from i2i.training.evaluate import evaluate, format_report
    from i2i.training.fid import FIDError, InceptionWeightsError

    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be at least 1, got {args.num_samples}")
    checkpoint = _checkpoint_of(args.run)
    out = args.out or (args.run if args.run.is_dir() else args.run.parent)
    try:
        report = evaluate(
            checkpoint,
            args.data,
            out_dir=out,
            device=args.device,
            max_images=args.max_images,
            num_samples=args.num_samples,
            seed=args.seed,
            inception_weights=args.inception_weights,
            ema=not args.no_ema,
        )
    except InceptionWeightsError as exc:
        raise UsageError(f"--inception-weights {exc}") from exc
    except FIDError as exc:
        raise UsageError(str(exc)) from exc
    print(format_report(report))
    print(f"report: {out / 'eval.json'}\ngrid: {out / 'eval_grid.png'}")
    return 0


def run_import_cyclegan(args: argparse.Namespace) -> int:
    from i2i.importers import import_cyclegan
    from i2i.models import CycleGANOptions

    options = CycleGANOptions(
        netG=args.netG,
        ngf=args.ngf,
        norm=args.norm,
        dropout=args.dropout,
        input_nc=args.input_nc,
        output_nc=args.output_nc,
    )
    summary = import_cyclegan(args.out, g_a=args.g_a, g_b=args.g_b, options=options)
    filled = sum(len(v) for v in summary.get("filled_keys", {}).values())
    if filled:
        print(
            f"note: {filled} BatchNorm num_batches_tracked counters missing (an old file): set to 0"
        )
    dropped = sum(len(v) for v in summary["dropped_keys"].values())
    print(
        f"wrote {args.out} with direction(s) {', '.join(summary['directions'])}"
        + (f" ({dropped} stale InstanceNorm statistics dropped)" if dropped else "")
    )
    return 0


def run_import_pix2pix(args: argparse.Namespace) -> int:
    from i2i.importers import import_pix2pix
    from i2i.models import Pix2PixOptions

    options = Pix2PixOptions(
        netG=args.netG,
        ngf=args.ngf,
        norm=args.norm,
        dropout=args.dropout,
        input_nc=args.input_nc,
        output_nc=args.output_nc,
        direction=args.direction,
    )
    summary = import_pix2pix(args.out, g=args.g, options=options)
    filled = len(summary.get("filled_keys", []))
    if filled:
        print(
            f"note: {filled} BatchNorm num_batches_tracked counters missing (an old file): set to 0"
        )
    dropped = len(summary["dropped_keys"])
    print(
        f"wrote {args.out} with direction {summary['direction']}"
        + (f" ({dropped} stale InstanceNorm statistics dropped)" if dropped else "")
    )
    return 0


def run_import_unit_family(args: argparse.Namespace) -> int:
    from i2i.importers import import_reference

    summary = import_reference(args.family, args.gen, args.config, args.out)
    for note in summary["notes"]:
        print(f"note: {note}")
    dropped = sum(len(keys) for keys in summary["dropped_keys"].values())
    if dropped:
        print(f"note: {dropped} stale InstanceNorm statistics dropped")
    print(
        f"wrote {args.out} ({args.family}, step {summary['step']}) with directions "
        f"{', '.join(summary['directions'])}"
    )
    return 0


def add_commands(sub: Any) -> None:
    """Register train, data, eval and import on the `i2i` parser's subcommands."""
    p = sub.add_parser("train", help="train a model (same as i2i-train)", epilog=EPILOG)
    add_train_arguments(p)
    p.set_defaults(func=run_train, extras=EXTRAS)

    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser(
        "sample",
        help="write a built-in sample dataset (no download; deterministic for a seed)",
        description="Write a built-in dataset in the unaligned layout (trainA/ trainB/ testA/ "
        "testB/) or, with --aligned, the paired layout pix2pix reads (train/ test/, each image "
        "[A | B] side by side, plus the test halves in testA/ testB/), with the true "
        "translations of the test images in truth/A2B and truth/B2A. day2dusk-range is "
        "multimodal: any dusk strength in a range is a correct answer. gradings is "
        "multi-domain (day, dusk, night, sepia): the labelled layout train/<domain>/ (each "
        "domain its own scenes) and test/<domain>/ (the same scenes in every domain under "
        "equal names, so every ordered pair of domains has its true translation).",
    )
    p.add_argument(
        "--task",
        help="which translation, e.g. day2dusk, gray2color, day2dusk-range, gradings (see --list)",
    )
    p.add_argument("--out", type=Path, help="folder to write (created)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument(
        "--train", type=int, default=200, help="training images per domain (default 200)"
    )
    p.add_argument(
        "--test",
        type=int,
        default=24,
        help="test images per domain (default 24; gradings: test scenes, each in every domain)",
    )
    p.add_argument(
        "--aligned",
        action="store_true",
        help="paired layout: train/ and test/ hold [A | B] images of width 2 x size (pix2pix)",
    )
    p.add_argument("--list", action="store_true", help="list the tasks and exit")
    p.set_defaults(func=run_data_sample, extras=EXTRAS)

    p = sub.add_parser(
        "eval",
        help="translate the test split and report PSNR/SSIM against the true translation",
        description="Translates testA/ and testB/ with a run's translators; reports PSNR and "
        "SSIM against truth/A2B and truth/B2A, the identity baseline (input vs truth), and the "
        "cycle reconstruction PSNR; writes eval.json and eval_grid.png. A multimodal model "
        "(MUNIT) gets --num-samples outputs per image from seeded style codes; on a task "
        "whose correct answers form a known family (day2dusk-range) eval also reports "
        "fidelity (PSNR to the nearest correct answer) and diversity (coverage of the range, "
        "pairwise L1). A multi-domain model (twostep, stargan) is scored on test/<domain>/ "
        "(the gradings task) for every ordered pair of domains: to_<target> on "
        "test/<source>/<name> against test/<target>/<name>, with the identity baseline per "
        "pair and the means. See README, Evaluate.",
    )
    p.add_argument("run", type=Path, help="run folder (uses its latest.pt) or a checkpoint file")
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="dataset folder with testA/ testB/ (truth/), or test/<domain>/ (multi-domain)",
    )
    p.add_argument(
        "--out", type=Path, help="where to write eval.json and eval_grid.png (default: the run)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--max-images", type=int, default=0, help="evaluate only the first N per direction"
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=8,
        metavar="K",
        help="multimodal models: outputs per test image, one per style code (default 8)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="multimodal models: seed of the style codes (default 0; same seed, same codes)",
    )
    p.add_argument(
        "--no-ema",
        action="store_true",
        help="evaluate the raw generators even if the checkpoint holds their moving average "
        "(a run with ema_decay > 0; by default the average is evaluated)",
    )
    p.add_argument(
        "--inception-weights",
        type=Path,
        metavar="FILE",
        help="also report FID and KID per direction, with the FID Inception weights in this "
        "local file (pytorch-fid's pt_inception-2015-12-05-6726825d.pth; never downloaded; "
        "see README, Evaluate)",
    )
    p.set_defaults(func=run_eval, extras=EXTRAS)

    imp = sub.add_parser("import", help="convert official checkpoints into i2i checkpoints")
    imp_sub = imp.add_subparsers(dest="import_command", required=True)
    p = imp_sub.add_parser(
        "cyclegan",
        help="from junyanz/pytorch-CycleGAN-and-pix2pix generator files",
        description="Convert the reference's generator files (*_net_G_A.pth maps A to B, "
        "*_net_G_B.pth maps B to A; a single-direction latest_net_G.pth goes in --g-a) into one "
        "i2i checkpoint. The architecture flags are the reference's training options.",
    )
    p.add_argument(
        "--g-a", type=Path, help="the reference's G_A file (A to B), or latest_net_G.pth"
    )
    p.add_argument("--g-b", type=Path, help="the reference's G_B file (B to A)")
    p.add_argument("--out", type=Path, required=True, help="i2i checkpoint to write (.pt)")
    p.add_argument(
        "--netG",
        default="resnet_9blocks",
        choices=["resnet_9blocks", "resnet_6blocks", "unet_128", "unet_256"],
        help="generator architecture (default resnet_9blocks)",
    )
    p.add_argument(
        "--ngf", type=int, default=64, help="generator filters in the first layer (default 64)"
    )
    p.add_argument(
        "--norm", default="instance", choices=["instance", "batch", "none"], help="default instance"
    )
    p.add_argument(
        "--dropout",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the generator used dropout (--dropout) or not (--no-dropout, CycleGAN's default)",
    )
    p.add_argument("--input-nc", type=int, default=3, help="channels of domain A (default 3)")
    p.add_argument("--output-nc", type=int, default=3, help="channels of domain B (default 3)")
    p.set_defaults(func=run_import_cyclegan, extras=EXTRAS)
    p = imp_sub.add_parser(
        "pix2pix",
        help="from a junyanz/pytorch-CycleGAN-and-pix2pix pix2pix generator file",
        description="Convert the reference's pix2pix generator file (latest_net_G.pth) into an "
        "i2i checkpoint. The architecture flags are the reference's training options, with "
        "pix2pix's defaults (unet_256, batch norm, dropout). The model runs in eval mode once "
        "imported (running batch-norm statistics, no dropout), like the reference's test.py "
        "--eval.",
    )
    p.add_argument("--g", type=Path, required=True, help="the reference's latest_net_G.pth")
    p.add_argument("--out", type=Path, required=True, help="i2i checkpoint to write (.pt)")
    p.add_argument(
        "--netG",
        default="unet_256",
        choices=["unet_256", "unet_128", "resnet_9blocks", "resnet_6blocks"],
        help="generator architecture (default unet_256)",
    )
    p.add_argument(
        "--ngf", type=int, default=64, help="generator filters in the first layer (default 64)"
    )
    p.add_argument(
        "--norm", default="batch", choices=["batch", "instance", "none"], help="default batch"
    )
    p.add_argument(
        "--dropout",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the generator used dropout (--dropout, pix2pix's default) or not (--no-dropout, "
        "trained with --no_dropout)",
    )
    p.add_argument(
        "--input-nc",
        type=int,
        default=3,
        help="channels of the generator's input (default 3): domain A for AtoB, B for BtoA",
    )
    p.add_argument(
        "--output-nc",
        type=int,
        default=3,
        help="channels of the generator's output (default 3): domain B for AtoB, A for BtoA",
    )
    p.add_argument(
        "--direction",
        default="AtoB",
        choices=["AtoB", "BtoA"],
        help="the reference's --direction; names the translator A2B or B2A (default AtoB)",
    )
    p.set_defaults(func=run_import_pix2pix, extras=EXTRAS)

    for family, repo in (("unit", "mingyuliutw/UNIT"), ("munit", "NVlabs/MUNIT")):
        p = imp_sub.add_parser(
            family,
            help=f"from {repo} generator files (gen_XXXXXXXX.pt)",
            description="Convert the reference's generator file (gen_XXXXXXXX.pt, both "
            "domains' generators) and the YAML config it was trained with into one i2i "
            "checkpoint with both directions. The step is read from the file name.",
        )
        p.add_argument("--gen", type=Path, required=True, help="the reference's gen_XXXXXXXX.pt")
        p.add_argument(
            "--config",
            type=Path,
            required=True,
            help="the run's YAML config (config.yaml in its output folder, or the "
            "configs/*.yaml it was trained with): gen.*, dis.*, input_dim_a/b are read",
        )
        p.add_argument("--out", type=Path, required=True, help="i2i checkpoint to write (.pt)")
        p.set_defaults(func=run_import_unit_family, family=family, extras=EXTRAS)


def train_main(argv: Sequence[str] | None = None) -> int:
    """The `i2i-train` command."""
    parser = argparse.ArgumentParser(
        prog="i2i-train",
        description="Train an image-to-image translation model (CycleGAN's recipe by default). "
        "Writes checkpoints (latest.pt, step_*.pt), losses.jsonl, TensorBoard logs and sample "
        "grids into the run folder. Multi-GPU: torchrun --nproc_per_node N $(which i2i-train) ...",
        epilog=EPILOG,
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run_train, extras=EXTRAS)
    return dispatch(parser, argv)
