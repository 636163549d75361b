"""CUDA without PyTorch: which GPU this process has, and device memory and streams for engines.

Device memory, copies and streams come from NVIDIA's CUDA Python bindings (package
``cuda-python``, module ``cuda.bindings.runtime``), the binding TensorRT's own Python samples
use. Every call returns its status first; :func:`checked` turns a failed one into a
:class:`CudaError` that names the call and CUDA's error.

GPU discovery asks the same CUDA runtime (its device numbers are the ones TensorRT and ONNX
Runtime use). Where the bindings are not installed it asks NVML (package ``nvidia-ml-py``,
module ``pynvml``), mapping the device number through ``CUDA_VISIBLE_DEVICES``; NVML numbers
GPUs in PCI bus order, so on a machine with different GPU types and the default
``CUDA_DEVICE_ORDER`` the CUDA runtime is the one to trust (install ``i2i[gpu]``).

No machine this was written on had a GPU or these packages: the calls follow the documented
bindings and are tested against a fake of them (tests/runtime).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'i2i[gpu]'"


class CudaError(RuntimeError):
    """A CUDA call failed; the message names the call and CUDA's error."""


class GpuUnavailable(RuntimeError):
    """No usable GPU here; the message says why (no bindings, no driver, no such device)."""


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as this process numbers it.

    Attributes:
        index: the CUDA device number (after ``CUDA_VISIBLE_DEVICES``).
        name: the device name, e.g. "NVIDIA H100 80GB HBM3".
        compute_capability: e.g. "9.0".
        source: who answered: "cuda-python" or "nvml".
    """

    index: int
    name: str
    compute_capability: str
    source: str


def load_cudart() -> ModuleType:
    """``cuda.bindings.runtime``, or GpuUnavailable saying what to install."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError as exc:
        raise GpuUnavailable(
            f"the CUDA Python bindings (package cuda-python, module cuda.bindings) are not "
            f"installed ({exc}); {INSTALL_HINT}"
        ) from exc


def checked(result: Any, call: str, cudart: ModuleType) -> Any:
    """What a cuda-python call returned after its status; CudaError naming `call` if it failed.

    cuda-python returns a tuple ``(status, *values)``: None for no value, the value for one,
    the tuple of values for more.
    """
    items: tuple[Any, ...] = result if isinstance(result, tuple) else (result,)
    status, values = items[0], items[1:]
    code = int(getattr(status, "value", status))
    if code != 0:
        raise CudaError(f"CUDA {call} failed: {_error_name(status, cudart)} (error {code})")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _error_name(status: Any, cudart: ModuleType) -> str:
    try:
        found = cudart.cudaGetErrorName(status)
    except Exception as exc:  # the name is for the message only; its lookup must not hide the error
        log.debug("cudaGetErrorName(%r) failed: %s", status, exc)
        return str(status)
    name = found[1] if isinstance(found, tuple) and len(found) > 1 else found
    return _text(name)


def _text(value: Any) -> str:
    """A C string from the bindings (bytes, maybe NUL-padded) or NVML (str or bytes)."""
    if isinstance(value, bytes | bytearray):
        value = bytes(value).split(b"\0", 1)[0].decode("utf-8", "replace")
    return str(value).strip()


# --- discovery -------------------------------------------------------------------------------


def find_gpu(device_id: int = 0) -> GpuInfo:
    """GPU `device_id` of this process: from the CUDA runtime, else from NVML.

    Raises:
        GpuUnavailable: neither binding is installed, the driver reports no usable GPU, or
            there is no device `device_id`; the message says which.
    """
    if device_id < 0:
        raise ValueError(f"device_id must be >= 0, got {device_id}")
    try:
        cudart = load_cudart()
    except GpuUnavailable as no_cuda:
        try:
            nvml = importlib.import_module("pynvml")
        except ImportError:
            raise GpuUnavailable(
                f"neither the CUDA Python bindings (cuda-python) nor NVML's (nvidia-ml-py) "
                f"are installed, so no GPU can be found; {INSTALL_HINT}"
            ) from no_cuda
        return _nvml_gpu(nvml, device_id)
    return _cuda_gpu(cudart, device_id)


def _cuda_gpu(cudart: ModuleType, device_id: int) -> GpuInfo:
    try:
        count = int(checked(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount", cudart))
        if device_id >= count:
            raise GpuUnavailable(_no_such_device(device_id, count))
        props = checked(
            cudart.cudaGetDeviceProperties(device_id), "cudaGetDeviceProperties", cudart
        )
    except CudaError as exc:
        raise GpuUnavailable(f"CUDA finds no usable GPU: {exc}") from exc
    return GpuInfo(device_id, _text(props.name), f"{props.major}.{props.minor}", "cuda-python")


def _no_such_device(device_id: int, count: int) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    return f"GPU {device_id} was asked for, but this process sees {count} GPU(s){where}"


def _nvml_gpu(nvml: ModuleType, device_id: int) -> GpuInfo:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise GpuUnavailable(f"NVML finds no usable GPU driver: {exc}") from exc
    try:
        handle = _nvml_handle(nvml, device_id)
        name = _text(nvml.nvmlDeviceGetName(handle))
        major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
    except nvml.NVMLError as exc:
        raise GpuUnavailable(f"NVML cannot describe GPU {device_id}: {exc}") from exc
    finally:
        nvml.nvmlShutdown()
    return GpuInfo(device_id, name, f"{major}.{minor}", "nvml")


def _nvml_handle(nvml: ModuleType, device_id: int) -> Any:
    """NVML's handle of CUDA device `device_id`, through CUDA_VISIBLE_DEVICES when it is set."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        count = int(nvml.nvmlDeviceGetCount())
        if device_id >= count:
            raise GpuUnavailable(_no_such_device(device_id, count))
        return nvml.nvmlDeviceGetHandleByIndex(device_id)
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if device_id >= len(entries):
        raise GpuUnavailable(_no_such_device(device_id, len(entries)))
    entry = entries[device_id]
    if entry.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(entry))
    if entry.startswith("GPU-"):
        return nvml.nvmlDeviceGetHandleByUUID(entry)
    raise GpuUnavailable(
        f"CUDA_VISIBLE_DEVICES entry {entry!r} names a device NVML cannot look up; install "
        f"the CUDA Python bindings ({INSTALL_HINT}) to ask CUDA itself"
    )


# --- device memory and streams ---------------------------------------------------------------


def _native_handle() -> Callable[[Any], int]:
    """cuda-python's address of a stream object: `get_cuda_native_handle` where it exists
    (``int(stream)`` is deprecated from cuda-bindings 12.9.1), else ``int``."""
    try:
        utils = importlib.import_module("cuda.bindings.utils")
    except ImportError:
        return int
    found = getattr(utils, "get_cuda_native_handle", None)
    return found if callable(found) else int


class CudaDevice:
    """One GPU through ``cuda.bindings.runtime``: device memory, copies and a stream.

    Every call is checked (:class:`CudaError` naming it). CUDA's current device is a
    per-thread setting: call :meth:`activate` in each thread before the others.

    Args:
        device_id: the CUDA device number.
        cudart: the runtime bindings; default ``cuda.bindings.runtime`` (tests pass a fake).
    """

    def __init__(self, device_id: int = 0, cudart: ModuleType | None = None) -> None:
        self.cudart = cudart if cudart is not None else load_cudart()
        self.device_id = device_id
        self._handle = _native_handle()
        count = int(self.call("cudaGetDeviceCount"))
        if not 0 <= device_id < count:
            raise GpuUnavailable(_no_such_device(device_id, count))

    def call(self, name: str, *args: Any) -> Any:
        """``cudart.<name>(*args)``, checked; its values without the status."""
        return checked(getattr(self.cudart, name)(*args), name, self.cudart)

    def activate(self) -> None:
        """Make this GPU the calling thread's current device (cudaSetDevice)."""
        self.call("cudaSetDevice", self.device_id)

    def create_stream(self) -> Any:
        """A new stream on this GPU (cudaStreamCreate); the object the bindings return."""
        return self.call("cudaStreamCreate")

    def stream_address(self, stream: Any) -> int:
        """The stream's address as TensorRT's ``execute_async_v3`` takes it."""
        return int(self._handle(stream))

    def destroy_stream(self, stream: Any) -> None:
        self.call("cudaStreamDestroy", stream)

    def synchronize(self, stream: Any) -> None:
        """Wait until everything queued on `stream` has run (cudaStreamSynchronize)."""
        self.call("cudaStreamSynchronize", stream)

    def malloc(self, nbytes: int) -> int:
        """`nbytes` of device memory (cudaMalloc, at least 1 byte); its address."""
        return int(self.call("cudaMalloc", max(int(nbytes), 1)))

    def free(self, address: int) -> None:
        self.call("cudaFree", address)

    def copy_to_device(self, address: int, array: np.ndarray, stream: Any) -> None:
        """Queue a copy of a C-contiguous host array to `address` on `stream`."""
        if not array.flags.c_contiguous:
            raise ValueError("copy_to_device needs a C-contiguous array")
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        self.call("cudaMemcpyAsync", address, array.ctypes.data, array.nbytes, kind, stream)

    def copy_to_host(self, array: np.ndarray, address: int, stream: Any) -> None:
        """Queue a copy from `address` into a C-contiguous host array on `stream`."""
        if not array.flags.c_contiguous or not array.flags.writeable:
            raise ValueError("copy_to_host needs a writeable C-contiguous array")
        kind = self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self.call("cudaMemcpyAsync", array.ctypes.data, address, array.nbytes, kind, stream)
