"""TensorRT engines for this machine's GPU, built from the ONNX already in a model repository.

An engine runs only on the GPU type and TensorRT version that built it, so engines are built
where they will run (`i2i models build-engines`, e.g. in a Kubernetes init container or Job
on the serving node type), from the ONNX graphs a version already holds, each checked
against ONNX Runtime and added to the version's manifest atomically
(:func:`i2i.repository.add_artifacts`). Until then the server runs the ONNX graphs.

The TensorRT calls themselves are in :mod:`i2i.export.tensorrt`; this module chooses what to
build, checks each engine and records it. :func:`build_checked_engine` is shared with a
fresh export (``i2i-export --formats tensorrt``).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from i2i.models import ShapeRule
from i2i.repository import (
    RepositoryError,
    add_artifacts,
    artifact_graph,
    engine_differences,
    gpu_slug,
    list_models,
    read_manifest,
    sha256_file,
    translator_artifacts,
    version_folder,
)
from i2i.runtime.cuda import CudaError, find_gpu
from i2i.runtime.tensorrt import EngineError, installed_version

from . import tensorrt
from .errors import ExportError
from .fp16 import convert_fp16
from .parity import (
    MIN_PSNR_FP16,
    compare,
    onnx_runner,
    overall,
    parity_images,
    parity_ok_fp16,
    parity_styles,
)

log = logging.getLogger(__name__)

MIN_PSNR = MIN_PSNR_FP16  # dB of an engine against the FP32 graph in ONNX Runtime
PARITY_SEED = 0


@dataclass(frozen=True)
class Target:
    """What engines built here are tied to: the GPU type and the TensorRT version."""

    gpu: str
    compute_capability: str
    tensorrt_version: str

    def describe(self) -> str:
        """E.g. "NVIDIA H100 80GB HBM3 (compute capability 9.0), TensorRT 10.13.0"."""
        return (
            f"{self.gpu} (compute capability {self.compute_capability}), "
            f"TensorRT {self.tensorrt_version}"
        )

    def matches(self, artifact: Mapping[str, Any]) -> bool:
        """Whether an artifact is an engine built for this target (the server's own test)."""
        if artifact.get("format") != "tensorrt":
            return False
        return not engine_differences(
            artifact, self.gpu, self.compute_capability, self.tensorrt_version
        )


@dataclass(frozen=True)
class EngineResult:
    """What happened to one direction of one model version.

    Attributes:
        status: "built", "replaced" (rebuilt with force) or "skipped".
        file: the plan file ("" when there is none).
        detail: why it was skipped, or the engine's parity.
        target: the GPU and TensorRT version, in words.
    """

    model: str
    version: int
    direction: str
    file: str
    status: str
    detail: str
    target: str


@dataclass(frozen=True)
class _Job:
    model: str
    version: int
    direction: str
    fp32: Path
    fp16: Path | None
    profile: tensorrt.Profile
    style_dim: int


def detect_target() -> Target:
    """This process's GPU and TensorRT; ExportError naming what is missing when there is none."""
    lacking = tensorrt.missing()
    if lacking:
        raise ExportError(
            "cannot build TensorRT engines on this machine: building them needs "
            f"{' and '.join(lacking)}. Engines are "
            "tied to the GPU type and TensorRT version that build them: run this on a node of "
            "the serving GPU type (an init container or a Job, see deploy/). Nothing was written."
        )
    gpu = find_gpu(0)
    return Target(gpu.name, gpu.compute_capability, str(installed_version()))


def select_versions(
    repository: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    version: int | None = None,
) -> list[tuple[str, int]]:
    """The (model, version) pairs to build for: `names` (default all models), at `version`
    (default each model's latest). RepositoryError, listing what exists, for unknown ones."""
    models = list_models(repository)
    known = "; ".join(f"{m} (versions {', '.join(map(str, v))})" for m, v in models.items())
    if not models:
        raise RepositoryError(f"no models in {repository}: export one first (i2i-export)")
    wanted = list(dict.fromkeys(names)) if names else list(models)
    unknown = [n for n in wanted if n not in models]
    if unknown:
        raise RepositoryError(
            f"no model {', '.join(map(repr, unknown))} in {repository}; models there: {known}"
        )
    if version is not None:
        lacking = [n for n in wanted if version not in models[n]]
        if lacking:
            raise RepositoryError(
                f"{', '.join(map(repr, lacking))} in {repository} has no version {version}; "
                f"models there: {known}"
            )
    return [(n, version if version is not None else models[n][-1]) for n in wanted]


def build_engines(
    repository: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    version: int | None = None,
    *,
    max_batch: int = 32,
    shapes: str | None = None,
    workspace_gb: float = 4.0,
    timing_cache: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> list[EngineResult]:
    """Build the missing engines for this GPU into existing versions; one result per direction.

    Everything that can be refused is refused before any engine is built: unknown models or
    versions, `shapes` outside a direction's shape rule, no TensorRT or no GPU. TensorRT >=
    10.12 builds from the FP16 graph: where a version has none, it is converted from the FP32
    graph as i2i-export does. An engine that fails its parity check raises ExportError;
    engines added before it stay (each addition is atomic).

    Args:
        repository: the model repository.
        names: models to build for; default every model.
        version: the version of each; default each model's latest.
        max_batch: the largest batch of the default optimisation profile.
        shapes: the optimisation profile MIN:OPT:MAX, each NxHxW (see `tensorrt.parse_shapes`);
            default batch 1..max_batch at 64x64 to 512x512 (the fixed size for fixed-size
            models).
        workspace_gb: TensorRT's workspace limit.
        timing_cache: a timing cache file, read and updated, to speed up later builds.
        force: rebuild and replace engines already built for this GPU and TensorRT version.
    """
    if max_batch < 1:
        raise ExportError(f"--max-batch must be at least 1, got {max_batch}")
    if not workspace_gb > 0:
        raise ExportError(f"--workspace-gb must be positive, got {workspace_gb}")
    jobs = _plan(repository, select_versions(repository, names, version), max_batch, shapes)
    target = detect_target()
    cache = Path(timing_cache) if timing_cache is not None else None
    workspace = int(workspace_gb * (1 << 30))
    return [_build_one(repository, job, target, workspace, cache, force) for job in jobs]


def _plan(
    repository: str | os.PathLike[str],
    selected: Sequence[tuple[str, int]],
    max_batch: int,
    shapes: str | None,
) -> list[_Job]:
    """One job per direction, with its profile checked against the shape rule."""
    jobs = []
    for name, number in selected:
        manifest = read_manifest(repository, name, number, verify=True)
        folder = version_folder(repository, name, number)
        for direction, spec in manifest["directions"].items():
            rule = ShapeRule(**spec["shape_rule"])
            channels = spec["input"]["shape"][-1]
            if not isinstance(channels, int):
                raise ExportError(f"{name}/{number} {direction}: the input has no fixed channels")
            profile = tensorrt.profile_for(
                rule, shapes, channels, max_batch, where=f"{name} version {number} {direction}: "
            )
            graphs = {
                a["precision"]: folder / a["file"]
                for a in translator_artifacts(manifest, direction)
                if a["format"] == "onnx"
            }
            if "fp32" not in graphs:
                raise ExportError(
                    f"{name}/{number} {direction}: no FP32 ONNX graph to build from and check "
                    "against; re-export this version"
                )
            style_dim = 0
            if spec["style"] is not None:
                style_dim = spec["style"]["shape"][-1]
                if not isinstance(style_dim, int):
                    raise ExportError(f"{name}/{number} {direction}: the style has no fixed size")
            jobs.append(
                _Job(
                    name,
                    number,
                    direction,
                    graphs["fp32"],
                    graphs.get("fp16"),
                    profile,
                    style_dim,
                )
            )
    return jobs


def _build_one(
    repository: str | os.PathLike[str],
    job: _Job,
    target: Target,
    workspace_bytes: int,
    timing_cache: Path | None,
    force: bool,
) -> EngineResult:
    def result(file: str, status: str, detail: str) -> EngineResult:
        return EngineResult(
            job.model, job.version, job.direction, file, status, detail, target.describe()
        )

    manifest = read_manifest(repository, job.model, job.version)
    matching = [a for a in translator_artifacts(manifest, job.direction) if target.matches(a)]
    if matching and not force:
        return result(matching[0]["file"], "skipped", "already built for this GPU and TensorRT")
    replace = [a["file"] for a in matching]
    taken = {a["file"] for a in manifest["artifacts"]}
    file = replace[0] if replace else _free_name(job.direction, target, taken)
    log.info("building %s/%s %s for %s", job.model, job.version, job.direction, target.describe())
    with tempfile.TemporaryDirectory(prefix="i2i-engine-") as tmp:
        fp16 = job.fp16
        if fp16 is None and tensorrt.strongly_typed(target.tensorrt_version):
            fp16 = Path(tmp) / f"{job.direction}.fp16.onnx"  # what i2i-export would have written
            convert_fp16(job.fp32, fp16)
        artifact = build_checked_engine(
            job.direction,
            job.fp32,
            fp16,
            Path(tmp),
            job.profile,
            workspace_bytes,
            timing_cache,
            file=file,
            fp16_kept=job.fp16 is not None,
            style_dim=job.style_dim,
        )
        try:
            add_artifacts(
                repository,
                job.model,
                job.version,
                {file: Path(tmp) / file},
                [artifact],
                replace=replace,
            )
        except RepositoryError:
            now = read_manifest(repository, job.model, job.version)["artifacts"]
            if not force and any(
                a.get("direction") == job.direction
                and artifact_graph(a) == "translator"
                and target.matches(a)
                for a in now
            ):
                return result(file, "skipped", "built meanwhile by another process")
            raise
    psnr = artifact["parity"]["psnr"]
    detail = "identical" if psnr is None else f"PSNR {psnr:.1f} dB"
    return result(file, "replaced" if replace else "built", f"{detail} against ONNX Runtime")


def _free_name(direction: str, target: Target, taken: set[str]) -> str:
    """`A2B.<gpu>.plan`, or with the TensorRT version when an engine of another already has it
    (nodes on different TensorRT versions then share the repository without undoing each
    other's work)."""
    version = re.sub(r"[^A-Za-z0-9.]+", "-", target.tensorrt_version).strip("-.")
    candidates = [
        tensorrt.plan_name(direction, target.gpu),
        f"{direction}.{gpu_slug(target.gpu)}.trt{version}.plan",
    ]
    for file in candidates:
        if file not in taken:
            return file
    raise ExportError(
        f"{' and '.join(candidates)} are both listed, for engines of another compute capability "
        "or TensorRT version: remove one from the repository and try again"
    )


def build_checked_engine(
    direction: str,
    fp32: Path,
    fp16: Path | None,
    folder: Path,
    profile: tensorrt.Profile,
    workspace_bytes: int = 4 << 30,
    timing_cache: Path | None = None,
    file: str | None = None,
    fp16_kept: bool = True,
    style_dim: int = 0,
) -> dict[str, Any]:
    """Build one engine into `folder`, check it against ONNX Runtime; its manifest entry.

    Args:
        direction: the direction the graphs translate.
        fp32: the FP32 ONNX graph: built from on TensorRT < 10.12 (with the FP16 flag) and
            the reference of the parity check.
        fp16: the FP16 ONNX graph, which TensorRT >= 10.12 builds from (strongly typed).
        folder: where the plan is written.
        profile: the optimisation profile; parity is checked at its min, opt and max shapes.
        workspace_bytes: TensorRT's workspace limit.
        timing_cache: a timing cache file, read and updated.
        file: the plan's file name; default `tensorrt.plan_name(direction, <this GPU>)`.
        fp16_kept: whether `fp16` is an artifact of the version; if not, the manifest says
            the engine was built from the FP32 graph converted to FP16.
        style_dim: S of a multimodal translator's style input (0: none); the engine's
            style profile follows the image's batch range, and parity runs with fixed codes.

    Raises:
        ExportError: the build failed, or the engine is below MIN_PSNR dB against the FP32
            graph in ONNX Runtime (the plan is then removed).
    """
    tmp_plan = folder / f".{direction}.building.plan"
    info = tensorrt.build_engine(
        fp32, fp16, tmp_plan, profile, workspace_bytes, timing_cache, style_dim=style_dim
    )
    plan = folder / (file or tensorrt.plan_name(direction, info["gpu"]))
    tmp_plan.rename(plan)
    if info.get("strongly_typed") and fp16 is not None:
        built_from = fp16.name if fp16_kept else f"{fp32.name}, converted to FP16"
    else:
        built_from = fp32.name
    try:
        report = engine_parity(
            plan, fp32, profile, f"tensorrt {info['version']}", style_dim=style_dim
        )
        if not parity_ok_fp16(report, MIN_PSNR):
            raise ExportError(
                f"{direction}: the TensorRT engine is below {MIN_PSNR:.0f} dB against ONNX "
                f"Runtime ({report['psnr']:.1f} dB, largest error {report['max_abs_diff']} "
                f"levels); it was not kept"
            )
    except BaseException:
        plan.unlink(missing_ok=True)
        raise
    return {
        "direction": direction,
        "format": "tensorrt",
        "precision": "fp16",
        "file": plan.name,
        "sha256": sha256_file(plan),
        "bytes": plan.stat().st_size,
        "tensorrt": {**info, "built_from": built_from},
        "parity": report,
    }


def engine_parity(
    plan: Path,
    fp32: Path,
    profile: tensorrt.Profile,
    runtime: str = "tensorrt",
    style_dim: int = 0,
) -> dict[str, Any]:
    """The engine against the FP32 graph in ONNX Runtime (CPU), on photo-like images of the
    profile's min, opt and max shapes (with fixed style codes for a multimodal translator);
    a manifest `parity` object with one case per shape.

    The engine runs in :class:`i2i.runtime.EngineRunner`, the runner the server uses.
    """
    rng = np.random.default_rng(PARITY_SEED)
    reference = onnx_runner(fp32)
    cases = []
    with tensorrt.open_engine(plan) as engine:
        for batch, height, width, channels in dict.fromkeys(
            (profile.min, profile.opt, profile.max)
        ):
            images = parity_images(rng, batch, height, width, channels)
            style = parity_styles(rng, batch, style_dim)
            try:
                if style is None:
                    output = engine(images)
                else:
                    image_name = next(n for n in engine.inputs if n == tensorrt.IMAGE_INPUT)
                    style_name = next(n for n in engine.inputs if n != image_name)
                    (output,) = engine.run({image_name: images, style_name: style}).values()
            except (EngineError, CudaError, ValueError, StopIteration) as exc:
                raise ExportError(f"{plan.name} at {batch}x{height}x{width}: {exc}") from exc
            measures = compare(np.asarray(output), reference(images, style))
            cases.append({"batch": batch, "height": height, "width": width, **measures})
    return {
        "reference": "onnx-fp32",
        "reference_file": fp32.name,
        "runtime": runtime,
        "seed": PARITY_SEED,
        "cases": cases,
        **overall(cases),
    }


def format_results(results: Sequence[EngineResult]) -> str:
    """The results as a table, under the GPU and TensorRT version they are for."""
    rows = [("model", "version", "direction", "plan", "status", "detail")]
    rows += [
        (r.model, str(r.version), r.direction, r.file or "-", r.status, r.detail) for r in results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]
    targets = sorted({r.target for r in results})
    return "\n".join([f"engines for {', '.join(targets)}", *lines] if targets else lines)
