"""Multimodal translation from the client side: the Python clients and `i2i translate`, through a
real server and locally (repository with ONNX Runtime, checkpoint with PyTorch)."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.cli import main
from i2i.client import AsyncClient, Client
from i2i.serving.local import LocalTranslator
from tests.conftest import MultimodalModel
from tests.multimodal_family import pytorch_style_code, pytorch_translate, registered
from tests.serving.conftest import RunningServer, png_bytes, sample_image, server_config


@pytest.fixture(scope="module")
def styled_server(multimodal_model: MultimodalModel) -> Iterator[RunningServer]:
    server = RunningServer(server_config(multimodal_model.repository))
    yield server
    server.close()


def read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(path.read_bytes())))


def write_input(folder: Path, seed: int = 1, size: tuple[int, int] = (32, 36)) -> np.ndarray:
    folder.mkdir(parents=True, exist_ok=True)
    pixels = sample_image(*size, seed=seed)
    (folder / "photo.png").write_bytes(png_bytes(pixels))
    return pixels


def run_translate(tmp_path: Path, out: str, *flags: str) -> int:
    return main(
        ["translate", str(tmp_path / "in"), "--out", str(tmp_path / out), "--direction", "A2B"]
        + ["--no-progress", *flags]
    )


def test_cli_samples_with_a_seed_are_deterministic_on_server_and_locally(
    styled_server, multimodal_model, tmp_path, capsys
):
    write_input(tmp_path / "in")
    server = ["--server", styled_server.target, "--model", multimodal_model.name]
    repository = ["--repository", str(multimodal_model.repository), "--model", "styled"]
    style = ["--num-samples", "3", "--style-seed", "5"]
    assert run_translate(tmp_path, "server", *server, *style) == 0
    assert run_translate(tmp_path, "again", *server, "--num-samples", "3", "--seed", "5") == 0
    assert run_translate(tmp_path, "local", *repository, *style) == 0
    assert "translated 1 of 1" in capsys.readouterr().out
    names = ["photo_0.png", "photo_1.png", "photo_2.png"]
    for out in ("server", "again", "local"):
        assert sorted(p.name for p in (tmp_path / out).iterdir()) == names
    for name in names:  # --seed is --style-seed; the server and ONNX Runtime locally agree
        served = (tmp_path / "server" / name).read_bytes()
        assert (tmp_path / "again" / name).read_bytes() == served
        assert (tmp_path / "local" / name).read_bytes() == served
    samples = [read(tmp_path / "server" / name) for name in names]
    assert not np.array_equal(samples[0], samples[1])
    assert not np.array_equal(samples[1], samples[2])


def test_cli_style_image_and_code(styled_server, multimodal_model, tmp_path):
    pixels = write_input(tmp_path / "in", seed=2)
    reference = sample_image(40, 40, seed=3)
    (tmp_path / "ref.png").write_bytes(png_bytes(reference))
    code = pytorch_style_code(multimodal_model.checkpoint, "A2B", reference)  # (1, S)
    expected = pytorch_translate(multimodal_model.checkpoint, "A2B", pixels, code)[0]
    server = ["--server", styled_server.target, "--model", multimodal_model.name]
    assert (
        run_translate(tmp_path, "image", *server, "--style-image", str(tmp_path / "ref.png")) == 0
    )
    got = read(tmp_path / "image" / "photo.png")
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    with registered(multimodal_model.family):  # locally from the checkpoint: PyTorch throughout
        rc = run_translate(
            tmp_path,
            "checkpoint",
            "--checkpoint",
            str(multimodal_model.checkpoint),
            "--style-image",
            str(tmp_path / "ref.png"),
        )
    assert rc == 0
    np.testing.assert_array_equal(read(tmp_path / "checkpoint" / "photo.png"), expected)
    text = ",".join(f"{v:.9g}" for v in code[0])
    # "=": a code may start with a minus sign, which argparse would take for a flag.
    assert run_translate(tmp_path, "code", *server, f"--style-code={text}") == 0
    coded = read(tmp_path / "code" / "photo.png")
    assert np.abs(coded.astype(int) - expected.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (
            ["--style-code", "0.1,0.2"],
            "--style-code has 2 values; model 'styled' takes exactly {S}",
        ),
        (["--style-code", "0.1,x,0,0"], "'x' is not a number"),
        (["--style-seed", "1", "--style-code", "0,0,0,0"], "at most one of --style-seed"),
        (["--style-image", "missing.png"], "--style-image missing.png"),
    ],
)
def test_cli_bad_style_flags_are_one_line_usage_errors(
    styled_server, multimodal_model, tmp_path, capsys, flags, words
):
    write_input(tmp_path / "in")
    words = words.replace("{S}", str(multimodal_model.style_dim))
    server = ["--server", styled_server.target, "--model", multimodal_model.name]
    assert run_translate(tmp_path, "out", *server, *flags) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_style_flags_for_a_unimodal_model_are_usage_errors(
    shared_server, tiny_repository, tmp_path, capsys
):
    write_input(tmp_path / "in")
    for flags in (
        ["--server", shared_server.target, "--model", "tiny", "--style-seed", "3"],
        ["--repository", str(tiny_repository), "--model", "tiny", "--num-samples", "2"],
        ["--server", shared_server.target, "--model", "tiny", "--style-image", __file__],
    ):
        assert run_translate(tmp_path, "out", *flags) == 2
        err = capsys.readouterr().err.strip()
        assert "is not multimodal" in err and len(err.splitlines()) == 1


def test_python_clients_take_a_seed_a_code_and_a_reference_path(
    styled_server, multimodal_model, tmp_path
):
    pixels = sample_image(32, 32, seed=4)
    reference = tmp_path / "ref.png"
    reference.write_bytes(png_bytes(sample_image(36, 36, seed=5)))
    with Client(styled_server.target) as client:
        info = client.get_model("styled")
        assert {d.name: (d.style_size, d.style_encoder) for d in info.directions} == {
            "A2B": (multimodal_model.style_dim, True),
            "B2A": (multimodal_model.style_dim, True),
        }
        seeded = client.translate(
            pixels, model="styled", direction="B2A", num_samples=2, style_seed=11
        )
        by_path = client.translate(
            pixels, model="styled", direction="B2A", style_reference=reference
        )
        by_bytes = client.translate(
            pixels, model="styled", direction="B2A", style_reference=reference.read_bytes()
        )
    assert len(seeded.images) == 2 and seeded.batch_size == 2
    np.testing.assert_array_equal(by_path.images[0], by_bytes.images[0])

    async def call() -> tuple[list, list]:
        async with AsyncClient(styled_server.target) as client:
            again = await client.translate(
                pixels, model="styled", direction="B2A", num_samples=2, style_seed=11
            )
            coded = await client.translate(
                pixels,
                model="styled",
                direction="B2A",
                style_code=[0.0] * multimodal_model.style_dim,
            )
            return again.images, coded.images

    again, coded = asyncio.run(call())
    for a, b in zip(again, seeded.images, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(coded[0], seeded.images[0])


def test_local_translator_from_a_repository_runs_the_style_encoder_in_onnxruntime(
    multimodal_model,
):
    pixels = sample_image(32, 32, seed=6)
    reference = sample_image(32, 32, seed=7)
    with LocalTranslator(
        repository=multimodal_model.repository, model="styled", direction="A2B"
    ) as local:
        assert local.style_encoder is not None
        assert local.style_encoder.name == "onnxruntime-cpu"
        assert local.style_encoder.artifact == "A2B.style.onnx"
        (out,) = local.translate(png_bytes(pixels), style_reference=png_bytes(reference))
    code = pytorch_style_code(multimodal_model.checkpoint, "A2B", reference)
    expected = pytorch_translate(multimodal_model.checkpoint, "A2B", pixels, code)[0]
    assert np.abs(read_bytes(out).astype(int) - expected.astype(int)).max() <= 1


def read_bytes(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))
