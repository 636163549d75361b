"""Fakes of what cannot run here: TensorRT 10's Python API and cuda-python's runtime bindings.

Each fake follows the documented signatures and failure values of the real call it stands
for (a status tuple from every CUDA call; False, -1 or None from the TensorRT calls that
report failure that way), and ``fail`` makes any named call report failure, so tests can
check that the code under test notices each one.

FakeCudart keeps "device memory" in host bytearrays at made-up addresses and copies to and
from real host pointers (ctypes), so a wrong address or size in the code under test shows.
FakeTensorRT's plan is a JSON naming an ONNX graph and the optimisation profile; its engine
takes the I/O tensors and dtypes from that graph and runs it in ONNX Runtime on the bytes
at the addresses the context was given.

Install both with :func:`install` (through ``sys.modules``, as the real packages would be
found) or pass them to the constructors that take them.
"""

from __future__ import annotations

import ctypes
import enum
import importlib.machinery
import itertools
import json
import sys
import threading
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

# --- cuda.bindings.runtime ------------------------------------------------------------------


class cudaError_t(enum.IntEnum):  # noqa: N801 - the binding's name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100
    cudaErrorInvalidDevice = 101
    cudaErrorInvalidResourceHandle = 400


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2


class FakeStream:
    """cudaStream_t: an object whose int() is its address."""

    def __init__(self, address: int) -> None:
        self.address = address

    def __int__(self) -> int:
        return self.address


@dataclass
class DeviceProps:
    name: bytes
    major: int
    minor: int


class FakeCudart(types.ModuleType):
    """cuda.bindings.runtime for `devices` GPUs, each (name, major, minor).

    Attributes:
        fail: call name -> the cudaError_t it returns instead of succeeding.
        memory: address -> the bytes of each live allocation.
        streams: address -> each live stream.
        calls: the names of the calls made, in order.
    """

    cudaError_t = cudaError_t
    cudaMemcpyKind = cudaMemcpyKind

    def __init__(self, devices: Iterable[tuple[str, int, int]] = (("NVIDIA Fake GPU 80GB", 9, 0),)):
        super().__init__("cuda.bindings.runtime")
        self.devices = list(devices)
        self.fail: dict[str, cudaError_t] = {}
        self.memory: dict[int, bytearray] = {}
        self.streams: dict[int, FakeStream] = {}
        self.calls: list[str] = []
        self.current = threading.local()
        self._addresses = itertools.count(0x7F00_0000_0000, 0x1_0000_0000)

    def _enter(self, call: str) -> cudaError_t:
        self.calls.append(call)
        if not self.devices and call != "cudaGetErrorName":
            return cudaError_t.cudaErrorNoDevice
        return self.fail.get(call, cudaError_t.cudaSuccess)

    def cudaGetErrorName(self, error: cudaError_t) -> tuple[cudaError_t, bytes]:
        return cudaError_t.cudaSuccess, cudaError_t(error).name.encode()

    def cudaGetDeviceCount(self) -> tuple[cudaError_t, int]:
        status = self._enter("cudaGetDeviceCount")
        return status, len(self.devices) if status == 0 else 0

    def cudaGetDeviceProperties(self, device: int) -> tuple[cudaError_t, DeviceProps | None]:
        status = self._enter("cudaGetDeviceProperties")
        if status == 0 and not 0 <= device < len(self.devices):
            status = cudaError_t.cudaErrorInvalidDevice
        if status:
            return status, None
        name, major, minor = self.devices[device]
        return status, DeviceProps(name.encode().ljust(256, b"\0"), major, minor)

    def cudaSetDevice(self, device: int) -> tuple[cudaError_t]:
        status = self._enter("cudaSetDevice")
        if status == 0 and not 0 <= device < len(self.devices):
            status = cudaError_t.cudaErrorInvalidDevice
        if status == 0:
            self.current.device = device
        return (status,)

    def cudaMalloc(self, size: int) -> tuple[cudaError_t, int]:
        status = self._enter("cudaMalloc")
        if status:
            return status, 0
        address = next(self._addresses)
        self.memory[address] = bytearray(size)
        return status, address

    def cudaFree(self, address: int) -> tuple[cudaError_t]:
        status = self._enter("cudaFree")
        if status == 0 and self.memory.pop(address, None) is None:
            status = cudaError_t.cudaErrorInvalidValue
        return (status,)

    def cudaStreamCreate(self) -> tuple[cudaError_t, FakeStream | None]:
        status = self._enter("cudaStreamCreate")
        if status:
            return status, None
        stream = FakeStream(next(self._addresses))
        self.streams[stream.address] = stream
        return status, stream

    def cudaStreamDestroy(self, stream: FakeStream) -> tuple[cudaError_t]:
        status = self._enter("cudaStreamDestroy")
        if status == 0 and self.streams.pop(int(stream), None) is None:
            status = cudaError_t.cudaErrorInvalidResourceHandle
        return (status,)

    def cudaStreamSynchronize(self, stream: FakeStream) -> tuple[cudaError_t]:
        status = self._enter("cudaStreamSynchronize")
        if status == 0 and int(stream) not in self.streams:
            status = cudaError_t.cudaErrorInvalidResourceHandle
        return (status,)

    def cudaMemcpyAsync(
        self, dst: int, src: int, count: int, kind: cudaMemcpyKind, stream: FakeStream
    ) -> tuple[cudaError_t]:
        status = self._enter("cudaMemcpyAsync")
        if status:
            return (status,)
        if int(stream) not in self.streams:
            return (cudaError_t.cudaErrorInvalidResourceHandle,)
        if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
            buffer = self.memory.get(dst)
            if buffer is None or count > len(buffer):
                return (cudaError_t.cudaErrorInvalidValue,)
            buffer[:count] = ctypes.string_at(src, count)
        elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
            buffer = self.memory.get(src)
            if buffer is None or count > len(buffer):
                return (cudaError_t.cudaErrorInvalidValue,)
            ctypes.memmove(dst, bytes(buffer[:count]), count)
        else:
            return (cudaError_t.cudaErrorInvalidValue,)
        return (status,)

    # What the fake engine reads and writes "on the device".
    def read(self, address: int, nbytes: int) -> bytes:
        buffer = self.memory[address]
        assert nbytes <= len(buffer), f"read of {nbytes} bytes from a {len(buffer)}-byte buffer"
        return bytes(buffer[:nbytes])

    def write(self, address: int, data: bytes) -> None:
        buffer = self.memory[address]
        assert len(data) <= len(buffer), (
            f"write of {len(data)} bytes to a {len(buffer)}-byte buffer"
        )
        buffer[: len(data)] = data


# --- tensorrt -------------------------------------------------------------------------------


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass

    def log(self, severity: Severity, msg: str) -> None:
        raise NotImplementedError


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0
    HALF = 1
    INT32 = 3
    UINT8 = 5
    BF16 = 7


_NUMPY = {
    DataType.FLOAT: np.float32,
    DataType.HALF: np.float16,
    DataType.INT32: np.int32,
    DataType.UINT8: np.uint8,
}
_ORT_TYPES = {
    "tensor(float)": DataType.FLOAT,
    "tensor(float16)": DataType.HALF,
    "tensor(int32)": DataType.INT32,
    "tensor(uint8)": DataType.UINT8,
}


def nptype(kind: DataType) -> type:
    if kind not in _NUMPY:
        raise TypeError(
            f"Could not resolve TensorRT datatype to an equivalent numpy datatype: {kind}"
        )
    return _NUMPY[kind]


class NetworkDefinitionCreationFlag(enum.IntEnum):
    STRONGLY_TYPED = 5


class BuilderFlag(enum.IntEnum):
    FP16 = 0


class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


PLAN_MAGIC = b"fake-trt-plan\n"


class FakeTensorRT(types.ModuleType):
    """The ``tensorrt`` module, version `version`, running engines on `cudart`'s memory.

    Attributes:
        fail: names of calls that report failure (their documented value, or the exception
            the binding raises), e.g. {"set_input_shape", "add_optimization_profile"}.
        builds: one dict per built plan: source graph, workspace, flags, timing cache given.
        corrupt: applied to every output an engine computes (to fail parity on purpose).
        contexts: every execution context created.
    """

    ILogger = ILogger
    TensorIOMode = TensorIOMode
    DataType = DataType
    NetworkDefinitionCreationFlag = NetworkDefinitionCreationFlag
    BuilderFlag = BuilderFlag
    MemoryPoolType = MemoryPoolType

    def __init__(self, cudart: FakeCudart, version: str = "10.13.0") -> None:
        super().__init__("tensorrt")
        self.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
        self.__version__ = version
        self.cudart = cudart
        self.fail: set[str] = set()
        self.builds: list[dict[str, Any]] = []
        self.corrupt: Callable[[np.ndarray], np.ndarray] | None = None
        self.contexts: list[FakeContext] = []
        fake = self

        class Runtime:
            def __init__(self, logger: ILogger) -> None:
                self.logger = logger

            def deserialize_cuda_engine(self, plan: bytes) -> FakeEngine | None:
                data = bytes(plan)
                if "deserialize_cuda_engine" in fake.fail or not data.startswith(PLAN_MAGIC):
                    self.logger.log(Severity.ERROR, "IRuntime::deserializeCudaEngine: bad plan")
                    return None
                return FakeEngine(fake, json.loads(data[len(PLAN_MAGIC) :]), self.logger)

        class Builder:
            def __init__(self, logger: ILogger) -> None:
                self.logger = logger

            def create_network(self, flags: int = 0) -> FakeNetwork:
                return FakeNetwork(flags)

            def create_builder_config(self) -> FakeBuilderConfig:
                return FakeBuilderConfig(fake)

            def create_optimization_profile(self) -> FakeProfile:
                return FakeProfile(fake)

            def build_serialized_network(
                self, network: FakeNetwork, config: FakeBuilderConfig
            ) -> bytes | None:
                if "build_serialized_network" in fake.fail:
                    self.logger.log(Severity.ERROR, "Builder: no implementation found")
                    return None
                assert network.source is not None and config.profiles, "parse and profile first"
                fake.builds.append(
                    {
                        "source": Path(network.source).name,
                        "workspace": config.workspace,
                        "strongly_typed": bool(
                            network.flags >> NetworkDefinitionCreationFlag.STRONGLY_TYPED & 1
                        ),
                        "fp16_flag": config.fp16,
                        "timing_cache": config.timing_cache,
                    }
                )
                if config.timing_cache is not None:
                    config.timing_cache.data += (
                        f"tactics for {Path(network.source).name}\n".encode()
                    )
                profiles = [
                    {name: [list(s) for s in shapes] for name, shapes in p.shapes.items()}
                    for p in config.profiles
                ]
                body = json.dumps(
                    {"graph": network.source, "profiles": profiles, "build": len(fake.builds)}
                )
                return PLAN_MAGIC + body.encode()

        class OnnxParser:
            def __init__(self, network: FakeNetwork, logger: ILogger) -> None:
                self.network = network
                self.errors: list[str] = []

            @property
            def num_errors(self) -> int:
                return len(self.errors)

            def get_error(self, index: int) -> str:
                return self.errors[index]

            def parse_from_file(self, path: str) -> bool:
                if "parse_from_file" in fake.fail:
                    self.errors.append(f"{path}: unsupported operator")
                    return False
                session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                self.network.source = path
                self.network.inputs = [_Named(i.name) for i in session.get_inputs()]
                return True

        self.Runtime = Runtime
        self.Builder = Builder
        self.OnnxParser = OnnxParser

    @staticmethod
    def nptype(kind: DataType) -> type:
        return nptype(kind)


@dataclass
class _Named:
    name: str


class FakeNetwork:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.source: str | None = None
        self.inputs: list[_Named] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> _Named:
        return self.inputs[index]


class FakeProfile:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002
        shapes = tuple(tuple(int(d) for d in s) for s in (min, opt, max))
        if "set_shape" in self.fake.fail or not all(
            a <= b <= c for a, b, c in zip(*shapes, strict=True)
        ):
            raise RuntimeError("Shape provided for min is inconsistent with other shapes.")
        self.shapes[name] = shapes


class FakeTimingCache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data


class FakeBuilderConfig:
    def __init__(self, fake: FakeTensorRT) -> None:
        self.fake = fake
        self.workspace = 0
        self.fp16 = False
        self.profiles: list[FakeProfile] = []
        self.timing_cache: FakeTimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.workspace = size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.fp16 = self.fp16 or flag == BuilderFlag.FP16

    def add_optimization_profile(self, profile: FakeProfile) -> int:
        if "add_optimization_profile" in self.fake.fail or not profile.shapes:
            return -1
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized: bytes) -> FakeTimingCache | None:
        if "create_timing_cache" in self.fake.fail:
            return None
        return FakeTimingCache(bytes(serialized))

    def set_timing_cache(self, cache: FakeTimingCache, ignore_mismatch: bool) -> bool:
        if "set_timing_cache" in self.fake.fail:
            return False
        self.timing_cache = cache
        return True

    def get_timing_cache(self) -> FakeTimingCache | None:
        return self.timing_cache


class FakeEngine:
    """The engine of a fake plan: the ONNX graph it names, with the plan's profile."""

    def __init__(self, fake: FakeTensorRT, plan: dict[str, Any], logger: ILogger) -> None:
        self.fake = fake
        self.logger = logger
        self.session = ort.InferenceSession(plan["graph"], providers=["CPUExecutionProvider"])
        self.profile = {
            name: [tuple(s) for s in shapes] for name, shapes in plan["profiles"][0].items()
        }
        inputs = [
            (i.name, TensorIOMode.INPUT, _ORT_TYPES[i.type]) for i in self.session.get_inputs()
        ]
        outputs = [
            (o.name, TensorIOMode.OUTPUT, _ORT_TYPES[o.type]) for o in self.session.get_outputs()
        ]
        self.tensors = {name: (mode, kind) for name, mode, kind in inputs + outputs}
        self.names = [name for name, _, _ in inputs + outputs]
        self.out_channels = {o.name: o.shape[-1] for o in self.session.get_outputs()}

    num_optimization_profiles = 1

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return self.tensors[name][0]

    def get_tensor_dtype(self, name: str) -> DataType:
        return self.tensors[name][1]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[tuple[int, ...]]:
        assert profile_index == 0
        if name in self.profile:
            return list(self.profile[name])
        # The other inputs (a style) take the image's batch range.
        image = next(iter(self.profile.values()))
        size = next(i.shape[-1] for i in self.session.get_inputs() if i.name == name)
        return [(s[0], size) for s in image]

    def create_execution_context(self) -> FakeContext | None:
        if "create_execution_context" in self.fake.fail:
            self.logger.log(Severity.ERROR, "out of device memory for the context")
            return None
        context = FakeContext(self)
        self.fake.contexts.append(context)
        return context


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.fake = engine.fake
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.runs = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        inside = len(shape) == len(low) and all(
            a <= s <= b for a, s, b in zip(low, shape, high, strict=True)
        )
        if "set_input_shape" in self.fake.fail or not inside:
            self.engine.logger.log(
                Severity.ERROR, f"setInputShape: {name} {shape} is outside the profile"
            )
            return False
        self.shapes[name] = tuple(int(s) for s in shape)
        return True

    def infer_shapes(self) -> list[str]:
        if "infer_shapes" in self.fake.fail:
            return [self.engine.names[0]]
        return [
            n
            for n, (mode, _) in self.engine.tensors.items()
            if mode == TensorIOMode.INPUT and n not in self.shapes
        ]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        mode, _ = self.engine.tensors[name]
        if mode == TensorIOMode.INPUT:
            return self.shapes.get(name, (-1, -1, -1, -1))
        image = self.shapes.get(self.engine.names[0])
        if image is None or "get_tensor_shape" in self.fake.fail:
            return (-1, -1, -1, -1)
        return (*image[:-1], int(self.engine.out_channels[name]))

    def set_tensor_address(self, name: str, address: int) -> bool:
        if "set_tensor_address" in self.fake.fail or name not in self.engine.tensors:
            return False
        assert address in self.fake.cudart.memory, f"{name}: {address:#x} is not device memory"
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int), "stream_handle is a size_t"
        if "execute_async_v3" in self.fake.fail:
            self.engine.logger.log(Severity.ERROR, "enqueueV3: kernel launch failed")
            return False
        assert stream_handle in self.fake.cudart.streams, "not a live stream"
        cudart, feeds = self.fake.cudart, {}
        for name, (mode, kind) in self.engine.tensors.items():
            if mode == TensorIOMode.INPUT:
                dtype, shape = np.dtype(nptype(kind)), self.shapes[name]
                data = cudart.read(self.addresses[name], int(np.prod(shape)) * dtype.itemsize)
                feeds[name] = np.frombuffer(data, dtype).reshape(shape)
        outputs = self.engine.session.run(None, feeds)
        for meta, output in zip(self.engine.session.get_outputs(), outputs, strict=True):
            result = np.ascontiguousarray(
                self.fake.corrupt(output) if self.fake.corrupt else output
            )
            assert result.shape == self.get_tensor_shape(meta.name)
            cudart.write(self.addresses[meta.name], result.tobytes())
        self.runs += 1
        return True


# --- installing them ------------------------------------------------------------------------


def install(
    monkeypatch: pytest.MonkeyPatch,
    devices: Iterable[tuple[str, int, int]] = (("NVIDIA Fake GPU 80GB", 9, 0),),
    version: str = "10.13.0",
) -> FakeTensorRT:
    """Put a FakeTensorRT and its FakeCudart where ``import tensorrt`` and
    ``import cuda.bindings.runtime`` find them; the fake TensorRT (its ``cudart`` attribute
    is the fake CUDA)."""
    cudart = FakeCudart(devices)
    trt = FakeTensorRT(cudart, version)
    cuda_package = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart  # type: ignore[attr-defined]
    cuda_package.bindings = bindings  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "cuda", cuda_package)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    return trt


def invert_graph(path: Path, output_type: int = TensorProto.UINT8) -> Path:
    """image uint8 (N, H, W, 3) -> 255 - image, as `output_type`, with channels reversed
    (so a layout mistake shows)."""
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["full", "x"], ["y"]),
        helper.make_node("Slice", ["y", "starts", "ends", "axes", "steps"], ["z"]),
        helper.make_node("Cast", ["z"], ["translated"], to=output_type),
    ]
    graph = helper.make_graph(
        nodes,
        "invert",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3])],
        [helper.make_tensor_value_info("translated", output_type, ["N", "H", "W", 3])],
        [
            helper.make_tensor("full", TensorProto.FLOAT, [], [255.0]),
            helper.make_tensor("starts", TensorProto.INT64, [1], [-1]),
            helper.make_tensor("ends", TensorProto.INT64, [1], [-(2**62)]),
            helper.make_tensor("axes", TensorProto.INT64, [1], [3]),
            helper.make_tensor("steps", TensorProto.INT64, [1], [-1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def write_plan(path: Path, graph: Path, profile: dict[str, list[list[int]]]) -> Path:
    """A fake plan running `graph` with `profile` ({input: [min, opt, max]})."""
    path.write_bytes(PLAN_MAGIC + json.dumps({"graph": str(graph), "profiles": [profile]}).encode())
    return path
