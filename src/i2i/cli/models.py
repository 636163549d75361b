"""`i2i models`: read model repositories (list, show), build TensorRT engines for them and
write them as Triton model repositories (export-triton)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from i2i.cli.common import EPILOG, UsageError
from i2i.repository import RepositoryError, list_models, read_manifest
from i2i.repository.layout import _ranges
from i2i.shapes import ShapeRule


def run_models(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        print(format_models_table(args.repository))
    else:
        print(format_manifest(read_manifest(args.repository, args.name, args.version)))
    return 0


def run_families(args: argparse.Namespace) -> int:
    print(format_families())
    return 0


def format_families() -> str:
    """The registered model families: directions, style size, default shape rule, presets."""
    import yaml

    from i2i.models import get_family, list_families
    from i2i.training.config import PRESETS_DIR, list_presets
    from i2i.training.loop import TRAINERS

    presets: dict[str, str] = {}  # preset -> the family it trains (variant presets included)
    for preset in list_presets():
        raw = yaml.safe_load((PRESETS_DIR / f"{preset}.yaml").read_text()) or {}
        presets[preset] = str(raw.get("family", "cyclegan"))
    blocks = []
    for name in list_families():
        family = get_family(name)
        options = family.options_type()
        own = [p for p, f in presets.items() if f == name]
        style = family.style_dim_for(options)
        directions = (
            "to_<domain> for every domain in model.domains (by default the data's folders)"
            if family.multi_domain
            else ", ".join(family.directions)
        )
        lines = [
            f"{name}: {family.description}",
            f"  directions  {directions}"
            + (f"; style code of {style} (style encoders exported)" if style else ""),
            f"  sizes       {family.shape_rule(options).describe()} (default options)",
            f"  trainable   {'yes' if name in TRAINERS else 'no'}"
            + (f"; presets {', '.join(own)}" if own else ""),
        ]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


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


EXPORT_TRITON_DESCRIPTION = (
    "Write a Triton Inference Server model repository from an i2i one: per direction a Triton "
    "model <model>_<direction> (the names i2i-serve's v2 API uses) with a config.pbtxt and one "
    "folder per i2i version holding model.onnx (ONNX Runtime) or model.plan (TensorRT); a "
    "multi-domain model also gets <model>, its conditional graph (inputs image and domain). "
    "Inputs image UINT8 [N,H,W,C] (and style FP32 [N,S] for multimodal models), output "
    "translated UINT8 [N,H,W,C], dynamic batching and instance groups as set below. Serve it "
    "with `tritonserver --model-repository OUT`. Files are copied (checked against each "
    "manifest's sha256) unless --hardlink. TensorRT plans run only on the GPU type and "
    "TensorRT version that built them: Triton's TensorRT must be that version. See "
    "docs/triton.md."
)


def add_export_triton_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("repository", type=Path, metavar="REPO", help="i2i model repository folder")
    p.add_argument(
        "out", type=Path, metavar="OUT", help="Triton model repository folder (created; empty)"
    )
    p.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="i2i model to write (repeatable; default: every model in REPO)",
    )
    p.add_argument(
        "--version",
        type=int,
        metavar="V",
        help="only this version of the one --model (default: all)",
    )
    p.add_argument(
        "--platform",
        choices=("onnx", "tensorrt"),
        default="onnx",
        help="onnx: onnxruntime_onnx with model.onnx (default); tensorrt: tensorrt_plan with the "
        "repository's engines (built by `i2i models build-engines` on the serving GPU type)",
    )
    p.add_argument(
        "--precision",
        choices=("fp32", "fp16"),
        default="fp32",
        help="which ONNX artifact to serve (default fp32; fp16 needs an export with onnx-fp16)",
    )
    p.add_argument(
        "--gpu",
        metavar="NAME",
        help="tensorrt: use the engines built on this GPU, e.g. 'NVIDIA H100 80GB HBM3' "
        "(needed when two engines share a compute capability)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        metavar="N",
        help="max_batch_size (default 8, i2i-serve's default; tensorrt: at most the engines' "
        "largest batch)",
    )
    p.add_argument(
        "--instances", type=int, default=1, metavar="N", help="instances per device (default 1)"
    )
    p.add_argument(
        "--kind",
        choices=("gpu", "cpu"),
        default="gpu",
        help="instance_group kind: KIND_GPU (default) or KIND_CPU (onnx only)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=0,
        metavar="N",
        help="dynamic batching: longest wait for a fuller batch, in microseconds (default 0)",
    )
    p.add_argument(
        "--preferred-batch-sizes",
        metavar="N,N",
        default="",
        help="dynamic batching: preferred batch sizes, e.g. 4,8 (default none)",
    )
    p.add_argument(
        "--version-policy",
        choices=("latest", "all"),
        default="latest",
        help="which versions Triton loads: latest (the newest, as i2i-serve; default) or all",
    )
    p.add_argument(
        "--hardlink",
        action="store_true",
        help="hard-link the artifacts instead of copying them (one filesystem only)",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="write into a non-empty OUT, replacing the Triton models written (others are kept)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def triton_options(args: argparse.Namespace) -> Any:
    """The TritonOptions of `i2i models export-triton`'s arguments."""
    from i2i.repository.triton import TritonOptions

    try:
        preferred = tuple(int(n) for n in args.preferred_batch_sizes.split(",") if n.strip())
    except ValueError:
        raise UsageError(
            f"--preferred-batch-sizes {args.preferred_batch_sizes!r}: give whole numbers "
            f"separated by commas, e.g. 4,8"
        ) from None
    return TritonOptions(
        platform=args.platform,
        precision=args.precision,
        max_batch=args.max_batch,
        instances=args.instances,
        kind=args.kind,
        max_queue_delay_us=args.max_queue_delay_us,
        preferred_batch_sizes=preferred,
        version_policy=args.version_policy,
        gpu=args.gpu,
        hardlink=args.hardlink,
    )


def run_export_triton(args: argparse.Namespace) -> int:
    from i2i.repository.triton import export_triton

    if args.version is not None and (not args.model or len(args.model) != 1):
        raise UsageError("--version needs exactly one --model (version numbers are per model)")
    written = export_triton(
        args.repository,
        args.out,
        args.model,
        args.version,
        triton_options(args),
        replace=args.force,
    )
    print(f"wrote {len(written)} Triton models into {args.out}")
    print(format_triton_models(written))
    return 0


def format_triton_models(models: Sequence[Any]) -> str:
    """The Triton models written: name, versions, platform, batch, and their tensors."""
    from i2i.oip import model_config_pb2 as mc

    rows: list[Sequence[str]] = [("triton model", "versions", "platform", "max batch", "tensors")]
    for model in models:
        config = model.config

        def tensor(t: Any, config: Any = config) -> str:
            dims = ", ".join(map(str, [-1, *t.dims])) if not t.HasField("reshape") else "-1"
            return f"{t.name} {mc.DataType.Name(t.data_type)[5:]} [{dims}]"

        tensors = (
            ", ".join(map(tensor, config.input)) + " -> " + ", ".join(map(tensor, config.output))
        )
        rows.append(
            (
                model.name,
                _ranges(model.versions),
                config.platform,
                str(config.max_batch_size),
                tensors,
            )
        )
    return _table(rows, right={3})


def add_commands(sub: Any) -> None:
    """Register the models group on the `i2i` parser's subcommands."""
    models = sub.add_parser(
        "models",
        help="read model repositories; build TensorRT engines for them; write Triton ones",
    ).add_subparsers(dest="models_command", required=True)
    p = models.add_parser(
        "families", help="the model families i2i can train, import, export and serve"
    )
    p.set_defaults(func=run_families, extras=("train",))
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
    p.set_defaults(func=run_build_engines, extras=("export",))
    p = models.add_parser(
        "export-triton",
        help="write a Triton Inference Server model repository from an i2i one",
        description=EXPORT_TRITON_DESCRIPTION,
        epilog=EPILOG,
    )
    add_export_triton_arguments(p)
    p.set_defaults(func=run_export_triton)


# --- what `i2i models list` and `i2i models show` print -----------------------------------

_PARITY_HEADER = ("vs", "max diff", ">1 level", "PSNR dB")


def format_models_table(repository: str | os.PathLike[str]) -> str:
    """Every model with its versions, family and the artifacts and parity of its latest version."""
    models = list_models(repository)
    if not models:
        return f"no models in {repository}"
    rows: list[Sequence[str]] = [
        ("model", "versions", "family", "direction", "artifact", "precision", *_PARITY_HEADER)
    ]
    problems = []
    for name, found in models.items():
        try:
            manifest = read_manifest(repository, name)
        except RepositoryError as exc:
            rows.append((name, _ranges(found), "?", "", "(unreadable, see below)"))
            problems.append(f"{name} version {found[-1]}: {exc}")
            continue
        for i, artifact in enumerate(manifest["artifacts"]):
            first = (name, _ranges(found), manifest["family"]) if i == 0 else ("", "", "")
            rows.append(
                (*first, _direction(artifact), artifact["file"], _precision(artifact))
                + _parity_cells(artifact["parity"])
            )
    text = _table(rows, right={7, 8, 9}) + "\n(artifacts and parity of the latest version)"
    if problems:
        text += "\n\nunreadable:\n" + "\n".join(problems)
    return text


def format_manifest(manifest: Mapping[str, Any]) -> str:
    """One version's manifest, readable: what it translates, from what, and how well."""
    source = manifest["source"]
    lines = [
        f"{manifest['name']} version {manifest['version']}",
        f"  family     {manifest['family']} (domains {', '.join(manifest['domains'])})",
        f"  created    {manifest['created']} by i2i {manifest['i2i_version']}",
        f"  source     {source['checkpoint']} (step {source['step']}, "
        f"sha256 {source['sha256'][:12]}...)",
        "directions",
    ]
    for direction, spec in manifest["directions"].items():
        sizes = ShapeRule.from_manifest(spec["shape_rule"]).describe()
        lines.append(f"  {direction}  {_tensor(spec['input'])} -> {_tensor(spec['output'])}")
        if spec["style"] is not None:
            lines.append(f"  {' ' * len(direction)}  style {_tensor(spec['style'])}")
        lines.append(f"  {' ' * len(direction)}  sizes: {sizes}")
        if spec.get("target_domain") is not None:
            lines.append(f"  {' ' * len(direction)}  target domain {spec['target_domain']}")
        encoder = spec.get("style_encoder")
        if encoder is not None:
            encoder_sizes = ShapeRule.from_manifest(encoder["shape_rule"]).describe()
            lines.append(
                f"  {' ' * len(direction)}  style encoder {_tensor(encoder['input'])} -> "
                f"{_tensor(encoder['output'])} (reference images of the target domain; "
                f"sizes: {encoder_sizes})"
            )
    rows: list[Sequence[str]] = [
        ("artifact", "direction", "precision", "size", "built with", *_PARITY_HEADER)
    ]
    engines = []
    for artifact in manifest["artifacts"]:
        trt = artifact.get("tensorrt")
        built = f"opset {artifact['opset']}" if "opset" in artifact else ""
        if trt is not None:
            built = f"TensorRT {trt['version']}"
            shapes = "; ".join(
                " .. ".join("x".join(map(str, p[k])) for k in ("min", "opt", "max"))
                for p in trt["profiles"]
            )
            engines.append(
                f"  {artifact['file']}: {trt['gpu']} (compute capability "
                f"{trt['compute_capability']}), shapes min .. opt .. max: {shapes}"
            )
        rows.append(
            (artifact["file"], _direction(artifact), _precision(artifact))
            + (_size(artifact["bytes"]), built)
            + _parity_cells(artifact["parity"])
        )
    lines += ["artifacts", _indent(_table(rows, right={3, 6, 7, 8}))]
    if engines:
        lines += ["TensorRT engines run only on this GPU type and TensorRT version:", *engines]
    return "\n".join(lines)


def _direction(artifact: Mapping[str, Any]) -> str:
    """The artifact's direction, marked when the file is its style encoder."""
    if artifact.get("graph") == "style_encoder":
        return f"{artifact['direction']} style encoder"
    if artifact.get("graph") == "conditional":
        return "(every target: conditional)"
    if "direction" not in artifact:  # a family's extra graph (two-step encoder, generator)
        return f"({artifact.get('graph')} graph)"
    return str(artifact["direction"])


def _precision(artifact: Mapping[str, Any]) -> str:
    return f"{artifact['format']} {artifact['precision']}"


def _parity_cells(parity: Mapping[str, Any]) -> tuple[str, ...]:
    psnr = parity["psnr"]
    return (
        str(parity["reference"]),
        f"{parity['max_abs_diff']:g}",
        f"{100 * parity['fraction_over_1']:.3f}%",
        "inf" if psnr is None else f"{psnr:.1f}",  # null: identical outputs
    )


def _tensor(spec: Mapping[str, Any]) -> str:
    return f"{spec['name']} {spec['dtype']} [{', '.join(map(str, spec['shape']))}]"


def _size(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    scaled = float(n)
    for unit in ("KB", "MB", "GB"):
        scaled /= 1000
        if scaled < 1000 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


def _table(rows: Sequence[Sequence[str]], right: set[int]) -> str:
    widths = [max(len(row[i]) for row in rows if i < len(row)) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
