"""The Python clients against the real i2i server (ONNX Runtime, the tiny model) on 127.0.0.1."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from i2i.client import AsyncClient, Client, TranslateError
from tests.serving.conftest import MODEL, RunningServer
from tests.serving.test_bad_inputs import png_declaring

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.02}


def answered(server: RunningServer, code: str) -> float:
    """How many Translate attempts the server answered with `code`, over all routes."""
    prefix = "i2i_inference_requests_total{"
    return sum(
        value
        for name, value in server.metrics().items()
        if name.startswith(prefix) and f'code="{code}"' in name
    )


def test_empty_bytes_raise_translate_error(shared_server: RunningServer) -> None:
    # The documented promise: every failure of a call is a TranslateError (here the
    # server's INVALID_ARGUMENT), not a ValueError for this one kind of bad file.
    with Client(shared_server.target, **FAST) as client, pytest.raises(TranslateError) as caught:
        client.translate(b"", model=MODEL, direction="A2B", request_id="empty-1")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in caught.value.details and caught.value.request_id == "empty-1"

    async def main() -> TranslateError:
        async with AsyncClient(shared_server.target, **FAST) as aclient:
            with pytest.raises(TranslateError) as caught:
                await aclient.translate(b"", model=MODEL, direction="A2B")
            return caught.value

    error = asyncio.run(asyncio.wait_for(main(), 30))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT and "empty" in error.details


def test_an_image_too_large_is_not_retried(shared_server: RunningServer) -> None:
    before = answered(shared_server, "RESOURCE_EXHAUSTED")
    bomb = png_declaring(50_000, 50_000)  # refused from its header, before decoding
    with Client(shared_server.target, **FAST) as client, pytest.raises(TranslateError) as caught:
        client.translate(bomb, model=MODEL, direction="A2B")
    assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert answered(shared_server, "RESOURCE_EXHAUSTED") - before == 1
