"""The asyncio Python client of an i2i server: `Client`'s methods as coroutines (grpc.aio)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import grpc
import grpc.aio
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


class AsyncClient(ClientBase):
    """`Client` for asyncio code: the same arguments, retries and errors, awaited.

    Create it inside the event loop that uses it; `await client.close()` or
    `async with AsyncClient(...) as client:`. See `Client` for the arguments.
    """

    def _open_channel(
        self, target: str, credentials: grpc.ChannelCredentials | None, options: list[Any]
    ) -> Any:
        if credentials is None:
            return grpc.aio.insecure_channel(target, options=options)
        return grpc.aio.secure_channel(target, credentials, options=options)

    async def translate(
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
        """Translate one image; see `Client.translate`."""
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
        response = await self._call(self._stub.Translate, request, timeout, request.request_id)
        return result_of(response)

    async def translate_stream(
        self, frames: Iterable[Frame] | AsyncIterable[Frame], *, timeout: float | None = None
    ) -> AsyncIterator[TranslateResult]:
        """Translate a stream of frames in order; see `Client.translate_stream`."""
        failed: list[BaseException] = []

        async def requests() -> AsyncIterator[pb.TranslateRequest]:
            try:
                if isinstance(frames, AsyncIterable):
                    async for frame in frames:
                        yield request_message(frame)
                else:
                    for frame in frames:
                        yield request_message(frame)
            except Exception as exc:  # surfaced to the caller below
                failed.append(exc)
                raise

        call = self._stub.TranslateStream(requests(), timeout=timeout, metadata=self._metadata)
        try:
            async for response in call:
                yield result_of(response)
        except grpc.RpcError as exc:
            if failed:
                raise failed[0] from None
            raise error_of(exc, "") from exc
        finally:
            call.cancel()
        if failed:
            raise failed[0]

    async def list_models(self, *, timeout: Timeout = DEFAULT_TIMEOUT) -> list[pb.ModelInfo]:
        """The models the server has loaded (`i2i.v1.ModelInfo` messages)."""
        response = await self._call(self._stub.ListModels, pb.ListModelsRequest(), timeout, "")
        return list(response.models)

    async def get_model(
        self, model: str, version: int = 0, *, timeout: Timeout = DEFAULT_TIMEOUT
    ) -> pb.ModelInfo:
        """One loaded model (an `i2i.v1.ModelInfo`)."""
        request = pb.GetModelRequest(model=model, version=version)
        result: pb.ModelInfo = await self._call(self._stub.GetModel, request, timeout, "")
        return result

    async def health(self, service: str = "", *, timeout: Timeout = DEFAULT_TIMEOUT) -> str:
        """The standard health check: "SERVING", "NOT_SERVING", ... ("" is the whole server)."""
        request = health_pb2.HealthCheckRequest(service=service)
        response = await self._call(self._health.Check, request, timeout, "")
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    async def _call(
        self,
        method: Callable[..., Awaitable[T]],
        request: Any,
        timeout: Timeout,
        request_id: str,
    ) -> T:
        """Call a unary method; gRPC retries it by the channel's policy, within the deadline."""
        try:
            return await method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_of(exc, request_id) from exc

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
