"""`i2i translate`: image files through a server (--server) or locally (no server).

Through a server it needs only the client (no PyTorch); locally it runs a repository's
ONNX graphs with ONNX Runtime, or a checkpoint with PyTorch (the train extra).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from i2i.cli.common import EPILOG, UsageError

if TYPE_CHECKING:
    from i2i.client.files import Job, Summary

TRANSLATE_DESCRIPTION = (
    "Translate image files (png, jpg, jpeg, webp) with a model, through an i2i server "
    "(--server) or locally (--repository or --checkpoint, no server), in one --direction or, "
    "for a multi-domain model, --to one of its domains. INPUT may be files, "
    "folders and glob patterns. Outputs go to --out as <stem>.png (.jpg, .webp), or "
    "<stem>_<k>.png for each of --num-samples k = 0, 1, ... (multimodal models, whose style "
    "--style-seed, --style-code or --style-image set); inputs that share a stem keep their folders "
    "(relative to the inputs' common folder) under --out. Existing outputs are never replaced "
    "without --overwrite. A file that fails does not stop the others: failures are listed at "
    "the end with their status code, and the exit code is 1."
)


def add_translate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or globs")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder (created)")
    p.add_argument(
        "--direction",
        metavar="NAME",
        help="translation direction, e.g. A2B (this or --to is required)",
    )
    p.add_argument(
        "--to",
        metavar="DOMAIN",
        help="multi-domain models: the domain to translate into (any source), one of the "
        "model's domains (i2i models show, or GetModel, lists them); the same as --direction "
        "to_DOMAIN",
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
    style = p.add_argument_group(
        "style (multimodal models only; at most one of --style-seed, --style-code, --style-image)"
    )
    style.add_argument(
        "--num-samples",
        type=int,
        default=1,
        metavar="K",
        help="outputs per image, <stem>_<k> (default 1)",
    )
    style.add_argument(
        "--style-seed",
        "--seed",  # its first name, kept as an alias
        dest="style_seed",
        type=int,
        metavar="N",
        help="draw the K style codes with this seed: same seed, same outputs (--seed: alias)",
    )
    style.add_argument(
        "--style-code",
        metavar="V,V,...",
        help="an explicit style code, the model's style size of comma-separated floats; write "
        "--style-code=-0.5,1.2,... when the first value is negative",
    )
    style.add_argument(
        "--style-image",
        type=Path,
        metavar="FILE",
        help="take the style of this image of the target domain (the model's style encoder)",
    )
    p.add_argument("--recursive", action="store_true", help="folders and ** globs: subfolders too")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _check_target_flags(args: argparse.Namespace) -> None:
    """--direction or --to (both only when they agree); sets args.direction from --to."""
    if args.direction is None and args.to is None:
        raise UsageError("name what to translate into: --direction NAME or --to DOMAIN")
    if args.to is not None:
        if not args.to:
            raise UsageError("--to: give a domain name")
        wanted = f"to_{args.to}"
        if args.direction is not None and args.direction != wanted:
            raise UsageError(
                f"--direction {args.direction} and --to {args.to} name different targets; "
                f"give one of them"
            )
        args.direction = wanted


def _check_domain(args: argparse.Namespace, model: str, domains: Sequence[str]) -> None:
    """UsageError listing a multi-domain model's domains when --to names another."""
    if args.to is not None and args.to not in domains:
        raise UsageError(
            f"model {model!r} has no domain {args.to!r}; its domains: {', '.join(domains)}"
        )


def _check_translate_flags(args: argparse.Namespace) -> None:
    _check_target_flags(args)
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
    if args.style_seed is not None and args.style_seed < 0:
        raise UsageError(f"--style-seed must be 0 or more, got {args.style_seed}")
    given = [
        flag
        for flag, value in (
            ("--style-seed", args.style_seed),
            ("--style-code", args.style_code),
            ("--style-image", args.style_image),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise UsageError(f"give at most one of {', '.join(given)}")
    args.style_values = None if args.style_code is None else _parse_style_code(args.style_code)
    args.style_reference = None
    if args.style_image is not None:
        try:
            args.style_reference = args.style_image.read_bytes()
        except OSError as exc:
            raise UsageError(f"--style-image {args.style_image}: {exc.strerror}") from exc


def _parse_style_code(text: str) -> list[float]:
    """`--style-code "0.1,-0.2,..."` as floats; UsageError naming the bad value."""
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise UsageError(
                f"--style-code: {part.strip()!r} is not a number; give comma-separated floats, "
                f'e.g. --style-code "0.1,-0.5,1.2"'
            ) from None
        if value != value or value in (float("inf"), float("-inf")):
            raise UsageError(f"--style-code: {part.strip()!r} is not a finite number")
        values.append(value)
    return values


def _styled(args: argparse.Namespace) -> bool:
    """Whether a style or several samples were asked for (multimodal models only)."""
    return args.num_samples != 1 or any(
        v is not None for v in (args.style_seed, args.style_values, args.style_reference)
    )


def _check_style_support(
    args: argparse.Namespace, model: str, style_size: int, style_encoder: bool
) -> None:
    """UsageError when the model cannot take what the style flags ask for."""
    if style_size == 0 and _styled(args):
        raise UsageError(
            f"model {model!r} is not multimodal: --num-samples, --style-seed, --style-code "
            f"and --style-image apply to multimodal models only"
        )
    if args.style_values is not None and len(args.style_values) != style_size:
        raise UsageError(
            f"--style-code has {len(args.style_values)} values; model {model!r} takes "
            f"exactly {style_size}"
        )
    if args.style_reference is not None and not style_encoder:
        raise UsageError(
            f"model {model!r} ({args.direction}) has no style encoder, so --style-image "
            f"cannot set the style; use --style-seed or --style-code"
        )


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
        directions = {d.name: d for d in info.directions}
        if args.to is not None and not any(d.target_domain for d in info.directions):
            raise UsageError(
                f"model {args.model!r} is not a multi-domain model, so --to does not apply; "
                f"use --direction ({', '.join(directions) or 'none'})"
            )
        _check_domain(args, args.model, list(info.domains))
        if args.direction not in directions:
            raise UsageError(
                f"model {args.model!r} has no direction {args.direction!r}; "
                f"it has {', '.join(directions) or 'none'}"
            )
        chosen = directions[args.direction]
        _check_style_support(args, args.model, chosen.style_size, chosen.style_encoder)

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
                style_seed=args.style_seed,
                style_code=args.style_values,
                style_reference=args.style_reference,
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
        direction = translator.direction
        _check_style_support(
            args,
            args.model or direction.model,
            direction.style_size,
            translator.style_encoder is not None,
        )
    except UsageError:
        translator.close()
        raise
    try:

        def translate_one(data: bytes) -> list[bytes]:
            images: list[bytes] = translator.translate(
                data,
                size_policy=args.size_policy,
                output_format=args.format,
                quality=args.quality,
                num_samples=args.num_samples,
                style_seed=args.style_seed,
                style_code=args.style_values,
                style_reference=args.style_reference,
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


def add_commands(sub: Any) -> None:
    """Register translate on the `i2i` parser's subcommands."""
    p = sub.add_parser(
        "translate",
        help="translate image files through a server (--server) or locally",
        description=TRANSLATE_DESCRIPTION,
        epilog=EPILOG,
    )
    add_translate_arguments(p)
    p.set_defaults(func=run_translate, extras=("train",))
