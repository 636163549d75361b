"""A real gRPC server on 127.0.0.1 with a small fake Translator, for the client's tests.

The fake inverts images (sample k: 255 - x + k), can be told to fail the next calls with a
chosen status code (with or without the trailers `i2i-retryable` and `grpc-retry-pushback-ms`
the real server sends) or to answer slowly, and checks the bearer token when it has one.
"""

from __future__ import annotations

import io
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from PIL import Image

from i2i.v1 import translator_pb2 as pb
from i2i.v1 import translator_pb2_grpc as pb_grpc

MODEL = "fake"
DIRECTIONS = ("A2B", "B2A")
STYLE_SIZE = 3
FOREVER = -1
PIL_FORMATS = {
    pb.IMAGE_FORMAT_PNG: "PNG",
    pb.IMAGE_FORMAT_JPEG: "JPEG",
    pb.IMAGE_FORMAT_WEBP: "WEBP",
}


def encode(pixels: np.ndarray, fmt: str = "PNG") -> bytes:
    """An (H, W, C) uint8 array as an image file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, fmt)
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    """An image file's bytes as an (H, W, C) uint8 array."""
    pixels = np.asarray(Image.open(io.BytesIO(data)))
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def random_image(size: int = 16, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size + 4, channels), dtype=np.uint8)


@dataclass(frozen=True)
class Failure:
    """A status to answer with, and the trailers to send with it."""

    code: grpc.StatusCode
    trailers: tuple[tuple[str, str], ...]


class FakeTranslator(pb_grpc.TranslatorServicer):
    """Inverts images; fails, delays and checks tokens on request. Counts Translate attempts
    and the streams opened, and keeps each attempt's `grpc-previous-rpc-attempts` header
    (gRPC's retry policy sends it on every retry: None, "1", "2", ...)."""

    def __init__(self) -> None:
        self.token: str | None = None
        self.attempts = 0
        self.previous_attempts: list[str | None] = []
        self.streams = 0
        self.authorization: list[str] = []
        self.delay_s = 0.0
        self.released = threading.Event()  # set at shutdown: slow answers stop waiting
        self._failures: list[Failure] = []
        self._fail_forever: Failure | None = None
        self._lock = threading.Lock()

    def fail(
        self,
        code: grpc.StatusCode,
        times: int = 1,
        retryable: str | None = None,
        pushback_ms: str | None = None,
    ) -> None:
        """Fail the next `times` calls (FOREVER: all) with `code`, and the trailers
        `i2i-retryable: <retryable>` and `grpc-retry-pushback-ms: <pushback_ms>` if given."""
        trailers = [("i2i-retryable", retryable), ("grpc-retry-pushback-ms", pushback_ms)]
        failure = Failure(code, tuple((k, v) for k, v in trailers if v is not None))
        if times == FOREVER:
            self._fail_forever = failure
        else:
            self._failures.extend([failure] * times)

    def _next_failure(self) -> Failure | None:
        with self._lock:
            return self._failures.pop(0) if self._failures else self._fail_forever

    @staticmethod
    def _abort(context: grpc.ServicerContext, failure: Failure) -> None:
        if failure.trailers:
            context.set_trailing_metadata(failure.trailers)
        context.abort(failure.code, f"told to fail with {failure.code.name}")

    def _check_token(self, context: grpc.ServicerContext) -> None:
        auth = dict(context.invocation_metadata()).get("authorization", "")
        with self._lock:
            self.authorization.append(str(auth))
        if self.token is not None and auth != f"Bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required")

    def _translate(
        self, request: pb.TranslateRequest, context: grpc.ServicerContext
    ) -> pb.TranslateResponse:
        if request.model != MODEL or request.direction not in DIRECTIONS:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no {request.model}/{request.direction}")
        kind = request.image.WhichOneof("data")
        if kind == "raw":
            raw = request.image.raw
            pixels = np.frombuffer(raw.pixels, np.uint8).reshape(
                raw.height, raw.width, raw.channels
            )
        else:
            try:
                pixels = decode(request.image.encoded)
            except Exception as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"cannot decode the image: {exc}")
        fmt = request.output.format or (
            pb.IMAGE_FORMAT_RAW if kind == "raw" else pb.IMAGE_FORMAT_PNG
        )
        images = []
        for k in range(max(1, request.num_samples)):
            out = (255 - pixels.astype(np.int16) + k).clip(0, 255).astype(np.uint8)
            if fmt == pb.IMAGE_FORMAT_RAW:
                h, w, c = out.shape
                images.append(
                    pb.Image(raw=pb.RawImage(pixels=out.tobytes(), height=h, width=w, channels=c))
                )
            else:
                images.append(pb.Image(encoded=encode(out, PIL_FORMATS[fmt])))
        return pb.TranslateResponse(
            images=images,
            model=request.model,
            version=request.version or 1,
            direction=request.direction,
            request_id=request.request_id or "server-made",
            timing=pb.Timing(queue_ms=1.0, compute_ms=2.0, total_ms=4.0),
            batch_size=1,
        )

    def Translate(  # noqa: N802 (the generated servicer's name)
        self, request: pb.TranslateRequest, context: grpc.ServicerContext
    ) -> pb.TranslateResponse:
        self._check_token(context)
        with self._lock:
            self.attempts += 1
            previous = dict(context.invocation_metadata()).get("grpc-previous-rpc-attempts")
            self.previous_attempts.append(None if previous is None else str(previous))
        failure = self._next_failure()
        if failure is not None:
            self._abort(context, failure)
        if self.delay_s:
            self.released.wait(self.delay_s)
        return self._translate(request, context)

    def TranslateStream(  # noqa: N802
        self, request_iterator: Iterator[pb.TranslateRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.TranslateResponse]:
        self._check_token(context)
        with self._lock:
            self.streams += 1
        for request in request_iterator:
            failure = self._next_failure()
            if failure is not None:
                self._abort(context, failure)
            yield self._translate(request, context)

    def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest, context: grpc.ServicerContext
    ) -> pb.ListModelsResponse:
        self._check_token(context)
        return pb.ListModelsResponse(models=[model_info()])

    def GetModel(  # noqa: N802
        self, request: pb.GetModelRequest, context: grpc.ServicerContext
    ) -> pb.ModelInfo:
        self._check_token(context)
        if request.model != MODEL:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model!r}; loaded: fake")
        return model_info()


def model_info() -> pb.ModelInfo:
    # Multimodal, as its answers are: K samples per image, any style accepted.
    directions = [
        pb.DirectionInfo(
            name=d,
            input_channels=3,
            output_channels=3,
            backend="fake",
            style_size=STYLE_SIZE,
            style_encoder=True,
        )
        for d in DIRECTIONS
    ]
    return pb.ModelInfo(
        name=MODEL, version=1, family="cyclegan", domains=["A", "B"], directions=directions
    )


@dataclass
class FakeServer:
    target: str
    servicer: FakeTranslator
    health: health.HealthServicer


def start_server(
    credentials: grpc.ServerCredentials | None = None,
) -> tuple[grpc.Server, FakeServer]:
    """A started server on a free port of 127.0.0.1 with the fake and the health service."""
    servicer = FakeTranslator()
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("i2i.v1.Translator", health_pb2.HealthCheckResponse.NOT_SERVING)
    server = grpc.server(ThreadPoolExecutor(max_workers=8))
    pb_grpc.add_TranslatorServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    host = "127.0.0.1" if credentials is None else "localhost"  # TLS: the certificate's name
    return server, FakeServer(f"{host}:{port}", servicer, health_servicer)


@pytest.fixture
def fake_server() -> Iterator[FakeServer]:
    server, running = start_server()
    yield running
    running.servicer.released.set()
    server.stop(0)


def self_signed_certificate(folder: Path) -> tuple[bytes, bytes]:
    """(key PEM, certificate PEM) for "localhost", made with the openssl command."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key.read_bytes(), cert.read_bytes()
