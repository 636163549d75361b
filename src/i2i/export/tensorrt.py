"""TensorRT engines from the exported ONNX graphs, through TensorRT's documented Python API.

No machine this project has been developed on could install TensorRT (PyPI holds only
placeholder packages for its libraries here) and no GPU was lent while this was
written: this module has NOT been run against a real TensorRT. What is tested here is
everything around it: shape-profile parsing, the availability checks and their messages,
the choice of precision mode by version. The build and run paths follow the API of
TensorRT 10/11 (`Builder`, `OnnxParser`, `IBuilderConfig`, `Runtime`,
`IExecutionContext.execute_async_v3`).

Precision: TensorRT >= 10.12 builds strongly typed networks (always, from 11.0), so FP16
comes from the graph itself (the FP16 ONNX, normalisation kept in FP32); older versions
take the FP32 graph and the builder's FP16 flag. An engine runs only on the GPU
architecture and TensorRT version that built it: both are recorded in the manifest.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from i2i.export.errors import ExportError
from i2i.models import ShapeRule
from i2i.repository import gpu_slug

_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)$")


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
    if importlib.util.find_spec("tensorrt") is None:
        lacking.append(
            "the `tensorrt` Python package (pip install 'i2i[gpu]' on a machine with an NVIDIA driver)"
        )
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        has_gpu = False
    if not has_gpu:
        lacking.append("an NVIDIA GPU visible to this process")
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
) -> dict[str, Any]:
    """Build an FP16 engine for the current GPU; returns what the manifest records.

    Raises ExportError with TensorRT's parser/builder messages when the build fails.
    """
    reason = availability()
    if reason:
        raise ExportError(reason)
    import tensorrt as trt
    import torch

    logger = trt.Logger(trt.Logger.WARNING)
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
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if not typed:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile = builder.create_optimization_profile()
    opt_profile.set_shape(network.get_input(0).name, profile.min, profile.opt, profile.max)
    config.add_optimization_profile(opt_profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(
            f"TensorRT failed to build an engine from {source.name} (see its log above)"
        )
    plan.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    major, minor = torch.cuda.get_device_capability()
    return {
        "version": trt.__version__,
        "gpu": torch.cuda.get_device_name(),
        "compute_capability": f"{major}.{minor}",
        "strongly_typed": typed,
        "profiles": [profile.to_dict()],
    }


def plan_name(direction: str, gpu_name: str) -> str:
    """`A2B.nvidia-h100-80gb-hbm3.plan`: the direction and the GPU the engine is tied to."""
    return f"{direction}.{gpu_slug(gpu_name)}.plan"


def run_engine(plan: Path, images: np.ndarray) -> np.ndarray:
    """Run an engine on uint8 NHWC images (for parity checks); returns uint8 NHWC."""
    reason = availability()
    if reason:
        raise ExportError(reason)
    import tensorrt as trt
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise ExportError(
            f"{plan}: TensorRT could not load this engine (built for another GPU or version?)"
        )
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    x = torch.from_numpy(np.ascontiguousarray(images)).cuda()
    context.set_input_shape(inputs[0], tuple(x.shape))
    out_shape = tuple(context.get_tensor_shape(outputs[0]))
    y = torch.empty(out_shape, dtype=torch.uint8, device="cuda")
    context.set_tensor_address(inputs[0], x.data_ptr())
    context.set_tensor_address(outputs[0], y.data_ptr())
    stream = torch.cuda.Stream()
    if not context.execute_async_v3(stream.cuda_stream):
        raise ExportError(f"{plan}: TensorRT execution failed")
    stream.synchronize()
    return y.cpu().numpy()
