"""Every kind of bad input gets its documented status code, and the server stays SERVING."""

from __future__ import annotations

import io
import struct
import zlib

import grpc
import numpy as np
import pytest
from PIL import Image

from i2i.v1 import translator_pb2 as pb
from tests.serving.conftest import MODEL, png_bytes, sample_image

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def encoded(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A valid small PNG whose header claims `width` x `height` (a decompression bomb)."""
    data = bytearray(png_bytes(sample_image(8, 8)))
    ihdr = 8  # after the signature: length (4), b"IHDR" (4), data (13), crc (4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21]))
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def raw(pixels: bytes, height: int, width: int, channels: int) -> pb.Image:
    return pb.Image(raw=pb.RawImage(pixels=pixels, height=height, width=width, channels=channels))


RGB = sample_image(32, 32)
GOOD = png_bytes(RGB)
JPEG = encoded(Image.fromarray(RGB), "JPEG", quality=90)
gradient16 = (np.mgrid[0:32, 0:32][1] * 2000).astype(np.uint16)

# (case id, image, extra request fields, expected code, words the message must contain)
CASES = [
    ("empty", pb.Image(encoded=b""), {}, INVALID, "empty"),
    ("no-image", None, {}, INVALID, "missing"),
    ("garbage", pb.Image(encoded=b"not an image at all" * 10), {}, INVALID, "decoded"),
    ("truncated-png", pb.Image(encoded=GOOD[: len(GOOD) // 2]), {}, INVALID, "decoded"),
    ("truncated-jpeg", pb.Image(encoded=JPEG[: len(JPEG) // 2]), {}, INVALID, "decoded"),
    ("gif", pb.Image(encoded=encoded(Image.fromarray(RGB), "GIF")), {}, INVALID, "GIF"),
    ("bomb", pb.Image(encoded=png_declaring(50_000, 50_000)), {}, EXHAUSTED, "50000"),
    ("16-bit", pb.Image(encoded=encoded(Image.fromarray(gradient16))), {}, OK, ""),
    ("palette", pb.Image(encoded=encoded(Image.fromarray(RGB).convert("P"))), {}, OK, ""),
    ("cmyk", pb.Image(encoded=encoded(Image.fromarray(RGB).convert("CMYK"), "JPEG")), {}, OK, ""),
    ("rgba", pb.Image(encoded=encoded(Image.fromarray(RGB).convert("RGBA"))), {}, OK, ""),
    ("grayscale", pb.Image(encoded=encoded(Image.fromarray(RGB).convert("L"))), {}, OK, ""),
    ("raw-zero", raw(b"", 0, 0, 3), {}, INVALID, ""),
    ("raw-huge", raw(b"\0" * 12, 100_000, 100_000, 3), {}, EXHAUSTED, "100000"),
    ("raw-wrong-size", raw(RGB.tobytes()[:-1], 32, 32, 3), {}, INVALID, "bytes"),
    ("raw-channels", raw(b"\0" * 32 * 32 * 2, 32, 32, 2), {}, INVALID, "channels"),
    ("unknown-model", pb.Image(encoded=GOOD), {"model": "nope"}, NOT_FOUND, "tiny"),
    ("unknown-direction", pb.Image(encoded=GOOD), {"direction": "C2D"}, NOT_FOUND, "A2B"),
    ("unknown-version", pb.Image(encoded=GOOD), {"version": 9}, NOT_FOUND, "version 9"),
    ("no-model", pb.Image(encoded=GOOD), {"model": ""}, INVALID, "model"),
    ("style-seed", pb.Image(encoded=GOOD), {"style": pb.Style(seed=3)}, INVALID, "style"),
    (
        "style-code",
        pb.Image(encoded=GOOD),
        {"style": pb.Style(code=pb.StyleCode(values=[0.1] * 8))},
        INVALID,
        "style",
    ),
    ("num-samples", pb.Image(encoded=GOOD), {"num_samples": 3}, INVALID, "num_samples"),
    (
        "quality",
        pb.Image(encoded=GOOD),
        {"output": pb.OutputOptions(quality=150)},
        INVALID,
        "quality",
    ),
    (
        "format-enum",
        pb.Image(encoded=GOOD),
        {"output": pb.OutputOptions(format=42)},
        INVALID,
        "format",
    ),
    ("policy-enum", pb.Image(encoded=GOOD), {"size_policy": 9}, INVALID, "size_policy"),
    # Below what the ResNet generator takes (sides of 8): refused before the batch, by name.
    ("tiny-pad", pb.Image(encoded=png_bytes(sample_image(4, 64))), {}, INVALID, "8x8"),
    ("1x1-pad", raw(b"\0\0\0", 1, 1, 3), {}, INVALID, "smallest accepted size is 8x8"),
    (
        "tiny-reject",
        pb.Image(encoded=png_bytes(sample_image(5, 64))),
        {"size_policy": pb.SIZE_POLICY_REJECT},
        INVALID,
        "smallest accepted size: 8x8",
    ),
]


@pytest.mark.parametrize(
    ("image", "fields", "code", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_gets_its_code(shared_server, image, fields, code, words):
    message = pb.TranslateRequest(**{"model": MODEL, "direction": "A2B", **fields})
    if image is not None:
        message.image.CopyFrom(image)
    stub = shared_server.stub()
    if code == OK:  # converted as documented: RGB out, the input's size
        reply = stub.Translate(message, timeout=30)
        out = Image.open(io.BytesIO(reply.images[0].encoded))
        assert (out.mode, out.size) == ("RGB", (32, 32))
    else:
        with pytest.raises(grpc.RpcError) as caught:
            stub.Translate(message, timeout=30)
        assert caught.value.code() == code, caught.value.details()
        assert words in caught.value.details()
        if code == EXHAUSTED:  # too large: a retry cannot help, and the client is told
            trailers = dict(caught.value.trailing_metadata())
            assert trailers.get("i2i-retryable") == "false"
            assert trailers.get("grpc-retry-pushback-ms") == "-1"  # gRPC's "do not retry"
    assert shared_server.health() == "SERVING"


@pytest.mark.parametrize("size", [(1, 1), (4, 64), (5, 64), (64, 7)])
def test_resize_scales_too_small_images_up_and_back(shared_server, size):
    pixels = sample_image(*size)
    message = pb.TranslateRequest(
        model=MODEL,
        direction="A2B",
        image=raw(pixels.tobytes(), *size, 3),
        size_policy=pb.SIZE_POLICY_RESIZE,
    )
    reply = shared_server.stub().Translate(message, timeout=30)
    out = reply.images[0].raw
    assert (out.height, out.width, out.channels) == (*size, 3)


def test_a_body_that_is_not_a_protobuf_is_invalid_argument(start_server):
    server = start_server()
    garbage = b"\xff\xff\xff\xff garbage, not a protobuf"
    with server.channel() as channel:
        for method in ("Translate", "GetModel", "ListModels"):
            call = channel.unary_unary(f"/i2i.v1.Translator/{method}")  # bytes as they are
            with pytest.raises(grpc.RpcError) as caught:
                call(garbage, timeout=10)
            assert caught.value.code() == INVALID, (method, caught.value.details())
            assert "is not a valid i2i.v1." in caught.value.details()
        stream = channel.stream_stream("/i2i.v1.Translator/TranslateStream")
        good = pb.TranslateRequest(model=MODEL, direction="A2B", image=pb.Image(encoded=GOOD))
        replies = stream(iter([good.SerializeToString(), garbage]), timeout=30)
        assert pb.TranslateResponse.FromString(next(replies)).images  # the good frame first
        with pytest.raises(grpc.RpcError) as caught:
            next(replies)
        assert caught.value.code() == INVALID
        assert (
            f"({len(garbage)} bytes) is not a valid i2i.v1.TranslateRequest"
            in caught.value.details()
        )
    assert server.health() == "SERVING"
    key = (
        'i2i_inference_requests_total{code="INVALID_ARGUMENT",direction="unknown",model="unknown"}'
    )
    assert server.metrics()[key] == 2  # Translate and the stream's frame


def test_oversized_message_is_refused(start_server):
    server = start_server(max_message_mb=0.25)
    big = np.random.default_rng(0).integers(0, 256, (400, 400, 3), np.uint8)  # 480 kB raw
    message = pb.TranslateRequest(
        model=MODEL, direction="A2B", image=raw(big.tobytes(), 400, 400, 3)
    )
    with pytest.raises(grpc.RpcError) as caught:
        server.stub().Translate(message, timeout=30)
    assert caught.value.code() == EXHAUSTED
    assert server.health() == "SERVING"
    assert (
        server.stub()
        .Translate(
            pb.TranslateRequest(model=MODEL, direction="A2B", image=pb.Image(encoded=GOOD)),
            timeout=30,
        )
        .images
    )


def test_bad_inputs_are_counted_under_their_code(start_server):
    server = start_server()
    stub = server.stub()
    for fields in ({"model": "nope"}, {"num_samples": 2}):
        with pytest.raises(grpc.RpcError):
            stub.Translate(
                pb.TranslateRequest(
                    **{"model": MODEL, "direction": "A2B", **fields}, image=pb.Image(encoded=GOOD)
                ),
                timeout=30,
            )
    # An empty or missing image is counted under the model and direction the request names.
    for image in (pb.Image(encoded=b""), None):
        with pytest.raises(grpc.RpcError):
            stub.Translate(pb.TranslateRequest(model=MODEL, direction="A2B", image=image))
    samples = server.metrics()
    # Unknown names are counted as "unknown": made-up model names cannot grow the series.
    assert (
        samples[
            'i2i_inference_requests_total{code="NOT_FOUND",direction="unknown",model="unknown"}'
        ]
        == 1
    )
    assert (
        samples[
            'i2i_inference_requests_total{code="INVALID_ARGUMENT",direction="A2B",model="tiny"}'
        ]
        == 3
    )
