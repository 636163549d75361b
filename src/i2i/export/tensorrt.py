"""TensorRT engines from the exported ONNX graphs, through TensorRT's documented Python API.

No machine this project has been developed on could install TensorRT (PyPI holds only
placeholder packages for its libraries here) and no GPU was lent while this was
written: this module has NOT been run against a real TensorRT. What is tested here is
everything around it, against a fake of TensorRT 10's documented Python API and of the CUDA
bindings (tests/runtime/fakes.py): shape-profile parsing, the availability checks and their
messages, the choice of precision mode by version, that every call whose result reports a
failure (-1, False, None) stops the build with a message naming it, and the atomic timing
cache. The build follows the API of TensorRT 10/11 (`Builder`, `OnnxParser`,
`IBuilderConfig`); engines are run by :class:`i2i.runtime.EngineRunner`, the runner the
server uses too.

Precision: TensorRT >= 10.12 builds strongly typed networks (always, from 11.0), so FP16
comes from the graph itself (the FP16 ONNX, normalisation kept in FP32); older versions
take the FP32 graph and the builder's FP16 flag. An engine runs only on the GPU
architecture and TensorRT version that built it: both are recorded in the manifest.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from i2i._files import atomic_write
from i2i.export.errors import ExportError
from i2i.models import ShapeRule
from i2i.repository import gpu_slug
from i2i.runtime.cuda import CudaError, GpuUnavailable, find_gpu
from i2i.runtime.tensorrt import (
    EngineError,
    EngineRunner,
    installed_version,
    load_tensorrt,
    logged_errors,
    make_logger,
)

log = logging.getLogger(__name__)

_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")
IMAGE_INPUT = "image"  # the translator graph's image input (i2i.export.onnx.INPUT_NAME)


@dataclass(frozen=True)
class Profile:
    """One optimisation profile of the image input, each shape (N, H, W, C)."""

    min: tuple[int, int, int, int]
    opt: tuple[int, int, int, int]
    max: tuple[int, int, int, int]

    def to_dict(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


# The default profile of a model that takes any multiple of its step: sizes from 64² to
# 512², tuned for 256² (an engine refuses sizes outside its profile, so a narrow default
# would turn most photos away; larger maxima cost engine memory: widen with --shapes).
DEFAULT_MIN_SIDE, DEFAULT_MAX_SIDE = 64, 512


def parse_shapes(
    text: str | None,
    channels: int,
    max_batch: int,
    default_side: int = 256,
    fixed: bool = False,
) -> Profile:
    """`--shapes MIN:OPT:MAX`, each `NxHxW` (e.g. `1x256x256:8x256x256:32x512x512`).

    Without `--shapes`: batch 1..max_batch, optimised for max_batch / 4, at
    `default_side`² exactly when the model has a `fixed` size, else from 64² to 512²
    optimised for `default_side`².
    """
    if not text:
        side = default_side
        low, high = (side, side) if fixed else (DEFAULT_MIN_SIDE, max(side, DEFAULT_MAX_SIDE))
        return Profile(
            (1, min(low, side), min(low, side), channels),
            (max(1, max_batch // 4), side, side, channels),
            (max_batch, high, high, channels),
        )
    parts = text.split(":")
    if len(parts) != 3:
        raise ExportError(
            f"--shapes {text!r}: expected MIN:OPT:MAX, each NxHxW (e.g. 1x256x256:8x256x256:32x512x512)"
        )
    dims = []
    for part in parts:
        m = _SHAPE.match(part)
        if not m:
            raise ExportError(f"--shapes: {part!r} is not NxHxW")
        n, h, w = (int(g) for g in m.groups())
        dims.append((n, h, w, channels))
    lo, mid, hi = dims
    if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
        raise ExportError(f"--shapes {text!r}: each dimension must satisfy min <= opt <= max")
    if hi[0] > max_batch:
        raise ExportError(f"--shapes: max batch {hi[0]} exceeds --max-batch {max_batch}")
    return Profile(lo, mid, hi)


def profile_for(
    rule: ShapeRule, shapes: str | None, channels: int, max_batch: int, where: str = ""
) -> Profile:
    """`--shapes` (or the rule's default profile), each of its shapes checked against `rule`.

    Args:
        where: what the profile is for, put before the rule's complaint in errors.
    """
    profile = parse_shapes(
        shapes,
        channels,
        max_batch,
        default_side=rule.nearest(256, 256)[0],
        fixed=rule.fixed_size is not None,
    )
    for n, h, w, _ in (profile.min, profile.opt, profile.max):
        try:
            rule.check(h, w)
        except ValueError as exc:
            raise ExportError(f"--shapes {n}x{h}x{w}: {where}{exc}") from exc
    return profile


def missing() -> list[str]:
    """What this machine lacks to build engines ([] when it can)."""
    lacking = []
    if installed_version() is None:
        lacking.append(
            "the `tensorrt` Python package (pip install 'i2i[gpu]' on a machine with an NVIDIA driver)"
        )
    try:
        find_gpu(0)
    except GpuUnavailable as exc:
        lacking.append(f"an NVIDIA GPU visible to this process ({exc})")
    return lacking


def availability() -> str | None:
    """None when engines can be built here, else a plain explanation of what is missing."""
    lacking = missing()
    if not lacking:
        return None
    return (
        "--formats tensorrt needs " + " and ".join(lacking) + ". Engines are tied to the GPU and "
        "TensorRT version that build them, so build them on the serving GPU type (see deploy/), "
        "or export onnx,onnx-fp16 here."
    )


def _version_tuple(version: str) -> tuple[int, int]:
    major, minor = (int(x) for x in version.split(".")[:2])
    return major, minor


def strongly_typed(version: str) -> bool:
    """Whether this TensorRT builds strongly typed networks (FP16 from the graph)."""
    return _version_tuple(version) >= (10, 12)


def build_engine(
    onnx_fp32: Path,
    onnx_fp16: Path | None,
    plan: Path,
    profile: Profile,
    workspace_bytes: int = 4 << 30,
    timing_cache: Path | None = None,
    style_dim: int = 0,
) -> dict[str, Any]:
    """Build an FP16 engine for GPU 0 into `plan`; returns what the manifest records.

    Every TensorRT call whose result reports failure is checked. `timing_cache`, when given,
    is read (a cache from another GPU or TensorRT is refused) and replaced atomically by the
    updated one. A multimodal translator (`style_dim` > 0) has a second input, the style
    (N, S): its profile takes the image's batch range (min, opt and max N) at S.

    Raises:
        ExportError: naming the TensorRT call that failed, with TensorRT's messages.
    """
    reason = availability()
    if reason:
        raise ExportError(reason)
    try:
        trt = load_tensorrt()
        gpu = find_gpu(0)
    except (EngineError, GpuUnavailable) as exc:
        raise ExportError(str(exc)) from exc
    logger = make_logger(trt)
    builder = trt.Builder(logger)
    typed = strongly_typed(trt.__version__)
    flags = 0
    if typed and _version_tuple(trt.__version__) < (11, 0):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if typed and onnx_fp16 is None:
        raise ExportError("TensorRT >= 10.12 takes FP16 from the graph: export onnx-fp16 as well")
    source = onnx_fp16 if typed and onnx_fp16 is not None else onnx_fp32
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT could not parse {source.name}: {errors}")
    expected = 2 if style_dim else 1
    if network.num_inputs != expected:
        raise ExportError(
            f"{source.name}: TensorRT finds {network.num_inputs} inputs; this engine takes "
            + ("an image and a style input" if style_dim else "one image input")
        )
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not typed:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    names = [network.get_input(i).name for i in range(network.num_inputs)]
    name = IMAGE_INPUT if IMAGE_INPUT in names else names[0]
    shapes = {name: (profile.min, profile.opt, profile.max)}
    for other in names:
        if other != name:  # the style: one code per image, so the image's batch range
            shapes[other] = tuple((dims[0], style_dim) for dims in shapes[name])  # type: ignore[assignment]
    for tensor, (low, mid, high) in shapes.items():
        try:
            opt_profile.set_shape(tensor, low, mid, high)
        except RuntimeError as exc:  # the binding raises when TensorRT refuses a shape
            raise ExportError(
                f"TensorRT IOptimizationProfile.set_shape({tensor!r}) refused the profile "
                f"min {low}, opt {mid}, max {high}: {exc}{logged_errors(logger)}"
            ) from exc
    if config.add_optimization_profile(opt_profile) < 0:
        raise ExportError(
            f"TensorRT add_optimization_profile returned -1: the profile {profile.to_dict()} "
            f"does not fit {source.name}'s input {name!r}{logged_errors(logger)}"
        )
    if timing_cache is not None:
        _use_timing_cache(config, timing_cache, logger)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT build_serialized_network returned None for {source.name}"
            f"{logged_errors(logger) or ' (see its log above)'}"
        )
    write_atomically(plan, bytes(serialized))
    if timing_cache is not None:
        _save_timing_cache(config, timing_cache)
    return {
        "version": trt.__version__,
        "gpu": gpu.name,
        "compute_capability": gpu.compute_capability,
        "strongly_typed": typed,
        "profiles": [profile.to_dict()],
    }


def _use_timing_cache(config: Any, path: Path, logger: Any) -> None:
    """Give the builder the timing cache in `path` (a new one when the file is absent)."""
    cache = config.create_timing_cache(path.read_bytes() if path.is_file() else b"")
    if cache is None:
        raise ExportError(
            f"TensorRT create_timing_cache returned None for {path}{logged_errors(logger)}: "
            "delete the file or pass another --timing-cache"
        )
    if not config.set_timing_cache(cache, ignore_mismatch=False):
        raise ExportError(
            f"TensorRT set_timing_cache returned False for {path}: it was made on another GPU "
            f"or TensorRT version{logged_errors(logger)}; delete it or pass another --timing-cache"
        )


def _save_timing_cache(config: Any, path: Path) -> None:
    """Replace `path` by the builder's updated cache; a failure leaves the old file whole.

    The engine is built by then: a cache that cannot be saved costs later builds time, not
    this one its engine, so it is a warning.
    """
    cache = config.get_timing_cache()
    if cache is None:
        log.warning("TensorRT get_timing_cache returned None: %s was not updated", path)
        return
    try:
        write_atomically(path, bytes(cache.serialize()))
    except OSError as exc:
        log.warning("could not update the timing cache %s (%s); it is unchanged", path, exc)


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file beside it and a rename: a crash leaves
    the old file or the new one, never a part of either."""
    atomic_write(path, lambda file: file.write(data))


def plan_name(direction: str, gpu_name: str) -> str:
    """`A2B.nvidia-h100-80gb-hbm3.plan`: the direction and the GPU the engine is tied to."""
    return f"{direction}.{gpu_slug(gpu_name)}.plan"


def open_engine(plan: Path) -> EngineRunner:
    """The engine in `plan` on GPU 0, in the runner the server uses; ExportError if it fails."""
    try:
        return EngineRunner(plan.read_bytes(), source=plan.name)
    except (EngineError, CudaError, GpuUnavailable) as exc:
        raise ExportError(str(exc)) from exc
