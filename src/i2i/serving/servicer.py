"""The `i2i.v1.Translator` servicer: protocol messages in and out, nothing else.

It turns a TranslateRequest into a `pipeline.Request`, awaits the pipeline, and turns the
result (or a `ServingError`) into the reply (or a status with a message); it counts and
logs every call with its request id. `add_to_server` registers it with request parsing
that turns a body which is not the method's message into INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

from i2i.serving.errors import Internal, InvalidArgument, QueueFull, ServingError, Unavailable
from i2i.serving.metrics import ServerMetrics
from i2i.serving.pipeline import Pipeline, RawPixels, Request, Result, new_request_id
from i2i.serving.store import LoadedModel
from i2i.v1 import translator_pb2 as pb
from i2i.v1 import translator_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

FORMAT_NAMES = {
    pb.IMAGE_FORMAT_UNSPECIFIED: None,
    pb.IMAGE_FORMAT_PNG: "png",
    pb.IMAGE_FORMAT_JPEG: "jpeg",
    pb.IMAGE_FORMAT_WEBP: "webp",
    pb.IMAGE_FORMAT_RAW: "raw",
}
POLICY_NAMES = {
    pb.SIZE_POLICY_UNSPECIFIED: "pad",
    pb.SIZE_POLICY_PAD: "pad",
    pb.SIZE_POLICY_RESIZE: "resize",
    pb.SIZE_POLICY_REJECT: "reject",
}
# Every RESOURCE_EXHAUSTED says whether a retry can help: a full queue yes, an image too
# large no. Clients retry it only when told "true" (gRPC's own size errors carry neither).
# gRPC's own retry policy reads grpc-retry-pushback-ms: negative means "do not retry". A full
# queue sends none, so each client waits its own jittered backoff: a fixed pushback is used
# as it is by every client at once (no jitter), and grpcio hangs on pushbacks under ~2 ms.
RETRYABLE_KEY, PUSHBACK_KEY = "i2i-retryable", "grpc-retry-pushback-ms"
RETRYABLE = ((RETRYABLE_KEY, "true"),)
NOT_RETRYABLE = ((RETRYABLE_KEY, "false"), (PUSHBACK_KEY, "-1"))
# Replies up to this size are built on the event loop; larger ones in the worker threads.
INLINE_REPLY_BYTES = 256 << 10
REQUEST_ID_UNSAFE = re.compile(r"[^A-Za-z0-9._:/-]")


@dataclass(frozen=True)
class Malformed:
    """A request body that is not the method's message; the handler answers INVALID_ARGUMENT."""

    message: str


def lenient_parser(
    message_type: type[Message], hint: str
) -> Callable[[bytes], Message | Malformed]:
    """A request deserializer that returns `Malformed` instead of raising.

    gRPC deserialises a request before the handler runs and answers UNKNOWN ("Unexpected
    DecodeError") to whatever the deserializer raises; this way the handler sees the
    failure and answers INVALID_ARGUMENT, counted and logged like any bad request. `hint`
    says what to build the message with.
    """
    name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_type.FromString(data)
        except DecodeError as exc:
            return Malformed(
                f"the request body ({len(data)} bytes) is not a valid {name} protobuf "
                f"message ({exc}); build it with {hint}"
            )

    return parse


def register_service(
    module: ModuleType,
    service_name: str,
    handler: Callable[[str], Callable[..., Any]],
    server: grpc.aio.Server,
    hint: str,
) -> None:
    """Register the service `service_name` of the generated `module` on `server`.

    Handlers are built from the service descriptor, so they follow the protocol file, with
    requests parsed by `lenient_parser`; `handler(method_name)` gives each method's
    coroutine (or async generator).
    """
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    service = module.DESCRIPTOR.services_by_name[service_name]
    handlers = {}
    for method in service.methods:
        request_type = getattr(module, method.input_type.name)
        response_type = getattr(module, method.output_type.name)
        kind = kinds[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = kind(
            handler(method.name),
            request_deserializer=lenient_parser(request_type, hint),
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)


def add_to_server(servicer: pb_grpc.TranslatorServicer, server: grpc.aio.Server) -> None:
    """Register `servicer` as i2i.v1.Translator, parsing requests with `lenient_parser`."""
    register_service(
        pb,
        "Translator",
        lambda name: getattr(servicer, name),
        server,
        "code generated from the i2i.v1 protocol (protos/i2i/v1/translator.proto)",
    )


async def abort(context: grpc.aio.ServicerContext, exc: ServingError) -> None:
    """End the call with the error's code and message (and retry advice, if exhausted)."""
    if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:  # tell clients whether to retry
        context.set_trailing_metadata(RETRYABLE if exc.retryable else NOT_RETRYABLE)
    await context.abort(exc.code, exc.message)


def _parsed(message: M | Malformed) -> M:
    """The request message, or InvalidArgument if its body could not be parsed."""
    if isinstance(message, Malformed):
        raise InvalidArgument(message.message)
    return message


def _image(message: pb.Image, what: str) -> bytes | RawPixels:
    kind = message.WhichOneof("data")
    if kind == "encoded":
        if not message.encoded:
            raise InvalidArgument(f"{what} is empty: send PNG, JPEG or WebP bytes, or raw pixels")
        return message.encoded
    if kind == "raw":
        raw = message.raw
        return RawPixels(raw.pixels, raw.height, raw.width, raw.channels)
    raise InvalidArgument(f"{what} is missing: set image.encoded or image.raw")


def check_names(message: pb.TranslateRequest) -> None:
    """InvalidArgument unless the request names a model and a direction or target domain."""
    if not message.model:
        raise InvalidArgument("model is empty: name a model (ListModels shows them)")
    if not message.direction and not message.target_domain:
        raise InvalidArgument(
            "direction is empty: name one, for example A2B (GetModel lists them), or the "
            "target_domain of a multi-domain model"
        )


def request_from_proto(message: pb.TranslateRequest) -> Request:
    """The plain request; InvalidArgument for fields that cannot be read at all."""
    check_names(message)
    if message.output.format not in FORMAT_NAMES:
        raise InvalidArgument(f"output format {message.output.format} is not a known ImageFormat")
    if message.size_policy not in POLICY_NAMES:
        raise InvalidArgument(f"size_policy {message.size_policy} is not a known SizePolicy")
    seed = code = reference = None
    source = message.style.WhichOneof("source") if message.HasField("style") else None
    if source == "seed":
        seed = message.style.seed
    elif source == "code":
        code = list(message.style.code.values)
    elif source == "reference":
        reference = _image(message.style.reference, "style.reference")
    return Request(
        model=message.model,
        version=message.version or None,
        direction=message.direction,
        image=_image(message.image, "image"),
        num_samples=message.num_samples or 1,
        style_seed=seed,
        style_code=code,
        style_reference=reference,
        output_format=FORMAT_NAMES[message.output.format],
        quality=message.output.quality,
        size_policy=POLICY_NAMES[message.size_policy],
        request_id=clean_request_id(message.request_id),
        target_domain=message.target_domain,
    )


def _out_image(image: bytes | np.ndarray) -> pb.Image:
    if isinstance(image, np.ndarray):
        height, width, channels = image.shape
        raw = pb.RawImage(pixels=image.tobytes(), height=height, width=width, channels=channels)
        return pb.Image(raw=raw)
    return pb.Image(encoded=image)


def response_from_result(result: Result) -> pb.TranslateResponse:
    return pb.TranslateResponse(
        images=[_out_image(image) for image in result.images],
        model=result.direction.model,
        version=result.direction.version,
        direction=result.direction.name,
        request_id=result.request_id,
        timing=pb.Timing(
            queue_ms=result.queue_s * 1e3,
            compute_ms=result.compute_s * 1e3,
            total_ms=result.total_s * 1e3,
        ),
        batch_size=result.batch_size,
    )


def _reply_bytes(result: Result) -> int:
    return sum(len(i) if isinstance(i, bytes) else i.nbytes for i in result.images)


def model_info(model: LoadedModel) -> pb.ModelInfo:
    return pb.ModelInfo(
        name=model.name,
        version=model.version,
        family=model.manifest["family"],
        domains=model.manifest["domains"],
        created=model.manifest["created"],
        directions=[
            pb.DirectionInfo(
                name=d.name,
                input_channels=d.in_channels,
                output_channels=d.out_channels,
                shape_rule=pb.ShapeRule(
                    multiple_of=d.backend.shape_rule.multiple_of,
                    fixed_size=d.backend.shape_rule.fixed_size or 0,
                    min_size=d.backend.shape_rule.min_size,
                ),
                style_size=d.style_size,
                backend=d.backend.name,
                artifact=d.backend.artifact,
                max_batch=d.max_batch,
                style_encoder=d.style_encoder is not None,
                target_domain=d.target_domain or "",
            )
            for d in model.directions.values()
        ],
        shared_batches=model.shared_batches,
    )


def request_failed(
    exc: BaseException,
    what: str,
    request_id: str,
    context: grpc.aio.ServicerContext,
    where: dict[str, Any],
) -> tuple[grpc.StatusCode, BaseException]:
    """The status a request that raised ``exc`` ends with, logged under ``what`` and its id,
    and what the handler raises: a ServingError or gRPC's cancellation as they are (the
    caller's doing: INFO, ERROR for an INTERNAL), any other exception (a bug) as Internal,
    logged with its traceback."""
    if isinstance(exc, ServingError):
        internal = exc.code == grpc.StatusCode.INTERNAL
        log.log(
            logging.ERROR if internal else logging.INFO,
            "%s %s failed: %s %s",
            what,
            request_id,
            exc.code.name,
            exc.message,
            exc_info=exc if internal else None,
            extra=where,
        )
        return exc.code, exc
    if isinstance(exc, asyncio.CancelledError):  # gRPC cancels the handler: deadline or caller
        remaining = context.time_remaining()
        expired = remaining is not None and remaining <= 0
        code = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
        log.info("%s %s ended by the caller: %s", what, request_id, code.name, extra=where)
        return code, exc
    log.error("%s %s failed: %s", what, request_id, exc, exc_info=exc, extra=where)
    message = f"the server failed on request {request_id}: {type(exc).__name__}: {exc}"
    return grpc.StatusCode.INTERNAL, Internal(message)


class TranslatorServicer(pb_grpc.TranslatorServicer):
    """Thin: parse, call the pipeline, reply; every error becomes its status code.

    Args:
        pipeline: runs requests.
        metrics: counts them.
        executor: builds replies off the event loop (a raw reply can be tens of MB).
        max_calls: Translate and ModelInfer requests (stream frames included) handled at
            once; more are refused with a retryable RESOURCE_EXHAUSTED. Health and
            reflection are never limited, so probes keep working under load.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: ServerMetrics,
        executor: Executor | None = None,
        max_calls: int | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.executor = executor
        self.max_calls = max_calls
        self.accepting = False  # False while loading and while draining
        self.in_flight = 0  # accepted Translate and ModelInfer requests not yet answered

    def request_done(
        self,
        what: str,
        request_id: str,
        code: grpc.StatusCode,
        start: float,
        images: int,
        where: dict[str, Any],
    ) -> None:
        """The end of an admitted request of either service (Translate, a stream frame, or
        ModelInfer): out of the in-flight count, counted under ``where``'s model and
        direction, and logged at DEBUG under ``what`` and its id."""
        self.in_flight -= 1
        elapsed = time.monotonic() - start
        model, direction = where["model"], where["direction"]
        self.metrics.request_done(model, direction, code.name, elapsed, images)
        log.debug(
            "%s %s: %s %s %s, %d images in %.1f ms",
            what,
            request_id,
            model,
            direction,
            code.name,
            images,
            elapsed * 1e3,
            extra=where,
        )

    def _check_accepting(self) -> None:
        if not self.accepting:
            raise Unavailable(
                "the server is not serving (starting up or shutting down): retry shortly, or "
                "on another replica"
            )

    def _admit(self) -> None:
        self._check_accepting()
        if self.max_calls is not None and self.in_flight > self.max_calls:
            raise QueueFull(
                f"{self.max_calls} calls are already being handled (--max-concurrent-rpcs): "
                f"retry with backoff, or on another replica"
            )

    async def _translate_one(
        self, message: pb.TranslateRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> pb.TranslateResponse:
        """One request, counted and logged; raises ServingError for the caller to report."""
        start = time.monotonic()
        given_id = "" if isinstance(message, Malformed) else message.request_id
        request_id = clean_request_id(given_id) or new_request_id()
        # Metric labels name only loaded models, so made-up names cannot grow the series.
        images = 0
        code = grpc.StatusCode.OK
        where = {"request_id": request_id, "model": "unknown", "direction": "unknown"}
        self.in_flight += 1
        try:
            self._admit()
            parsed: pb.TranslateRequest = _parsed(message)
            # The named direction first, so that errors in the rest of the request are
            # counted under the model and direction it names.
            check_names(parsed)
            loaded = self.pipeline.store.direction(
                parsed.model, parsed.version or None, parsed.direction, parsed.target_domain
            )
            model, direction = loaded.model, loaded.name
            where.update(model=model, direction=direction)
            request = replace(request_from_proto(parsed), request_id=request_id)
            remaining = context.time_remaining()
            deadline = None if remaining is None else start + remaining
            result = await self.pipeline.translate(request, loaded, deadline=deadline)
            self.metrics.queued(model, direction, result.queue_s)
            if _reply_bytes(result) > INLINE_REPLY_BYTES:  # copying MBs would stall the loop
                loop = asyncio.get_running_loop()
                reply = await loop.run_in_executor(self.executor, response_from_result, result)
            else:  # a thread hop costs more than a small reply
                reply = response_from_result(result)
            images = len(result.images)
            return reply
        except (asyncio.CancelledError, Exception) as exc:
            code, error = request_failed(exc, "request", request_id, context, where)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.request_done("request", request_id, code, start, images, where)

    async def Translate(  # noqa: N802 - the protocol's name
        self, request: pb.TranslateRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> pb.TranslateResponse:
        try:
            return await self._translate_one(request, context)
        except ServingError as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from None

    async def TranslateStream(  # noqa: N802
        self,
        request_iterator: AsyncIterator[pb.TranslateRequest | Malformed],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[pb.TranslateResponse]:
        # Frames are answered in order, one at a time: a video's frames share a shape, and
        # several streams at once still fill batches together. After SIGTERM the next frame
        # of an open stream ends it with UNAVAILABLE: the client reconnects elsewhere.
        async for message in request_iterator:
            try:
                yield await self._translate_one(message, context)
            except ServingError as exc:
                await abort(context, exc)

    async def ListModels(  # noqa: N802
        self, request: pb.ListModelsRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> pb.ListModelsResponse:
        try:
            self._check_accepting()
            _parsed(request)
        except ServingError as exc:
            await abort(context, exc)
        store = self.pipeline.store
        return pb.ListModelsResponse(
            models=[model_info(m) for _, m in sorted(store.models.items())]
        )

    async def GetModel(  # noqa: N802
        self, request: pb.GetModelRequest | Malformed, context: grpc.aio.ServicerContext
    ) -> pb.ModelInfo:
        try:
            self._check_accepting()
            parsed: pb.GetModelRequest = _parsed(request)
            return model_info(self.pipeline.store.model(parsed.model, parsed.version or None))
        except ServingError as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from None


def clean_request_id(text: str) -> str:
    """The caller's request id, kept to 64 safe characters (it goes into logs as is)."""
    return REQUEST_ID_UNSAFE.sub("_", text[:64])
