"""The Open Inference Protocol (KServe v2) service of a real i2i server on 127.0.0.1.

Called with the generated `inference.GRPCInferenceService` stubs: metadata and config,
ModelInfer with raw bytes and typed contents (byte for byte what Translate gives), batches,
multimodal styles, multi-domain targets, bad inputs and the status codes Triton gives for
them, readiness, streams, auth and overload.
"""

from __future__ import annotations

import grpc
import numpy as np
import pytest

import i2i
from i2i.oip import grpc_service_pb2 as v2
from i2i.oip import grpc_service_pb2_grpc as v2_grpc
from i2i.oip import model_config_pb2 as mc
from i2i.serving.inference import v2_model_name
from i2i.v1 import translator_pb2 as pb
from tests.serving.conftest import MODEL, RunningServer, sample_image
from tests.serving.test_server import decode

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
