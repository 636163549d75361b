"""A real i2i server on 127.0.0.1 serving the tiny model with ONNX Runtime, called over gRPC."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from PIL import Image

from i2i.v1 import translator_pb2 as pb
from i2i.v1 import translator_pb2_grpc as pb_grpc
from tests.serving.conftest import MODEL, png_bytes, sample_image


def ort_translate(repository: Path, direction: str, pixels: np.ndarray) -> np.ndarray:
    """The tiny model's FP32 ONNX graph run directly: (H, W, 3) -> (H, W, 3)."""
    session = ort.InferenceSession(
        str(repository / MODEL / "1" / f"{direction}.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"image": pixels[None]})[0][0]


def request(pixels: np.ndarray, direction: str = "A2B", **fields) -> pb.TranslateRequest:
    return pb.TranslateRequest(
        model=MODEL, direction=direction, image=pb.Image(encoded=png_bytes(pixels)), **fields
    )


def decode(image: pb.Image) -> np.ndarray:
    if image.WhichOneof("data") == "raw":
        raw = image.raw
        return np.frombuffer(raw.pixels, np.uint8).reshape(raw.height, raw.width, raw.channels)
    return np.asarray(Image.open(io.BytesIO(image.encoded)))


def test_translate_equals_onnxruntime(shared_server, tiny_repository):
    stub = shared_server.stub()
    for direction, seed in (("A2B", 1), ("B2A", 2)):
        pixels = sample_image(32, 48, seed)
        reply = stub.Translate(request(pixels, direction, request_id="r-1"), timeout=30)
        assert (reply.model, reply.version, reply.direction) == (MODEL, 1, direction)
        assert reply.request_id == "r-1"
        assert len(reply.images) == 1 and reply.batch_size >= 1
        assert reply.timing.total_ms >= reply.timing.compute_ms > 0
        np.testing.assert_array_equal(
            decode(reply.images[0]), ort_translate(tiny_repository, direction, pixels)
        )


def test_raw_pixels_in_and_out(shared_server, tiny_repository):
    pixels = sample_image(36, 40, seed=3)
    raw = pb.RawImage(pixels=pixels.tobytes(), height=36, width=40, channels=3)
    reply = shared_server.stub().Translate(
        pb.TranslateRequest(model=MODEL, direction="A2B", image=pb.Image(raw=raw)), timeout=30
    )
    out = decode(reply.images[0])  # raw in → raw out by default
    assert reply.images[0].WhichOneof("data") == "raw"
    np.testing.assert_array_equal(out, ort_translate(tiny_repository, "A2B", pixels))


def test_size_policies(shared_server, tiny_repository):
    stub = shared_server.stub()
    pixels = sample_image(30, 34, seed=4)  # not a multiple of 4
    padded = stub.Translate(request(pixels), timeout=30)
    assert decode(padded.images[0]).shape == (30, 34, 3)
    # Pad reflects up to 32x36: the translated crop equals translating the padded image.
    big = np.pad(pixels, ((0, 2), (0, 2), (0, 0)), mode="reflect")
    expected = ort_translate(tiny_repository, "A2B", big)[:30, :34]
    np.testing.assert_array_equal(decode(padded.images[0]), expected)
    resized = stub.Translate(request(pixels, size_policy=pb.SIZE_POLICY_RESIZE), timeout=30)
    assert decode(resized.images[0]).shape == (30, 34, 3)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Translate(request(pixels, size_policy=pb.SIZE_POLICY_REJECT), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "32x36" in caught.value.details()


def test_output_formats(shared_server):
    stub = shared_server.stub()
    pixels = sample_image(32, 32, seed=5)
    lossless = decode(stub.Translate(request(pixels), timeout=30).images[0]).astype(int)

    def translated(fmt: int, quality: int) -> tuple[str, np.ndarray]:
        options = pb.OutputOptions(format=fmt, quality=quality)
        reply = stub.Translate(request(pixels, output=options), timeout=30)
        image = Image.open(io.BytesIO(reply.images[0].encoded))
        return image.format, np.asarray(image.convert("RGB")).astype(int)

    fmt, webp = translated(pb.IMAGE_FORMAT_WEBP, 100)  # quality 100 is lossless WebP
    assert fmt == "WEBP"
    np.testing.assert_array_equal(webp, lossless)
    for fmt_id, name in ((pb.IMAGE_FORMAT_JPEG, "JPEG"), (pb.IMAGE_FORMAT_WEBP, "WEBP")):
        fmt, good = translated(fmt_id, 95)
        _, poor = translated(fmt_id, 10)
        assert fmt == name
        assert np.abs(good - lossless).mean() < np.abs(poor - lossless).mean()


def test_stream_answers_in_order(shared_server, tiny_repository):
    frames = [sample_image(32, 32, seed=10 + i) for i in range(5)]
    replies = list(
        shared_server.stub().TranslateStream(
            iter(request(f, request_id=f"frame-{i}") for i, f in enumerate(frames)), timeout=60
        )
    )
    assert [r.request_id for r in replies] == [f"frame-{i}" for i in range(5)]
    for frame, reply in zip(frames, replies, strict=True):
        np.testing.assert_array_equal(
            decode(reply.images[0]), ort_translate(tiny_repository, "A2B", frame)
        )


def test_stream_error_ends_the_stream_with_its_code(shared_server):
    messages = [request(sample_image()), request(sample_image(), direction="nope")]
    replies = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in shared_server.stub().TranslateStream(iter(messages), timeout=30):
            replies.append(reply)
    assert len(replies) == 1
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_list_and_get_model(shared_server):
    stub = shared_server.stub()
    models = stub.ListModels(pb.ListModelsRequest(), timeout=10).models
    assert [(m.name, m.version, m.family) for m in models] == [(MODEL, 1, "cyclegan")]
    info = stub.GetModel(pb.GetModelRequest(model=MODEL), timeout=10)
    assert sorted(d.name for d in info.directions) == ["A2B", "B2A"]
    a2b = next(d for d in info.directions if d.name == "A2B")
    assert (a2b.input_channels, a2b.output_channels, a2b.style_size) == (3, 3, 0)
    assert a2b.shape_rule.multiple_of == 4 and a2b.shape_rule.fixed_size == 0
    assert a2b.shape_rule.min_size == 8  # a ResNet generator's padding needs 8
    assert a2b.backend == "onnxruntime-cpu" and a2b.artifact == "A2B.onnx"
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(pb.GetModelRequest(model=MODEL, version=7), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "loaded versions: 1" in caught.value.details()


def test_health_and_reflection(shared_server):
    assert shared_server.health() == "SERVING"
    assert shared_server.health("i2i.v1.Translator") == "SERVING"
    with shared_server.channel() as channel:
        services = ProtoReflectionDescriptorDatabase(channel).get_services()
    assert {"i2i.v1.Translator", "grpc.health.v1.Health"} <= set(services)
    reflections = {
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
    assert reflections <= set(services)


def test_reflection_v1_answers_beside_v1alpha(shared_server):
    # v1 (what grpcurl asks first) has v1alpha's messages, field for field.
    ask, answer = reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    asks = [
        ask(list_services=""),
        ask(file_containing_symbol="i2i.v1.Translator"),
        ask(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
    ]
    with shared_server.channel() as channel:
        call = channel.stream_stream(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            request_serializer=ask.SerializeToString,
            response_deserializer=answer.FromString,
        )
        listed, translator, reflection = list(call(iter(asks), timeout=10))
    names = {service.name for service in listed.list_services_response.service}
    assert {"i2i.v1.Translator", "grpc.reflection.v1.ServerReflection"} <= names
    for reply, package in ((translator, "i2i.v1"), (reflection, "grpc.reflection.v1")):
        assert reply.WhichOneof("message_response") == "file_descriptor_response", reply
        files = reply.file_descriptor_response.file_descriptor_proto
        protos = [descriptor_pb2.FileDescriptorProto.FromString(f) for f in files]
        assert package in {proto.package for proto in protos}


def test_concurrent_calls_form_batches(start_server, tiny_repository):
    server = start_server(max_batch=4, max_delay_ms=300.0)
    stub = server.stub()
    pixels = [sample_image(32, 32, seed=20 + i) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda p: stub.Translate(request(p), timeout=30), pixels))
    assert max(r.batch_size for r in replies) > 1
    for p, reply in zip(pixels, replies, strict=True):  # batching does not mix up outputs
        np.testing.assert_array_equal(
            decode(reply.images[0]), ort_translate(tiny_repository, "A2B", p)
        )
    samples = server.metrics()
    labels = 'direction="A2B",model="tiny"'
    batches = samples[f"i2i_inference_batch_size_count{{{labels}}}"]
    assert samples[f"i2i_inference_batch_size_sum{{{labels}}}"] == 8
    assert batches < 8  # fewer batches than requests: they were batched
    assert samples[f'i2i_inference_requests_total{{code="OK",{labels}}}'] == 8


def test_batches_hold_at_most_max_batch_pixels(start_server):
    # Room for two 32x32 images per batch although max_batch is 4.
    server = start_server(max_batch=4, max_delay_ms=0.0, max_batch_pixels=2 * 32 * 32)
    gate = Gate(server)
    stub = server.stub()
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(stub.Translate, request(sample_image()), timeout=30)
        gate.wait_entered()  # computing; five more wait for the slot
        waiting = [pool.submit(stub.Translate, request(sample_image())) for _ in range(5)]
        deadline = time.monotonic() + 10
        while server.server.store.direction(MODEL, None, "A2B").batcher.queue_depth < 5:
            assert time.monotonic() < deadline, "requests never queued"
            time.sleep(0.01)
        gate.release.set()
        replies = [first.result(30)] + [w.result(30) for w in waiting]
    assert gate.batches == [1, 2, 2, 1]  # not [1, 4, 1]: the pixel bound closes batches
    assert sorted(r.batch_size for r in replies) == [1, 1, 2, 2, 2, 2]
    # A request larger than the bound on its own still runs, alone.
    big = stub.Translate(request(sample_image(48, 48)), timeout=30)
    assert big.batch_size == 1 and decode(big.images[0]).shape == (48, 48, 3)


class Gate:
    """Holds a direction's backend inside `run` until released; records what it computed."""

    def __init__(self, server, direction: str = "A2B") -> None:
        loaded = server.server.store.direction(MODEL, None, direction)
        self.backend = loaded.backend
        self.real_run = self.backend.run
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()
        self.batches: list[int] = []
        self.backend.run = self.run

    def run(self, images, style=None):
        self.batches.append(len(images))
        self.entered.release()
        assert self.release.wait(30), "the test never released the gate"
        return self.real_run(images, style)

    def wait_entered(self) -> None:
        assert self.entered.acquire(timeout=30), "no batch reached the backend"


def test_full_queue_is_refused_at_once(start_server):
    server = start_server(max_batch=1, max_queue=2, max_delay_ms=40.0)
    gate = Gate(server)
    stub = server.stub()
    with ThreadPoolExecutor(4) as pool:
        running = pool.submit(stub.Translate, request(sample_image()), timeout=30)
        gate.wait_entered()  # one request computing; two more fill the queue
        queued = [
            pool.submit(stub.Translate, request(sample_image()), timeout=30) for _ in range(2)
        ]
        deadline = time.monotonic() + 10
        while server.server.store.direction(MODEL, None, "A2B").batcher.queue_depth < 2:
            assert time.monotonic() < deadline, "requests never queued"
            time.sleep(0.01)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Translate(request(sample_image()), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "queue" in caught.value.details()
        trailers = dict(caught.value.trailing_metadata())
        assert trailers.get("i2i-retryable") == "true"
        # No pushback: each client waits its own jittered backoff (gRPC's retry policy).
        assert "grpc-retry-pushback-ms" not in trailers
        samples = server.metrics()
        assert samples['i2i_inference_pending_requests{direction="A2B",model="tiny"}'] == 2
        assert samples["i2i_inference_in_flight_requests{}"] == 3  # 1 computing, 2 queued
        gate.release.set()
        assert running.result(30).images and all(q.result(30).images for q in queued)
    assert gate.batches == [1, 1, 1]
    assert server.health() == "SERVING"


def test_deadline_and_cancellation_cost_no_compute(start_server):
    server = start_server(max_batch=1, max_delay_ms=0.0)
    gate = Gate(server)
    stub = server.stub()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(stub.Translate, request(sample_image()), timeout=30)
        gate.wait_entered()
        with pytest.raises(grpc.RpcError) as caught:  # waits behind the held batch
            stub.Translate(request(sample_image(seed=1)), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        cancelled = stub.Translate.future(request(sample_image(seed=2)), timeout=30)
        time.sleep(0.3)  # let it reach the queue
        assert cancelled.cancel()
        time.sleep(0.3)
        gate.release.set()
        assert first.result(30).images
    assert stub.Translate(request(sample_image(seed=3)), timeout=30).images
    assert gate.batches == [1, 1]  # the first and the last: neither dropped one was computed
    samples = server.metrics()
    route = 'direction="A2B",model="tiny"'
    assert samples[f'i2i_inference_requests_total{{code="DEADLINE_EXCEEDED",{route}}}'] == 1
    assert samples[f'i2i_inference_requests_total{{code="CANCELLED",{route}}}'] == 1
    assert samples[f'i2i_inference_requests_total{{code="OK",{route}}}'] == 2
    assert samples[f"i2i_inference_expired_total{{{route}}}"] == 2


def test_concurrency_limit_spares_health_checks(start_server):
    server = start_server(max_batch=1, max_delay_ms=0.0, max_concurrent_rpcs=1)
    gate = Gate(server)
    stub = server.stub()
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(stub.Translate, request(sample_image()), timeout=30)
        gate.wait_entered()
        with pytest.raises(grpc.RpcError) as caught:
            stub.Translate(request(sample_image()), timeout=30)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-concurrent-rpcs" in caught.value.details()
        trailers = dict(caught.value.trailing_metadata())
        assert trailers.get("i2i-retryable") == "true" and "grpc-retry-pushback-ms" not in trailers
        assert server.health() == "SERVING"  # probes are never limited
        gate.release.set()
        assert held.result(30).images


def test_raw_reply_too_large_is_refused_before_compute(start_server):
    server = start_server(max_message_mb=0.25)
    gate = Gate(server)
    gate.release.set()
    smooth = np.broadcast_to(np.arange(320, dtype=np.uint8)[None, :, None], (320, 320, 3))
    message = request(
        np.ascontiguousarray(smooth), output=pb.OutputOptions(format=pb.IMAGE_FORMAT_RAW)
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.stub().Translate(message, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "PNG" in caught.value.details()
    trailers = dict(caught.value.trailing_metadata())
    assert trailers.get("i2i-retryable") == "false"
    assert trailers.get("grpc-retry-pushback-ms") == "-1"
    assert gate.batches == []


def test_images_are_decoded_and_encoded_off_the_event_loop(start_server, monkeypatch):
    from i2i.serving import images

    server = start_server()
    threads = []
    for name in ("decode_image", "encode_image"):
        real = getattr(images, name)

        def recording(*args, real=real, **kwargs):
            threads.append(threading.get_ident())
            return real(*args, **kwargs)

        monkeypatch.setattr(images, name, recording)
    assert server.stub().Translate(request(sample_image()), timeout=30).images
    assert len(threads) == 2 and server.thread.ident not in threads


def test_backend_failure_fails_only_its_batch(start_server, tiny_repository):
    server = start_server(max_batch=4, max_delay_ms=100.0)
    backend = server.server.store.direction(MODEL, None, "A2B").backend
    real_run = backend.run

    def run(images, style=None):
        if images.shape[1] == 40:  # the poisoned shape
            raise RuntimeError("injected failure")
        return real_run(images, style)

    backend.run = run
    stub = server.stub()
    good = [sample_image(32, 32, seed=30 + i) for i in range(3)]
    with ThreadPoolExecutor(6) as pool:
        bad = [pool.submit(stub.Translate, request(sample_image(40, 32)), timeout=30)]
        oks = [pool.submit(stub.Translate, request(p), timeout=30) for p in good]
        for future in bad:
            with pytest.raises(grpc.RpcError) as caught:
                future.result(30)
            assert caught.value.code() == grpc.StatusCode.INTERNAL
            assert "injected failure" in caught.value.details()
        for p, future in zip(good, oks, strict=True):
            np.testing.assert_array_equal(
                decode(future.result(30).images[0]), ort_translate(tiny_repository, "A2B", p)
            )
    assert server.health() == "SERVING"
    backend.run = real_run  # the server carries on: the same shape works once the fault is gone
    assert len(stub.Translate(request(sample_image(40, 32)), timeout=30).images) == 1
    samples = server.metrics()
    assert (
        samples['i2i_inference_requests_total{code="INTERNAL",direction="A2B",model="tiny"}'] == 1
    )


def test_aged_connections_are_replaced_without_failing_calls(start_server):
    server = start_server(max_connection_age_s=0.5)
    channel = server.channel()
    states: list[grpc.ChannelConnectivity] = []
    channel.subscribe(states.append)
    stub = pb_grpc.TranslatorStub(channel)
    for _ in range(3):  # the server closes the connection; the channel reconnects by itself
        assert stub.Translate(request(sample_image()), timeout=30).images
        time.sleep(1.0)
    channel.close()
    ready = [s for s in states if s == grpc.ChannelConnectivity.READY]
    assert len(ready) >= 2, states  # connected more than once: the server aged the first out


def test_logs_carry_the_request_id(shared_server, caplog):
    import json
    import logging

    from i2i.serving.server import JsonFormatter

    caplog.set_level(logging.INFO, logger="i2i.serving")
    with pytest.raises(grpc.RpcError):
        shared_server.stub().Translate(
            request(sample_image(), direction="C2D", request_id="trace-me\nforged"), timeout=30
        )
    records = [r for r in caplog.records if getattr(r, "request_id", None) == "trace-me_forged"]
    assert records, "no log record carries the (sanitised) request id"
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["request_id"] == "trace-me_forged" and line["level"] == "INFO"
    assert "NOT_FOUND" in line["message"] and "\n" not in line["message"]
