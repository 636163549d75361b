"""ONNX Runtime backends: an ONNX artifact on the CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from i2i.repository import sha256_file
from i2i.serving.backends.base import Backend, BackendError, io_sizes, shape_rule_of

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# The backend's name after the execution provider that runs the graph.
_NAMES = {TENSORRT: "onnxruntime-tensorrt", CUDA: "onnxruntime-cuda", CPU: "onnxruntime-cpu"}


def runtime_name(provider: str) -> str:
    """The backend name of an execution provider, e.g. "onnxruntime-cpu"."""
    return _NAMES.get(provider, f"onnxruntime-{provider}")


# The manifest's dtypes as ONNX Runtime writes them in NodeArg.type.
_ORT_TYPES = {
    "uint8": "tensor(uint8)",
    "float32": "tensor(float)",
    "float16": "tensor(float16)",
    "int32": "tensor(int32)",
    "int64": "tensor(int64)",
}


def verify_artifact(path: Path, artifact: Mapping[str, Any]) -> None:
    """BackendError unless the file exists and its sha256 is the manifest's.

    Hashing at every load is cheap at these sizes (a CycleGAN graph is ~45 MB, hashed in
    well under a second) and catches a file replaced or damaged after the export.
    """
    if not path.is_file():
        raise BackendError(f"{path}: artifact missing; restore it or re-export this version")
    digest = sha256_file(path)
    if digest != artifact["sha256"]:
        raise BackendError(
            f"{path}: sha256 {digest} differs from the manifest's {artifact['sha256']}: the "
            f"file changed after the export; restore it or re-export this version"
        )


# What ONNX Runtime's CPU memory arena does with the memory of a finished run
# (I2I_ORT_CPU_ARENA): "shrink" returns it after a run of more than SHRINK_ABOVE_PIXELS
# (RunOptions memory.enable_memory_arena_shrinkage) and keeps it after smaller ones, "keep"
# always holds it for the next run (ONNX Runtime's default: the process keeps its largest
# batch's peak for ever), "off" uses no arena. Giving memory back costs the next run its
# allocation again (measured in benchmarks/serve_memory.py), so runs up to a default batch
# (--max-batch-pixels' default), the frequent ones, keep theirs for the next.
CPU_ARENA_MODES = ("shrink", "keep", "off")
SHRINK_ABOVE_PIXELS = 8 * 256 * 256  # batch x height x width


def _cpu_arena() -> str:
    """The I2I_ORT_CPU_ARENA mode (default "shrink"), or BackendError naming the choices."""
    mode = os.environ.get("I2I_ORT_CPU_ARENA", "shrink")
    if mode not in CPU_ARENA_MODES:
        raise BackendError(
            f"I2I_ORT_CPU_ARENA={mode!r}: choose one of {', '.join(CPU_ARENA_MODES)}"
        )
    return mode


def _trt_cache_dir() -> Path:
    """Where ONNX Runtime's TensorRT provider keeps its engines (I2I_ORT_TRT_CACHE or tmp)."""
    folder = Path(os.environ.get("I2I_ORT_TRT_CACHE", tempfile.gettempdir())) / "i2i-ort-trt"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def tensorrt_provider_options(device_id: int) -> dict[str, Any]:
    """ONNX Runtime's TensorRT provider options: the graph's own types decide the precision.

    No ``trt_fp16_enable``: that flag lets TensorRT run any layer in FP16, including the
    normalisations an FP16 graph keeps in FP32 on purpose; an FP16 graph runs in FP16
    without it, an FP32 graph in FP32. The provider compiles an engine for every new input
    shape; they are kept on disk so a shape costs that once per machine, not per process.
    """
    return {
        "device_id": device_id,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(_trt_cache_dir()),
        "trt_timing_cache_enable": True,
    }


def open_session(
    path: Path, providers: tuple[str, ...], *, device_id: int = 0, threads: int | None = None
) -> ort.InferenceSession:
    """An ONNX Runtime session of `path` on `providers` (CPU always added last), with the
    server's settings: full graph optimisation, `threads` intra-op threads, the
    I2I_ORT_CPU_ARENA mode, and the TensorRT provider's on-disk engine cache.

    Raises:
        BackendError: ONNX Runtime could not load the graph.
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    options.enable_cpu_mem_arena = _cpu_arena() != "off"
    wanted = [*dict.fromkeys([*providers, CPU])]
    provider_options: dict[str, dict[str, Any]] = {CUDA: {"device_id": device_id}, CPU: {}}
    if TENSORRT in wanted:
        provider_options[TENSORRT] = tensorrt_provider_options(device_id)
    try:
        session = ort.InferenceSession(
            str(path),
            options,
            providers=[(p, provider_options.get(p, {})) for p in wanted],
        )
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/... types
        raise BackendError(
            f"{path}: ONNX Runtime could not load it ({type(exc).__name__}: {exc}); "
            f"re-export this version"
        ) from exc
    running = session.get_providers()[0]
    if running != wanted[0]:
        log.warning(
            "%s: asked ONNX Runtime for %s but it runs on %s (see its log above)",
            path.name,
            wanted[0],
            running,
        )
    return session


class OnnxRuntimeBackend(Backend):
    """An ONNX artifact in an ONNX Runtime session on the given execution providers.

    Args:
        path: the ONNX file (its sha256 is checked against ``artifact``).
        artifact: the manifest's artifact entry.
        spec: the manifest's entry for the artifact's direction (names, dtypes, shape rule).
        providers: execution providers in order of preference; CPU is always added last.
        device_id: the GPU for the CUDA and TensorRT providers.
        threads: intra-op threads; None lets ONNX Runtime decide (one per physical core).
    """

    def __init__(
        self,
        path: Path,
        artifact: Mapping[str, Any],
        spec: Mapping[str, Any],
        *,
        providers: tuple[str, ...] = (CPU,),
        device_id: int = 0,
        threads: int | None = None,
    ) -> None:
        verify_artifact(path, artifact)
        in_channels, out_channels, style_size = io_sizes(spec, path.name)
        arena = _cpu_arena()
        self._keep = ort.RunOptions()
        self._shrink = ort.RunOptions()
        if arena == "shrink":
            self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        session = open_session(path, providers, device_id=device_id, threads=threads)
        running = session.get_providers()[0]
        super().__init__(
            name=runtime_name(running),
            artifact=path.name,
            precision=artifact["precision"],
            in_channels=in_channels,
            out_channels=out_channels,
            style_size=style_size,
            shape_rule=shape_rule_of(spec),
        )
        self._input, self._output, self._style = _check_graph(session, spec, path.name)
        self._style_dtype = np.dtype(spec["style"]["dtype"]) if spec["style"] else None
        self._session: ort.InferenceSession | None = session
        self.providers = tuple(session.get_providers())

    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        images, style = self.check_inputs(images, style)
        if self._session is None:
            raise RuntimeError(f"{self}: closed")
        feeds = {self._input: images}
        if style is not None and self._style is not None:
            feeds[self._style] = style.astype(self._style_dtype, copy=False)
        batch, height, width = images.shape[:3]
        large = batch * height * width > SHRINK_ABOVE_PIXELS
        (output,) = self._session.run([self._output], feeds, self._shrink if large else self._keep)
        return np.asarray(output)

    def close(self) -> None:
        self._session = None


def _check_graph(
    session: ort.InferenceSession, spec: Mapping[str, Any], source: str
) -> tuple[str, str, str | None]:
    """The graph's (input, output, style) names, or BackendError if it is not the manifest's."""
    tensors = [spec["input"]] + ([spec["style"]] if spec["style"] is not None else [])
    expected = {t["name"]: _ORT_TYPES[t["dtype"]] for t in tensors}
    found = {i.name: i.type for i in session.get_inputs()}
    outputs = {o.name: o.type for o in session.get_outputs()}
    output = spec["output"]
    if found != expected or outputs.get(output["name"]) != _ORT_TYPES[output["dtype"]]:
        raise BackendError(
            f"{source}: the graph's inputs {_listed(found)} and outputs {_listed(outputs)} "
            f"are not the manifest's (inputs {_listed(expected)}, output "
            f"{output['name']} {_ORT_TYPES[output['dtype']]}); re-export this version"
        )
    style = spec["style"]["name"] if spec["style"] is not None else None
    return spec["input"]["name"], output["name"], style


def _listed(tensors: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in tensors.items()) or "none"
