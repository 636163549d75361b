"""Runtimes below the stages: GPU discovery, CUDA buffers and streams, one TensorRT runner.

A contract-layer package like ``checkpoint`` and ``repository``: both export (engine parity)
and serving (the TensorRT backend) use it, so one engine is run by one piece of code. It
imports numpy and the standard library, and ``tensorrt``, ``cuda.bindings`` (cuda-python)
and ``pynvml`` (nvidia-ml-py) only when asked for: never torch, never the stages.

    from i2i.runtime import EngineRunner, find_gpu

    gpu = find_gpu(0)  # GpuInfo(index=0, name="NVIDIA H100 80GB HBM3", ...)
    with EngineRunner(plan_bytes, source="A2B.plan") as engine:
        outputs = engine.run({"image": images})
"""

from i2i.runtime.cuda import CudaDevice, CudaError, GpuInfo, GpuUnavailable, find_gpu
from i2i.runtime.tensorrt import EngineError, EngineRunner, TensorSpec, installed_version

__all__ = [
    "CudaDevice",
    "CudaError",
    "EngineError",
    "EngineRunner",
    "GpuInfo",
    "GpuUnavailable",
    "TensorSpec",
    "find_gpu",
    "installed_version",
]
