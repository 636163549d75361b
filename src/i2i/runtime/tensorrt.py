"""One TensorRT engine run from numpy arrays: the one runner export's parity and serving share.

Written against TensorRT 10's documented Python API (``Runtime.deserialize_cuda_engine``,
``ICudaEngine.create_execution_context``, ``get_tensor_dtype``, ``get_tensor_profile_shape``,
``IExecutionContext.set_input_shape``, ``infer_shapes``, ``set_tensor_address``,
``execute_async_v3``), with device memory and a stream from :mod:`i2i.runtime.cuda`.

What the engine accepts is read from the engine, not assumed: the I/O tensors and their
dtypes (``get_tensor_dtype``) and the shape range of optimisation profile 0
(``get_tensor_profile_shape``). Every call whose result reports failure is checked: False
from the setters and ``execute_async_v3``, None from ``deserialize_cuda_engine`` and
``create_execution_context``, names left by ``infer_shapes``, unknown dimensions. A failure
raises :class:`EngineError` naming the call, with the errors TensorRT logged.

No machine this was written on had TensorRT or a GPU: this module has NOT run against a real
TensorRT. Its tests run it against a fake of the documented API (tests/runtime).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from i2i.runtime.cuda import INSTALL_HINT, CudaDevice

log = logging.getLogger(__name__)

Shape = tuple[int, ...]


class EngineError(RuntimeError):
    """TensorRT refused a call or is missing; the message names the call and what to do."""


def load_tensorrt() -> ModuleType:
    """The ``tensorrt`` package, or EngineError saying what to install."""
    try:
        return importlib.import_module("tensorrt")
    except ImportError as exc:
        raise EngineError(
            f"the tensorrt package is not installed ({exc}); {INSTALL_HINT} on a machine "
            f"with an NVIDIA driver"
        ) from exc


def installed_version() -> str | None:
    """The installed TensorRT's version, or None when it is absent or does not import."""
    if importlib.util.find_spec("tensorrt") is None:
        return None
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # a wheel without its CUDA libraries fails in many ways
        log.warning("the tensorrt package is installed but does not import: %s", exc)
        return None
    return str(trt.__version__)


def make_logger(trt: ModuleType) -> Any:
    """A ``trt.ILogger`` that forwards to :mod:`logging` and keeps TensorRT's last errors.

    Its ``errors`` list is what :class:`EngineError` messages quote, since TensorRT reports
    why a call failed only to its logger.
    """
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.INFO,
        severity.VERBOSE: logging.DEBUG,
    }
    failures = (severity.INTERNAL_ERROR, severity.ERROR)

    class _Logger(trt.ILogger):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            log.log(levels.get(level, logging.INFO), "TensorRT: %s", msg)
            if level in failures:
                self.errors = [*self.errors[-4:], str(msg)]

    return _Logger()


def logged_errors(logger: Any) -> str:
    """ " (TensorRT: <its last errors>)", or "" when it logged none."""
    errors = getattr(logger, "errors", [])
    return f" (TensorRT: {'; '.join(errors[-3:])})" if errors else ""


@dataclass(frozen=True)
class TensorSpec:
    """One I/O tensor of an engine, as the engine describes it.

    Attributes:
        name: the tensor's name.
        is_input: whether it is an input.
        dtype: its numpy dtype (from ``get_tensor_dtype``).
        min, opt, max: for inputs, the shapes of optimisation profile 0; () for outputs.
    """

    name: str
    is_input: bool
    dtype: np.dtype
    min: Shape = ()
    opt: Shape = ()
    max: Shape = ()

    def refuses(self, shape: Shape) -> str | None:
        """None if an input of `shape` is inside the profile, else why not."""
        inside = len(shape) == len(self.min) and all(
            lo <= s <= hi for lo, s, hi in zip(self.min, shape, self.max, strict=True)
        )
        if inside:
            return None
        return (
            f"shape {shape} of {self.name} is outside the engine's profile (min {self.min}, "
            f"max {self.max})"
        )


@dataclass
class _Buffer:
    address: int
    nbytes: int


class EngineRunner:
    """A serialized engine (plan) on one GPU: numpy arrays in, numpy arrays out.

    One execution context, one stream and one device buffer per tensor, shared by every
    caller under a lock (concurrent calls take turns). Buffers are sized for the profile's
    largest shapes when the engine loads, so running out of memory shows then, not on a
    request.

    Args:
        plan: the serialized engine.
        device_id: the CUDA device to run on.
        source: what to call the engine in messages (e.g. its file name).
        tensorrt: the ``tensorrt`` module; default the installed one (tests pass a fake).
        cuda: the device; default a :class:`~i2i.runtime.cuda.CudaDevice` for `device_id`.

    Raises:
        EngineError: TensorRT is missing or refused the plan, the context or a buffer.
        i2i.runtime.cuda.CudaError, GpuUnavailable: CUDA failed or has no such device.
    """

    def __init__(
        self,
        plan: bytes,
        *,
        device_id: int = 0,
        source: str = "engine",
        tensorrt: ModuleType | None = None,
        cuda: CudaDevice | None = None,
    ) -> None:
        trt = tensorrt if tensorrt is not None else load_tensorrt()
        self.source = source
        self._trt = trt
        self._cuda = cuda if cuda is not None else CudaDevice(device_id)
        self._lock = threading.Lock()
        self._buffers: dict[str, _Buffer] = {}
        self._stream: Any = None
        self._context: Any = None
        self._engine: Any = None
        self._cuda.activate()
        self._logger = make_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        try:
            self._load(plan)
        except BaseException:
            self.close()
            raise

    def _load(self, plan: bytes) -> None:
        trt = self._trt
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise self._error(
                "deserialize_cuda_engine",
                "returned None: the plan is damaged or was built for another GPU type or "
                "TensorRT version",
            )
        engine = self._engine
        if int(engine.num_optimization_profiles) < 1:
            raise self._error("num_optimization_profiles", "the engine has no profile")
        tensors = []
        for index in range(int(engine.num_io_tensors)):
            name = str(engine.get_tensor_name(index))
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            kind = engine.get_tensor_dtype(name)
            try:
                dtype = np.dtype(trt.nptype(kind))
            except TypeError as exc:
                raise self._error(
                    "get_tensor_dtype", f"{name} is {kind}, which numpy cannot hold"
                ) from exc
            if is_input:
                shapes = [_shape(s) for s in engine.get_tensor_profile_shape(name, 0)]
                if len(shapes) != 3:
                    raise self._error("get_tensor_profile_shape", f"{name}: got {shapes}")
                tensors.append(TensorSpec(name, True, dtype, *shapes))
            else:
                tensors.append(TensorSpec(name, False, dtype))
        self.tensors: dict[str, TensorSpec] = {t.name: t for t in tensors}
        self.inputs = tuple(t.name for t in tensors if t.is_input)
        self.outputs = tuple(t.name for t in tensors if not t.is_input)
        if not self.inputs or not self.outputs:
            raise self._error("num_io_tensors", f"the engine's tensors are {list(self.tensors)}")
        self._context = engine.create_execution_context()
        if self._context is None:
            raise self._error("create_execution_context", "returned None (out of GPU memory?)")
        self._stream = self._cuda.create_stream()
        # Size every buffer for the profile's largest shapes.
        largest = {name: self.tensors[name].max for name in self.inputs}
        for name, shape in {**largest, **self._output_shapes(largest)}.items():
            self._reserve(name, _nbytes(shape, self.tensors[name].dtype))

    # --- running ------------------------------------------------------------------------------

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine on one array per input; one array per output, by name.

        Raises:
            ValueError: an input is missing, unknown, of the wrong dtype, or outside the profile.
            EngineError: TensorRT refused a call; i2i.runtime.cuda.CudaError: CUDA did.
        """
        arrays = self._check_feeds(feeds)
        with self._lock:
            if self._context is None:
                raise EngineError(f"{self.source}: the engine runner is closed")
            self._cuda.activate()
            shapes = self._output_shapes({name: a.shape for name, a in arrays.items()})
            results = {
                name: np.empty(shape, self.tensors[name].dtype) for name, shape in shapes.items()
            }
            for name, array in {**arrays, **results}.items():
                self._reserve(name, array.nbytes)
            for name, array in arrays.items():
                self._cuda.copy_to_device(self._buffers[name].address, array, self._stream)
            if not self._context.execute_async_v3(self._cuda.stream_address(self._stream)):
                raise self._error("execute_async_v3", "returned False")
            for name, result in results.items():
                self._cuda.copy_to_host(result, self._buffers[name].address, self._stream)
            self._cuda.synchronize(self._stream)
        return results

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """An engine of one input and one output: that output for `images`."""
        if len(self.inputs) != 1 or len(self.outputs) != 1:
            raise EngineError(
                f"{self.source}: has inputs {list(self.inputs)} and outputs "
                f"{list(self.outputs)}; call run() with one array per input"
            )
        return self.run({self.inputs[0]: images})[self.outputs[0]]

    def _check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if set(feeds) != set(self.inputs):
            raise ValueError(
                f"{self.source}: takes inputs {list(self.inputs)}, got {sorted(feeds)}"
            )
        arrays = {}
        for name in self.inputs:
            spec, array = self.tensors[name], np.asarray(feeds[name])
            if array.dtype != spec.dtype:
                raise ValueError(f"{self.source}: {name} must be {spec.dtype}, got {array.dtype}")
            refused = spec.refuses(tuple(int(s) for s in array.shape))
            if refused:
                raise ValueError(f"{self.source}: {refused}")
            arrays[name] = np.ascontiguousarray(array)
        return arrays

    def _output_shapes(self, inputs: Mapping[str, Shape]) -> dict[str, Shape]:
        """Set the input shapes on the context; the output shapes it infers."""
        context = self._context
        for name, shape in inputs.items():
            if not context.set_input_shape(name, tuple(int(s) for s in shape)):
                raise self._error(f"set_input_shape({name!r}, {tuple(shape)})", "returned False")
        unresolved = list(context.infer_shapes())
        if unresolved:
            raise self._error("infer_shapes", f"left {unresolved} unspecified")
        shapes = {}
        for name in self.outputs:
            shape = _shape(context.get_tensor_shape(name))
            if any(s < 0 for s in shape):
                raise self._error(f"get_tensor_shape({name!r})", f"gave {shape}")
            shapes[name] = shape
        return shapes

    def _reserve(self, name: str, nbytes: int) -> None:
        """A device buffer of at least `nbytes` for tensor `name`, bound to the context."""
        held = self._buffers.get(name)
        if held is not None and held.nbytes >= nbytes:
            return
        if held is not None:
            del self._buffers[name]
            self._cuda.free(held.address)
        address = self._cuda.malloc(nbytes)
        self._buffers[name] = _Buffer(address, nbytes)
        if not self._context.set_tensor_address(name, address):
            raise self._error(f"set_tensor_address({name!r})", "returned False")

    def _error(self, call: str, what: str) -> EngineError:
        return EngineError(
            f"{self.source}: TensorRT {call} failed: {what}{logged_errors(self._logger)}"
        )

    # --- lifetime -----------------------------------------------------------------------------

    def close(self) -> None:
        """Free the buffers and the stream, release the context and engine; idempotent."""
        with self._lock:
            self._context = None  # before the engine, as TensorRT requires
            self._engine = None
            buffers, self._buffers = self._buffers, {}
            stream, self._stream = self._stream, None
            for name, buffer in buffers.items():
                try:
                    self._cuda.free(buffer.address)
                except Exception as exc:  # keep freeing the rest; say what leaked
                    log.warning("%s: freeing the buffer of %s failed: %s", self.source, name, exc)
            if stream is not None:
                try:
                    self._cuda.destroy_stream(stream)
                except Exception as exc:
                    log.warning("%s: destroying its stream failed: %s", self.source, exc)

    def __enter__(self) -> EngineRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<EngineRunner {self.source}>"


def _shape(dims: Any) -> Shape:
    """TensorRT Dims (or any sequence of ints) as a tuple."""
    return tuple(int(d) for d in dims)


def _nbytes(shape: Shape, dtype: np.dtype) -> int:
    return int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
