"""Inference backends: one interface over TensorRT engines, ONNX Runtime and PyTorch.

A backend runs one direction of one model: uint8 images (N, H, W, C) in, uint8 out.
`load_backend` picks the artifact and runtime from a version's manifest, the hardware
present and the user's choice; `load_checkpoint_backend` runs a training checkpoint
with no repository. Backends know nothing of gRPC.

The PyTorch backend (`PyTorchBackend`, `load_checkpoint_backend`) is imported on first
use only: serving runs where PyTorch is not installed.
"""

from typing import Any

from i2i.serving.backends.base import (
    BACKEND_CHOICES,
    PRECISION_CHOICES,
    Backend,
    BackendError,
    Hardware,
    engine_mismatch,
)
from i2i.serving.backends.engine import TensorRTBackend
from i2i.serving.backends.loading import load_backend
from i2i.serving.backends.ort import OnnxRuntimeBackend

__all__ = [
    "BACKEND_CHOICES",
    "PRECISION_CHOICES",
    "Backend",
    "BackendError",
    "Hardware",
    "OnnxRuntimeBackend",
    "PyTorchBackend",
    "TensorRTBackend",
    "engine_mismatch",
    "load_backend",
    "load_checkpoint_backend",
]

_LAZY = {"PyTorchBackend", "load_checkpoint_backend"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from i2i.serving.backends import pytorch

        return getattr(pytorch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
