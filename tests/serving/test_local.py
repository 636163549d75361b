"""`LocalTranslator`: the server's decode, size policy, backends and encode, with no server."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.checkpoint import load_trained_networks
from i2i.models import get_family, options_from_dict
from i2i.serving.errors import InvalidArgument
from i2i.serving.local import LocalTranslator, LocalTranslatorError
from tests.serving.conftest import MODEL, png_bytes, sample_image
from tests.serving.test_server import ort_translate


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_repository_model_equals_onnxruntime(tiny_repository):
    pixels = sample_image(32, 40, seed=7)
    with LocalTranslator(repository=tiny_repository, model=MODEL, direction="B2A") as local:
        assert local.direction.backend.name == "onnxruntime-cpu"
        (out,) = local.translate(png_bytes(pixels))
    np.testing.assert_array_equal(decoded(out), ort_translate(tiny_repository, "B2A", pixels))


def test_checkpoint_equals_pytorch(tiny_checkpoint_path):
    pixels = sample_image(30, 30, seed=8)  # not a multiple of 4: padded and cropped back
    with LocalTranslator(checkpoint=tiny_checkpoint_path, direction="A2B") as local:
        assert local.direction.backend.name == "pytorch-cpu"
        (out,) = local.translate(png_bytes(pixels), output_format="png")
    payload, networks = load_trained_networks(tiny_checkpoint_path)
    options = options_from_dict("cyclegan", payload["config"]["model"])
    translator = get_family("cyclegan").translators(networks, options)["A2B"]
    padded = np.pad(pixels, ((0, 2), (0, 2), (0, 0)), mode="reflect")
    with torch.inference_mode():
        expected = translator(torch.from_numpy(padded[None])).numpy()[0, :30, :30]
    np.testing.assert_array_equal(decoded(out), expected)


def test_errors_name_what_to_change(tiny_repository, tiny_checkpoint_path):
    with pytest.raises(LocalTranslatorError, match="A2B, B2A"):
        LocalTranslator(repository=tiny_repository, model=MODEL, direction="X2Y")
    with pytest.raises(LocalTranslatorError, match="no model 'nope'"):
        LocalTranslator(repository=tiny_repository, model="nope", direction="A2B")
    with pytest.raises(LocalTranslatorError, match="--model"):
        LocalTranslator(repository=tiny_repository, direction="A2B")
    with pytest.raises(LocalTranslatorError, match="either"):
        LocalTranslator(direction="A2B")
    with LocalTranslator(checkpoint=tiny_checkpoint_path, direction="A2B") as local:
        with pytest.raises(InvalidArgument, match="decoded"):
            local.translate(b"\x89PNG\r\n\x1a\n broken")
        with pytest.raises(InvalidArgument, match="not multimodal"):
            local.translate(png_bytes(sample_image()), num_samples=2)
