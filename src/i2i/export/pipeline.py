"""`i2i-export`: checkpoint → translators → ONNX / FP16 ONNX / TensorRT → a repository version.

Everything is built in a temporary folder that the repository renames into place only
when every artifact has passed its parity check, so a failed or killed export never
leaves a half version behind.

Multimodal families (``style_dim`` > 0) export translators with a second input ``style``
(float32 [N, S]); a family with ``style_encoders`` also gets, per direction, its style
encoder as ``<direction>.style.onnx`` (and ``.style.fp16.onnx``), recorded in the
manifest as the direction's ``style_encoder`` and as artifacts with ``"graph":
"style_encoder"``. TensorRT engines are built for translators only: a server runs the style
encoder with ONNX Runtime beside an engine.

A family with ``graphs`` (the two-step model's ``encoder`` and ``generator``) also gets
each of them as ``<name>.onnx`` (and ``.fp16.onnx``), parity-checked, described in the
manifest's ``graphs`` and recorded as artifacts with ``"graph": <name>`` and no direction.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import i2i
from i2i.checkpoint import CheckpointError, load_trained_networks, weights_used
from i2i.models import get_family, options_from_dict
from i2i.models.registry import target_direction
from i2i.models.translators import DomainTranslator
from i2i.repository import (
    CONDITIONAL,
    RESERVED_GRAPHS,
    read_manifest,
    sha256_file,
    write_version,
)

from . import tensorrt
from .engines import build_checked_engine
from .errors import ExportError
from .fp16 import convert_fp16
from .onnx import export_conditional, export_graph, export_onnx, export_style_encoder
from .parity import (
    MIN_PSNR_FP16,
    check_graph_parity,
    check_parity,
    check_style_encoder_parity,
    parity_ok_fp16,
    parity_ok_fp32,
)

log = logging.getLogger(__name__)

FORMATS = ("onnx", "onnx-fp16", "tensorrt")


def parse_formats(text: str) -> list[str]:
    formats = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ExportError(f"--formats {text!r}: choose from {', '.join(FORMATS)}")
    if "onnx" not in formats:
        formats.insert(0, "onnx")  # every other artifact is made from (and checked against) it
    return formats


def export_checkpoint(
    checkpoint: str | os.PathLike[str],
    repository: str | os.PathLike[str],
    name: str,
    formats: Sequence[str] = ("onnx", "onnx-fp16"),
    version: int | None = None,
    force: bool = False,
    opset: int = 18,
    simplify: bool = False,
    max_batch: int = 32,
    shapes: str | None = None,
    workspace_gb: float = 4.0,
    timing_cache: str | os.PathLike[str] | None = None,
    ema: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Export every direction of a checkpoint into `<repository>/<name>/<version>/`.

    The generators' moving average is exported when the checkpoint has one, unless `ema`
    is False; the manifest's ``source.weights`` says which ("ema" or "raw").

    Returns the version folder and its manifest. Raises ExportError (nothing written)
    when a format cannot be made here or an artifact fails its parity check.
    """
    checkpoint = Path(checkpoint)
    formats = list(formats)
    try:
        payload, networks = load_trained_networks(checkpoint, ema=ema)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from exc
    family = get_family(payload["family"])
    options = options_from_dict(payload["family"], payload["config"].get("model", {}))
    rule = family.shape_rule(options)
    translators = family.translators(networks, options)
    style_dim = family.style_dim_for(options)
    encoders = family.style_encoders(networks, options) if family.style_encoders is not None else {}
    graphs = family.graphs(networks, options) if family.graphs is not None else {}
    reserved = sorted(set(graphs) & set(RESERVED_GRAPHS))
    if reserved:
        raise ExportError(
            f"family {family.name!r} declares graphs named {', '.join(reserved)}; those names "
            f"are taken ({', '.join(RESERVED_GRAPHS)})"
        )
    if "tensorrt" in formats:  # checked before any work, so a refusal writes nothing
        for translator in translators.values():
            tensorrt.profile_for(
                rule, shapes, int(getattr(translator, "in_channels", 3)), max_batch
            )
        reason = tensorrt.availability()
        if reason:
            raise ExportError(reason)
    source = {
        "checkpoint": str(checkpoint),
        "sha256": sha256_file(checkpoint),
        "step": int(payload.get("step", 0)),
        "weights": weights_used(payload, ema),
    }

    def build(folder: Path) -> dict[str, Any]:
        directions: dict[str, Any] = {}
        artifacts: list[dict[str, Any]] = []
        for direction, translator in translators.items():
            c_in = int(getattr(translator, "in_channels", 3))
            fp32 = folder / f"{direction}.onnx"
            info = export_onnx(
                translator, fp32, rule, c_in, opset=opset, simplify=simplify, style_dim=style_dim
            )
            report = check_parity(translator, fp32, rule, c_in, style_dim=style_dim)
            if not parity_ok_fp32(report):
                raise ExportError(
                    f"{direction}: ONNX Runtime differs from PyTorch: {_summary(report)}"
                )
            artifacts.append(
                _artifact(direction, "onnx", "fp32", fp32, report, "pytorch", opset=info["opset"])
            )
            directions[direction] = {
                "input": info["input"],
                "output": info["output"],
                "style": info["style"],
                "shape_rule": rule.to_manifest(),
            }
            fp16 = None
            if "onnx-fp16" in formats or "tensorrt" in formats:
                fp16 = folder / f"{direction}.fp16.onnx"
                convert_fp16(fp32, fp16)
                report16 = check_parity(
                    translator, fp16, rule, c_in, reference_onnx=fp32, style_dim=style_dim
                )
                if not parity_ok_fp16(report16):
                    raise ExportError(
                        f"{direction}: FP16 ONNX below {MIN_PSNR_FP16:.0f} dB against FP32: "
                        f"{_summary(report16)}"
                    )
                if "onnx-fp16" in formats:
                    artifacts.append(
                        _artifact(
                            direction,
                            "onnx",
                            "fp16",
                            fp16,
                            report16,
                            "onnx-fp32",
                            opset=info["opset"],
                        )
                    )
            if "tensorrt" in formats:
                artifacts.append(
                    build_checked_engine(
                        direction,
                        fp32,
                        fp16,
                        folder,
                        tensorrt.profile_for(rule, shapes, c_in, max_batch),
                        int(workspace_gb * (1 << 30)),
                        Path(timing_cache) if timing_cache else None,
                        fp16_kept="onnx-fp16" in formats,
                        style_dim=style_dim,
                    )
                )
            if fp16 is not None and "onnx-fp16" not in formats:
                fp16.unlink()
            if direction in encoders:
                spec, encoder_artifacts = _export_style_encoder(
                    direction,
                    encoders[direction],
                    translator,
                    folder,
                    rule,
                    c_in,
                    style_dim,
                    fp16="onnx-fp16" in formats,
                    opset=opset,
                    simplify=simplify,
                )
                directions[direction]["style_encoder"] = spec
                artifacts.extend(encoder_artifacts)
            log.info("exported %s", direction)
        conditional = None
        if family.multi_domain:
            domains = list(family.domains_for(options))
            for index, domain in enumerate(domains):
                target = directions.get(target_direction(domain))
                if target is not None:
                    target["target_domain"] = domain
                    target["domain_index"] = index
            conditional = _export_conditional(
                family.conditional(networks, options),  # type: ignore[misc]
                options,
                len(domains),
                folder,
                rule,
                artifacts,
                fp16="onnx-fp16" in formats,
                opset=opset,
                simplify=simplify,
            )
        extra = {
            graph_name: _export_graph(
                graph_name,
                graph,
                folder,
                artifacts,
                fp16="onnx-fp16" in formats,
                opset=opset,
                simplify=simplify,
            )
            for graph_name, graph in graphs.items()
        }
        return {
            "format": "i2i.manifest",
            "format_version": 1,
            "name": name,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "i2i_version": i2i.__version__,
            "family": payload["family"],
            "domains": list(payload.get("domains", ["A", "B"])),
            "source": source,
            "directions": directions,
            **({"conditional": conditional} if conditional is not None else {}),
            **({"graphs": extra} if extra else {}),
            "artifacts": artifacts,
        }

    folder = write_version(repository, name, build, version=version, force=force)
    return folder, read_manifest(repository, name, int(folder.name))


CONDITIONAL_FILE = "conditional"  # conditional.onnx, conditional.fp16.onnx


def _export_conditional(
    conditional: Any,
    options: Any,
    num_domains: int,
    folder: Path,
    rule: Any,
    artifacts: list[dict[str, Any]],
    *,
    fp16: bool,
    opset: int,
    simplify: bool,
) -> dict[str, Any]:
    """Export a multi-domain model's whole conditional graph (image + int64 domain -> image),
    FP32 and FP16 if asked, each parity-checked over every target; append its artifacts
    (``"graph": "conditional"``, no direction) and return the manifest's ``conditional``."""
    whole = DomainTranslator(
        conditional, int(options.input_nc), int(options.output_nc), num_domains
    ).eval()
    channels = whole.in_channels
    fp32 = folder / f"{CONDITIONAL_FILE}.onnx"
    info = export_conditional(
        whole, fp32, rule, channels, num_domains, opset=opset, simplify=simplify
    )
    report = check_parity(whole, fp32, rule, channels, num_domains=num_domains)
    if not parity_ok_fp32(report):
        raise ExportError(
            f"the conditional graph: ONNX Runtime differs from PyTorch: {_summary(report)}"
        )
    artifacts.append(
        _conditional_artifact(
            _artifact("", "onnx", "fp32", fp32, report, "pytorch", opset=info["opset"])
        )
    )
    if fp16:
        path16 = folder / f"{CONDITIONAL_FILE}.fp16.onnx"
        convert_fp16(fp32, path16)
        report16 = check_parity(
            whole, path16, rule, channels, reference_onnx=fp32, num_domains=num_domains
        )
        if not parity_ok_fp16(report16):
            raise ExportError(
                f"the FP16 conditional graph is below {MIN_PSNR_FP16:.0f} dB against FP32: "
                f"{_summary(report16)}"
            )
        artifacts.append(
            _conditional_artifact(
                _artifact("", "onnx", "fp16", path16, report16, "onnx-fp32", opset=info["opset"])
            )
        )
    log.info("exported the conditional graph (%d domains)", num_domains)
    return {
        "input": info["input"],
        "domain": info["domain"],
        "output": info["output"],
        "shape_rule": rule.to_manifest(),
    }


def _export_graph(
    name: str,
    graph: Any,
    folder: Path,
    artifacts: list[dict[str, Any]],
    *,
    fp16: bool,
    opset: int,
    simplify: bool,
) -> dict[str, Any]:
    """Export one of a family's extra graphs as ``<name>.onnx`` (and ``<name>.fp16.onnx`` if
    asked), each parity-checked; append its artifacts (``"graph": name``, no direction) and
    return its manifest entry ``{"inputs": [...], "outputs": [...]}``."""
    fp32 = folder / f"{name}.onnx"
    examples = graph.examples
    info = export_graph(
        graph.module, fp32, examples(2, 0), graph.inputs, graph.outputs, opset, simplify
    )
    report = check_graph_parity(graph.module, fp32, examples)
    if not parity_ok_fp32(report):
        raise ExportError(
            f"the {name} graph: ONNX Runtime differs from PyTorch: {_summary(report)}"
        )
    artifacts.append(
        _graph_artifact(
            name, _artifact("", "onnx", "fp32", fp32, report, "pytorch", opset=info["opset"])
        )
    )
    if fp16:
        path16 = folder / f"{name}.fp16.onnx"
        convert_fp16(fp32, path16)
        report16 = check_graph_parity(graph.module, path16, examples, reference_onnx=fp32)
        if not parity_ok_fp16(report16):
            raise ExportError(
                f"the FP16 {name} graph is below {MIN_PSNR_FP16:.0f} dB against FP32: "
                f"{_summary(report16)}"
            )
        artifacts.append(
            _graph_artifact(
                name,
                _artifact("", "onnx", "fp16", path16, report16, "onnx-fp32", opset=info["opset"]),
            )
        )
    log.info("exported the %s graph", name)
    return {"inputs": info["inputs"], "outputs": info["outputs"]}


def _graph_artifact(name: str, artifact: dict[str, Any]) -> dict[str, Any]:
    """An artifact entry of a family's extra graph: ``"graph": name``, no direction."""
    del artifact["direction"]
    return {"graph": name, **artifact}


def _conditional_artifact(artifact: dict[str, Any]) -> dict[str, Any]:
    """An artifact entry of the conditional graph: ``"graph": "conditional"``, no direction."""
    del artifact["direction"]
    return {"graph": CONDITIONAL, **artifact}


def _export_style_encoder(
    direction: str,
    encoder: Any,
    translator: Any,
    folder: Path,
    rule: Any,
    channels: int,
    style_dim: int,
    *,
    fp16: bool,
    opset: int,
    simplify: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Export one direction's style encoder (FP32, and FP16 if asked), each checked; its
    manifest entry (``directions.<d>.style_encoder``) and its artifacts.

    The encoder takes images of the direction's target domain (its ``in_channels``) and
    the translator's shape rule unless it has a ``shape_rule`` of its own.
    """
    style_channels = int(getattr(encoder, "in_channels", 3))
    encoder_dim = int(getattr(encoder, "style_dim", style_dim))
    if encoder_dim != style_dim:
        raise ExportError(
            f"{direction}: the style encoder computes {encoder_dim} values but the translator "
            f"takes a style of {style_dim}"
        )
    encoder_rule = getattr(encoder, "shape_rule", None) or rule
    path = folder / f"{direction}.style.onnx"
    info = export_style_encoder(
        encoder, path, encoder_rule, style_channels, style_dim, opset=opset, simplify=simplify
    )
    report = check_style_encoder_parity(
        encoder, translator, path, encoder_rule, channels, style_channels
    )
    if not parity_ok_fp32(report):
        raise ExportError(
            f"{direction}: the style encoder in ONNX Runtime differs from PyTorch: "
            f"{_summary(report)} (codes differ by up to {report['max_abs_diff_style']:.3g})"
        )
    artifacts = [
        _artifact(
            direction, "onnx", "fp32", path, report, "pytorch", opset=info["opset"],
            graph="style_encoder",
        )
    ]  # fmt: skip
    if fp16:
        path16 = folder / f"{direction}.style.fp16.onnx"
        convert_fp16(path, path16)
        report16 = check_style_encoder_parity(
            encoder, translator, path16, encoder_rule, channels, style_channels,
            reference_onnx=path,
        )  # fmt: skip
        if not parity_ok_fp16(report16):
            raise ExportError(
                f"{direction}: the FP16 style encoder is below {MIN_PSNR_FP16:.0f} dB against "
                f"FP32: {_summary(report16)}"
            )
        artifacts.append(
            _artifact(
                direction, "onnx", "fp16", path16, report16, "onnx-fp32", opset=info["opset"],
                graph="style_encoder",
            )
        )  # fmt: skip
    spec = {
        "input": info["input"],
        "output": info["output"],
        "shape_rule": encoder_rule.to_manifest(),
    }
    return spec, artifacts


def _summary(report: dict[str, Any]) -> str:
    keys = ("max_abs_diff", "fraction_over_1", "psnr")
    return ", ".join(f"{k} {report[k]}" for k in keys if k in report)


def _artifact(
    direction: str,
    fmt: str,
    precision: str,
    path: Path,
    report: dict[str, Any],
    reference: str,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "direction": direction,
        **({"graph": extra.pop("graph")} if "graph" in extra else {}),
        "format": fmt,
        "precision": precision,
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        **extra,
        "parity": {"reference": reference, **report},
    }


def format_parity(manifest: dict[str, Any]) -> str:
    """The parity report of a manifest as a table: one line per artifact."""
    lines = [
        f"{'artifact':<28}{'precision':>10}{'vs':>12}{'max diff':>10}{'>1 level':>10}{'PSNR dB':>9}"
    ]
    for a in manifest["artifacts"]:
        p = a["parity"]
        psnr = "inf" if p.get("psnr") is None else f"{p['psnr']:.1f}"  # None: identical outputs
        lines.append(
            f"{a['file']:<28}{a['precision']:>10}{p['reference']:>12}{p.get('max_abs_diff', '-'):>10}"
            f"{100 * p.get('fraction_over_1', 0):>9.3f}%{psnr:>9}"
        )
    return "\n".join(lines)
