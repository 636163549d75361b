"""The Open Inference Protocol (KServe v2) service of a real i2i server on 127.0.0.1.

Called with the generated `inference.GRPCInferenceService` stubs: metadata and config,
ModelInfer with raw bytes and typed contents (byte for byte what Translate gives), batches,
multimodal styles, multi-domain targets, bad inputs and the status codes Triton gives for
them, readiness, streams, auth and overload.
"""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from google.protobuf import descriptor_pool
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

import i2i
from i2i.export import export_checkpoint
from i2i.oip import grpc_service_pb2 as v2
from i2i.oip import grpc_service_pb2_grpc as v2_grpc
from i2i.oip import model_config_pb2 as mc
from i2i.serving.config import ModelSelection
from i2i.serving.errors import NotFound
from i2i.serving.inference import v2_model_name
from i2i.serving.server import Server
from i2i.serving.store import ModelStore
from i2i.v1 import translator_pb2 as pb
from tests.conftest import MultimodalModel
from tests.multidomain_family import DOMAINS, multidomain_checkpoint, registered
from tests.serving.conftest import MODEL, RunningServer, sample_image, server_config
from tests.serving.test_server import Gate, decode
from tests.serving.test_server import request as translate_request

NAME = v2_model_name(MODEL, "A2B")  # "tiny_A2B"
Tensor = v2.ModelInferRequest.InferInputTensor


def v2_stub(server: RunningServer, **options) -> v2_grpc.GRPCInferenceServiceStub:
    return v2_grpc.GRPCInferenceServiceStub(server.channel(**options))


def image_input(batch: np.ndarray, name: str = "image", datatype: str = "UINT8") -> Tensor:
    return Tensor(name=name, datatype=datatype, shape=list(batch.shape))


def infer_request(
    batch: np.ndarray, model: str = NAME, styles: np.ndarray | None = None, **fields
) -> v2.ModelInferRequest:
    """Raw-bytes request: `image` [N, H, W, C] uint8 (+ `style` [N, S] float32)."""
    inputs, raws = [image_input(batch)], [np.ascontiguousarray(batch).tobytes()]
    if styles is not None:
        inputs.append(Tensor(name="style", datatype="FP32", shape=list(styles.shape)))
        raws.append(styles.astype(np.float32).tobytes())
    return v2.ModelInferRequest(model_name=model, inputs=inputs, raw_input_contents=raws, **fields)


def translated(reply: v2.ModelInferResponse) -> np.ndarray:
    (output,) = reply.outputs
    assert output.name == "translated" and output.datatype == "UINT8"
    assert len(reply.raw_output_contents) == 1
    return np.frombuffer(reply.raw_output_contents[0], np.uint8).reshape(list(output.shape))


def translate_raw(
    stub, pixels: np.ndarray, model: str = MODEL, direction: str = "A2B", **fields
) -> np.ndarray:
    """One Translate call, raw pixels in and out."""
    height, width, channels = pixels.shape
    raw = pb.RawImage(pixels=pixels.tobytes(), height=height, width=width, channels=channels)
    reply = stub.Translate(
        pb.TranslateRequest(
            model=model,
            direction=direction,
            image=pb.Image(raw=raw),
            output=pb.OutputOptions(format=pb.IMAGE_FORMAT_RAW),
            **fields,
        ),
        timeout=30,
    )
    return decode(reply.images[0])


def batch_of(count: int, height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    return np.stack([sample_image(height, width, seed + i) for i in range(count)])


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# ---- health, metadata, config


def test_server_live_ready_and_metadata(shared_server):
    stub = v2_stub(shared_server)
    assert stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live is True
    assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready is True
    meta = stub.ServerMetadata(v2.ServerMetadataRequest(), timeout=10)
    assert meta.name == "i2i" and meta.version == i2i.__version__
    assert "model_configuration" in meta.extensions
    for direction in ("A2B", "B2A"):
        name = v2_model_name(MODEL, direction)
        assert stub.ModelReady(v2.ModelReadyRequest(name=name), timeout=10).ready is True
        assert stub.ModelReady(v2.ModelReadyRequest(name=name, version="1"), timeout=10).ready


def test_model_metadata_names_tensors_with_dynamic_dims(shared_server):
    stub = v2_stub(shared_server)
    meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=NAME), timeout=10)
    assert meta.name == "tiny_A2B" and list(meta.versions) == ["1"]
    assert meta.platform == "i2i_onnxruntime-cpu"
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("image", "UINT8", [-1, -1, -1, 3])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("translated", "UINT8", [-1, -1, -1, 3])
    ]
    assert stub.ModelMetadata(v2.ModelMetadataRequest(name=NAME, version="1"), timeout=10) == meta


def test_model_config_is_a_triton_config_without_the_batch_dim(shared_server):
    config = v2_stub(shared_server).ModelConfig(v2.ModelConfigRequest(name=NAME), timeout=10).config
    assert isinstance(config, mc.ModelConfig)
    assert config.name == NAME and config.backend == "i2i"
    assert config.platform == "i2i_onnxruntime-cpu"
    assert config.max_batch_size == 4  # server_config's --max-batch
    (image,) = config.input
    assert (image.name, image.data_type, list(image.dims)) == ("image", mc.TYPE_UINT8, [-1, -1, 3])
    assert image.format == mc.ModelInput.FORMAT_NHWC
    (output,) = config.output
    assert (output.name, output.data_type, list(output.dims)) == (
        "translated",
        mc.TYPE_UINT8,
        [-1, -1, 3],
    )
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000  # --max-delay-ms 2
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert list(config.version_policy.specific.versions) == [1]
    assert config.parameters["i2i_direction"].string_value == "A2B"


def test_reflection_describes_the_service(shared_server):
    with shared_server.channel() as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "inference.GRPCInferenceService" in database.get_services()
        pool = descriptor_pool.DescriptorPool(database)
        service = pool.FindServiceByName("inference.GRPCInferenceService")
        assert service.FindMethodByName("ModelInfer").input_type.full_name == (
            "inference.ModelInferRequest"
        )


def test_versions_are_the_repositorys(tiny_repository, tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(tiny_repository, repository)
    shutil.copytree(repository / MODEL / "1", repository / MODEL / "2")
    manifest_path = repository / MODEL / "2" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["version"] = 2
    manifest_path.write_text(json.dumps(manifest))
    models = (ModelSelection(MODEL, 1), ModelSelection(MODEL, 2))
    server = RunningServer(server_config(repository, models=models))
    try:
        stub = v2_stub(server)
        meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=NAME), timeout=10)
        assert list(meta.versions) == ["1", "2"]
        config = stub.ModelConfig(v2.ModelConfigRequest(name=NAME, version="1"), timeout=10)
        assert list(config.config.version_policy.specific.versions) == [1, 2]
        for version, served in (("", "2"), ("1", "1"), ("2", "2")):
            reply = stub.ModelInfer(infer_request(GOOD, model_version=version), timeout=30)
            assert reply.model_version == served
        error = rpc_error(lambda: stub.ModelInfer(infer_request(GOOD, model_version="3")))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "loaded versions: 1, 2" in error.details()
    finally:
        server.close()


# ---- inference


def test_batch_in_one_request_equals_translate_calls_byte_for_byte(shared_server):
    stub, translator = v2_stub(shared_server), shared_server.stub()
    for direction, seed in (("A2B", 1), ("B2A", 5)):
        batch = batch_of(3, 32, 48, seed)
        reply = stub.ModelInfer(
            infer_request(batch, v2_model_name(MODEL, direction), id="req-7"), timeout=30
        )
        assert (reply.model_name, reply.model_version, reply.id) == (
            v2_model_name(MODEL, direction),
            "1",
            "req-7",
        )
        outputs = translated(reply)
        assert outputs.shape == (3, 32, 48, 3)
        for image, output in zip(batch, outputs, strict=True):
            expected = translate_raw(translator, image, direction=direction)
            assert output.tobytes() == expected.tobytes()


def test_typed_contents_equal_raw_bytes(shared_server):
    stub = v2_stub(shared_server)
    batch = batch_of(2, 32, 32, seed=11)
    tensor = image_input(batch)
    tensor.contents.uint_contents.extend(batch.ravel().tolist())
    typed = stub.ModelInfer(v2.ModelInferRequest(model_name=NAME, inputs=[tensor]), timeout=30)
    raw = stub.ModelInfer(infer_request(batch), timeout=30)
    assert typed.raw_output_contents == raw.raw_output_contents
    assert translated(typed).shape == (2, 32, 32, 3)


def test_requested_output_and_size_policy_parameter(shared_server):
    stub = v2_stub(shared_server)
    batch = batch_of(1, 30, 34, seed=2)  # not a multiple of 4: padded by default
    output = v2.ModelInferRequest.InferRequestedOutputTensor(name="translated")
    padded = stub.ModelInfer(infer_request(batch, outputs=[output]), timeout=30)
    assert translated(padded).shape == (1, 30, 34, 3)
    assert translated(padded).tobytes() == translate_raw(shared_server.stub(), batch[0]).tobytes()
    request = infer_request(batch)
    request.parameters["size_policy"].string_param = "reject"
    error = rpc_error(lambda: stub.ModelInfer(request, timeout=30))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "30x34" in error.details()


def test_images_of_one_request_run_in_one_batch(start_server):
    server = start_server(max_batch=4, max_delay_ms=200.0)
    reply = v2_stub(server).ModelInfer(infer_request(batch_of(4)), timeout=30)
    assert translated(reply).shape[0] == 4
    samples = server.metrics()
    route = 'direction="A2B",model="tiny"'
    assert samples[f"i2i_inference_exec_total{{{route}}}"] == 1  # one backend run for 4
    assert samples[f"i2i_inference_batch_size_sum{{{route}}}"] == 4
    # Counted as Translate calls are: one request, four images, on the same series.
    assert samples[f'i2i_inference_requests_total{{code="OK",{route}}}'] == 1
    assert samples[f"i2i_inference_images_total{{{route}}}"] == 4
    assert samples[f"i2i_inference_request_duration_seconds_count{{{route}}}"] == 1


# ---- multimodal and multi-domain models


@pytest.fixture(scope="module")
def styled_server(multimodal_model: MultimodalModel) -> Iterator[RunningServer]:
    server = RunningServer(server_config(multimodal_model.repository))
    yield server
    server.close()


def test_style_input_equals_translate_with_the_same_code(styled_server, multimodal_model):
    stub, translator = v2_stub(styled_server), styled_server.stub()
    name = v2_model_name(multimodal_model.name, "A2B")
    size = multimodal_model.style_dim
    meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=name), timeout=10)
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("image", "UINT8", [-1, -1, -1, 3]),
        ("style", "FP32", [-1, size]),
    ]
    config = stub.ModelConfig(v2.ModelConfigRequest(name=name), timeout=10).config
    assert [(i.name, list(i.dims), i.optional) for i in config.input] == [
        ("image", [-1, -1, 3], False),
        ("style", [size], True),
    ]
    batch = batch_of(3, 32, 36, seed=4)
    styles = np.random.default_rng(3).standard_normal((3, size)).astype(np.float32)
    outputs = translated(stub.ModelInfer(infer_request(batch, name, styles=styles), timeout=30))
    for image, code, output in zip(batch, styles, outputs, strict=True):
        style = pb.Style(code=pb.StyleCode(values=code.tolist()))
        expected = translate_raw(translator, image, multimodal_model.name, style=style)
        assert output.tobytes() == expected.tobytes()
    assert not np.array_equal(outputs[0], outputs[1])  # each image got its own row
    # Typed FP32 contents give the same bytes as raw ones.
    style_tensor = Tensor(name="style", datatype="FP32", shape=[3, size])
    style_tensor.contents.fp32_contents.extend(styles.ravel().tolist())
    image_tensor = image_input(batch)
    image_tensor.contents.uint_contents.extend(batch.ravel().tolist())
    typed = v2.ModelInferRequest(model_name=name, inputs=[image_tensor, style_tensor])
    assert translated(stub.ModelInfer(typed, timeout=30)).tobytes() == outputs.tobytes()


def test_style_seed_parameter_equals_translate_with_the_seed(styled_server, multimodal_model):
    stub, translator = v2_stub(styled_server), styled_server.stub()
    name = v2_model_name(multimodal_model.name, "B2A")
    batch = batch_of(2, 32, 32, seed=8)
    request = infer_request(batch, name)
    request.parameters["style_seed"].int64_param = 17
    outputs = translated(stub.ModelInfer(request, timeout=30))
    for image, output in zip(batch, outputs, strict=True):
        expected = translate_raw(
            translator, image, multimodal_model.name, "B2A", style=pb.Style(seed=17)
        )
        assert output.tobytes() == expected.tobytes()


@pytest.fixture(scope="module")
def md_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The toy multi-domain model (tests/multidomain_family.py) as model "domains"."""
    root = tmp_path_factory.mktemp("v2-multidomain")
    checkpoint = multidomain_checkpoint(root / "checkpoints" / "domains.pt")
    with registered():
        export_checkpoint(checkpoint, root / "repository", "domains", formats=["onnx"])
    server = RunningServer(server_config(root / "repository"))
    yield server
    server.close()


def test_multi_domain_targets_are_models_named_to_domain(md_server):
    stub, translator = v2_stub(md_server), md_server.stub()
    batch = batch_of(2, 32, 32, seed=9)
    outputs = {}
    for domain in DOMAINS:
        name = v2_model_name("domains", f"to_{domain}")
        assert name == f"domains_to_{domain}"
        meta = stub.ModelMetadata(v2.ModelMetadataRequest(name=name), timeout=10)
        assert [t.name for t in meta.inputs] == ["image"]  # the target is in the name
        outputs[domain] = translated(stub.ModelInfer(infer_request(batch, name), timeout=30))
        for image, output in zip(batch, outputs[domain], strict=True):
            expected = translate_raw(translator, image, "domains", "", target_domain=domain)
            assert output.tobytes() == expected.tobytes()
    assert not np.array_equal(outputs["day"], outputs["night"])


# ---- bad input and the status codes Triton gives for it

INVALID = grpc.StatusCode.INVALID_ARGUMENT


def _with(request: v2.ModelInferRequest, change) -> v2.ModelInferRequest:
    change(request)
    return request


def _typed_and_raw(request: v2.ModelInferRequest) -> None:
    request.inputs[0].contents.uint_contents.append(1)


def _second_raw(request: v2.ModelInferRequest) -> None:
    request.raw_input_contents.append(b"\0")


def _parameter(name: str, **value):
    def change(request: v2.ModelInferRequest) -> None:
        request.parameters[name].MergeFrom(v2.InferParameter(**value))

    return change


def _output(name: str):
    def change(request: v2.ModelInferRequest) -> None:
        request.outputs.add(name=name)

    return change


GOOD = batch_of(2, 32, 32)
BAD_REQUESTS = {
    "fp32 image": (
        v2.ModelInferRequest(
            model_name=NAME,
            inputs=[image_input(GOOD, datatype="FP32")],
            raw_input_contents=[GOOD.astype(np.float32).tobytes()],
        ),
        "data-type is 'FP32', but model 'tiny_A2B' expects 'UINT8'",
    ),
    "bytes do not match the shape": (
        v2.ModelInferRequest(
            model_name=NAME, inputs=[image_input(GOOD)], raw_input_contents=[GOOD.tobytes()[:-3]]
        ),
        "input byte size mismatch for input 'image' for model 'tiny_A2B'. Expected 6144",
    ),
    "four channels": (
        infer_request(np.zeros((1, 32, 32, 4), np.uint8)),
        "unexpected shape for input 'image' for model 'tiny_A2B'. Expected [N, H, W, 3]",
    ),
    "rank 3": (
        infer_request(GOOD[0]),
        "Expected [N, H, W, 3], got [32, 32, 3]",
    ),
    "unknown input": (
        v2.ModelInferRequest(
            model_name=NAME,
            inputs=[image_input(GOOD), Tensor(name="mask", datatype="UINT8", shape=[2])],
            raw_input_contents=[GOOD.tobytes(), b"\0\0"],
        ),
        "unexpected inference input 'mask' for model 'tiny_A2B'",
    ),
    "style on a unimodal model": (
        infer_request(GOOD, styles=np.zeros((2, 8), np.float32)),
        "unexpected inference input 'style'",
    ),
    "no image": (
        v2.ModelInferRequest(model_name=NAME),
        "expected input 'image'",
    ),
    "unknown output": (
        _with(infer_request(GOOD), _output("mask")),
        "unexpected inference output 'mask' for model 'tiny_A2B'",
    ),
    "batch above max_batch": (
        infer_request(batch_of(5, 32, 32)),
        "inference request batch-size must be <= 4 for 'tiny_A2B'",
    ),
    "typed and raw contents": (
        _with(infer_request(GOOD), _typed_and_raw),
        "contents field must not be specified when using raw_input_contents",
    ),
    "raw contents for a missing input": (
        _with(infer_request(GOOD), _second_raw),
        "raw_input_contents has 2 entries for 1 inputs",
    ),
    "uint8 contents above 255": (
        v2.ModelInferRequest(
            model_name=NAME,
            inputs=[
                Tensor(
                    name="image",
                    datatype="UINT8",
                    shape=[1, 1, 1, 3],
                    contents=v2.InferTensorContents(uint_contents=[1, 2, 300]),
                )
            ],
        ),
        "outside 0..255",
    ),
    "unknown size policy": (
        _with(infer_request(GOOD), _parameter("size_policy", string_param="stretch")),
        "size_policy 'stretch' is unknown",
    ),
    "size policy of the wrong type": (
        _with(infer_request(GOOD), _parameter("size_policy", int64_param=1)),
        "invalid value type for 'size_policy' parameter",
    ),
    "style seed on a unimodal model": (
        _with(infer_request(GOOD), _parameter("style_seed", int64_param=3)),
        "takes no style",
    ),
    "unknown parameter": (
        _with(infer_request(GOOD), _parameter("style_sead", int64_param=3)),
        "unknown request parameter 'style_sead'",
    ),
    "version that is not a number": (
        infer_request(GOOD, model_version="latest"),
        "invalid model version specified 'latest'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_is_invalid_argument_with_tritons_wording(shared_server, case):
    request, message = BAD_REQUESTS[case]
    request.id = f"bad-{case}"
    error = rpc_error(lambda: v2_stub(shared_server).ModelInfer(request, timeout=30))
    assert error.code() == INVALID, error.details()
    assert message in error.details()


def test_timeout_parameter_is_a_deadline(start_server):
    server = start_server(max_batch=1, max_delay_ms=0.0)
    gate = Gate(server)
    stub = v2_stub(server)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(stub.ModelInfer, infer_request(batch_of(1)), timeout=30)
        gate.wait_entered()
        request = infer_request(batch_of(1, seed=1))
        request.parameters["timeout"].int64_param = 300_000  # 0.3 s, waiting behind the gate
        error = rpc_error(lambda: stub.ModelInfer(request, timeout=30))
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        gate.release.set()
        assert translated(held.result(30)).shape[0] == 1
    assert gate.batches == [1]  # the expired request was never computed


def test_tritonclients_reserved_parameters_are_accepted(shared_server):
    request = infer_request(GOOD)
    request.parameters["priority"].uint64_param = 1
    request.parameters["sequence_id"].int64_param = 0
    request.parameters["timeout"].int64_param = 30_000_000
    assert translated(v2_stub(shared_server).ModelInfer(request, timeout=30)).shape[0] == 2


def test_unknown_model_and_version_are_not_found_and_not_ready(shared_server):
    stub = v2_stub(shared_server)
    calls = {
        "infer": lambda name, version: stub.ModelInfer(
            infer_request(GOOD, name, model_version=version), timeout=10
        ),
        "metadata": lambda name, version: stub.ModelMetadata(
            v2.ModelMetadataRequest(name=name, version=version), timeout=10
        ),
        "config": lambda name, version: stub.ModelConfig(
            v2.ModelConfigRequest(name=name, version=version), timeout=10
        ),
    }
    for what, call in calls.items():
        error = rpc_error(lambda call=call: call("tiny_C2D", ""))
        assert error.code() == grpc.StatusCode.NOT_FOUND, what
        assert "Request for unknown model: 'tiny_C2D' is not found" in error.details()
        assert "tiny_A2B, tiny_B2A" in error.details()  # what is served
        error = rpc_error(lambda call=call: call(NAME, "7"))
        assert error.code() == grpc.StatusCode.NOT_FOUND, what
        assert "'tiny_A2B' version 7 is not found; loaded versions: 1" in error.details()
    # As Triton: no model has version 0 or the name "" (NOT_FOUND, not INVALID_ARGUMENT).
    for name, version in ((NAME, "0"), ("", "")):
        error = rpc_error(lambda n=name, v=version: calls["infer"](n, v))
        assert error.code() == grpc.StatusCode.NOT_FOUND, (name, version)
        assert f"Request for unknown model: '{name}'" in error.details()
    error = rpc_error(lambda: stub.ModelMetadata(v2.ModelMetadataRequest(name=NAME, version="x")))
    assert error.code() == INVALID
    # ModelReady of a model or version not served is ready=false, as Triton answers it
    # (tritonclient's is_model_ready returns False); a bad version is still an error.
    for name, version in (("tiny_C2D", ""), (NAME, "7"), (NAME, "0"), ("", "")):
        ready = stub.ModelReady(v2.ModelReadyRequest(name=name, version=version), timeout=10)
        assert ready.ready is False, (name, version)
    error = rpc_error(lambda: stub.ModelReady(v2.ModelReadyRequest(name=NAME, version="x")))
    assert error.code() == INVALID
    # Unknown names are counted under "unknown", never as a label of their own.
    samples = shared_server.metrics()
    assert (
        samples[
            'i2i_inference_requests_total{code="NOT_FOUND",direction="unknown",model="unknown"}'
        ]
        >= 2
    )
    assert not any("tiny_C2D" in key for key in samples)


def test_a_body_that_is_not_the_message_is_invalid_argument(shared_server):
    with shared_server.channel() as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelInfer",
            request_serializer=lambda body: body,
            response_deserializer=v2.ModelInferResponse.FromString,
        )
        error = rpc_error(lambda: call(b"\xff\xff\xff\xff", timeout=10))
    assert error.code() == INVALID
    assert "not a valid inference.ModelInferRequest" in error.details()


def test_rpcs_not_implemented_say_so(shared_server):
    stub = v2_stub(shared_server)
    for call in (
        lambda: stub.ModelStatistics(v2.ModelStatisticsRequest(), timeout=10),
        lambda: stub.RepositoryIndex(v2.RepositoryIndexRequest(), timeout=10),
        lambda: stub.SystemSharedMemoryStatus(v2.SystemSharedMemoryStatusRequest(), timeout=10),
    ):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "is not implemented by i2i-serve" in error.details()


# ---- streams


def test_stream_answers_an_error_in_place_and_goes_on(shared_server):
    stub = v2_stub(shared_server)
    batch = batch_of(1, 32, 32, seed=21)
    requests = [
        infer_request(batch, id="first"),
        infer_request(batch, "tiny_C2D", id="second"),
        infer_request(batch.astype(np.uint8)[:, :, :, :2], id="third"),
        infer_request(batch, "tiny_B2A", id="fourth"),
    ]
    replies = list(stub.ModelStreamInfer(iter(requests), timeout=30))
    assert [r.infer_response.id for r in replies] == ["first", "second", "third", "fourth"]
    assert [bool(r.error_message) for r in replies] == [False, True, True, False]
    assert "Request for unknown model: 'tiny_C2D'" in replies[1].error_message
    assert replies[1].infer_response.model_name == "tiny_C2D"
    assert replies[1].infer_response.parameters["i2i_status"].string_param == "NOT_FOUND"
    assert replies[2].infer_response.parameters["i2i_status"].string_param == "INVALID_ARGUMENT"
    unary = stub.ModelInfer(infer_request(batch, id="first"), timeout=30)
    assert replies[0].infer_response == unary
    assert translated(replies[3].infer_response).shape == (1, 32, 32, 3)


def test_requests_of_one_stream_run_together_and_answer_in_order(start_server):
    server = start_server(max_batch=4, max_delay_ms=300.0)
    stub = v2_stub(server)
    requests = [infer_request(batch_of(1, seed=i), id=str(i)) for i in range(4)]
    replies = list(stub.ModelStreamInfer(iter(requests), timeout=30))
    assert [r.infer_response.id for r in replies] == ["0", "1", "2", "3"]
    for request, reply in zip(requests, replies, strict=True):
        assert reply.infer_response == stub.ModelInfer(request, timeout=30)
    samples = server.metrics()
    # One backend run for the stream's four requests, then four for the unary calls.
    assert samples['i2i_inference_batch_size_bucket{direction="A2B",le="4.0",model="tiny"}'] == 5
    assert samples['i2i_inference_batch_size_bucket{direction="A2B",le="2.0",model="tiny"}'] == 4


# ---- readiness, auth, overload


def test_not_ready_while_loading(tiny_repository, monkeypatch):
    loading, release = threading.Event(), threading.Event()
    real_load = ModelStore.load

    def slow_load(self, *args, **kwargs):
        loading.set()
        assert release.wait(30)
        return real_load(self, *args, **kwargs)

    monkeypatch.setattr(ModelStore, "load", slow_load)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    server = Server(server_config(tiny_repository))
    started = asyncio.run_coroutine_threadsafe(server.start(), loop)
    try:
        assert loading.wait(30)
        # No model yet: the v2 names are those of the empty store ...
        with pytest.raises(NotFound, match="serves no model"):
            server.inference.resolve(NAME, "")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = v2_grpc.GRPCInferenceServiceStub(channel)
            assert stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live is True
            assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready is False
            for call in (
                lambda: stub.ModelInfer(infer_request(GOOD), timeout=10),
                lambda: stub.ModelReady(v2.ModelReadyRequest(name=NAME), timeout=10),
                lambda: stub.ModelMetadata(v2.ModelMetadataRequest(name=NAME), timeout=10),
            ):
                error = rpc_error(call)
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                assert "Server not ready" in error.details()
            release.set()
            started.result(60)
            # ... and those of the loaded models once they appear.
            assert server.inference.resolve(NAME, "").name == NAME
            assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready is True
            assert translated(stub.ModelInfer(infer_request(GOOD), timeout=30)).shape[0] == 2
    finally:
        release.set()
        asyncio.run_coroutine_threadsafe(server.stop(grace=1), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_draining_ends_an_open_stream_with_unavailable(start_server):
    server = start_server(drain_delay_s=3.0)
    stub = v2_stub(server)
    sent: queue.Queue = queue.Queue()
    replies = stub.ModelStreamInfer(iter(sent.get, None), timeout=30)
    sent.put(infer_request(GOOD, id="before"))
    assert next(replies).infer_response.id == "before"
    stopping = asyncio.run_coroutine_threadsafe(server.server.stop(), server.loop)
    deadline = time.monotonic() + 10
    while stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready:
        assert time.monotonic() < deadline, "never stopped being ready"
        time.sleep(0.02)
    assert stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live is True
    sent.put(infer_request(GOOD, id="after"))
    error = rpc_error(lambda: next(replies))
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Server not ready" in error.details()
    sent.put(None)
    stopping.result(30)


def test_token_is_required_for_inference_but_not_liveness(start_server):
    server = start_server(token="s3cret")
    stub = v2_stub(server)
    assert stub.ServerLive(v2.ServerLiveRequest(), timeout=10).live is True
    assert stub.ServerReady(v2.ServerReadyRequest(), timeout=10).ready is True
    for call in (
        lambda: stub.ModelInfer(infer_request(GOOD), timeout=10),
        lambda: stub.ModelMetadata(v2.ModelMetadataRequest(name=NAME), timeout=10),
        lambda: list(stub.ModelStreamInfer(iter([infer_request(GOOD)]), timeout=10)),
        lambda: list(stub.ModelStreamInfer(iter([]), timeout=10)),  # refused before a request
        lambda: stub.ModelInfer(
            infer_request(GOOD), metadata=[("authorization", "Bearer wrong")], timeout=10
        ),
    ):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    token = [("authorization", "Bearer s3cret")]
    assert translated(stub.ModelInfer(infer_request(GOOD), metadata=token, timeout=30)).size
    (reply,) = stub.ModelStreamInfer(iter([infer_request(GOOD)]), metadata=token, timeout=30)
    assert not reply.error_message and translated(reply.infer_response).shape[0] == 2


def test_overload_is_resource_exhausted_with_retry_advice(start_server):
    server = start_server(max_batch=1, max_delay_ms=0.0, max_concurrent_rpcs=1)
    gate = Gate(server)
    stub = v2_stub(server)
    one = batch_of(1, 32, 32)
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(stub.ModelInfer, infer_request(one), timeout=30)
        gate.wait_entered()
        # The limit counts Translate and ModelInfer calls together.
        for call in (
            lambda: stub.ModelInfer(infer_request(one), timeout=30),
            lambda: server.stub().Translate(
                pb.TranslateRequest(
                    model=MODEL,
                    direction="A2B",
                    image=pb.Image(
                        raw=pb.RawImage(pixels=one.tobytes(), height=32, width=32, channels=3)
                    ),
                ),
                timeout=30,
            ),
        ):
            error = rpc_error(call)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-concurrent-rpcs" in error.details()
            trailers = dict(error.trailing_metadata())
            assert trailers.get("i2i-retryable") == "true"
            assert "grpc-retry-pushback-ms" not in trailers
        # In a stream the refusal is the request's answer, with the advice as parameters.
        (reply,) = stub.ModelStreamInfer(iter([infer_request(one, id="s")]), timeout=30)
        assert "--max-concurrent-rpcs" in reply.error_message
        assert reply.infer_response.parameters["i2i_status"].string_param == "RESOURCE_EXHAUSTED"
        assert reply.infer_response.parameters["i2i_retryable"].bool_param is True
        gate.release.set()
        assert translated(held.result(30)).shape[0] == 1
    # Every call, refused or answered, of either service left the in-flight count: the
    # slot is free again.
    assert translated(stub.ModelInfer(infer_request(one), timeout=30)).shape[0] == 1
    samples = server.metrics()
    assert samples["i2i_inference_in_flight_requests{}"] == 0
    # Refused before the request is read, so under "unknown" (as Translate counts them).
    unknown = 'direction="unknown",model="unknown"'
    assert samples[f'i2i_inference_requests_total{{code="RESOURCE_EXHAUSTED",{unknown}}}'] == 3
    assert samples['i2i_inference_requests_total{code="OK",direction="A2B",model="tiny"}'] == 2


def test_full_queue_is_resource_exhausted(start_server):
    server = start_server(max_batch=1, max_queue=2, max_delay_ms=40.0)
    gate = Gate(server)
    stub = v2_stub(server)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(stub.ModelInfer, infer_request(batch_of(1)), timeout=30)
        gate.wait_entered()
        queued = pool.submit(stub.ModelInfer, infer_request(batch_of(2)[:1]), timeout=30)
        queued2 = pool.submit(stub.ModelInfer, infer_request(batch_of(1, seed=3)), timeout=30)
        deadline = time.monotonic() + 10
        while server.server.store.direction(MODEL, None, "A2B").batcher.queue_depth < 2:
            assert time.monotonic() < deadline, "requests never queued"
            time.sleep(0.01)
        error = rpc_error(lambda: stub.ModelInfer(infer_request(batch_of(1)), timeout=30))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue" in error.details()
        assert dict(error.trailing_metadata()).get("i2i-retryable") == "true"
        gate.release.set()
        assert all(translated(f.result(30)).size for f in (running, queued, queued2))


def test_a_bug_is_internal_with_the_request_id_on_both_services(start_server):
    """An exception that is not a ServingError (a bug) ends either RPC as INTERNAL naming
    the request and the exception, is counted, and leaves the server serving."""
    server = start_server()
    pipeline = server.server.pipeline
    real = pipeline.translate

    async def broken(*args, **kwargs):
        raise RuntimeError("injected bug")

    pipeline.translate = broken
    with pytest.raises(grpc.RpcError) as caught:
        server.stub().Translate(translate_request(sample_image(), request_id="bug-1"), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert (
        "the server failed on request bug-1: RuntimeError: injected bug" in caught.value.details()
    )
    stub = v2_stub(server)
    error = rpc_error(lambda: stub.ModelInfer(infer_request(batch_of(1), id="bug-2"), timeout=30))
    assert error.code() == grpc.StatusCode.INTERNAL
    assert "the server failed on request bug-2: RuntimeError: injected bug" in error.details()
    counted = server.metrics()[
        'i2i_inference_requests_total{code="INTERNAL",direction="A2B",model="tiny"}'
    ]
    assert counted == 2
    pipeline.translate = real
    assert translated(stub.ModelInfer(infer_request(batch_of(1)), timeout=30)).shape == (
        1,
        32,
        48,
        3,
    )
