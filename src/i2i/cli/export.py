"""`i2i export` / `i2i-export`: a checkpoint into a versioned model repository."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from i2i.cli.common import EPILOG, dispatch, quiet_exporter_logs

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
    p.add_argument(
        "--no-ema",
        action="store_true",
        help="export the raw generators even if the checkpoint holds their moving average "
        "(a run with ema_decay > 0; by default the average is exported)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def run_export(args: argparse.Namespace) -> int:
    from i2i.export import export_checkpoint, format_parity, parse_formats

    if not args.verbose:
        quiet_exporter_logs()

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
        ema=not args.no_ema,
    )
    print(
        f"wrote {folder} (version {manifest['version']}, {manifest['source']['weights']} weights)"
    )
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
    parser.set_defaults(func=run_export, extras=EXTRAS)
    return dispatch(parser, argv)


def add_commands(sub: Any) -> None:
    """Register export on the `i2i` parser's subcommands."""
    p = sub.add_parser("export", help="export a checkpoint (same as i2i-export)", epilog=EPILOG)
    add_export_arguments(p)
    p.set_defaults(func=run_export, extras=EXTRAS)
