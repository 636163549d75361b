"""The command line: parses arguments, then calls the stages. Nothing imports this module."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from i2i.client.files import Job, Summary


class UsageError(Exception):
    """A command line that cannot work as given (a missing or contradictory flag)."""


EPILOG = "Documentation: README.md. Every command prints its own --help."


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        _quiet_exporter_logs()


def _quiet_exporter_logs() -> None:
    """The ONNX exporter narrates every graph pass; keep the user's screen for i2i.

    Called again after torch is imported, because importing torch resets its loggers.
    """
    import warnings

    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch._dynamo", "torch.export"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`")


# ---------------------------------------------------------------------------- train


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
    from i2i.checkpoint import CheckpointManager, load_checkpoint
    from i2i.training import apply_overrides, config_from_dict, load_config, train

    resume = args.resume is not None
    if resume and args.out is not None and args.out != args.resume:
        raise UsageError("--out and --resume name different folders; --resume RUN is enough")
    out = args.resume if resume else args.out
    if out is None:
        raise UsageError("--out RUN is required for a new run (or --resume RUN)")
    if resume and args.config is None:
        latest = CheckpointManager(out).find_latest()
        if latest is None:
            raise UsageError(f"{out}: no checkpoint to resume from")
        cfg = config_from_dict(load_checkpoint(latest, mmap=True)["config"])
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


# ---------------------------------------------------------------------------- data


def run_data_sample(args: argparse.Namespace) -> int:
    from i2i.data import make_sample_dataset, sample_task_names

    if args.list:
        print("\n".join(sample_task_names()))
        return 0
    if args.task is None or args.out is None:
        raise UsageError("--task and --out are required (see --list for the tasks)")
    info = make_sample_dataset(
        args.task, args.out, seed=args.seed, size=args.size, n_train=args.train, n_test=args.test
    )
    counts = info.get("counts", {})
    print(f"wrote the {args.task!r} sample dataset to {args.out}: {json.dumps(counts)}")
    return 0


# ---------------------------------------------------------------------------- eval


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

    checkpoint = _checkpoint_of(args.run)
    out = args.out or (args.run if args.run.is_dir() else args.run.parent)
    report = evaluate(
        checkpoint, args.data, out_dir=out, device=args.device, max_images=args.max_images
    )
    print(format_report(report))
    print(f"report: {out / 'eval.json'}\ngrid: {out / 'eval_grid.png'}")
    return 0


# ---------------------------------------------------------------------------- import


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
    dropped = sum(len(v) for v in summary["dropped_keys"].values())
    print(
        f"wrote {args.out} with direction(s) {', '.join(summary['directions'])}"
        + (f" ({dropped} stale InstanceNorm statistics dropped)" if dropped else "")
    )
    return 0


# ---------------------------------------------------------------------------- demo


def run_demo(args: argparse.Namespace) -> int:
    from i2i.demo import run_demo as demo

    _quiet_exporter_logs()

    demo(out=args.out, task=args.task, steps=args.steps, seed=args.seed)
    return 0


# ---------------------------------------------------------------------------- translate

TRANSLATE_DESCRIPTION = (
    "Translate image files (png, jpg, jpeg, webp) with a model, through an i2i server "
    "(--server) or locally (--repository or --checkpoint, no server). INPUT may be files, "
    "folders and glob patterns. Outputs go to --out as <stem>.png (.jpg, .webp), or "
    "<stem>_<k>.png for each of --num-samples k = 0, 1, ...; inputs that share a stem keep their folders "
    "(relative to the inputs' common folder) under --out. Existing outputs are never replaced "
    "without --overwrite. A file that fails does not stop the others: failures are listed at "
    "the end with their status code, and the exit code is 1."
)


def add_translate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--direction", required=True, metavar="NAME", help="translation direction, e.g. A2B"
    )
    p.add_argument(
        "--model",
        metavar="NAME",
        help="model name (needed with --server and --repository, not --checkpoint)",
    )
    p.add_argument(
        "--version",
        type=int,
        default=0,
        metavar="N",
        help="model version (default: the latest / loaded)",
    )
    source = p.add_argument_group("where the model runs (exactly one)")
    mode = source.add_mutually_exclusive_group(required=True)
    mode.add_argument("--server", metavar="HOST:PORT", help="an i2i server (i2i-serve)")
    mode.add_argument(
        "--repository", type=Path, metavar="DIR", help="locally, from a model repository"
    )
    mode.add_argument(
        "--checkpoint", type=Path, metavar="FILE", help="locally, from an i2i checkpoint (.pt)"
    )
    server = p.add_argument_group("with --server")
    server.add_argument("--token", help="bearer token the server requires")
    server.add_argument("--token-file", type=Path, metavar="F", help="read the token from F")
    server.add_argument("--tls-ca", type=Path, metavar="F", help="TLS: CA certificate (PEM)")
    server.add_argument("--tls-cert", type=Path, metavar="F", help="mutual TLS: client cert")
    server.add_argument("--tls-key", type=Path, metavar="F", help="mutual TLS: client key")
    server.add_argument(
        "--concurrency", type=int, metavar="N", help="requests in flight at once (default 8)"
    )
    server.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="S",
        help="seconds per image, retries included (30)",
    )
    local = p.add_argument_group("with --repository or --checkpoint")
    local.add_argument(
        "--backend",
        metavar="NAME",
        help="runtime: auto (default) or a backend such as onnxruntime or pytorch",
    )
    p.add_argument(
        "--format", default="png", choices=["png", "jpeg", "webp"], help="output (default png)"
    )
    p.add_argument(
        "--quality", type=int, default=0, metavar="Q", help="JPEG/WebP quality 1-100 (default 90)"
    )
    p.add_argument(
        "--size-policy",
        default="pad",
        choices=["pad", "resize", "reject"],
        help="sizes the model cannot take: pad (default), resize or reject",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=1,
        metavar="K",
        help="outputs per image (multimodal models)",
    )
    p.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="style seed (multimodal models): same seed, same output",
    )
    p.add_argument("--recursive", action="store_true", help="folders and ** globs: subfolders too")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _check_translate_flags(args: argparse.Namespace) -> None:
    if args.model is None and args.checkpoint is None:
        raise UsageError("--model NAME is required with --server and --repository")
    if args.server is None:
        used = [
            flag
            for flag, value in (
                ("--token", args.token),
                ("--token-file", args.token_file),
                ("--tls-ca", args.tls_ca),
                ("--tls-cert", args.tls_cert),
                ("--tls-key", args.tls_key),
                ("--concurrency", args.concurrency),
            )
            if value is not None
        ]
        if used:
            raise UsageError(f"{', '.join(used)} only apply with --server")
    elif args.backend is not None:
        raise UsageError("--backend chooses the local runtime; a server chooses its own")
    if args.token is not None and args.token_file is not None:
        raise UsageError("give --token or --token-file, not both")
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("mutual TLS needs both --tls-cert and --tls-key")
    if args.tls_cert is not None and args.tls_ca is None:
        raise UsageError("mutual TLS needs --tls-ca too (the CA of the server's certificate)")
    if args.num_samples < 1:
        raise UsageError(f"--num-samples must be at least 1, got {args.num_samples}")
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if not 0 <= args.quality <= 100:
        raise UsageError(f"--quality must be 1 to 100 (0: the default), got {args.quality}")
    if args.seed is not None and args.seed < 0:
        raise UsageError(f"--seed must be 0 or more, got {args.seed}")


def _translate_through_server(args: argparse.Namespace, jobs: Sequence[Job]) -> Summary:
    from i2i.client import Client, TranslateError
    from i2i.client.files import translate_files

    token = args.token
    if args.token_file is not None:
        token = args.token_file.read_text().strip()
    ca, cert, key = (
        None if f is None else f.read_bytes() for f in (args.tls_ca, args.tls_cert, args.tls_key)
    )
    with Client(
        args.server,
        token=token,
        root_certificates=ca,
        certificate_chain=cert,
        private_key=key,
        timeout=args.timeout,
    ) as client:
        try:
            info = client.get_model(args.model, args.version)
        except TranslateError as exc:
            hint = (
                " (is --server right, and the server running?)"
                if exc.code.name == "UNAVAILABLE"
                else ""
            )
            raise UsageError(f"--server {args.server}: {exc}{hint}") from exc
        directions = [d.name for d in info.directions]
        if args.direction not in directions:
            raise UsageError(
                f"model {args.model!r} has no direction {args.direction!r}; "
                f"it has {', '.join(directions) or 'none'}"
            )

        def translate_one(data: bytes) -> list[bytes]:
            result = client.translate(
                data,
                model=args.model,
                direction=args.direction,
                version=args.version,
                output_format=args.format,
                quality=args.quality,
                size_policy=args.size_policy,
                num_samples=args.num_samples,
                style_seed=args.seed,
            )
            return [image for image in result.images if isinstance(image, bytes)]

        return translate_files(
            jobs,
            translate_one,
            concurrency=args.concurrency or 8,
            progress=not args.no_progress,
        )


def _translate_locally(args: argparse.Namespace, jobs: Sequence[Job]) -> Summary:
    from i2i.client.files import translate_files
    from i2i.serving.errors import ServingError
    from i2i.serving.local import LocalTranslator, LocalTranslatorError

    try:
        translator = LocalTranslator(
            repository=args.repository,
            checkpoint=args.checkpoint,
            model=args.model,
            version=args.version or None,
            direction=args.direction,
            backend=args.backend or "auto",
        )
    except ServingError as exc:
        raise UsageError(exc.message) from exc
    except LocalTranslatorError as exc:
        raise UsageError(str(exc)) from exc
    try:

        def translate_one(data: bytes) -> list[bytes]:
            images: list[bytes] = translator.translate(
                data,
                size_policy=args.size_policy,
                output_format=args.format,
                quality=args.quality,
                num_samples=args.num_samples,
                seed=args.seed,
            )
            return images

        # One file at a time: the local model uses every core for each image already.
        return translate_files(jobs, translate_one, concurrency=1, progress=not args.no_progress)
    finally:
        translator.close()


def run_translate(args: argparse.Namespace) -> int:
    from i2i.client.files import (
        FORMAT_EXTENSIONS,
        InputError,
        check_overwrite,
        collect_inputs,
        format_failures,
        format_summary,
        plan_outputs,
    )

    _check_translate_flags(args)
    try:
        sources = collect_inputs(args.inputs, recursive=args.recursive)
        jobs = plan_outputs(
            sources,
            args.out,
            extension=FORMAT_EXTENSIONS[args.format],
            num_samples=args.num_samples,
        )
        if not args.overwrite:
            check_overwrite(jobs)
    except InputError as exc:
        raise UsageError(str(exc)) from exc
    if args.server is not None:
        summary = _translate_through_server(args, jobs)
    else:
        summary = _translate_locally(args, jobs)
    print(format_summary(summary, args.out))
    if summary.failures:
        print(format_failures(summary), file=sys.stderr)
        return 1
    return 0


# ---------------------------------------------------------------------------- parsers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="i2i",
        description="Image-to-image translation GANs: sample data, training, evaluation, import.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a model (same as i2i-train)", epilog=EPILOG)
    add_train_arguments(p)
    p.set_defaults(func=run_train)

    data = sub.add_parser("data", help="datasets").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser(
        "sample",
        help="write a built-in sample dataset (no download; deterministic for a seed)",
        description="Write a built-in dataset in the unaligned layout (trainA/ trainB/ testA/ "
        "testB/), with the true translations of the test images in truth/A2B and truth/B2A.",
    )
    p.add_argument("--task", help="which translation, e.g. day2dusk or gray2color (see --list)")
    p.add_argument("--out", type=Path, help="folder to write (created)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    p.add_argument(
        "--train", type=int, default=200, help="training images per domain (default 200)"
    )
    p.add_argument("--test", type=int, default=24, help="test images per domain (default 24)")
    p.add_argument("--list", action="store_true", help="list the tasks and exit")
    p.set_defaults(func=run_data_sample)

    p = sub.add_parser(
        "eval",
        help="translate the test split and report PSNR/SSIM against the true translation",
        description="Translates testA/ and testB/ with a run's generators; reports PSNR and SSIM "
        "against truth/A2B and truth/B2A, the identity baseline (input vs truth), and the cycle "
        "reconstruction PSNR; writes eval.json and eval_grid.png.",
    )
    p.add_argument("run", type=Path, help="run folder (uses its latest.pt) or a checkpoint file")
    p.add_argument(
        "--data", type=Path, required=True, help="dataset folder with testA/ testB/ (truth/)"
    )
    p.add_argument(
        "--out", type=Path, help="where to write eval.json and eval_grid.png (default: the run)"
    )
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument(
        "--max-images", type=int, default=0, help="evaluate only the first N per direction"
    )
    p.set_defaults(func=run_eval)

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
    p.set_defaults(func=run_import_cyclegan)

    p = sub.add_parser("export", help="export a checkpoint (same as i2i-export)", epilog=EPILOG)
    add_export_arguments(p)
    p.set_defaults(func=run_export)

    models = sub.add_parser(
        "models", help="read model repositories; build TensorRT engines for them"
    ).add_subparsers(dest="models_command", required=True)
    p = models.add_parser("list", help="models and versions in a repository, with their parity")
    p.add_argument("repository", type=Path)
    p.set_defaults(func=run_models)
    p = models.add_parser("show", help="one version's manifest, readable")
    p.add_argument("repository", type=Path)
    p.add_argument("name")
    p.add_argument("--version", type=int, help="default: the latest")
    p.set_defaults(func=run_models)
    p = models.add_parser(
        "build-engines",
        help="build TensorRT engines for this machine's GPU from the repository's ONNX",
        description=BUILD_ENGINES_DESCRIPTION,
        epilog=EPILOG,
    )
    add_build_engines_arguments(p)
    p.set_defaults(func=run_build_engines)

    from i2i.serving.config import add_arguments as add_serve_arguments

    p = sub.add_parser(
        "serve",
        help="serve a model repository over gRPC (same as i2i-serve)",
        description=SERVE_DESCRIPTION,
        epilog=EPILOG,
    )
    add_serve_arguments(p)
    p.set_defaults(func=run_serve)

    p = sub.add_parser(
        "translate",
        help="translate image files through a server (--server) or locally",
        description=TRANSLATE_DESCRIPTION,
        epilog=EPILOG,
    )
    add_translate_arguments(p)
    p.set_defaults(func=run_translate)

    p = sub.add_parser(
        "demo",
        help="sample data, train a tiny CycleGAN on the CPU, evaluate it",
        description="The main job end to end on the built-in default: writes a sample dataset, "
        "trains configs/cyclegan-tiny settings for a few minutes on the CPU, evaluates, and "
        "prints the numbers and where the grid is.",
    )
    p.add_argument("--out", type=Path, default=Path("demo"), help="working folder (default ./demo)")
    p.add_argument("--task", default="day2dusk", help="sample task (default day2dusk)")
    p.add_argument("--steps", type=int, default=0, help="training steps (default: the demo's own)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.set_defaults(func=run_demo)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean bad input (a flag, a file, a folder): a message, exit 2, no traceback."""
    from i2i.checkpoint import CheckpointError
    from i2i.data import DataError
    from i2i.export import ExportError
    from i2i.importers import ImportError_
    from i2i.repository import RepositoryError
    from i2i.serving.config import ServerConfigError
    from i2i.training import ConfigError, ResumeError

    return (
        UsageError,
        CheckpointError,
        ConfigError,
        DataError,
        ExportError,
        ImportError_,
        RepositoryError,
        ResumeError,
        ServerConfigError,
        FileNotFoundError,
    )


def _dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    _configure_logging(getattr(args, "verbose", False))
    try:
        return int(args.func(args))
    except _user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    return _dispatch(build_parser(), argv)


def train_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="i2i-train",
        description="Train an image-to-image translation model (CycleGAN's recipe by default). "
        "Writes checkpoints (latest.pt, step_*.pt), losses.jsonl, TensorBoard logs and sample "
        "grids into the run folder. Multi-GPU: torchrun --nproc_per_node N $(which i2i-train) ...",
        epilog=EPILOG,
    )
    add_train_arguments(parser)
    parser.set_defaults(func=run_train)
    return _dispatch(parser, argv)


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "checkpoint", type=Path, help="i2i checkpoint (a run's latest.pt or an imported .pt)"
    )
    p.add_argument(
        "--repository", type=Path, required=True, help="model repository folder (created)"
    )
    p.add_argument("--name", required=True, help="model name in the repository, e.g. day2dusk")
    p.add_argument(
        "--formats",
        default="onnx,onnx-fp16",
        help="comma-separated: onnx, onnx-fp16, tensorrt (default onnx,onnx-fp16; tensorrt needs "
        "the tensorrt package and an NVIDIA GPU and is built for that GPU)",
    )
    p.add_argument("--version", type=int, help="version number (default: the next free one)")
    p.add_argument("--force", action="store_true", help="replace an existing --version")
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (default 18, the minimum)")
    p.add_argument(
        "--simplify", action="store_true", help="simplify the graph (needs onnxsim or onnxslim)"
    )
    p.add_argument("--max-batch", type=int, default=32, help="TensorRT: largest batch (default 32)")
    p.add_argument(
        "--shapes",
        help="TensorRT optimisation profile MIN:OPT:MAX, each NxHxW, e.g. 1x256x256:8x256x256:32x512x512",
    )
    p.add_argument(
        "--workspace-gb", type=float, default=4.0, help="TensorRT workspace limit (default 4)"
    )
    p.add_argument(
        "--timing-cache", type=Path, help="TensorRT timing cache file, reused between builds"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_export(args: argparse.Namespace) -> int:
    from i2i.export import export_checkpoint, format_parity, parse_formats

    if not args.verbose:
        _quiet_exporter_logs()

    folder, manifest = export_checkpoint(
        args.checkpoint,
        args.repository,
        args.name,
        formats=parse_formats(args.formats),
        version=args.version,
        force=args.force,
        opset=args.opset,
        simplify=args.simplify,
        max_batch=args.max_batch,
        shapes=args.shapes,
        workspace_gb=args.workspace_gb,
        timing_cache=args.timing_cache,
    )
    print(f"wrote {folder} (version {manifest['version']})")
    print(format_parity(manifest))
    return 0


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="i2i-export",
        description="Export every direction of a checkpoint into a versioned model repository: "
        "<repository>/<name>/<version>/manifest.json plus <direction>.onnx (uint8 NHWC in and out, "
        "dynamic batch and size), <direction>.fp16.onnx and TensorRT plans. Every artifact is "
        "checked against PyTorch; a failed check writes nothing and exits non-zero.",
        epilog=EPILOG,
    )
    add_export_arguments(parser)
    parser.set_defaults(func=run_export)
    return _dispatch(parser, argv)


def run_models(args: argparse.Namespace) -> int:
    from i2i.repository import format_manifest, format_models_table, read_manifest

    if args.models_command == "list":
        print(format_models_table(args.repository))
    else:
        print(format_manifest(read_manifest(args.repository, args.name, args.version)))
    return 0


BUILD_ENGINES_DESCRIPTION = (
    "Build TensorRT engines on this machine's GPU from the ONNX graphs already in a model "
    "repository, check each against ONNX Runtime, and add it to its version's manifest "
    "atomically (running servers keep reading the old or the new manifest). An engine runs "
    "only on the GPU type and TensorRT version that built it, so run this where the server "
    "runs, e.g. as a Kubernetes init container or Job on the serving node type. Engines "
    "already built for this GPU and TensorRT version are skipped (--force rebuilds them). "
    "Needs the tensorrt package and an NVIDIA GPU; without them it exits 2 and writes nothing."
)


def add_build_engines_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", type=Path, metavar="REPOSITORY", help="model repository folder")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to build for (or --all)")
    p.add_argument("--all", action="store_true", help="every model in the repository")
    p.add_argument(
        "--version", type=int, metavar="V", help="version of each model (default: its latest)"
    )
    p.add_argument(
        "--max-batch", type=int, default=32, metavar="N", help="largest batch (default 32)"
    )
    p.add_argument(
        "--shapes",
        metavar="SPEC",
        help="optimisation profile MIN:OPT:MAX, each NxHxW, e.g. 1x256x256:8x256x256:32x512x512 "
        "(default 1..--max-batch images of 256x256); checked against each model's sizes",
    )
    p.add_argument(
        "--workspace-gb",
        type=float,
        default=4.0,
        metavar="G",
        help="TensorRT workspace limit in GiB (default 4)",
    )
    p.add_argument(
        "--timing-cache",
        type=Path,
        metavar="F",
        help="TensorRT timing cache file, read and updated (faster rebuilds)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="rebuild and replace engines already built for this GPU and TensorRT version",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_build_engines(args: argparse.Namespace) -> int:
    from i2i.export.engines import build_engines, format_results

    if args.all and args.names:
        raise UsageError("give model names or --all, not both")
    if not args.all and not args.names:
        raise UsageError("name the models to build engines for, or pass --all")
    results = build_engines(
        args.repository,
        args.names or None,
        args.version,
        max_batch=args.max_batch,
        shapes=args.shapes,
        workspace_gb=args.workspace_gb,
        timing_cache=args.timing_cache,
        force=args.force,
    )
    print(format_results(results))
    return 0


SERVE_DESCRIPTION = (
    "Serve a model repository over gRPC (i2i.v1.Translator, with grpc.health.v1 and "
    "reflection), batching requests dynamically, with Prometheus metrics on their own port. "
    "Health is NOT_SERVING until every model is loaded and warm; SIGTERM drains and exits 0."
)


def run_serve(args: argparse.Namespace) -> int:
    from i2i.serving.config import config_from_args
    from i2i.serving.server import run

    return run(config_from_args(args))


def serve_main(argv: Sequence[str] | None = None) -> int:
    from i2i.serving.config import add_arguments

    parser = argparse.ArgumentParser(prog="i2i-serve", description=SERVE_DESCRIPTION, epilog=EPILOG)
    add_arguments(parser)
    parser.set_defaults(func=run_serve)
    return _dispatch(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
