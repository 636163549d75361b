"""What the clients send and get back: requests from Python values, results, errors, retry rules.

Shared by the sync and the asyncio client, so both build the same messages and open their
channels with the same options, gRPC's own retry policy (gRFC A6) included.
"""

from __future__ import annotations

import enum
import json
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import grpc
import numpy as np
from grpc_health.v1 import health_pb2_grpc

from i2i.v1 import translator_pb2 as pb
from i2i.v1 import translator_pb2_grpc as pb_grpc

OUTPUT_FORMATS: dict[str | None, pb.ImageFormat] = {
    None: pb.IMAGE_FORMAT_UNSPECIFIED,
    "png": pb.IMAGE_FORMAT_PNG,
    "jpeg": pb.IMAGE_FORMAT_JPEG,
    "webp": pb.IMAGE_FORMAT_WEBP,
    "raw": pb.IMAGE_FORMAT_RAW,
}
SIZE_POLICIES: dict[str, pb.SizePolicy] = {
    "pad": pb.SIZE_POLICY_PAD,
    "resize": pb.SIZE_POLICY_RESIZE,
    "reject": pb.SIZE_POLICY_REJECT,
}
# Retrying can help only when the server is starting, draining or its queue is full. An image
# too large is RESOURCE_EXHAUSTED too: the server then sends the trailer
# `grpc-retry-pushback-ms: -1`, which tells gRPC's retry policy not to retry (gRFC A6).
RETRYABLE_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED")
# The unary methods gRPC retries. Streams are left out: a stream's frames are not replayed.
RETRIED_METHODS = (
    ("i2i.v1.Translator", "Translate"),
    ("i2i.v1.Translator", "ListModels"),
    ("i2i.v1.Translator", "GetModel"),
    ("grpc.health.v1.Health", "Check"),
)
# gRPC clamps a retry policy's maxAttempts to 5 (src/core/client_channel/retry_service_config.cc).
MAX_RETRIES = 4
# grpcio 1.85 measured: a retry due within ~1.5 ms often never starts, and the call waits for
# its deadline (DEADLINE_EXCEEDED) instead; from 2 ms on it did not happen in 200 tries.
MIN_BACKOFF_S = 0.01
DEFAULT_MAX_MESSAGE_BYTES = 32 << 20  # the server's default --max-message-mb

# An image file's bytes, a uint8 array, or the path of an image file (read when sent).
ImageInput = bytes | np.ndarray | os.PathLike[str]


class _Default(enum.Enum):
    TIMEOUT = "the client's default timeout"


# A call's `timeout` when the caller gives none: the client's own (None means no deadline).
DEFAULT_TIMEOUT: Final = _Default.TIMEOUT
Timeout = float | None | _Default


class TranslateError(Exception):
    """A call to the i2i server failed, after any retries.

    Not a `grpc.RpcError`: `.code` is an attribute here (grpc's is a method). The original
    `grpc.RpcError` is the exception's `__cause__`.

    Attributes:
        code: the gRPC status code, e.g. `grpc.StatusCode.INVALID_ARGUMENT`.
        details: the server's message (what was wrong, what to do).
        request_id: the request's id ("" for calls that have none, such as `list_models`).
    """

    def __init__(self, code: grpc.StatusCode, details: str, request_id: str = "") -> None:
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"{code.name}: {details}{where}")
        self.code = code
        self.details = details
        self.request_id = request_id


@dataclass(frozen=True)
class Timing:
    """Where a request's time went on the server, in milliseconds."""

    queue_ms: float
    compute_ms: float
    total_ms: float


@dataclass(frozen=True)
class TranslateResult:
    """A translation: one image per sample, plus what computed it and how long it took.

    `images` holds the encoded files' bytes (PNG, JPEG, WebP), or uint8 arrays of shape
    (H, W, C) when the output is raw pixels.
    """

    images: list[bytes | np.ndarray]
    request_id: str
    model: str
    version: int
    direction: str
    timing: Timing
    batch_size: int


@dataclass(frozen=True)
class Frame:
    """One translation request, with the same fields as `Client.translate`'s arguments.

    `translate_stream` takes an iterable of these (the frames of a video, say); `translate`
    builds one from its arguments.
    """

    image: ImageInput
    model: str
    direction: str = ""  # e.g. "A2B"; may be empty when target_domain is set
    version: int = 0
    output_format: str | None = None
    quality: int = 0
    size_policy: str = "pad"
    num_samples: int = 1
    style_seed: int | None = None
    style_code: Sequence[float] | None = None
    style_reference: ImageInput | None = None
    # Made by the client when empty, so errors and retries carry the same id.
    request_id: str = field(default="")
    # Multi-domain models: the domain to translate into (the same as direction "to_<domain>").
    target_domain: str = ""


def image_message(image: ImageInput, what: str = "image") -> pb.Image:
    """Encoded bytes as `Image.encoded`; a uint8 (H, W, C) array as `Image.raw`; a path
    (`pathlib.Path`) as its file's bytes.

    Bytes are sent as they are, empty ones too: whether they are an image the server can
    decode is the server's answer (INVALID_ARGUMENT, a `TranslateError`), as for any file.

    Raises:
        ValueError: the array is not uint8, or not (H, W), (H, W, 1), (H, W, 3), (H, W, 4);
            the path cannot be read.
        TypeError: neither bytes, an array nor a path (a plain str is refused: wrap it in
            `pathlib.Path` to send the file).
    """
    if isinstance(image, os.PathLike):
        try:
            with open(image, "rb") as file:
                return pb.Image(encoded=file.read())
        except OSError as exc:
            raise ValueError(f"{what}: cannot read {os.fspath(image)!r}: {exc}") from exc
    if isinstance(image, bytes | bytearray | memoryview):
        return pb.Image(encoded=bytes(image))
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"{what} must be bytes (a PNG, JPEG or WebP file), a numpy array or a "
            f"pathlib.Path, not {type(image).__name__}"
        )
    if image.dtype != np.uint8:
        raise ValueError(
            f"{what} must be a uint8 array, not {image.dtype} (convert with "
            "np.clip(x, 0, 255).astype(np.uint8))"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or 0 in image.shape:
        raise ValueError(
            f"{what} must have shape (height, width, channels) with 1, 3 or 4 channels, "
            f"got {image.shape}"
        )
    height, width, channels = image.shape
    return pb.Image(
        raw=pb.RawImage(
            pixels=np.ascontiguousarray(image).tobytes(),
            height=height,
            width=width,
            channels=channels,
        )
    )


def request_message(frame: Frame) -> pb.TranslateRequest:
    """The protocol message for a frame; checks the arguments first (ValueError)."""
    if frame.output_format not in OUTPUT_FORMATS:
        known = ", ".join(str(k) for k in OUTPUT_FORMATS)
        raise ValueError(f"unknown output_format {frame.output_format!r}; use one of {known}")
    if frame.size_policy not in SIZE_POLICIES:
        raise ValueError(
            f"unknown size_policy {frame.size_policy!r}; use one of {', '.join(SIZE_POLICIES)}"
        )
    if not 0 <= frame.quality <= 100:
        raise ValueError(f"quality must be 0 (the default) to 100, got {frame.quality}")
    if frame.num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {frame.num_samples}")
    if frame.version < 0:
        raise ValueError(f"version must be 0 (the loaded one) or positive, got {frame.version}")
    if not frame.model or not (frame.direction or frame.target_domain):
        raise ValueError(
            "model and a direction (or a multi-domain model's target_domain) are required, "
            "e.g. model='day2dusk', direction='A2B', or model='seasons', target_domain='winter'"
        )
    sources = [frame.style_seed, frame.style_code, frame.style_reference]
    if sum(s is not None for s in sources) > 1:
        raise ValueError("give at most one of style_seed, style_code and style_reference")
    style = None
    if frame.style_seed is not None:
        if frame.style_seed < 0:
            raise ValueError(f"style_seed must be non-negative, got {frame.style_seed}")
        style = pb.Style(seed=frame.style_seed)
    elif frame.style_code is not None:
        style = pb.Style(code=pb.StyleCode(values=[float(v) for v in frame.style_code]))
    elif frame.style_reference is not None:
        style = pb.Style(reference=image_message(frame.style_reference, "style_reference"))
    return pb.TranslateRequest(
        model=frame.model,
        version=frame.version,
        direction=frame.direction,
        image=image_message(frame.image),
        style=style,
        num_samples=frame.num_samples,
        output=pb.OutputOptions(format=OUTPUT_FORMATS[frame.output_format], quality=frame.quality),
        size_policy=SIZE_POLICIES[frame.size_policy],
        request_id=frame.request_id or uuid.uuid4().hex,
        target_domain=frame.target_domain,
    )


def _image_value(image: pb.Image) -> bytes | np.ndarray:
    if image.WhichOneof("data") == "raw":
        raw = image.raw
        pixels = np.frombuffer(raw.pixels, dtype=np.uint8)
        return pixels.reshape(raw.height, raw.width, raw.channels)
    return bytes(image.encoded)


def result_of(response: pb.TranslateResponse) -> TranslateResult:
    """The Python view of a `TranslateResponse`."""
    timing = response.timing
    return TranslateResult(
        images=[_image_value(image) for image in response.images],
        request_id=response.request_id,
        model=response.model,
        version=response.version,
        direction=response.direction,
        timing=Timing(timing.queue_ms, timing.compute_ms, timing.total_ms),
        batch_size=response.batch_size,
    )


def error_of(exc: grpc.RpcError, request_id: str) -> TranslateError:
    """A `TranslateError` from a failed call (a `grpc.Call` or `grpc.aio.AioRpcError`)."""
    code = exc.code() if callable(getattr(exc, "code", None)) else None
    details = exc.details() if callable(getattr(exc, "details", None)) else None
    return TranslateError(code or grpc.StatusCode.UNKNOWN, details or str(exc), request_id)


def _duration(seconds: float) -> str:
    """A protobuf JSON Duration ("0.100000000s"), rounded up to whole nanoseconds."""
    nanos = math.ceil(seconds * 1e9)
    return f"{nanos // 10**9}.{nanos % 10**9:09d}s"


def check_retries(retries: int, backoff_s: float, max_backoff_s: float) -> None:
    """What gRPC's retry policy does as told: 0 to 4 retries, backoffs of 10 ms or more."""
    if not 0 <= retries <= MAX_RETRIES:
        raise ValueError(
            f"retries must be 0 to {MAX_RETRIES} (gRPC's retry policy makes at most "
            f"{MAX_RETRIES + 1} attempts), got {retries}"
        )
    for name, value in (("backoff_s", backoff_s), ("max_backoff_s", max_backoff_s)):
        if not value >= MIN_BACKOFF_S:
            raise ValueError(
                f"{name} must be at least {MIN_BACKOFF_S} s (gRPC may never start a retry "
                f"due sooner), got {value}"
            )


def service_config(retries: int, backoff_s: float, max_backoff_s: float) -> str:
    """The channel's gRPC service config (JSON): the retry policy of the unary methods.

    gRPC makes up to `retries` more attempts on UNAVAILABLE and RESOURCE_EXHAUSTED, within
    the call's one deadline, after min(backoff_s * 2**n, max_backoff_s) seconds, 20% more or
    less at random (gRPC's jitter), or after the delay the server asks for in the trailer
    `grpc-retry-pushback-ms`; a negative one (the server's answer to an image too large)
    means: do not retry.
    """
    check_retries(retries, backoff_s, max_backoff_s)
    method: dict[str, Any] = {
        "name": [{"service": service, "method": name} for service, name in RETRIED_METHODS]
    }
    if retries:
        method["retryPolicy"] = {
            "maxAttempts": retries + 1,
            "initialBackoff": _duration(backoff_s),
            "maxBackoff": _duration(max_backoff_s),
            "backoffMultiplier": 2,
            "retryableStatusCodes": list(RETRYABLE_CODES),
        }
    return json.dumps({"methodConfig": [method]})


def channel_options(
    max_message_bytes: int,
    retries: int,
    backoff_s: float,
    max_backoff_s: float,
    options: Sequence[tuple[str, Any]] = (),
) -> list[tuple[str, Any]]:
    """Message size limits, the retry policy, then the caller's own options, which replace
    ours of the same name (gRPC would keep the first of two)."""
    ours = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.enable_retries", 1 if retries else 0),
        ("grpc.service_config", service_config(retries, backoff_s, max_backoff_s)),
        # gRPC retries a call only while it holds the whole request; its default (256 KiB)
        # is smaller than most images. Anything larger is refused before sending anyway.
        ("grpc.per_rpc_retry_buffer_size", max_message_bytes),
    ]
    given = {name for name, _ in options}
    return [(name, value) for name, value in ours if name not in given] + list(options)


def check_tls(
    root_certificates: bytes | None, certificate_chain: bytes | None, private_key: bytes | None
) -> None:
    """Mutual TLS needs both halves of the client's key pair, and a root to trust."""
    if (certificate_chain is None) != (private_key is None):
        raise ValueError("mutual TLS needs both certificate_chain and private_key")
    if certificate_chain is not None and root_certificates is None:
        raise ValueError(
            "mutual TLS needs root_certificates too (the CA that signed the server's certificate)"
        )


def auth_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The bearer token as call metadata (nothing without a token)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


class ClientBase:
    """What `Client` and `AsyncClient` share: settings, credentials, stubs (see `Client`)."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        root_certificates: bytes | None = None,
        certificate_chain: bytes | None = None,
        private_key: bytes | None = None,
        timeout: float | None = 30.0,
        retries: int = MAX_RETRIES,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        check_tls(root_certificates, certificate_chain, private_key)
        check_retries(retries, backoff_s, max_backoff_s)
        self.target = target
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._metadata = auth_metadata(token)
        credentials = None
        if root_certificates is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates, private_key, certificate_chain
            )
        self._channel = self._open_channel(
            target,
            credentials,
            channel_options(max_message_bytes, retries, backoff_s, max_backoff_s, options),
        )
        self._stub = pb_grpc.TranslatorStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def _timeout(self, timeout: Timeout) -> float | None:
        """A call's deadline in seconds from now: the one given, else the client's."""
        return self.timeout if isinstance(timeout, _Default) else timeout

    def _open_channel(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[Any]
    ) -> Any:
        raise NotImplementedError
