"""`i2i export` / `i2i-export`: a checkpoint into a versioned model repository."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from i2i.cli.common import EPILOG, UsageError, dispatch, quiet_exporter_logs

EXTRAS = ("export",)


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
        help="comma-separated: onnx, onnx-fp16, tensorrt, triton (default onnx,onnx-fp16; "
        "tensorrt needs the tensorrt package and an NVIDIA GPU and is built for that GPU; triton "
        "also writes the version just exported as a Triton model repository, see "
        "--triton-repository)",
    )
    p.add_argument(
        "--triton-repository",
        type=Path,
        metavar="DIR",
        help="with --formats ...,triton: the Triton model repository to write this model's "
        "Triton models into, replacing theirs and keeping other models (default: "
        "<repository>-triton beside the repository); fine-tune with `i2i models export-triton`",
    )
    p.add_argument(
        "--triton-platform",
        choices=("onnx", "tensorrt"),
        help="with --formats ...,triton: onnxruntime_onnx or tensorrt_plan (default tensorrt when "
        "--formats has tensorrt, else onnx)",
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
    p.add_argument(
        "--no-ema",
        action="store_true",
        help="export the raw generators even if the checkpoint holds their moving average "
        "(a run with ema_decay > 0; by default the average is exported)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


TRITON = "triton"  # a format of this command: the Triton repository, written from the ONNX


def split_formats(text: str) -> tuple[str, bool]:
    """`--formats` without "triton" (for the exporter, onnx when nothing else), and whether
    it asked for triton."""
    from i2i.export.pipeline import FORMATS

    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in (*FORMATS, TRITON)]
    if unknown or not formats:
        raise UsageError(f"--formats {text!r}: choose from {', '.join((*FORMATS, TRITON))}")
    rest = [f for f in formats if f != TRITON]
    return ",".join(rest or ["onnx"]), TRITON in formats  # triton is made from the ONNX


def run_export(args: argparse.Namespace) -> int:
    from i2i.export import export_checkpoint, format_parity, parse_formats

    if not args.verbose:
        quiet_exporter_logs()
    formats, triton = split_formats(args.formats)
    if not triton and (args.triton_repository or args.triton_platform):
        raise UsageError("--triton-repository and --triton-platform need --formats ...,triton")
    platform = args.triton_platform or ("tensorrt" if "tensorrt" in formats.split(",") else "onnx")
    if triton and platform == "tensorrt" and "tensorrt" not in formats.split(","):
        raise UsageError(
            "--triton-platform tensorrt needs engines: add tensorrt to --formats (or build them "
            "later with `i2i models build-engines`, then run `i2i models export-triton`)"
        )

    folder, manifest = export_checkpoint(
        args.checkpoint,
        args.repository,
        args.name,
        formats=parse_formats(formats),
        version=args.version,
        force=args.force,
        opset=args.opset,
        simplify=args.simplify,
        max_batch=args.max_batch,
        shapes=args.shapes,
        workspace_gb=args.workspace_gb,
        timing_cache=args.timing_cache,
        ema=not args.no_ema,
    )
    print(
        f"wrote {folder} (version {manifest['version']}, {manifest['source']['weights']} weights)"
    )
    print(format_parity(manifest))
    if triton:
        from i2i.repository import RepositoryError

        try:
            _write_triton(
                args.repository, args.name, manifest["version"], args.triton_repository, platform
            )
        except (RepositoryError, OSError) as exc:
            raise RepositoryError(
                f"{folder} was written, but not the Triton repository: {exc}"
            ) from exc
    return 0


def _write_triton(
    repository: Path, name: str, version: int, out: Path | None, platform: str
) -> None:
    """Write version `version` of `name` into the Triton repository (its models replaced):
    older versions may lack the engines or the tensors of the new one."""
    from i2i.cli.models import format_triton_models
    from i2i.repository.triton import TritonOptions, export_triton

    out = out or triton_repository_for(repository)
    options = TritonOptions(platform=platform)
    written = export_triton(repository, out, [name], version, options, True)
    print(f"wrote {len(written)} Triton models into {out}")
    print(format_triton_models(written))


def triton_repository_for(repository: Path) -> Path:
    """The default Triton repository of an i2i one: `<repository>-triton` beside it."""
    resolved = repository.resolve()
    return resolved.parent / f"{resolved.name}-triton"


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="i2i-export",
        description="Export every direction of a checkpoint into a versioned model repository: "
        "<repository>/<name>/<version>/manifest.json plus <direction>.onnx (uint8 NHWC in and out, "
        "dynamic batch and size), <direction>.fp16.onnx and TensorRT plans, and with --formats "
        "...,triton a Triton model repository beside it. Every artifact is "
        "checked against PyTorch; a failed check writes nothing and exits non-zero.",
        epilog=EPILOG,
    )
    add_export_arguments(parser)
    parser.set_defaults(func=run_export, extras=EXTRAS)
    return dispatch(parser, argv)


def add_commands(sub: Any) -> None:
    """Register export on the `i2i` parser's subcommands."""
    p = sub.add_parser("export", help="export a checkpoint (same as i2i-export)", epilog=EPILOG)
    add_export_arguments(p)
    p.set_defaults(func=run_export, extras=EXTRAS)
