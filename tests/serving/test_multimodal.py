"""Multimodal models through a real server on 127.0.0.1: seeds, codes, reference images, K samples.

Parametrised over the multimodal families (`multimodal_model`, the toy stand-in for MUNIT
until it lands), each exported with its style encoders and served by ONNX Runtime.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest

from i2i.repository import read_manifest
from i2i.serving.backends import Backend, Hardware, load_backend
from i2i.serving.backends.style import load_style_encoder
from i2i.shapes import ShapeRule
from i2i.v1 import translator_pb2 as pb
from tests.conftest import MultimodalModel
from tests.multimodal_family import pytorch_style_code, pytorch_translate
from tests.serving.conftest import RunningServer, png_bytes, sample_image, server_config
from tests.serving.test_server import decode


@pytest.fixture(scope="module")
def styled_server(multimodal_model: MultimodalModel) -> Iterator[RunningServer]:
    server = RunningServer(server_config(multimodal_model.repository))
    yield server
    server.close()


def styled_request(
    model: MultimodalModel, pixels: np.ndarray, direction: str = "A2B", **fields
) -> pb.TranslateRequest:
    return pb.TranslateRequest(
        model=model.name,
        direction=direction,
        image=pb.Image(encoded=png_bytes(pixels)),
        output=pb.OutputOptions(format=pb.IMAGE_FORMAT_RAW),
        **fields,
    )


def ort_styled(
    model: MultimodalModel, direction: str, pixels: np.ndarray, style: np.ndarray
) -> np.ndarray:
    """The FP32 translator graph run directly: (H, W, C) and (K, S) codes -> (K, H, W, C)."""
    path = model.repository / model.name / "1" / f"{direction}.onnx"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = np.repeat(pixels[None], len(style), 0)
    return session.run(None, {"image": batch, "style": style.astype(np.float32)})[0]


def outputs(reply: pb.TranslateResponse) -> list[np.ndarray]:
    return [decode(image) for image in reply.images]


def test_models_report_style_size_and_style_encoder(styled_server, multimodal_model):
    info = styled_server.stub().GetModel(pb.GetModelRequest(model=multimodal_model.name))
    manifest = read_manifest(multimodal_model.repository, multimodal_model.name)
    for direction in info.directions:
        spec = manifest["directions"][direction.name]
        assert direction.style_size == spec["style"]["shape"][-1] > 0
        assert direction.style_encoder is True


def test_same_seed_same_bytes_and_k_samples_in_one_batch(styled_server, multimodal_model):
    stub = styled_server.stub()
    pixels = sample_image(32, 36, seed=5)
    first = stub.Translate(
        styled_request(multimodal_model, pixels, style=pb.Style(seed=7), num_samples=3), timeout=30
    )
    again = stub.Translate(
        styled_request(multimodal_model, pixels, style=pb.Style(seed=7), num_samples=3), timeout=30
    )
    other = stub.Translate(
        styled_request(multimodal_model, pixels, style=pb.Style(seed=8), num_samples=3), timeout=30
    )
    assert len(first.images) == 3
    assert first.batch_size == 3  # the three samples ran as one batch
    assert [i.raw.pixels for i in first.images] == [i.raw.pixels for i in again.images]
    samples = outputs(first)
    assert all(not np.array_equal(a, b) for i, a in enumerate(samples) for b in samples[i + 1 :])
    assert all(not np.array_equal(a, b) for a, b in zip(samples, outputs(other), strict=True))
    # The seed's codes are numpy's standard normals: exactly what the graph gives for them.
    codes = np.random.default_rng(7).standard_normal((3, multimodal_model.style_dim))
    codes = codes.astype(np.float32)
    expected = ort_styled(multimodal_model, "A2B", pixels, codes)
    np.testing.assert_array_equal(np.stack(samples), expected)


def test_explicit_code_equals_onnxruntime(styled_server, multimodal_model):
    pixels = sample_image(40, 32, seed=6)
    code = [0.5, -1.25, 2.0, 0.1, -0.7, 1.5, -0.2, 0.9][: multimodal_model.style_dim]
    reply = styled_server.stub().Translate(
        styled_request(
            multimodal_model, pixels, "B2A", style=pb.Style(code=pb.StyleCode(values=code))
        ),
        timeout=30,
    )
    expected = ort_styled(multimodal_model, "B2A", pixels, np.array([code], np.float32))
    np.testing.assert_array_equal(outputs(reply)[0], expected[0])


def test_reference_image_sets_the_style_of_its_encoder(styled_server, multimodal_model):
    pixels = sample_image(32, 32, seed=9)
    reference = sample_image(40, 44, seed=10)  # a size the encoder takes: not resized
    reply = styled_server.stub().Translate(
        styled_request(
            multimodal_model,
            pixels,
            style=pb.Style(reference=pb.Image(encoded=png_bytes(reference))),
            num_samples=2,
        ),
        timeout=30,
    )
    code = pytorch_style_code(multimodal_model.checkpoint, "A2B", reference)  # (1, S)
    expected = pytorch_translate(multimodal_model.checkpoint, "A2B", pixels, np.repeat(code, 2, 0))
    got = np.stack(outputs(reply))
    assert got.shape == expected.shape
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    # Another reference gives another style.
    other = sample_image(40, 44, seed=11)[:, :, ::-1].copy()
    reply2 = styled_server.stub().Translate(
        styled_request(
            multimodal_model, pixels, style=pb.Style(reference=pb.Image(encoded=png_bytes(other)))
        ),
        timeout=30,
    )
    assert not np.array_equal(outputs(reply2)[0], got[0])


@pytest.mark.parametrize(
    ("style", "words"),
    [
        (pb.Style(reference=pb.Image(encoded=b"\x89PNG\r\n\x1a\n broken")), "style.reference"),
        (pb.Style(reference=pb.Image(encoded=b"")), "style.reference is empty"),
        (pb.Style(code=pb.StyleCode(values=[0.1, 0.2])), "exactly {S}"),
        (pb.Style(code=pb.StyleCode(values=[0.1, float("nan")])), "NaN"),
    ],
)
def test_bad_styles_are_invalid_argument(styled_server, multimodal_model, style, words):
    words = words.format(S=multimodal_model.style_dim)
    style = pb.Style().__class__.FromString(style.SerializeToString())  # parameters are shared
    if style.HasField("code") and "NaN" in words:  # the right length, one value not finite
        style.code.values.extend([0.0] * (multimodal_model.style_dim - 2))
    with pytest.raises(grpc.RpcError) as caught:
        styled_server.stub().Translate(
            styled_request(multimodal_model, sample_image(), style=style), timeout=30
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in caught.value.details()


def test_a_version_without_style_encoder_refuses_reference_images(
    multimodal_model, tmp_path: Path
) -> None:
    """A version exported before style encoders (or without one) still serves seeds."""
    repository = tmp_path / "repository"
    shutil.copytree(multimodal_model.repository, repository)
    folder = repository / multimodal_model.name / "1"
    manifest = json.loads((folder / "manifest.json").read_text())
    for spec in manifest["directions"].values():
        del spec["style_encoder"]
    manifest["artifacts"] = [a for a in manifest["artifacts"] if "graph" not in a]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    server = RunningServer(server_config(repository))
    try:
        stub = server.stub()
        info = stub.GetModel(pb.GetModelRequest(model=multimodal_model.name))
        assert [d.style_encoder for d in info.directions] == [False, False]
        reference = pb.Style(reference=pb.Image(encoded=png_bytes(sample_image())))
        with pytest.raises(grpc.RpcError) as caught:
            stub.Translate(styled_request(multimodal_model, sample_image(), style=reference))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "has no style encoder" in caught.value.details()
        reply = stub.Translate(
            styled_request(multimodal_model, sample_image(), style=pb.Style(seed=1)), timeout=30
        )
        assert len(reply.images) == 1
    finally:
        server.close()


def test_samples_count_against_the_batch_pixel_budget(multimodal_model) -> None:
    """Two requests of K = 2 samples at 32x32 (2 x 1024 px each) share a batch without a
    budget, and not under --max-batch-pixels 3000 (the batcher counts images x samples)."""
    pixels = sample_image(32, 32, seed=12)

    def batch_sizes(**settings) -> list[int]:
        server = RunningServer(
            server_config(multimodal_model.repository, max_delay_ms=500.0, **settings)
        )
        try:
            stub = server.stub()
            message = styled_request(
                multimodal_model, pixels, style=pb.Style(seed=3), num_samples=2
            )
            with ThreadPoolExecutor(2) as pool:
                replies = list(pool.map(lambda _: stub.Translate(message, timeout=30), range(2)))
            return sorted(reply.batch_size for reply in replies)
        finally:
            server.close()

    assert batch_sizes(max_batch_pixels=0) == [4, 4]
    assert batch_sizes(max_batch_pixels=3000) == [2, 2]


class EngineStandIn(Backend):
    """What load_style_encoder sees of a TensorRT translator: its name and precision."""

    def __init__(self, precision: str) -> None:
        super().__init__(
            name="tensorrt",
            artifact="A2B.gpu.plan",
            precision=precision,
            in_channels=3,
            out_channels=3,
            style_size=4,
            shape_rule=ShapeRule(multiple_of=4),
        )

    def run(self, images, style=None):  # pragma: no cover - never run here
        raise AssertionError("not run")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_style_encoder_follows_the_translators_runtime_and_precision(multimodal_model, precision):
    folder = multimodal_model.repository / multimodal_model.name / "1"
    manifest = read_manifest(multimodal_model.repository, multimodal_model.name)
    reference = sample_image(32, 32, seed=13)[None]
    with load_backend(
        folder, manifest, "A2B", choice="onnxruntime-cpu", precision=precision
    ) as translator:
        encoder = load_style_encoder(folder, manifest, "A2B", translator)
        assert encoder is not None
        assert (encoder.name, encoder.precision) == ("onnxruntime-cpu", precision)
        assert encoder.artifact == (
            "A2B.style.onnx" if precision == "fp32" else "A2B.style.fp16.onnx"
        )
        codes = encoder.encode(reference)
    expected = pytorch_style_code(multimodal_model.checkpoint, "A2B", reference[0])
    assert codes.dtype == np.float32 and codes.shape == expected.shape
    np.testing.assert_allclose(codes, expected, atol=1e-4 if precision == "fp32" else 1e-2)
    # Beside a TensorRT engine (no GPU for ONNX Runtime here): ONNX Runtime on the CPU.
    no_gpu = Hardware(False, None, None, "10.13.0", ("CPUExecutionProvider",))
    beside = load_style_encoder(folder, manifest, "A2B", EngineStandIn(precision), hardware=no_gpu)
    assert beside is not None and beside.name == "onnxruntime-cpu"
    assert beside.precision == precision
    with pytest.raises(ValueError, match=r"reference images must be uint8 \(N, H, W, 3\)"):
        beside.encode(reference[..., :1].copy())
