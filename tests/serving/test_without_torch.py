"""Serving never needs PyTorch: the server, the probe and `i2i translate` run where it is missing.

Every process here starts with a folder first on PYTHONPATH whose `torch` (and the other
training and export packages) raise ModuleNotFoundError on import, as on a machine where
only `pip install i2i` was run. A module that imports one of them fails these tests.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from i2i.client import Client
from i2i.repository import read_manifest, version_folder
from i2i.serving.backends import load_backend
from i2i.serving.process import ServerProcess
from tests.conftest import without_training_packages

from .conftest import png_bytes, sample_image


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment in which importing torch (or another training package) fails."""
    return without_training_packages(tmp_path_factory.mktemp("no-torch"))


def run(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, **kwargs)


def test_the_blocker_really_hides_torch(no_torch_env: dict[str, str]) -> None:
    done = run([sys.executable, "-c", "import torch"], no_torch_env)
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'torch' (hidden by the test)" in done.stderr


def test_serve_probe_and_translate_without_torch(
    tiny_repository: Path, tmp_path: Path, no_torch_env: dict[str, str]
) -> None:
    pixels = sample_image(32, 32, seed=3)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png_bytes(pixels))
    manifest = read_manifest(tiny_repository, "tiny")
    with load_backend(
        version_folder(tiny_repository, "tiny", manifest["version"]),
        manifest,
        "A2B",
        choice="onnxruntime-cpu",
    ) as backend:
        expected = backend.run(pixels[None])[0]

    server = ServerProcess(tiny_repository, "--metrics-port", "-1", env=no_torch_env)
    with server:
        log = "".join(server.log)
        assert "onnxruntime-cpu" in log
        with Client(server.target, timeout=30) as client:  # this process has torch: fine
            assert client.health() == "SERVING"
        probe = run(
            [sys.executable, "-m", "i2i.client.probe", "--server", server.target], no_torch_env
        )
        assert probe.returncode == 0, probe.stderr
        done = run(
            [
                sys.executable, "-m", "i2i.cli", "translate", "--server", server.target,
                "--model", "tiny", "--direction", "A2B", "--no-progress",
                str(tmp_path / "in"), "--out", str(tmp_path / "out"),
            ],
            no_torch_env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert server.stop() == 0
    served = np.asarray(Image.open(tmp_path / "out" / "a.png"))
    np.testing.assert_array_equal(served, expected)

    local = run(
        [
            sys.executable, "-m", "i2i.cli", "translate", "--repository", str(tiny_repository),
            "--model", "tiny", "--direction", "A2B", "--no-progress",
            str(tmp_path / "in"), "--out", str(tmp_path / "local"),
        ],
        no_torch_env,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "local" / "a.png")), expected)


@pytest.mark.parametrize(
    ("command", "extra"),
    [
        (["-m", "i2i.cli", "train", "--out", "x", "--data", "y"], "train"),
        (["-m", "i2i.cli", "export", "x.pt", "--repository", "r", "--name", "n"], "export"),
        (["-m", "i2i.cli", "data", "sample", "--task", "day2dusk", "--out", "d"], "train"),
        (
            [
                "-m",
                "i2i.cli",
                "translate",
                "--checkpoint",
                "x.pt",
                "--direction",
                "A2B",
                "a.png",
                "--out",
                "o",
            ],
            "train",
        ),
    ],  # fmt: skip
)
def test_a_stage_that_is_not_installed_names_its_extra(
    command: list[str], extra: str, no_torch_env: dict[str, str], tmp_path: Path
) -> None:
    if "translate" in command:
        Image.fromarray(sample_image(32, 32)).save(tmp_path / "a.png")
        Path(tmp_path / "x.pt").write_bytes(b"not read: torch is missing first")
    done = run([sys.executable, *command], no_torch_env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr  # one line, no traceback
    assert f"pip install 'i2i[{extra}" in lines[0]


def test_errors_of_commands_without_torch_are_one_line(
    no_torch_env: dict[str, str], tmp_path: Path
) -> None:
    """Error handling itself imports no stage: an unreachable server is a message, exit 2."""
    Image.fromarray(sample_image(32, 32)).save(tmp_path / "a.png")
    done = run(
        [
            sys.executable, "-m", "i2i.cli", "translate", "--server", "127.0.0.1:1",
            "--model", "tiny", "--direction", "A2B", "--timeout", "2",
            str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
        ],
        no_torch_env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: --server 127.0.0.1:1:") and "Traceback" not in done.stderr


def test_multimodal_styles_without_torch(
    multimodal_model, tmp_path: Path, no_torch_env: dict[str, str]
) -> None:
    """Seeds, samples and reference images (the style encoder in ONNX Runtime) need no torch."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png_bytes(sample_image(32, 32, seed=4)))
    (tmp_path / "ref.png").write_bytes(png_bytes(sample_image(36, 36, seed=5)))
    common = ["--model", "styled", "--direction", "A2B", "--no-progress", str(tmp_path / "in")]
    server = ServerProcess(multimodal_model.repository, "--metrics-port", "-1", env=no_torch_env)
    outputs = {}
    with server:
        for name, style in (
            ("seeded", ["--num-samples", "2", "--style-seed", "3"]),
            ("referenced", ["--style-image", str(tmp_path / "ref.png")]),
        ):
            done = run(
                [sys.executable, "-m", "i2i.cli", "translate", "--server", server.target,
                 *common, *style, "--out", str(tmp_path / name)],
                no_torch_env,
            )  # fmt: skip
            assert done.returncode == 0, done.stderr
            outputs[name] = sorted(p.name for p in (tmp_path / name).iterdir())
    assert server.stop() == 0
    assert outputs == {"seeded": ["a_0.png", "a_1.png"], "referenced": ["a.png"]}
    local = run(
        [sys.executable, "-m", "i2i.cli", "translate", "--repository",
         str(multimodal_model.repository), *common, "--style-image", str(tmp_path / "ref.png"),
         "--out", str(tmp_path / "local")],
        no_torch_env,
    )  # fmt: skip
    assert local.returncode == 0, local.stderr
    served = (tmp_path / "referenced" / "a.png").read_bytes()
    assert (tmp_path / "local" / "a.png").read_bytes() == served
