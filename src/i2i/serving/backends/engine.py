"""The native TensorRT backend: a serialized engine (plan) run with TensorRT's Python API.

Written against the documented TensorRT 10 API (``Runtime.deserialize_cuda_engine``,
``create_execution_context``, ``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) with torch CUDA tensors as buffers and a torch CUDA stream. No
machine this was written on had TensorRT or a GPU: the tests that run it are marked
``tensorrt`` and skip elsewhere.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from i2i.serving.backends.base import Backend, BackendError, built_for, io_sizes, shape_rule_of
from i2i.serving.backends.ort import verify_artifact

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    """A TensorRT engine on GPU `device_id`, for the shapes of its optimisation profile.

    Args:
        path: the plan file (its sha256 is checked against ``artifact``).
        artifact: the manifest's artifact entry (format "tensorrt").
        spec: the manifest's entry for the artifact's direction.
        device_id: the GPU to run on; it must be the kind the engine was built for.
    """

    def __init__(
        self, path: Path, artifact: Mapping[str, Any], spec: Mapping[str, Any], device_id: int = 0
    ) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise BackendError(
                f"tensorrt: the tensorrt package is not installed ({exc}); pip install "
                f"'i2i[gpu]' or choose --backend onnxruntime"
            ) from exc
        import torch

        if not torch.cuda.is_available():
            raise BackendError("tensorrt: no CUDA GPU is visible to this process")
        verify_artifact(path, artifact)
        plan = path.read_bytes()
        in_channels, out_channels, style_size = io_sizes(spec, path.name)
        super().__init__(
            name="tensorrt",
            artifact=path.name,
            precision=artifact["precision"],
            in_channels=in_channels,
            out_channels=out_channels,
            style_size=style_size,
            shape_rule=shape_rule_of(spec),
        )
        self._torch = torch
        self._device = torch.device("cuda", device_id)
        with torch.cuda.device(self._device):
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise BackendError(
                    f"{path}: TensorRT could not load this engine, built for "
                    f"{built_for(artifact)} (see TensorRT's log above); rebuild it on this GPU "
                    f"type with `i2i models build-engines`, or use --backend onnxruntime"
                )
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(device=self._device)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = {n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
        self._input, self._output = spec["input"]["name"], spec["output"]["name"]
        self._style = spec["style"]["name"] if spec["style"] is not None else None
        expected = {self._input} | ({self._style} if self._style else set())
        if inputs != expected or self._output not in set(names) - inputs:
            raise BackendError(
                f"{path}: the engine's tensors {names} are not the manifest's (inputs "
                f"{sorted(expected)}, output {self._output}); re-export this version"
            )
        profile = artifact["tensorrt"]["profiles"][0]
        self._min, self._max = tuple(profile["min"]), tuple(profile["max"])
        self.max_batch = int(self._max[0])
        self.size_range = ((self._min[1], self._min[2]), (self._max[1], self._max[2]))
        # One execution context and stream: concurrent batches (--instances) take turns.
        self.thread_safe = False
        self._lock = threading.Lock()

    def run(self, images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
        images, style = self.check_inputs(images, style)
        if self._context is None:
            raise RuntimeError(f"{self}: closed")
        shape = images.shape
        if not all(lo <= s <= hi for lo, s, hi in zip(self._min, shape, self._max, strict=True)):
            raise ValueError(
                f"{self.artifact}: shape {shape} is outside the engine's profile (min "
                f"{self._min}, max {self._max}); rebuild it with `i2i models build-engines --force --shapes ...`"
            )
        torch, context = self._torch, self._context
        with self._lock, torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            x = torch.from_numpy(images).to(self._device)  # (N, H, W, C_in) uint8
            context.set_input_shape(self._input, tuple(x.shape))
            context.set_tensor_address(self._input, x.data_ptr())
            if style is not None and self._style is not None:
                s = torch.from_numpy(style).to(self._device)  # (N, S) float32
                context.set_input_shape(self._style, tuple(s.shape))
                context.set_tensor_address(self._style, s.data_ptr())
            out_shape = tuple(context.get_tensor_shape(self._output))
            y = torch.empty(out_shape, dtype=torch.uint8, device=self._device)
            context.set_tensor_address(self._output, y.data_ptr())
            if not context.execute_async_v3(self._stream.cuda_stream):
                raise RuntimeError(f"{self.artifact}: TensorRT execution failed (see its log)")
            result = y.cpu()  # ordered after the engine on this stream; waits for it
        return np.asarray(result.numpy())

    def close(self) -> None:
        self._context = None
        self._engine = None
