"""The synchronous Python client of an i2i server (contract 3), with retries and deadlines."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2

from i2i.client.messages import (
    DEFAULT_TIMEOUT,
    ClientBase,
    Frame,
    ImageInput,
    Timeout,
    TranslateResult,
    error_of,
    request_message,
    result_of,
)
from i2i.v1 import translator_pb2 as pb

T = TypeVar("T")


class Client(ClientBase):
    """A connection to an i2i server: `translate`, `translate_stream`, models and health.

    Unary calls are retried by gRPC itself (its retry policy, gRFC A6, set on the channel):
    on UNAVAILABLE, and on RESOURCE_EXHAUSTED unless the server says a retry cannot help
    (trailer `grpc-retry-pushback-ms: -1`, its answer to an image too large), after
    exponential backoff (gRPC adds 20% jitter) or the delay the server asks for, at most
    `retries` times and never past the call's deadline: `timeout` covers all attempts
    together. Other errors are raised at once. Streams are not retried. Every failure
    raises `TranslateError`. Safe to share between threads.

    Args:
        target: "host:port" of the server.
        token: bearer token, sent as `authorization: Bearer <token>` with every call.
        root_certificates: PEM of the CA to trust; TLS when given, plaintext otherwise.
        certificate_chain: PEM of the client's certificate, for mutual TLS (with private_key).
        private_key: PEM of the client's key, for mutual TLS.
        timeout: default deadline of a call in seconds (None: no deadline).
        retries: how many times a retryable failure is tried again, 0 to 4 (gRPC's limit).
        backoff_s: the first backoff, at least 0.01 s; it doubles with every retry.
        max_backoff_s: the largest backoff.
        max_message_bytes: largest message sent or received; keep it equal to the server's
            --max-message-mb (default 32 MiB, as the server's), so a request too large is
            refused here, before it is sent, rather than sent again by each retry.
        options: extra gRPC channel options, e.g. `[("grpc.lb_policy_name", "round_robin")]`;
            they replace the client's own of the same name (such as `grpc.service_config`).
    """

    def _open_channel(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[Any]
    ) -> Any:
        if credentials is None:
            return grpc.insecure_channel(target, options=options)
        return grpc.secure_channel(target, credentials, options=options)

    # ------------------------------------------------------------------ calls

    def translate(
        self,
        image: ImageInput,
        *,
        model: str,
        direction: str = "",
        target_domain: str = "",
        version: int = 0,
        output_format: str | None = None,
        quality: int = 0,
        size_policy: str = "pad",
        num_samples: int = 1,
        style_seed: int | None = None,
        style_code: Sequence[float] | None = None,
        style_reference: ImageInput | None = None,
        request_id: str = "",
        timeout: Timeout = DEFAULT_TIMEOUT,
    ) -> TranslateResult:
        """Translate one image (several samples for multimodal models).

        Args:
            image: a PNG, JPEG or WebP file's bytes, or a uint8 array (H, W, C), C 1, 3 or 4.
            model: the model's name on the server.
            direction: e.g. "A2B"; for a multi-domain model "to_<domain>".
            target_domain: a multi-domain model's target (one of `ModelInfo.domains`),
                instead of direction ``to_<domain>``; with both given they must agree.
                An unknown domain is NOT_FOUND, its message listing the model's domains.
            version: 0 for the version the server loaded.
            output_format: "png", "jpeg", "webp", "raw", or None for the server's default
                (PNG for encoded inputs, raw pixels for arrays).
            quality: JPEG/WebP quality 1-100; 0 for the server's default.
            size_policy: "pad", "resize" or "reject" for sizes the model cannot take.
            num_samples: outputs per image (multimodal models only), computed as one batch.
            style_seed, style_code, style_reference: at most one; the style of the outputs
                (multimodal models only). A seed draws K codes from N(0, 1): the same seed
                gives the same bytes. A code (the model's style size of floats) is used for
                every sample. A reference image of the target domain (bytes, array or
                `pathlib.Path`) sets the style through the model's style encoder
                (`DirectionInfo.style_encoder`). None: random styles.
            request_id: echoed back and logged by the server; made here when empty.
            timeout: deadline in seconds for all attempts together; default: the client's.

        Raises:
            ValueError: a bad argument (checked before anything is sent).
            TranslateError: the server refused or failed, after any retries; bytes that are
                not an image the server can decode (empty ones too) are INVALID_ARGUMENT.
        """
        request = request_message(
            Frame(
                image=image,
                model=model,
                direction=direction,
                target_domain=target_domain,
                version=version,
                output_format=output_format,
                quality=quality,
                size_policy=size_policy,
                num_samples=num_samples,
                style_seed=style_seed,
                style_code=style_code,
                style_reference=style_reference,
                request_id=request_id,
            )
        )
        response = self._call(self._stub.Translate, request, timeout, request.request_id)
        return result_of(response)

    def translate_stream(
        self, frames: Iterable[Frame], *, timeout: float | None = None
    ) -> Iterator[TranslateResult]:
        """Translate a stream of frames over one call; results come in the frames' order.

        `frames` is read lazily, as the call goes. The stream is not retried: an error on
        one frame ends it with a `TranslateError` (a bad `Frame` raises its ValueError).

        Args:
            frames: the requests, e.g. `Frame(image, model="m", direction="A2B")` per frame.
            timeout: deadline of the whole stream in seconds (default: none).
        """
        failed: list[BaseException] = []

        def requests() -> Iterator[pb.TranslateRequest]:
            try:
                for frame in frames:
                    yield request_message(frame)
            except Exception as exc:  # surfaced in the caller's thread below
                failed.append(exc)
                raise

        responses = self._stub.TranslateStream(requests(), timeout=timeout, metadata=self._metadata)
        try:
            for response in responses:
                yield result_of(response)
        except grpc.RpcError as exc:
            if failed:
                raise failed[0] from None
            raise error_of(exc, "") from exc
        finally:
            responses.cancel()
        if failed:
            raise failed[0]

    def list_models(self, *, timeout: Timeout = DEFAULT_TIMEOUT) -> list[pb.ModelInfo]:
        """The models the server has loaded (`i2i.v1.ModelInfo` messages)."""
        return list(self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout, "").models)

    def get_model(
        self, model: str, version: int = 0, *, timeout: Timeout = DEFAULT_TIMEOUT
    ) -> pb.ModelInfo:
        """One loaded model (an `i2i.v1.ModelInfo`): its directions, shape rules and backends."""
        request = pb.GetModelRequest(model=model, version=version)
        result: pb.ModelInfo = self._call(self._stub.GetModel, request, timeout, "")
        return result

    def health(self, service: str = "", *, timeout: Timeout = DEFAULT_TIMEOUT) -> str:
        """The standard health check: "SERVING", "NOT_SERVING", ... ("" is the whole server)."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = self._call(self._health.Check, request, timeout, "")
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    # ------------------------------------------------------------------ plumbing

    def _call(
        self,
        method: Callable[..., T],
        request: Any,
        timeout: Timeout,
        request_id: str,
    ) -> T:
        """Call a unary method; gRPC retries it by the channel's policy, within the deadline."""
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_of(exc, request_id) from exc

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
