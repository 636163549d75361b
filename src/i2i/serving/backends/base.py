"""The backend interface, what the hardware offers, and whether a TensorRT engine fits it."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from i2i.repository import engine_differences
from i2i.shapes import ShapeRule

log = logging.getLogger(__name__)

BACKEND_CHOICES = ("auto", "tensorrt", "onnxruntime", "onnxruntime-cpu", "pytorch")
PRECISION_CHOICES = ("auto", "fp32", "fp16")


class BackendError(Exception):
    """A backend cannot be loaded: the message names the artifact, why, and what to do."""


class Backend(ABC):
    """One direction of one model, loaded into one runtime: uint8 images in, uint8 out.

    Attributes:
        name: the runtime, e.g. "onnxruntime-cpu", "tensorrt", "pytorch-cuda".
        artifact: the artifact file it runs, or "pytorch:<checkpoint file name>".
        precision: "fp32" or "fp16".
        in_channels: channels of the input images (1 or 3).
        out_channels: channels of the output images.
        style_size: S of the float32 (N, S) style input; 0 for unimodal families.
        shape_rule: the image sizes the graph accepts.
        max_batch: the largest batch it can run (None: no limit of its own).
        size_range: ((min_h, min_w), (max_h, max_w)) it can run (None: any the rule takes);
            a TensorRT engine's optimisation profile sets both.
        thread_safe: whether several threads may call `run` at once (the batcher's
            ``instances``); backends that are not serialise their calls themselves.
    """

    max_batch: int | None = None
    size_range: tuple[tuple[int, int], tuple[int, int]] | None = None
    thread_safe = True

    def __init__(
        self,
        *,
        name: str,
        artifact: str,
        precision: str,
        in_channels: int,
        out_channels: int,
        style_size: int,
        shape_rule: ShapeRule,
    ) -> None:
        self.name = name
        self.artifact = artifact
        self.precision = precision
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.style_size = style_size
        self.shape_rule = shape_rule

    @abstractmethod
    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        """uint8 (N, H, W, C_in) [+ float32 (N, S) style] -> uint8 (N, H, W, C_out).

        Blocking; may be called from several threads at once (the batcher's instances):
        backends whose runtime cannot take that lock around it. Raises ValueError for
        inputs of the wrong dtype, rank, channels, size or style.
        """

    def accepts_size(self, height: int, width: int) -> str | None:
        """None if it can run this size, else why not (for the caller's error message)."""
        if self.size_range is None:
            return None
        (min_h, min_w), (max_h, max_w) = self.size_range
        if min_h <= height <= max_h and min_w <= width <= max_w:
            return None
        return (
            f"{self.artifact} runs sizes from {min_h}x{min_w} to {max_h}x{max_w} (its "
            f"optimisation profile), not {height}x{width}; use size_policy RESIZE, or rebuild "
            f"the engine with a wider --shapes"
        )

    def warmup(self, height: int, width: int, batch_sizes: Sequence[int]) -> None:
        """Run a batch of zeros once per batch size (allocations, kernel choice, engines)."""
        for batch in batch_sizes:
            images = np.zeros((batch, height, width, self.in_channels), dtype=np.uint8)
            style = np.zeros((batch, self.style_size), np.float32) if self.style_size else None
            self.run(images, style)
        log.debug("%s warmed at %dx%d, batches %s", self, height, width, list(batch_sizes))

    def close(self) -> None:
        """Release the runtime's resources; the backend cannot run afterwards."""
        log.debug("%s closed", self)

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.artifact} {self.precision}>"

    def check_inputs(
        self, images: np.ndarray, style: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Contiguous images and float32 style, or ValueError saying what is wrong."""
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            found = images.dtype if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"{self.artifact}: images must be a uint8 numpy array, got {found}")
        if images.ndim != 4 or images.shape[-1] != self.in_channels or images.shape[0] < 1:
            raise ValueError(
                f"{self.artifact}: images must have shape (N, H, W, {self.in_channels}) with "
                f"N >= 1, got {images.shape}"
            )
        self.shape_rule.check(int(images.shape[1]), int(images.shape[2]))
        if self.style_size == 0:
            if style is not None:
                raise ValueError(f"{self.artifact}: this model is unimodal and takes no style")
            return np.ascontiguousarray(images), None
        if style is None:
            raise ValueError(
                f"{self.artifact}: this model is multimodal: give a float32 style of shape "
                f"(N, {self.style_size})"
            )
        style = np.asarray(style)
        expected = (images.shape[0], self.style_size)
        if style.shape != expected or not np.issubdtype(style.dtype, np.floating):
            raise ValueError(
                f"{self.artifact}: style must be float32 of shape {expected}, got {style.dtype} "
                f"{style.shape}"
            )
        return np.ascontiguousarray(images), np.ascontiguousarray(style, dtype=np.float32)


@dataclass(frozen=True)
class Hardware:
    """What this process can use; detected once (:meth:`detect`), injectable in tests."""

    cuda: bool
    gpu_name: str | None
    compute_capability: str | None
    tensorrt_version: str | None
    ort_providers: tuple[str, ...]

    @classmethod
    def detect(cls, device_id: int = 0) -> Hardware:
        """Ask CUDA (cuda-python, else NVML), the tensorrt package and ONNX Runtime; not torch."""
        import onnxruntime as ort

        from i2i.runtime.cuda import GpuUnavailable, find_gpu
        from i2i.runtime.tensorrt import installed_version

        providers = tuple(ort.get_available_providers())
        try:
            gpu = find_gpu(device_id)
        except GpuUnavailable as exc:
            gpu = None
            # Expected on a CPU machine; worth a warning where a GPU runtime is installed.
            gpu_runtime = "CUDAExecutionProvider" in providers
            log.log(logging.WARNING if gpu_runtime else logging.INFO, "no GPU: %s", exc)
        return cls(
            cuda=gpu is not None,
            gpu_name=gpu.name if gpu else None,
            compute_capability=gpu.compute_capability if gpu else None,
            tensorrt_version=installed_version(),
            ort_providers=providers,
        )

    def describe(self) -> str:
        """E.g. "NVIDIA H100 80GB HBM3 (compute capability 9.0), TensorRT 10.3.0"."""
        gpu = f"{self.gpu_name} (compute capability {self.compute_capability})"
        trt = f"TensorRT {self.tensorrt_version}" if self.tensorrt_version else "no TensorRT"
        return f"{gpu if self.cuda else 'no GPU'}, {trt}"


def built_for(artifact: Mapping[str, Any]) -> str:
    """What a TensorRT artifact was built for, in words (for log lines and errors)."""
    info = artifact.get("tensorrt") or {}
    return (
        f"{info.get('gpu')} (compute capability {info.get('compute_capability')}), "
        f"TensorRT {info.get('version')}"
    )


def engine_mismatch(artifact: Mapping[str, Any], hardware: Hardware) -> str | None:
    """None if a TensorRT artifact can run here, else the reason.

    A plan runs only on the GPU type and TensorRT version that built it: the reasons are
    no GPU or no TensorRT, else every difference `repository.engine_differences` finds
    (another GPU, compute capability or TensorRT version), joined by "; ".
    """
    missing = []
    if not hardware.cuda:
        missing.append("no CUDA GPU is visible to this process")
    if hardware.tensorrt_version is None:
        missing.append("the tensorrt package is not installed (pip install 'i2i[gpu]')")
    if missing:  # nothing to compare with
        return "; ".join(missing)
    reasons = engine_differences(
        artifact,
        hardware.gpu_name or "",
        hardware.compute_capability or "",
        hardware.tensorrt_version or "",
    )
    return "; ".join(reasons) or None


def direction_spec(manifest: Mapping[str, Any], direction: str) -> Mapping[str, Any]:
    """The manifest's entry for `direction`, or BackendError listing the directions."""
    directions = manifest["directions"]
    if direction not in directions:
        raise BackendError(
            f"model {manifest.get('name')!r} version {manifest.get('version')} has no direction "
            f"{direction!r}; directions: {', '.join(directions)}"
        )
    spec: Mapping[str, Any] = directions[direction]
    return spec


def io_sizes(spec: Mapping[str, Any], source: str) -> tuple[int, int, int]:
    """(in_channels, out_channels, style_size) from a manifest direction."""
    dims = [spec["input"]["shape"][-1], spec["output"]["shape"][-1]]
    dims.append(spec["style"]["shape"][-1] if spec["style"] is not None else 0)
    if not all(isinstance(d, int) for d in dims):
        raise BackendError(
            f"{source}: the manifest gives no fixed channel or style size (last dimensions "
            f"{dims}); re-export this version"
        )
    return dims[0], dims[1], dims[2]


def shape_rule_of(spec: Mapping[str, Any]) -> ShapeRule:
    """The manifest direction's shape rule."""
    return ShapeRule.from_manifest(spec["shape_rule"])
