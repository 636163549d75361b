"""The one engine runner: what it reads from the engine, and that it checks every call.

TensorRT and a GPU are absent here: a fake of TensorRT 10's documented Python API and of
cuda-python's runtime bindings stands in (tests/runtime/fakes.py). Its engine runs a real
ONNX graph in ONNX Runtime on the bytes the runner copied to fake device memory, so what
the runner computes is checked, not only which calls it makes. Each documented failure
value (False, -1, None, names left by infer_shapes) is returned in turn.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from i2i.runtime import CudaError, EngineError, EngineRunner
from i2i.runtime.cuda import CudaDevice
from i2i.runtime.tensorrt import make_logger
from tests.runtime.fakes import FakeTensorRT, cudaError_t, install, invert_graph, write_plan

PROFILE = [[1, 8, 8, 3], [2, 16, 16, 3], [4, 32, 32, 3]]


def images(batch: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (batch, height, width, 3), np.uint8)


@pytest.fixture
def trt(monkeypatch: pytest.MonkeyPatch) -> FakeTensorRT:
    return install(monkeypatch)


@pytest.fixture
def plan(tmp_path: Path) -> bytes:
    graph = invert_graph(tmp_path / "invert.onnx")
    return write_plan(tmp_path / "invert.plan", graph, {"image": PROFILE}).read_bytes()


def test_the_runner_computes_what_the_graph_computes(trt: FakeTensorRT, plan: bytes) -> None:
    expected = 255 - images(3, 24, 20)[..., ::-1]
    with EngineRunner(plan, source="invert.plan") as engine:
        for shape in [(1, 8, 8), (3, 24, 20), (4, 32, 32), (3, 24, 20)]:
            x = images(*shape)
            out = engine.run({"image": x})
            assert list(out) == ["translated"]
            np.testing.assert_array_equal(out["translated"], 255 - x[..., ::-1])
        np.testing.assert_array_equal(engine(images(3, 24, 20)), expected)
    assert trt.contexts[0].runs == 5


def test_what_it_accepts_comes_from_the_engine(trt: FakeTensorRT, tmp_path: Path) -> None:
    """Dtypes from get_tensor_dtype (here a float16 output), the range from
    get_tensor_profile_shape, nothing from the caller's assumptions."""
    graph = invert_graph(tmp_path / "half.onnx", TensorProto.FLOAT16)
    plan = write_plan(tmp_path / "half.plan", graph, {"image": PROFILE}).read_bytes()
    with EngineRunner(plan, source="half.plan") as engine:
        assert (engine.inputs, engine.outputs) == (("image",), ("translated",))
        image, out = engine.tensors["image"], engine.tensors["translated"]
        assert (image.dtype, out.dtype) == (np.dtype(np.uint8), np.dtype(np.float16))
        assert (image.min, image.opt, image.max) == ((1, 8, 8, 3), (2, 16, 16, 3), (4, 32, 32, 3))
        result = engine(images(2, 16, 16))
        assert result.dtype == np.float16
        np.testing.assert_array_equal(
            result, (255 - images(2, 16, 16)[..., ::-1]).astype(np.float16)
        )


@pytest.mark.parametrize(
    ("feeds", "message"),
    [
        (
            {"image": images(5, 8, 8)},
            r"shape \(5, 8, 8, 3\) of image is outside the engine's profile \(min \(1, 8, 8, 3\), max \(4, 32, 32, 3\)\)",
        ),
        ({"image": images(1, 36, 8)}, r"shape \(1, 36, 8, 3\) of image is outside"),
        ({"image": images(1, 8, 8)[..., 0]}, r"shape \(1, 8, 8\) of image is outside"),
        ({"image": images(1, 8, 8).astype(np.float32)}, "image must be uint8, got float32"),
        ({"pixels": images(1, 8, 8)}, r"takes inputs \['image'\], got \['pixels'\]"),
    ],
    ids=["batch", "height", "rank", "dtype", "name"],
)
def test_bad_inputs_are_the_callers_error(
    trt: FakeTensorRT, plan: bytes, feeds: dict, message: str
) -> None:
    with EngineRunner(plan, source="invert.plan") as engine:
        with pytest.raises(ValueError, match=f"^invert.plan: {message}"):
            engine.run(feeds)
        assert trt.contexts[0].runs == 0


# --- every documented failure value raises, naming the call ----------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "deserialize_cuda_engine",
            r"deserialize_cuda_engine failed: returned None: .* another GPU type or TensorRT version \(TensorRT: IRuntime::deserializeCudaEngine: bad plan\)",
        ),
        (
            "create_execution_context",
            r"create_execution_context failed: returned None \(out of GPU memory\?\) \(TensorRT: out of device memory",
        ),
        (
            "set_input_shape",
            r"set_input_shape\('image', \(4, 32, 32, 3\)\) failed: returned False \(TensorRT: setInputShape",
        ),
        ("infer_shapes", r"infer_shapes failed: left \['image'\] unspecified"),
        ("get_tensor_shape", r"get_tensor_shape\('translated'\) failed: gave \(-1, -1, -1, -1\)"),
        ("set_tensor_address", r"set_tensor_address\('image'\) failed: returned False"),
    ],
)
def test_a_failure_while_loading_names_the_call_and_frees_everything(
    trt: FakeTensorRT, plan: bytes, call: str, message: str
) -> None:
    trt.fail.add(call)
    with pytest.raises(EngineError, match=f"^invert.plan: TensorRT {message}"):
        EngineRunner(plan, source="invert.plan")
    assert trt.cudart.memory == {} and trt.cudart.streams == {}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            "execute_async_v3",
            r"execute_async_v3 failed: returned False \(TensorRT: enqueueV3: kernel launch failed\)",
        ),
        ("set_input_shape", r"set_input_shape\('image', \(2, 16, 16, 3\)\) failed: returned False"),
        ("infer_shapes", r"infer_shapes failed"),
    ],
)
def test_a_failure_while_running_names_the_call_and_the_next_run_works(
    trt: FakeTensorRT, plan: bytes, call: str, message: str
) -> None:
    with EngineRunner(plan, source="invert.plan") as engine:
        trt.fail.add(call)
        with pytest.raises(EngineError, match=f"^invert.plan: TensorRT {message}"):
            engine.run({"image": images(2, 16, 16)})
        trt.fail.clear()
        np.testing.assert_array_equal(engine(images(2, 16, 16)), 255 - images(2, 16, 16)[..., ::-1])


@pytest.mark.parametrize(
    ("call", "when"),
    [
        ("cudaSetDevice", "load"),
        ("cudaMalloc", "load"),
        ("cudaStreamCreate", "load"),
        ("cudaMemcpyAsync", "run"),
        ("cudaStreamSynchronize", "run"),
    ],
)
def test_cuda_failures_name_the_call(trt: FakeTensorRT, plan: bytes, call: str, when: str) -> None:
    if when == "load":
        trt.cudart.fail[call] = cudaError_t.cudaErrorMemoryAllocation
        with pytest.raises(CudaError, match=f"^CUDA {call} failed: cudaErrorMemoryAllocation"):
            EngineRunner(plan)
        assert trt.cudart.memory == {} and trt.cudart.streams == {}
        return
    with EngineRunner(plan) as engine:
        trt.cudart.fail[call] = cudaError_t.cudaErrorInvalidValue
        with pytest.raises(CudaError, match=f"^CUDA {call} failed: cudaErrorInvalidValue"):
            engine(images(1, 8, 8))


def test_without_tensorrt_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, plan: bytes
) -> None:
    install(monkeypatch)
    monkeypatch.setitem(__import__("sys").modules, "tensorrt", None)
    with pytest.raises(
        EngineError, match=r"tensorrt package is not installed .*pip install 'i2i\[gpu\]'"
    ):
        EngineRunner(plan)


# --- memory, threads, lifetime ----------------------------------------------------------------


def test_buffers_are_sized_once_for_the_largest_profile_shape(
    trt: FakeTensorRT, plan: bytes
) -> None:
    with EngineRunner(plan) as engine:
        largest = 4 * 32 * 32 * 3
        assert sorted(len(b) for b in trt.cudart.memory.values()) == [largest, largest]
        for shape in [(1, 8, 8), (4, 32, 32), (2, 12, 28)]:
            engine(images(*shape))
        assert trt.cudart.calls.count("cudaMalloc") == 2  # no allocation per request
    assert trt.cudart.memory == {} and trt.cudart.streams == {}


def test_threads_take_turns_on_the_one_context(trt: FakeTensorRT, plan: bytes) -> None:
    errors: list[BaseException] = []
    with EngineRunner(plan) as engine:

        def work(seed: int) -> None:
            try:
                for step in range(5):
                    x = images(
                        1 + (seed + step) % 4, 8 + 4 * seed, 32 - 4 * step, seed=seed * 10 + step
                    )
                    np.testing.assert_array_equal(engine(x), 255 - x[..., ::-1])
            except BaseException as exc:  # reported below, with the others
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == [] and len(trt.contexts) == 1 and trt.contexts[0].runs == 20
    # CUDA's current device is per thread: each run sets it.
    assert trt.cudart.calls.count("cudaSetDevice") == 1 + 20


def test_a_closed_runner_refuses_to_run_and_closes_once(trt: FakeTensorRT, plan: bytes) -> None:
    engine = EngineRunner(plan, source="invert.plan")
    engine.close()
    engine.close()
    assert trt.cudart.memory == {} and trt.cudart.calls.count("cudaStreamDestroy") == 1
    with pytest.raises(EngineError, match="invert.plan: the engine runner is closed"):
        engine(images(1, 8, 8))


def test_an_engine_of_two_inputs_is_run_by_name(trt: FakeTensorRT, tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["style"], ["style32"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["style32", "axis1"], ["s"], keepdims=1),
        helper.make_node("Unsqueeze", ["s", "axes23"], ["s4"]),
        helper.make_node("Add", ["x", "s4"], ["y"]),
        helper.make_node("Cast", ["y"], ["translated"], to=TensorProto.UINT8),
    ]
    graph = helper.make_graph(
        nodes,
        "style",
        [
            helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", "H", "W", 3]),
            helper.make_tensor_value_info("style", TensorProto.FLOAT16, ["N", 2]),
        ],
        [helper.make_tensor_value_info("translated", TensorProto.UINT8, ["N", "H", "W", 3])],
        [
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
            helper.make_tensor("axes23", TensorProto.INT64, [2], [2, 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, tmp_path / "style.onnx")
    plan = write_plan(tmp_path / "style.plan", tmp_path / "style.onnx", {"image": PROFILE})
    with EngineRunner(plan.read_bytes()) as engine:
        assert engine.tensors["style"].dtype == np.float16
        assert engine.tensors["style"].max == (4, 2)
        out = engine.run(
            {
                "image": np.full((2, 8, 8, 3), 10, np.uint8),
                "style": np.array([[1, 2], [3, 4]], np.float16),
            }
        )
        assert out["translated"][:, 0, 0, 0].tolist() == [13, 17]
        with pytest.raises(EngineError, match="call run\\(\\) with one array per input"):
            engine(np.zeros((1, 8, 8, 3), np.uint8))


def test_the_logger_forwards_tensorrt_messages_and_keeps_its_errors(
    trt: FakeTensorRT, caplog: pytest.LogCaptureFixture
) -> None:
    logger = make_logger(trt)
    severity = trt.ILogger.Severity
    with caplog.at_level(logging.DEBUG, logger="i2i.runtime.tensorrt"):
        for level, text in [
            (severity.VERBOSE, "v"),
            (severity.WARNING, "w"),
            (severity.ERROR, "e1"),
            (severity.INTERNAL_ERROR, "e2"),
        ]:
            logger.log(level, text)
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "TensorRT: v"),
        (logging.WARNING, "TensorRT: w"),
        (logging.ERROR, "TensorRT: e1"),
        (logging.CRITICAL, "TensorRT: e2"),
    ]
    assert logger.errors == ["e1", "e2"]


def test_an_injected_tensorrt_and_device_need_no_imports(tmp_path: Path, plan: bytes) -> None:
    """The constructor parameters alone suffice (nothing in sys.modules)."""
    from tests.runtime.fakes import FakeCudart

    cudart = FakeCudart()
    trt = FakeTensorRT(cudart)
    with EngineRunner(plan, tensorrt=trt, cuda=CudaDevice(0, cudart=cudart)) as engine:
        x = images(2, 16, 16)
        session = ort.InferenceSession(
            str(tmp_path / "invert.onnx"), providers=["CPUExecutionProvider"]
        )
        np.testing.assert_array_equal(engine(x), session.run(None, {"image": x})[0])
