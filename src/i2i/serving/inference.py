"""The Open Inference Protocol (KServe v2) servicer: `inference.GRPCInferenceService`.

Beside `i2i.v1.Translator` on the same port and through the same pipeline, batcher,
backends, limits, metrics and logs. Each loaded direction is one v2 model named
`v2_model_name(model, direction)` (``day2dusk_A2B``, ``gradings_to_warm``); its versions
are the repository's. Tensors have the exported ONNX graphs' names: input ``image`` UINT8
[N, H, W, C_in], optional ``style`` FP32 [N, S] (multimodal models), output ``translated``
UINT8 [N, H, W, C_out]. A request of N images becomes N pipeline requests submitted at
once, so the dynamic batcher runs them (and other callers' images) together.

Errors carry the status codes Triton gives for the same mistakes (docs/serving.md, "Open
Inference Protocol"), except an overload: RESOURCE_EXHAUSTED with retry advice, as
Translate answers it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf.message import Message

import i2i
from i2i.oip import grpc_service_pb2 as v2
from i2i.oip import grpc_service_pb2_grpc as v2_grpc
from i2i.oip import model_config_pb2 as mc
from i2i.serving.errors import (
    DeadlineExceeded,
    InvalidArgument,
    NotFound,
    QueueFull,
    ResourceExhausted,
    ServingError,
    Unavailable,
)
from i2i.serving.images import SIZE_POLICIES
from i2i.serving.metrics import ServerMetrics
from i2i.serving.pipeline import Pipeline, RawPixels, Request, Result, new_request_id
from i2i.serving.servicer import (
    INLINE_REPLY_BYTES,
    Malformed,
    TranslatorServicer,
    abort,
    clean_request_id,
    register_service,
    request_failed,
)
from i2i.serving.store import LoadedDirection, LoadedModel

log = logging.getLogger(__name__)

SERVICE = v2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
IMAGE, STYLE, OUTPUT = "image", "style", "translated"
SERVER_NAME = "i2i"
# ServerMetadata's extensions: the protocol extensions this service implements.
EXTENSIONS = ("model_configuration", "parameters")
# The RPCs this service answers; the others are UNIMPLEMENTED with a message saying so.
IMPLEMENTED = frozenset(
    {
        "ServerLive",
        "ServerReady",
        "ServerMetadata",
        "ModelReady",
        "ModelMetadata",
        "ModelConfig",
        "ModelInfer",
        "ModelStreamInfer",
    }
)
# Request parameters Triton's clients may send (tritonclient's reserved names): accepted,
# and all but "timeout" (a deadline in microseconds) ignored: i2i has no sequences or
# priorities, and its replies always carry raw (binary) outputs.
IGNORED_PARAMETERS = frozenset(
    {"sequence_id", "sequence_start", "sequence_end", "priority", "binary_data_output"}
)
OWN_PARAMETERS = ("style_seed", "size_policy", "timeout")
GPU_BACKENDS = ("tensorrt", "cuda")  # backend names with these run on a GPU


def v2_model_name(model: str, direction: str) -> str:
    """The v2 model name of one direction of an i2i model, e.g. ``day2dusk_A2B``.

    The Triton export (i2i.repository.triton) names its models by the same rule.
    """
    return f"{model}_{direction}"


def add_to_server(servicer: v2_grpc.GRPCInferenceServiceServicer, server: grpc.aio.Server) -> None:
    """Register `servicer` as inference.GRPCInferenceService (`servicer.register_service`:
    a body that is not the method's message is answered INVALID_ARGUMENT); the RPCs not in
    `IMPLEMENTED` answer UNIMPLEMENTED, saying so."""
    register_service(
        v2,
        "GRPCInferenceService",
        lambda name: getattr(servicer, name) if name in IMPLEMENTED else _unimplemented(name),
        server,
        "the Open Inference Protocol's grpc_service.proto (tritonclient, or protos/i2i/oip)",
    )


def _parsed(message: Message | Malformed) -> Any:
    """The request message, or InvalidArgument if its body could not be parsed."""
    if isinstance(message, Malformed):
        raise InvalidArgument(message.message)
    return message


def parse_version(text: str) -> int | None:
    """A v2 model_version: "" means the latest loaded, else an integer (as Triton reads
    it: one that no loaded version has, 0 included, is NOT_FOUND, not invalid)."""
    if not text:
        return None
    if not text.removeprefix("-").isdigit():
        raise InvalidArgument(
            f"invalid model version specified {text!r}: a version is an integral value > 0, "
            f"or empty for the latest"
        )
    return int(text)


@dataclass(frozen=True)
class Target:
    """The loaded direction a v2 model name and version resolve to."""

    name: str  # the v2 model name
    model: LoadedModel
    direction: LoadedDirection


@dataclass(frozen=True)
class Inputs:
    """A ModelInfer request's tensors, checked."""

    images: np.ndarray  # (N, H, W, C_in) uint8
    styles: np.ndarray | None  # (N, S) float32


@dataclass(frozen=True)
class Parameters:
    """A ModelInfer request's own parameters."""

    style_seed: int | None = None
    size_policy: str = "pad"
    timeout_s: float | None = None


def _tensor_bytes(tensor: Any, raw: bytes | None, datatype: str) -> bytes:
    """The bytes of one input tensor, from raw_input_contents or its typed contents."""
    contents = tensor.contents
    if raw is not None:
        return raw
    if datatype == "UINT8":
        values = np.asarray(contents.uint_contents, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 255):
            raise InvalidArgument(
                f"input {tensor.name!r}: uint_contents holds values outside 0..255, which "
                f"UINT8 cannot hold"
            )
        return values.astype(np.uint8).tobytes()
    if datatype == "FP32":
        return np.asarray(contents.fp32_contents, dtype=np.float32).tobytes()
    return b""  # other types never reach here: the datatype is checked first


def _typed_count(contents: Any) -> int:
    """How many fields of InferTensorContents hold values (only one may)."""
    return sum(bool(len(getattr(contents, field.name))) for field in contents.DESCRIPTOR.fields)


def parse_inputs(request: Any, target: Target) -> Inputs:
    """The checked tensors of a ModelInferRequest (InvalidArgument with Triton's wording)."""
    name, direction = target.name, target.direction
    expected = {IMAGE: ("UINT8", direction.in_channels)}
    if direction.style_size:
        expected[STYLE] = ("FP32", direction.style_size)
    raws = list(request.raw_input_contents)
    if raws and len(raws) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raws)} entries for {len(request.inputs)} inputs of "
            f"model '{name}': send one per input, in the order of inputs"
        )
    arrays: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name not in expected:
            raise InvalidArgument(
                f"unexpected inference input '{tensor.name}' for model '{name}': its inputs are "
                f"{', '.join(expected)}"
            )
        if tensor.name in arrays:
            raise InvalidArgument(f"input '{tensor.name}' already exists in request")
        if any(key.startswith("shared_memory") for key in tensor.parameters):
            raise InvalidArgument(
                f"input '{tensor.name}': this server has no shared-memory extension; send the "
                f"data in raw_input_contents"
            )
        datatype, last = expected[tensor.name]
        if tensor.datatype != datatype:
            raise InvalidArgument(
                f"inference input '{tensor.name}' data-type is '{tensor.datatype}', but model "
                f"'{name}' expects '{datatype}'"
            )
        shape = list(tensor.shape)
        rank = 4 if tensor.name == IMAGE else 2
        wanted = f"[N, H, W, {last}]" if rank == 4 else f"[N, {last}]"
        if len(shape) != rank or shape[-1] != last or any(d < 1 for d in shape):
            raise InvalidArgument(
                f"unexpected shape for input '{tensor.name}' for model '{name}'. Expected "
                f"{wanted}, got {shape}"
            )
        raw = raws[index] if raws else None
        if raw is not None and _typed_count(tensor.contents):
            raise InvalidArgument(
                f"contents field must not be specified when using raw_input_contents for "
                f"'{tensor.name}' for model '{name}'"
            )
        data = _tensor_bytes(tensor, raw, datatype)
        size = math.prod(shape) * (1 if datatype == "UINT8" else 4)  # Python ints: no overflow
        if len(data) != size:
            source = "raw_input_contents" if raw is not None else "contents"
            raise InvalidArgument(
                f"input byte size mismatch for input '{tensor.name}' for model '{name}'. "
                f"Expected {size}, got {len(data)} (from {source}; shape {shape}, {datatype})"
            )
        dtype = np.uint8 if datatype == "UINT8" else np.float32
        arrays[tensor.name] = np.frombuffer(data, dtype=dtype).reshape(shape)
    if IMAGE not in arrays:
        raise InvalidArgument(
            f"expected input '{IMAGE}' (UINT8 [N, H, W, {direction.in_channels}]) for model "
            f"'{name}', got {', '.join(repr(t.name) for t in request.inputs) or 'no inputs'}"
        )
    images, styles = arrays[IMAGE], arrays.get(STYLE)
    if styles is not None:
        if len(styles) != len(images):
            raise InvalidArgument(
                f"input '{STYLE}' batch size does not match other inputs for '{name}': "
                f"{len(styles)} style codes for {len(images)} images"
            )
        if not np.all(np.isfinite(styles)):
            raise InvalidArgument(f"input '{STYLE}' has a NaN or infinite value")
    return Inputs(images, styles)


def _parameter_value(name: str, parameter: Any, kind: str) -> Any:
    found = parameter.WhichOneof("parameter_choice")
    if found != kind:
        raise InvalidArgument(
            f"invalid value type for '{name}' parameter, expected {kind}, got {found}"
        )
    return getattr(parameter, kind)


def parse_parameters(parameters: Any, target: Target) -> Parameters:
    """The request parameters i2i reads; Triton's reserved ones are accepted and ignored."""
    seed, policy, timeout = None, "pad", None
    for name, parameter in parameters.items():
        if name == "style_seed":
            if parameter.WhichOneof("parameter_choice") == "uint64_param":
                seed = int(parameter.uint64_param)
            else:
                seed = int(_parameter_value(name, parameter, "int64_param"))
            if not target.direction.style_size:
                raise InvalidArgument(
                    f"model '{target.name}' ({target.direction.family}) takes no style; leave "
                    f"the style_seed parameter unset"
                )
            if seed < 0:
                raise InvalidArgument(f"style_seed must be >= 0, got {seed}")
        elif name == "size_policy":
            policy = _parameter_value(name, parameter, "string_param").lower()
            if policy not in SIZE_POLICIES:
                raise InvalidArgument(
                    f"size_policy {policy!r} is unknown: use {', '.join(SIZE_POLICIES)}"
                )
        elif name == "timeout":
            micros = _parameter_value(name, parameter, "int64_param")
            timeout = micros / 1e6 if micros > 0 else None
        elif name not in IGNORED_PARAMETERS and not name.startswith("triton_"):
            raise InvalidArgument(
                f"unknown request parameter {name!r}: i2i reads {', '.join(OWN_PARAMETERS)} "
                f"(and ignores Triton's {', '.join(sorted(IGNORED_PARAMETERS))})"
            )
    return Parameters(seed, policy, timeout)


def check_outputs(request: Any, target: Target) -> None:
    """Requested outputs must be `translated`, with no classification or shared memory."""
    for output in request.outputs:
        if output.name != OUTPUT:
            raise InvalidArgument(
                f"unexpected inference output '{output.name}' for model '{target.name}': its "
                f"output is '{OUTPUT}'"
            )
        for key in output.parameters:
            if key == "binary_data":  # the HTTP protocol's; gRPC outputs are always binary
                continue
            raise InvalidArgument(
                f"output '{OUTPUT}': parameter {key!r} is not supported by this server "
                f"(no classification or shared-memory extension)"
            )


def _platform(direction: LoadedDirection) -> str:
    return f"i2i_{direction.backend.name}"


def model_metadata(target: Target, versions: Sequence[int]) -> v2.ModelMetadataResponse:
    """Names, versions, platform and tensors; -1 marks a dynamic dimension."""
    direction = target.direction
    tensor = v2.ModelMetadataResponse.TensorMetadata
    inputs = [tensor(name=IMAGE, datatype="UINT8", shape=[-1, -1, -1, direction.in_channels])]
    if direction.style_size:
        inputs.append(tensor(name=STYLE, datatype="FP32", shape=[-1, direction.style_size]))
    return v2.ModelMetadataResponse(
        name=target.name,
        versions=[str(v) for v in versions],
        platform=_platform(direction),
        inputs=inputs,
        outputs=[tensor(name=OUTPUT, datatype="UINT8", shape=[-1, -1, -1, direction.out_channels])],
    )


def model_config(
    target: Target,
    versions: Sequence[int],
    *,
    max_delay_ms: float,
    max_queue: int,
    instances: int,
) -> mc.ModelConfig:
    """A Triton model configuration describing how this server runs the direction.

    Dims exclude the batch dimension (max_batch_size > 0), as in Triton's own configs.
    """
    direction = target.direction
    inputs = [
        mc.ModelInput(
            name=IMAGE,
            data_type=mc.TYPE_UINT8,
            format=mc.ModelInput.FORMAT_NHWC,
            dims=[-1, -1, direction.in_channels],
        )
    ]
    if direction.style_size:
        inputs.append(
            mc.ModelInput(
                name=STYLE, data_type=mc.TYPE_FP32, dims=[direction.style_size], optional=True
            )
        )
    gpu = any(word in direction.backend.name for word in GPU_BACKENDS)
    kind = mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU
    return mc.ModelConfig(
        name=target.name,
        platform=_platform(direction),
        backend="i2i",
        version_policy=mc.ModelVersionPolicy(
            specific=mc.ModelVersionPolicy.Specific(versions=list(versions))
        ),
        max_batch_size=direction.max_batch,
        input=inputs,
        output=[
            mc.ModelOutput(
                name=OUTPUT, data_type=mc.TYPE_UINT8, dims=[-1, -1, direction.out_channels]
            )
        ],
        dynamic_batching=mc.ModelDynamicBatching(
            max_queue_delay_microseconds=int(max_delay_ms * 1000),
            default_queue_policy=mc.ModelQueuePolicy(max_queue_size=max_queue),
        ),
        instance_group=[mc.ModelInstanceGroup(count=instances, kind=kind)],
        parameters={
            "i2i_model": mc.ModelParameter(string_value=direction.model),
            "i2i_direction": mc.ModelParameter(string_value=direction.name),
            "i2i_artifact": mc.ModelParameter(string_value=direction.backend.artifact),
            "i2i_precision": mc.ModelParameter(string_value=direction.backend.precision),
        },
    )


def infer_response(
    target: Target, request_id: str, results: Sequence[Result]
) -> v2.ModelInferResponse:
    """The reply: `translated` [N, H, W, C_out] in raw_output_contents."""
    outputs = np.stack([r.images[0] for r in results])  # each (H, W, C_out) uint8
    tensor = v2.ModelInferResponse.InferOutputTensor(
        name=OUTPUT, datatype="UINT8", shape=list(outputs.shape)
    )
    return v2.ModelInferResponse(
        model_name=target.name,
        model_version=str(target.direction.version),
        id=request_id,
        outputs=[tensor],
        raw_output_contents=[outputs.tobytes()],
    )


def _stream_error(message: Any, exc: ServingError) -> v2.ModelStreamInferResponse:
    """A stream's answer to a request that failed: Triton's form (error_message, and the
    request's id, model and version), with the status code in a parameter."""
    reply = v2.ModelStreamInferResponse(error_message=exc.message)
    if not isinstance(message, Malformed):
        reply.infer_response.id = message.id
        reply.infer_response.model_name = message.model_name
        reply.infer_response.model_version = message.model_version
    parameters = reply.infer_response.parameters
    parameters["i2i_status"].string_param = exc.code.name
    if exc.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        parameters["i2i_retryable"].bool_param = exc.retryable
    return reply


class InferenceServicer(v2_grpc.GRPCInferenceServiceServicer):
    """Thin: resolve the v2 model, check the tensors, run each image through the pipeline.

    Shares `translator`'s admission: --max-concurrent-rpcs counts Translate and ModelInfer
    calls together (`translator.in_flight`, which the drain waits for), and the two
    services start and stop accepting together (`translator.accepting`).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        metrics: ServerMetrics,
        translator: TranslatorServicer,
        executor: Any = None,
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        self.translator = translator
        self.executor = executor
        # _names() of the store's model dict it was built from: the store replaces that dict
        # when it loads (never changes it in place), so a new dict means new names.
        self._names_of: tuple[object, dict[str, list[tuple[str, str]]]] | None = None

    # ---- names and admission

    def _check_accepting(self) -> None:
        if not self.translator.accepting:
            raise Unavailable(
                "Server not ready: i2i-serve is starting up or shutting down; retry shortly, "
                "or on another replica"
            )

    def _admit(self) -> None:
        self._check_accepting()
        limit = self.translator.max_calls
        if limit is not None and self.translator.in_flight > limit:
            raise QueueFull(
                f"{limit} calls are already being handled (--max-concurrent-rpcs): retry with "
                f"backoff, or on another replica"
            )

    def _names(self) -> dict[str, list[tuple[str, str]]]:
        """Every v2 model name served, with the (model, direction) pairs it stands for;
        built once per set of loaded models (callers must not change it)."""
        models = self.pipeline.store.models
        if self._names_of is not None and self._names_of[0] is models:
            return self._names_of[1]
        names: dict[str, list[tuple[str, str]]] = {}
        for (model, _), loaded in sorted(models.items()):
            for direction in loaded.directions:
                pair = (model, direction)
                found = names.setdefault(v2_model_name(model, direction), [])
                if pair not in found:
                    found.append(pair)
        self._names_of = (models, names)
        return names

    def resolve(self, name: str, version_text: str) -> Target:
        """The loaded direction a v2 model name and version stand for (NotFound if none)."""
        version = parse_version(version_text)
        names = self._names()
        pairs = names.get(name)
        if pairs is None:  # "" too, as Triton answers it
            raise NotFound(
                f"Request for unknown model: '{name}' is not found; this server serves "
                f"{', '.join(names) or 'no model'} (<model>_<direction>)"
            )
        if len(pairs) > 1:
            listed = ", ".join(f"{m} {d}" for m, d in pairs)
            raise InvalidArgument(
                f"the v2 model name '{name}' is ambiguous on this server ({listed}): use the "
                f"i2i.v1.Translator service for these models"
            )
        model_name, direction_name = pairs[0]
        store = self.pipeline.store
        wanted = store.latest[model_name] if version is None else version
        model = store.models.get((model_name, wanted))
        if model is None or direction_name not in model.directions:
            have = ", ".join(str(v) for v in self.versions(model_name, direction_name))
            raise NotFound(
                f"Request for unknown model: '{name}' version {wanted} is not found; loaded "
                f"versions: {have}"
            )
        return Target(name, model, model.directions[direction_name])

    def versions(self, model: str, direction: str) -> list[int]:
        """The loaded versions of a model that have `direction`, oldest first."""
        return sorted(
            v for (m, v), loaded in self.pipeline.store.models.items()
            if m == model and direction in loaded.directions
        )  # fmt: skip

    # ---- health and metadata

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return v2.ServerLiveResponse(live=True)  # it answers: the process runs

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        return v2.ServerReadyResponse(ready=self.translator.accepting)

    async def ServerMetadata(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        return v2.ServerMetadataResponse(
            name=SERVER_NAME, version=i2i.__version__, extensions=list(EXTENSIONS)
        )

    async def _described(
        self,
        request: Any,
        context: grpc.aio.ServicerContext,
        build: Callable[[Target], Message],
    ) -> Any:
        try:
            self._check_accepting()
            parsed = _parsed(request)
            return build(self.resolve(parsed.name, parsed.version))
        except ServingError as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from None

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        # As Triton: a model or version it does not have is not ready (tritonclient's
        # is_model_ready returns False), not an error; a malformed request still is one.
        try:
            self._check_accepting()
            parsed = _parsed(request)
            self.resolve(parsed.name, parsed.version)
            return v2.ModelReadyResponse(ready=True)
        except NotFound:
            return v2.ModelReadyResponse(ready=False)
        except ServingError as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from None

    async def ModelMetadata(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        def build(target: Target) -> Message:
            versions = self.versions(target.model.name, target.direction.name)
            return model_metadata(target, versions)

        return await self._described(request, context, build)

    async def ModelConfig(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        config = self.pipeline.store.config

        def build(target: Target) -> Message:
            versions = self.versions(target.model.name, target.direction.name)
            built = model_config(
                target,
                versions,
                max_delay_ms=config.max_delay_ms,
                max_queue=config.max_queue,
                instances=config.instances,
            )
            return v2.ModelConfigResponse(config=built)

        return await self._described(request, context, build)

    # ---- inference

    async def _infer_one(
        self, message: Any, context: grpc.aio.ServicerContext
    ) -> v2.ModelInferResponse:
        """One ModelInfer request, counted and logged; raises ServingError."""
        start = time.monotonic()
        given_id = "" if isinstance(message, Malformed) else message.id
        request_id = clean_request_id(given_id) or new_request_id()
        images = 0
        code = grpc.StatusCode.OK
        where = {"request_id": request_id, "model": "unknown", "direction": "unknown"}
        self.translator.in_flight += 1
        try:
            self._admit()
            parsed = _parsed(message)
            target = self.resolve(parsed.model_name, parsed.model_version)
            where.update(model=target.direction.model, direction=target.direction.name)
            results = await self._run(parsed, target, request_id, start, context)
            images = len(results)
            size = sum(
                i.nbytes if isinstance(i, np.ndarray) else len(i) for r in results for i in r.images
            )
            if size > INLINE_REPLY_BYTES:  # copying MBs would stall the event loop
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(
                    self.executor, infer_response, target, given_id, results
                )
            return infer_response(target, given_id, results)
        except (asyncio.CancelledError, Exception) as exc:
            code, error = request_failed(exc, "v2 request", request_id, context, where)
            if error is exc:
                raise
            raise error from exc
        finally:
            self.translator.request_done("v2 request", request_id, code, start, images, where)

    async def _run(
        self,
        parsed: Any,
        target: Target,
        request_id: str,
        start: float,
        context: grpc.aio.ServicerContext,
    ) -> list[Result]:
        """Check the request, then run its images through the pipeline all at once."""
        direction = target.direction
        inputs = parse_inputs(parsed, target)
        parameters = parse_parameters(parsed.parameters, target)
        check_outputs(parsed, target)
        count, height, width, _ = inputs.images.shape
        if count > direction.max_batch:
            raise InvalidArgument(
                f"inference request batch-size must be <= {direction.max_batch} for "
                f"'{target.name}' (got {count} images): split the request"
            )
        batcher = direction.batcher
        assert batcher is not None  # every direction of a server's store has one
        if count > batcher.max_queue:
            raise ResourceExhausted(
                f"{count} images are more than the queue of {direction.label} holds "
                f"(--max-queue {batcher.max_queue}): split the request"
            )
        limit = self.pipeline.max_reply_bytes
        size = count * height * width * direction.out_channels
        if limit is not None and size > limit:
            raise ResourceExhausted(
                f"the reply would be {size} bytes, more than this server sends "
                f"(--max-message-mb, {limit} bytes): send fewer or smaller images"
            )
        deadlines = []
        remaining = context.time_remaining()
        if remaining is not None:
            deadlines.append(start + remaining)
        if parameters.timeout_s is not None:
            deadlines.append(start + parameters.timeout_s)
        deadline = min(deadlines) if deadlines else None
        requests = [
            Request(
                model=direction.model,
                direction=direction.name,
                version=direction.version,
                image=RawPixels(pixels.tobytes(), height, width, pixels.shape[-1]),
                num_samples=1,
                style_seed=parameters.style_seed if inputs.styles is None else None,
                style_code=None if inputs.styles is None else inputs.styles[index].tolist(),
                output_format="raw",
                size_policy=parameters.size_policy,
                request_id=request_id if count == 1 else f"{request_id}/{index}",
            )
            for index, pixels in enumerate(inputs.images)
        ]
        calls = _all(self.pipeline.translate(r, direction, deadline=deadline) for r in requests)
        if parameters.timeout_s is None:  # the call's own deadline: gRPC cancels it
            results = await calls
        else:  # the batcher checks deadlines only as it forms batches: enforce it here
            try:
                results = await asyncio.wait_for(
                    calls, start + parameters.timeout_s - time.monotonic()
                )
            except asyncio.TimeoutError:  # noqa: UP041 - distinct from TimeoutError on 3.10
                raise DeadlineExceeded(
                    f"the timeout parameter ({parameters.timeout_s * 1e6:.0f} µs) passed before "
                    f"the request was answered; the images not yet computed were dropped"
                ) from None
        for result in results:
            self.metrics.queued(direction.model, direction.name, result.queue_s)
        return results

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        try:
            return await self._infer_one(request, context)
        except ServingError as exc:
            await abort(context, exc)
            raise AssertionError("unreachable") from None

    async def ModelStreamInfer(  # noqa: N802
        self, request_iterator: AsyncIterator[Any], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[v2.ModelStreamInferResponse]:
        # As Triton: a failed request is answered in the stream (error_message) and the
        # stream goes on. Requests run concurrently (so one stream's requests batch
        # together), at most --max-queue of them at once per stream, and are answered in
        # the order they came. Once the server drains, a request refused for it ends the
        # stream with UNAVAILABLE (reconnect elsewhere).
        window = max(1, self.pipeline.store.config.max_queue)
        pending: asyncio.Queue[tuple[Any, asyncio.Future[Any]] | None] = asyncio.Queue(window)

        failed: list[Exception] = []

        async def read() -> None:
            try:
                async for message in request_iterator:
                    task = asyncio.ensure_future(self._infer_one(message, context))
                    await pending.put((message, task))
            except Exception as exc:  # reading the stream failed: end it with that error
                failed.append(exc)
            await pending.put(None)  # not on cancellation: only the loop below cancels it

        reader = asyncio.ensure_future(read())
        try:
            while (item := await pending.get()) is not None:
                message, task = item
                try:
                    reply = await task
                except ServingError as exc:
                    if not self.translator.accepting:
                        await abort(context, exc)
                    yield _stream_error(message, exc)
                    continue
                yield v2.ModelStreamInferResponse(infer_response=reply)
            if failed:
                raise failed[0]
        finally:
            reader.cancel()
            while not pending.empty():
                left = pending.get_nowait()
                if left is None:
                    continue
                if left[1].done() and not left[1].cancelled():
                    left[1].exception()  # answered by the abort: retrieved, not logged
                left[1].cancel()


def _unimplemented(method: str) -> Callable[[Any, grpc.aio.ServicerContext], Any]:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{SERVICE}/{method} is not implemented by i2i-serve: it serves the health, "
            f"metadata, config and inference RPCs ({', '.join(sorted(IMPLEMENTED))}); its "
            f"statistics are Prometheus metrics (--metrics-port)",
        )

    return refuse


async def _all(calls: Iterable[Any]) -> list[Result]:
    """Await the calls concurrently; on the first failure cancel the rest and raise it."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
