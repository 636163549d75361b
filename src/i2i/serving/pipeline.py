"""One translation, without the network: decode and fit, style, batch, restore and encode.

The servicer turns protocol messages into a `Request` and calls `Pipeline.translate`;
`LocalTranslator` (``i2i translate`` without a server) uses `prepare` and `finish` directly.
Nothing here imports gRPC messages; errors are `i2i.serving.errors` classes.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from i2i.serving import images
from i2i.serving.batcher import Closed, Expired, QueueFull
from i2i.serving.errors import (
    DeadlineExceeded,
    Internal,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
)
from i2i.serving.errors import QueueFull as QueueFullError
from i2i.serving.images import SIZE_POLICIES
from i2i.serving.store import LoadedDirection, ModelStore

OUTPUT_FORMATS = ("png", "jpeg", "webp", "raw")


@dataclass(frozen=True)
class RawPixels:
    """Uncompressed uint8 pixels as the client declared them."""

    pixels: bytes
    height: int
    width: int
    channels: int


@dataclass(frozen=True)
class Request:
    """A translation request in plain Python (the fields of TranslateRequest)."""

    model: str
    direction: str
    image: bytes | RawPixels
    version: int | None = None
    num_samples: int = 1
    style_seed: int | None = None
    style_code: Sequence[float] | None = None
    style_reference: bytes | RawPixels | None = None
    output_format: str | None = None  # None: PNG for encoded inputs, raw for raw inputs
    quality: int = 0
    size_policy: str = "pad"
    request_id: str = ""
    target_domain: str = ""  # multi-domain models: the same as direction "to_<domain>"


@dataclass(frozen=True)
class Result:
    """The outputs of one request and where its time went."""

    images: list[bytes | np.ndarray]  # encoded bytes, or (H, W, C) uint8 for raw output
    output_format: str
    direction: LoadedDirection
    request_id: str
    queue_s: float
    compute_s: float
    total_s: float
    batch_size: int


@dataclass(frozen=True)
class Prepared:
    """A decoded image fitted to the model, and how to get its outputs back."""

    pixels: np.ndarray  # (H', W', C_in) uint8, a size the model accepts
    restore: Callable[[np.ndarray], np.ndarray]
    style: np.ndarray | None  # (num_samples, S) float32 for multimodal models
    output_format: str
    quality: int
    size: tuple[int, int]  # the input's (height, width): the outputs' size


def new_request_id() -> str:
    return secrets.token_hex(8)


def check_parameters(request: Request, direction: LoadedDirection, max_samples: int) -> None:
    """Reject bad parameters before any image work, with a message that says what to send."""
    if request.size_policy not in SIZE_POLICIES:
        raise InvalidArgument(
            f"size_policy {request.size_policy!r} is unknown: use {', '.join(SIZE_POLICIES)}"
        )
    if request.output_format is not None and request.output_format not in OUTPUT_FORMATS:
        raise InvalidArgument(
            f"output format {request.output_format!r} is unknown: use {', '.join(OUTPUT_FORMATS)}"
        )
    if not 0 <= request.quality <= 100:
        raise InvalidArgument(f"quality must be 0 (default) to 100, got {request.quality}")
    styled = (
        request.style_seed is not None
        or request.style_code is not None
        or request.style_reference is not None
    )
    if direction.style_size == 0:
        if request.num_samples != 1:
            raise InvalidArgument(
                f"num_samples is {request.num_samples}, but model {direction.model!r} "
                f"({direction.family}) is not multimodal: it gives one output per image; "
                f"send num_samples 0 or 1"
            )
        if styled:
            raise InvalidArgument(
                f"model {direction.model!r} ({direction.family}) takes no style; leave style unset"
            )
        return
    limit = min(max_samples, direction.max_batch)
    if not 1 <= request.num_samples <= limit:
        raise InvalidArgument(f"num_samples must be 1 to {limit}, got {request.num_samples}")
    if request.style_code is not None and len(request.style_code) != direction.style_size:
        raise InvalidArgument(
            f"the style code has {len(request.style_code)} values; model {direction.model!r} "
            f"takes exactly {direction.style_size}"
        )
    if request.style_code is not None and not np.all(np.isfinite(request.style_code)):
        raise InvalidArgument("the style code has a NaN or infinite value")
    if request.style_reference is not None and direction.style_encoder is None:
        raise InvalidArgument(
            f"model {direction.model!r} version {direction.version} ({direction.name}) has no "
            f"style encoder in its repository version, so a reference image cannot set the "
            f"style; send a seed or a style code"
        )


def reference_style(
    reference: bytes | RawPixels, direction: LoadedDirection, max_pixels: int
) -> np.ndarray:
    """The style code (1, S) of a reference image, by the direction's style encoder.

    Blocking: run it in a worker thread. The reference is an image of the direction's
    target domain (its channels are converted to the encoder's, as an input image's are)
    and is resized to the nearest size the encoder takes: the code is a global statistic
    of the image, which resizing keeps and reflect-padding would skew.

    Raises:
        InvalidArgument: no style encoder, or a reference that cannot be decoded or fitted.
        ResourceExhausted: a reference image above the pixel limit.
    """
    encoder = direction.style_encoder
    if encoder is None:
        raise InvalidArgument(f"{direction.label} has no style encoder")
    try:
        if isinstance(reference, RawPixels):
            pixels = images.raw_image(
                reference.pixels,
                reference.height,
                reference.width,
                reference.channels,
                channels=encoder.in_channels,
                max_pixels=max_pixels,
            )
        else:
            pixels, _ = images.decode_image(
                reference, channels=encoder.in_channels, max_pixels=max_pixels
            )
        fitted = images.fit_to_rule(pixels, encoder.shape_rule, "resize")
    except InvalidArgument as exc:
        raise InvalidArgument(f"style.reference: {exc.message}") from None
    code = encoder.encode(fitted.pixels[None])  # (1, S)
    if not np.all(np.isfinite(code)):
        raise InvalidArgument(
            "the style encoder computed a NaN or infinite code for style.reference"
        )
    return code


def _style(request: Request, direction: LoadedDirection, max_pixels: int) -> np.ndarray | None:
    if direction.style_size == 0:
        return None
    shape = (request.num_samples, direction.style_size)
    if request.style_code is not None:
        return np.repeat(np.asarray(request.style_code, np.float32)[None], shape[0], 0)
    if request.style_reference is not None:
        code = reference_style(request.style_reference, direction, max_pixels)
        return np.repeat(code, shape[0], 0)  # (K, S): the same style for every sample
    rng = np.random.default_rng(request.style_seed)  # None: fresh entropy, a random style
    return rng.standard_normal(shape).astype(np.float32)


def prepare(request: Request, direction: LoadedDirection, max_pixels: int) -> Prepared:
    """Decode, convert and fit the image, and make the style: K seeded codes, the given
    code K times, or a reference image's code from the style encoder K times (blocking:
    run it in a worker thread)."""
    if isinstance(request.image, RawPixels):
        raw = request.image
        pixels = images.raw_image(
            raw.pixels,
            raw.height,
            raw.width,
            raw.channels,
            channels=direction.in_channels,
            max_pixels=max_pixels,
        )
        default_format = "raw"
    else:
        pixels, _ = images.decode_image(
            request.image, channels=direction.in_channels, max_pixels=max_pixels
        )
        default_format = "png"
    size = (int(pixels.shape[0]), int(pixels.shape[1]))
    # Before the batch: a size the network cannot take is this request's INVALID_ARGUMENT.
    fitted = images.fit_to_rule(pixels, direction.backend.shape_rule, request.size_policy)
    return Prepared(
        pixels=fitted.pixels,
        restore=fitted.restore,
        style=_style(request, direction, max_pixels),
        output_format=request.output_format or default_format,
        quality=request.quality,
        size=size,
    )


def finish(outputs: np.ndarray, prepared: Prepared) -> list[bytes | np.ndarray]:
    """Crop or resize each output back and encode it (blocking: run it in a worker thread)."""
    results: list[bytes | np.ndarray] = []
    for output in outputs:  # (H', W', C_out) each
        restored = prepared.restore(output)  # ValueError if the model changed the size
        if prepared.output_format == "raw":
            results.append(np.ascontiguousarray(restored))
        else:
            results.append(images.encode_image(restored, prepared.output_format, prepared.quality))
    return results


class Pipeline:
    """Runs requests through a model store: thread pool for images, batcher for compute."""

    def __init__(
        self,
        store: ModelStore,
        executor: Executor,
        *,
        max_pixels: int,
        max_samples: int,
        max_reply_bytes: int | None = None,
    ):
        self.store = store
        self.executor = executor
        self.max_pixels = max_pixels
        self.max_samples = max_samples
        self.max_reply_bytes = max_reply_bytes

    @staticmethod
    def _queue_full(direction: LoadedDirection, max_queue: int) -> QueueFullError:
        shared = " (shared by the model's targets)" if direction.domain_index is not None else ""
        return QueueFullError(
            f"the queue of {direction.label}{shared} is full ({max_queue} requests waiting or "
            f"being decoded): retry with backoff, or add replicas"
        )

    def _check_reply_size(self, prepared: Prepared, direction: LoadedDirection, k: int) -> None:
        """Refuse a raw reply that could not be sent, before computing it."""
        if prepared.output_format != "raw" or self.max_reply_bytes is None:
            return
        height, width = prepared.size
        size = height * width * direction.out_channels * k
        if size > self.max_reply_bytes:
            raise ResourceExhausted(
                f"the raw reply would be {size} bytes, more than this server sends "
                f"(--max-message-mb, {self.max_reply_bytes} bytes): ask for PNG, JPEG or WebP "
                f"output, or send a smaller image"
            )

    def lookup(self, request: Request) -> LoadedDirection:
        """The loaded direction a request names by direction or target domain (NotFound
        with what is loaded otherwise)."""
        return self.store.direction(
            request.model, request.version, request.direction, request.target_domain
        )

    async def translate(
        self,
        request: Request,
        direction: LoadedDirection | None = None,
        *,
        deadline: float | None = None,
    ) -> Result:
        """Translate one request. `direction`: its `lookup`, if the caller has done it;
        `deadline` is on time.monotonic()'s scale."""
        start = time.monotonic()
        request_id = request.request_id or new_request_id()
        direction = direction or self.lookup(request)
        batcher = direction.batcher
        assert batcher is not None  # every direction of a server's store has one
        check_parameters(request, direction, self.max_samples)
        # Admission: requests being decoded count against --max-queue with those queued,
        # so an overload is refused before it costs a decode or holds its pixels; both are
        # the batcher's, which a multi-domain model's directions share.
        if batcher.queue_depth + batcher.preparing >= batcher.max_queue:
            raise self._queue_full(direction, batcher.max_queue)
        loop = asyncio.get_running_loop()
        batcher.preparing += 1
        try:
            prepared = await loop.run_in_executor(
                self.executor, prepare, request, direction, self.max_pixels
            )
        finally:
            batcher.preparing -= 1
        self._check_reply_size(prepared, direction, request.num_samples)
        height, width = prepared.pixels.shape[:2]
        refusal = direction.backend.accepts_size(height, width)
        if refusal is not None:
            raise InvalidArgument(refusal)
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("the deadline passed while the image was being decoded")
        work: tuple[object, ...] = (prepared.pixels, prepared.style)
        if direction.domain_index is not None:  # the shared conditional graph's target
            work = (*work, direction.domain_index)
        # A batch's cost is its pixels, the measure of its memory (--max-batch-pixels).
        pixels = height * width * request.num_samples
        try:
            outputs, timing = await batcher.submit(
                (height, width), work, size=request.num_samples, cost=pixels, deadline=deadline
            )
        except QueueFull:
            raise self._queue_full(direction, batcher.max_queue) from None
        except Expired:
            raise DeadlineExceeded(
                "the deadline passed while the request waited in the queue; it was not computed"
            ) from None
        except Closed:
            raise Unavailable("the server is shutting down: retry on another replica") from None
        except Exception as exc:  # the backend failed this batch: only its requests see it
            raise Internal(
                f"the backend failed on the batch of request {request_id} ({direction.label}, "
                f"{direction.backend.name}): {type(exc).__name__}: {exc}"
            ) from exc
        encoded = await loop.run_in_executor(self.executor, finish, outputs, prepared)
        return Result(
            images=encoded,
            output_format=prepared.output_format,
            direction=direction,
            request_id=request_id,
            queue_s=timing.queue_s,
            compute_s=timing.compute_s,
            total_s=time.monotonic() - start,
            batch_size=timing.batch_size,
        )
