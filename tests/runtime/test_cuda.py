"""GPU discovery and device memory through the CUDA bindings (or NVML), never torch.

cuda-python and NVML cannot run here (no GPU, no driver): fakes of their documented calls
stand in (tests/runtime/fakes.py), injected where ``import`` finds the real packages.
"""

from __future__ import annotations

import subprocess
import sys
import types
from typing import Any

import numpy as np
import pytest

from i2i.runtime.cuda import (
    CudaDevice,
    CudaError,
    GpuInfo,
    GpuUnavailable,
    checked,
    find_gpu,
)
from tests.runtime.fakes import FakeCudart, cudaError_t, install


@pytest.fixture
def no_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any `import torch` from here on fails, as in a serving image."""
    monkeypatch.setitem(sys.modules, "torch", None)


class FakeNvml(types.ModuleType):
    """pynvml for physical GPUs (name, uuid, (major, minor)); records init/shutdown."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus: list[tuple[str, str, tuple[int, int]]], init_fails: bool = False):
        super().__init__("pynvml")
        self.gpus, self.init_fails, self.events = gpus, init_fails, []

    def nvmlInit(self) -> None:
        self.events.append("init")
        if self.init_fails:
            raise self.NVMLError("Driver Not Loaded")

    def nvmlShutdown(self) -> None:
        self.events.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        if not 0 <= index < len(self.gpus):
            raise self.NVMLError("Invalid Argument")
        return index

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> int:
        for index, gpu in enumerate(self.gpus):
            if gpu[1] == uuid:
                return index
        raise self.NVMLError("Not Found")

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return self.gpus[handle][0].encode()  # older pynvml returns bytes

    def nvmlDeviceGetCudaComputeCapability(self, handle: int) -> tuple[int, int]:
        return self.gpus[handle][2]


def only_nvml(monkeypatch: pytest.MonkeyPatch, nvml: FakeNvml | None) -> None:
    """cuda-python absent; NVML is `nvml` (or absent too)."""
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)


NVML_GPUS = [
    ("NVIDIA A10G", "GPU-aaaa", (8, 6)),
    ("NVIDIA L4", "GPU-bbbb", (8, 9)),
    ("NVIDIA H100 80GB HBM3", "GPU-cccc", (9, 0)),
]


def test_checked_returns_the_values_or_names_the_failed_call() -> None:
    cudart = FakeCudart()
    assert checked((cudaError_t.cudaSuccess,), "cudaFree", cudart) is None
    assert checked((cudaError_t.cudaSuccess, 7), "cudaMalloc", cudart) == 7
    assert checked((cudaError_t.cudaSuccess, 1, 2), "x", cudart) == (1, 2)
    with pytest.raises(
        CudaError, match=r"^CUDA cudaMalloc failed: cudaErrorMemoryAllocation \(error 2\)$"
    ):
        checked((cudaError_t.cudaErrorMemoryAllocation, 0), "cudaMalloc", cudart)


def test_find_gpu_asks_the_cuda_runtime(monkeypatch: pytest.MonkeyPatch, no_torch: None) -> None:
    install(monkeypatch, devices=[("NVIDIA A10G", 8, 6), ("NVIDIA H100 80GB HBM3", 9, 0)])
    assert find_gpu(1) == GpuInfo(1, "NVIDIA H100 80GB HBM3", "9.0", "cuda-python")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    with pytest.raises(
        GpuUnavailable,
        match=r"GPU 2 was asked for, but this process sees 2 GPU\(s\) \(CUDA_VISIBLE_DEVICES=3,5\)",
    ):
        find_gpu(2)
    with pytest.raises(ValueError, match="device_id must be >= 0"):
        find_gpu(-1)


@pytest.mark.parametrize(
    "error", [cudaError_t.cudaErrorInsufficientDriver, cudaError_t.cudaErrorNoDevice]
)
def test_a_driver_without_usable_gpus_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, error: cudaError_t
) -> None:
    trt = install(monkeypatch)
    trt.cudart.fail["cudaGetDeviceCount"] = error
    with pytest.raises(GpuUnavailable, match=f"CUDA finds no usable GPU: .*{error.name}"):
        find_gpu(0)


def test_without_cuda_python_nvml_names_the_gpu_through_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch, no_torch: None
) -> None:
    nvml = FakeNvml(NVML_GPUS)
    only_nvml(monkeypatch, nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert find_gpu(1) == GpuInfo(1, "NVIDIA L4", "8.9", "nvml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # CUDA's device 0 is physical GPU 2
    assert find_gpu(0) == GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", "nvml")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-aaaa")
    assert find_gpu(0).name == "NVIDIA A10G"
    with pytest.raises(GpuUnavailable, match="sees 1 GPU"):
        find_gpu(1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-1234")
    with pytest.raises(GpuUnavailable, match="NVML cannot look up; install the CUDA Python"):
        find_gpu(0)
    assert nvml.events == ["init", "shutdown"] * 5  # NVML is released every time


def test_nvml_without_a_driver_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    only_nvml(monkeypatch, FakeNvml(NVML_GPUS, init_fails=True))
    with pytest.raises(GpuUnavailable, match="NVML finds no usable GPU driver: Driver Not Loaded"):
        find_gpu(0)


def test_without_either_binding_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    only_nvml(monkeypatch, None)
    with pytest.raises(GpuUnavailable) as error:
        find_gpu(0)
    message = str(error.value)
    assert "cuda-python" in message and "nvidia-ml-py" in message
    assert "pip install 'i2i[gpu]'" in message


def test_device_memory_round_trips_through_checked_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    cudart = install(monkeypatch).cudart
    device = CudaDevice(0)
    device.activate()
    stream = device.create_stream()
    assert device.stream_address(stream) == int(stream) and int(stream) in cudart.streams
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    address = device.malloc(data.nbytes)
    device.copy_to_device(address, data, stream)
    back = np.empty_like(data)
    device.copy_to_host(back, address, stream)
    device.synchronize(stream)
    np.testing.assert_array_equal(back, data)
    with pytest.raises(ValueError, match="C-contiguous"):
        device.copy_to_device(address, data.transpose(2, 1, 0), stream)
    device.free(address)
    device.destroy_stream(stream)
    assert cudart.memory == {} and cudart.streams == {}
    with pytest.raises(CudaError, match="CUDA cudaFree failed: cudaErrorInvalidValue"):
        device.free(address)  # a second free is CUDA's error, reported as such


def test_a_device_that_is_not_there_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch)
    with pytest.raises(GpuUnavailable, match="GPU 1 was asked for, but this process sees 1"):
        CudaDevice(1)


def test_the_bindings_missing_is_said_plainly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", None)
    with pytest.raises(GpuUnavailable, match=r"cuda-python.*pip install 'i2i\[gpu\]'"):
        CudaDevice(0)


def test_the_native_stream_handle_is_used_where_the_bindings_have_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """cuda-bindings >= 12.9.1 deprecate int(stream) for utils.get_cuda_native_handle."""
    install(monkeypatch)
    utils = types.ModuleType("cuda.bindings.utils")
    seen: list[Any] = []

    def get_cuda_native_handle(obj: Any) -> int:
        seen.append(obj)
        return int(obj)

    utils.get_cuda_native_handle = get_cuda_native_handle  # type: ignore[attr-defined]
    sys.modules["cuda.bindings"].__path__ = []  # type: ignore[attr-defined] # a package now
    monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
    device = CudaDevice(0)
    stream = device.create_stream()
    assert device.stream_address(stream) == int(stream) and seen == [stream]


def test_the_runtime_package_imports_no_torch_and_no_stage() -> None:
    """i2i.runtime sits below export and serving: numpy and the standard library only, the
    GPU packages when asked for."""
    code = (
        "import sys, i2i.runtime; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'tensorrt', 'cuda', 'pynvml', 'onnxruntime') or m.startswith("
        "('i2i.models', 'i2i.serving', 'i2i.export', 'i2i.training', 'i2i.data'))))"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert found.strip() == "[]"
