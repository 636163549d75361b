"""The Python clients against a real gRPC server on 127.0.0.1: round trips, retries, streams."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from i2i.client import AsyncClient, Client, Frame, TranslateError
from i2i.client.messages import channel_options
from tests.client.conftest import (
    FOREVER,
    MODEL,
    FakeServer,
    decode,
    encode,
    random_image,
    self_signed_certificate,
    start_server,
)

FAST = {"backoff_s": 0.01, "max_backoff_s": 0.02}


def inverted(pixels: np.ndarray, k: int = 0) -> np.ndarray:
    return (255 - pixels.astype(np.int16) + k).clip(0, 255).astype(np.uint8)


def test_bytes_round_trip(fake_server: FakeServer) -> None:
    image = random_image()
    with Client(fake_server.target) as client:
        result = client.translate(encode(image), model=MODEL, direction="A2B", request_id="r-1")
        assert len(result.images) == 1 and isinstance(result.images[0], bytes)
        np.testing.assert_array_equal(decode(result.images[0]), inverted(image))
        assert (result.model, result.version, result.direction) == (MODEL, 1, "A2B")
        assert result.request_id == "r-1" and result.batch_size == 1
        assert (result.timing.queue_ms, result.timing.compute_ms, result.timing.total_ms) == (
            1.0,
            2.0,
            4.0,
        )
        # The output format and the number of samples reach the server.
        result = client.translate(
            encode(image), model=MODEL, direction="B2A", output_format="jpeg", num_samples=2
        )
        assert len(result.images) == 2
        assert all(isinstance(i, bytes) and i[:2] == b"\xff\xd8" for i in result.images)
        # Without a request id, the client makes one (so errors and retries can name it).
        assert len(client.translate(encode(image), model=MODEL, direction="A2B").request_id) == 32


def test_ndarray_round_trip(fake_server: FakeServer) -> None:
    image = random_image(channels=3)
    with Client(fake_server.target) as client:
        result = client.translate(image, model=MODEL, direction="A2B")
        out = result.images[0]
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out, inverted(image))
        # A 2-D array is one channel; a non-contiguous view is sent as its pixels.
        gray = random_image(channels=1)[:, :, 0]
        out = client.translate(gray, model=MODEL, direction="A2B").images[0]
        assert isinstance(out, np.ndarray) and out.shape == (*gray.shape, 1)
        np.testing.assert_array_equal(out[:, :, 0], inverted(gray))
        view = image[::2, ::2]
        out = client.translate(view, model=MODEL, direction="A2B", output_format="png").images[0]
        assert isinstance(out, bytes)
        np.testing.assert_array_equal(decode(out), inverted(view))


def test_bad_arguments_are_refused_before_sending(fake_server: FakeServer) -> None:
    image = random_image()
    with Client(fake_server.target) as client:
        bad = [
            ({"image": image.astype(np.float32)}, "uint8"),
            ({"image": random_image(channels=2)}, "channels"),
            ({"image": image, "output_format": "gif"}, "output_format"),
            ({"image": image, "size_policy": "crop"}, "size_policy"),
            ({"image": image, "style_seed": 1, "style_code": [0.0]}, "at most one"),
            ({"image": image, "num_samples": 0}, "num_samples"),
            ({"image": image, "quality": 101}, "quality"),
        ]
        for kwargs, words in bad:
            with pytest.raises(ValueError, match=words):
                client.translate(model=MODEL, direction="A2B", **kwargs)
        with pytest.raises(TypeError, match="bytes"):
            client.translate("a.png", model=MODEL, direction="A2B")  # type: ignore[arg-type]
    assert fake_server.servicer.attempts == 0
    with pytest.raises(ValueError, match="private_key"):
        Client(fake_server.target, root_certificates=b"x", certificate_chain=b"y")


def test_empty_bytes_are_the_servers_invalid_argument(fake_server: FakeServer) -> None:
    # The docs promise TranslateError for every failure; empty bytes are a file the server
    # cannot decode, like any other, not a bad Python argument.
    with Client(fake_server.target, **FAST) as client, pytest.raises(TranslateError) as caught:
        client.translate(b"", model=MODEL, direction="A2B", request_id="e-1")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.request_id == "e-1" and fake_server.servicer.attempts == 1


def test_unavailable_is_retried_by_grpc_until_success(fake_server: FakeServer) -> None:
    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE, times=3)
    with Client(fake_server.target, retries=4, **FAST) as client:
        result = client.translate(random_image(), model=MODEL, direction="A2B")
    assert isinstance(result.images[0], np.ndarray)
    assert fake_server.servicer.attempts == 4
    # gRPC's retry policy made the attempts: it numbers each retry in this header.
    assert fake_server.servicer.previous_attempts == [None, "1", "2", "3"]


def test_retries_are_limited(fake_server: FakeServer) -> None:
    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE, times=3)
    client = Client(fake_server.target, retries=2, **FAST)
    with client, pytest.raises(TranslateError) as caught:
        client.translate(random_image(), model=MODEL, direction="A2B", request_id="r-9")
    assert fake_server.servicer.attempts == 3
    error = caught.value
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert error.request_id == "r-9" and "told to fail" in error.details
    assert isinstance(error.__cause__, grpc.RpcError)

    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE)
    with Client(fake_server.target, retries=0) as client, pytest.raises(TranslateError):
        client.translate(random_image(), model=MODEL, direction="A2B")
    assert fake_server.servicer.attempts == 4


def test_retry_settings_grpc_cannot_honour_are_refused(fake_server: FakeServer) -> None:
    # gRPC clamps a retry policy to 5 attempts; more retries would silently not happen.
    for bad, words in [
        ({"retries": 5}, "retries must be 0 to 4"),
        ({"retries": -1}, "retries must be 0 to 4"),
        ({"backoff_s": 0.001}, "backoff_s must be at least 0.01 s"),
        ({"max_backoff_s": float("nan")}, "max_backoff_s must be at least 0.01 s"),
    ]:
        with pytest.raises(ValueError, match=words):
            Client(fake_server.target, **bad)  # type: ignore[arg-type]


def test_a_large_request_is_retried(fake_server: FakeServer) -> None:
    # 1.2 MB of raw pixels: more than gRPC buffers for a retry by default (256 KiB).
    image = np.random.default_rng(1).integers(0, 256, (640, 640, 3), dtype=np.uint8)
    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE, times=2)
    with Client(fake_server.target, **FAST) as client:
        out = client.translate(image, model=MODEL, direction="A2B").images[0]
    np.testing.assert_array_equal(out, inverted(image))
    assert fake_server.servicer.attempts == 3


def test_resource_exhausted_is_retried_unless_the_server_pushes_back(
    fake_server: FakeServer,
) -> None:
    servicer = fake_server.servicer
    # A full queue: retried after the client's own backoff.
    servicer.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, times=2, retryable="true")
    with Client(fake_server.target, **FAST) as client:
        client.translate(random_image(), model=MODEL, direction="A2B")
        assert servicer.attempts == 3
        # An image too large: the server says not to retry (pushback -1, gRFC A6).
        servicer.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, retryable="false", pushback_ms="-1")
        with pytest.raises(TranslateError) as caught:
            client.translate(random_image(), model=MODEL, direction="A2B")
        assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert servicer.attempts == 4
        # A delay the server asks for replaces the client's backoff (here at most 24 ms).
        servicer.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, times=2, pushback_ms="150")
        start = time.monotonic()
        client.translate(random_image(), model=MODEL, direction="A2B")
        assert time.monotonic() - start >= 0.3
        assert servicer.attempts == 7
    # Other codes are not retried, whatever the server says.
    servicer.fail(grpc.StatusCode.INTERNAL, pushback_ms="0")
    with Client(fake_server.target, **FAST) as client, pytest.raises(TranslateError):
        client.translate(random_image(), model=MODEL, direction="A2B")
    assert servicer.attempts == 8


def test_invalid_argument_is_not_retried(fake_server: FakeServer) -> None:
    with Client(fake_server.target, **FAST) as client, pytest.raises(TranslateError) as caught:
        client.translate(b"not an image", model=MODEL, direction="A2B", request_id="bad-1")
    assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in caught.value.details and caught.value.request_id == "bad-1"
    assert fake_server.servicer.attempts == 1


def test_retries_stop_at_the_deadline(fake_server: FakeServer) -> None:
    # The server asks for a retry in 1 s; the call's deadline (0.3 s) comes first.
    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE, times=FOREVER, pushback_ms="1000")
    client = Client(fake_server.target, **FAST)
    with client, pytest.raises(TranslateError) as caught:
        client.translate(random_image(), model=MODEL, direction="A2B", timeout=0.3)
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fake_server.servicer.attempts == 1


def test_callers_options_replace_the_clients(fake_server: FakeServer) -> None:
    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE, times=2)
    no_retries = [("grpc.enable_retries", 0)]
    with Client(fake_server.target, options=no_retries) as client, pytest.raises(TranslateError):
        client.translate(random_image(), model=MODEL, direction="A2B")
    assert fake_server.servicer.attempts == 1
    options = channel_options(1 << 20, 4, 0.1, 2.0, no_retries)
    assert [name for name, _ in options].count("grpc.enable_retries") == 1
    config = json.loads(dict(options)["grpc.service_config"])
    assert config["methodConfig"][0]["retryPolicy"]["initialBackoff"] == "0.100000000s"


def test_one_deadline_covers_a_slow_attempt(fake_server: FakeServer) -> None:
    fake_server.servicer.delay_s = 30.0
    client = Client(fake_server.target, timeout=0.3, **FAST)
    with client, pytest.raises(TranslateError) as caught:
        client.translate(random_image(), model=MODEL, direction="A2B")
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert fake_server.servicer.attempts == 1


def test_token_is_sent(fake_server: FakeServer) -> None:
    fake_server.servicer.token = "s3cret"
    with Client(fake_server.target, **FAST) as client, pytest.raises(TranslateError) as caught:
        client.translate(random_image(), model=MODEL, direction="A2B")
    assert caught.value.code == grpc.StatusCode.UNAUTHENTICATED
    with Client(fake_server.target, token="s3cret") as client:
        client.translate(random_image(), model=MODEL, direction="A2B")
        assert [m.name for m in client.list_models()] == [MODEL]
    assert fake_server.servicer.authorization[-2:] == ["Bearer s3cret"] * 2


def test_stream_keeps_order_and_ends_on_an_error(fake_server: FakeServer) -> None:
    images = [random_image(seed=i) for i in range(5)]
    frames = (
        Frame(img, model=MODEL, direction="A2B", request_id=f"f{i}") for i, img in enumerate(images)
    )
    with Client(fake_server.target) as client:
        results = list(client.translate_stream(frames))
        assert [r.request_id for r in results] == [f"f{i}" for i in range(5)]
        for image, result in zip(images, results, strict=True):
            np.testing.assert_array_equal(result.images[0], inverted(image))

        bad = [
            Frame(images[0], model=MODEL, direction="A2B"),
            Frame(b"junk", model=MODEL, direction="A2B"),
        ]
        got = []
        with pytest.raises(TranslateError) as caught:
            got.extend(client.translate_stream(bad))
        assert len(got) == 1 and caught.value.code == grpc.StatusCode.INVALID_ARGUMENT

        # A bad Frame raises its own ValueError, not a cancelled stream.
        wrong = [Frame(images[0].astype(np.float64), model=MODEL, direction="A2B")]
        with pytest.raises(ValueError, match="uint8"):
            list(client.translate_stream(wrong))
    assert fake_server.servicer.attempts == 0  # streams do not go through Translate


def test_streams_are_not_retried(fake_server: FakeServer) -> None:
    # A stream's frames are read lazily and not replayed: gRPC must not retry it.
    fake_server.servicer.fail(grpc.StatusCode.UNAVAILABLE)
    frames = [Frame(random_image(), model=MODEL, direction="A2B")]
    with Client(fake_server.target, **FAST) as client, pytest.raises(TranslateError) as caught:
        list(client.translate_stream(frames))
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert fake_server.servicer.streams == 1


def test_models_and_health(fake_server: FakeServer) -> None:
    with Client(fake_server.target, **FAST) as client:
        models = client.list_models()
        assert [(m.name, m.version) for m in models] == [(MODEL, 1)]
        info = client.get_model(MODEL)
        assert [d.name for d in info.directions] == ["A2B", "B2A"]
        with pytest.raises(TranslateError) as caught:
            client.get_model("nope")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND and "nope" in caught.value.details
        assert client.health() == "SERVING"
        assert client.health("i2i.v1.Translator") == "NOT_SERVING"
        with pytest.raises(TranslateError) as caught:
            client.health("no.such.Service")
        assert caught.value.code == grpc.StatusCode.NOT_FOUND


def test_async_client(fake_server: FakeServer) -> None:
    servicer = fake_server.servicer
    image = random_image()

    async def frames() -> AsyncIterator[Frame]:
        for i in range(4):
            yield Frame(random_image(seed=i), model=MODEL, direction="B2A", request_id=f"a{i}")

    async def main() -> None:
        async with AsyncClient(fake_server.target, retries=3, **FAST) as client:
            result = await client.translate(encode(image), model=MODEL, direction="A2B")
            assert isinstance(result.images[0], bytes)
            np.testing.assert_array_equal(decode(result.images[0]), inverted(image))
            result = await client.translate(image, model=MODEL, direction="A2B", num_samples=2)
            np.testing.assert_array_equal(result.images[1], inverted(image, 1))

            servicer.attempts = 0
            servicer.fail(grpc.StatusCode.UNAVAILABLE, times=2)
            await client.translate(image, model=MODEL, direction="A2B")
            assert servicer.attempts == 3

            servicer.attempts = 0
            servicer.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, retryable="false", pushback_ms="-1")
            with pytest.raises(TranslateError) as caught:
                await client.translate(image, model=MODEL, direction="A2B")
            assert caught.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert servicer.attempts == 1

            servicer.attempts = 0
            servicer.fail(grpc.StatusCode.RESOURCE_EXHAUSTED, retryable="true")
            await client.translate(image, model=MODEL, direction="A2B")
            assert servicer.attempts == 2

            servicer.attempts = 0
            with pytest.raises(TranslateError) as caught:
                await client.translate(b"", model=MODEL, direction="A2B")
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and servicer.attempts == 1

            servicer.attempts = 0
            with pytest.raises(TranslateError) as caught:
                await client.translate(b"junk", model=MODEL, direction="A2B")
            assert caught.value.code == grpc.StatusCode.INVALID_ARGUMENT and servicer.attempts == 1

            results = [r async for r in client.translate_stream(frames())]
            assert [r.request_id for r in results] == [f"a{i}" for i in range(4)]
            np.testing.assert_array_equal(results[3].images[0], inverted(random_image(seed=3)))

            assert [m.name for m in await client.list_models()] == [MODEL]
            assert (await client.get_model(MODEL)).family == "cyclegan"
            assert await client.health() == "SERVING"

        servicer.attempts = 0
        servicer.fail(grpc.StatusCode.UNAVAILABLE, times=FOREVER, pushback_ms="1000")
        async with AsyncClient(fake_server.target, token="t0k", **FAST) as client:
            with pytest.raises(TranslateError) as caught:
                await client.translate(image, model=MODEL, direction="A2B", timeout=0.3)
            assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
            assert servicer.attempts == 1
        assert servicer.authorization[-1] == "Bearer t0k"

    asyncio.run(asyncio.wait_for(main(), 20))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls_and_mutual_tls(tmp_path) -> None:
    key, cert = self_signed_certificate(tmp_path)
    image = random_image()

    server, running = start_server(grpc.ssl_server_credentials([(key, cert)]))
    try:
        with Client(running.target, root_certificates=cert) as client:
            out = client.translate(image, model=MODEL, direction="A2B").images[0]
            np.testing.assert_array_equal(out, inverted(image))
        with Client(running.target, retries=0) as plaintext, pytest.raises(TranslateError):
            plaintext.translate(image, model=MODEL, direction="A2B")
    finally:
        server.stop(0)

    # Mutual TLS: the server trusts only clients that show this certificate.
    credentials = grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=cert, require_client_auth=True
    )
    server, running = start_server(credentials)
    try:
        anonymous = Client(running.target, root_certificates=cert, retries=0)
        with anonymous, pytest.raises(TranslateError):
            anonymous.translate(image, model=MODEL, direction="A2B")
        with Client(
            running.target, root_certificates=cert, certificate_chain=cert, private_key=key
        ) as client:
            assert client.health() == "SERVING"

        async def main() -> str:
            async with AsyncClient(
                running.target, root_certificates=cert, certificate_chain=cert, private_key=key
            ) as aclient:
                result = await aclient.translate(image, model=MODEL, direction="A2B")
                assert isinstance(result.images[0], np.ndarray)
                return await aclient.health()

        assert asyncio.run(asyncio.wait_for(main(), 20)) == "SERVING"
    finally:
        server.stop(0)
