"""Shared fixtures: tiny datasets and configs, made fresh in temporary folders."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from i2i.checkpoint import make_checkpoint, save_checkpoint
from i2i.export import export_checkpoint
from i2i.models import create_networks
from i2i.training import TrainConfig, config_from_dict
from tests.multimodal_family import MULTIMODAL_FAMILIES, multimodal_checkpoint, registered
from tests.serving.conftest import (
    MODEL,
    RunningServer,
    openssl,
    server_config,
)

# Small architecture options per model family, so every contract test parametrised over
# the registry stays fast. A new family must add an entry (tests/models/test_registry.py
# checks that every registered family has one).
TINY_MODEL_OPTIONS: dict[str, dict] = {
    "cyclegan": {"ngf": 4, "ndf": 4, "netG": "resnet_6blocks"},
    "pix2pix": {"ngf": 4, "ndf": 4, "netG": "resnet_6blocks"},
    "munit": {
        "gen_dim": 4,
        "n_res": 1,
        "mlp_dim": 8,
        "dis_dim": 4,
        "dis_n_layer": 2,
        "num_scales": 2,
    },
    "unit": {"gen_dim": 4, "n_res": 1, "dis_dim": 4, "dis_n_layer": 2, "num_scales": 2},
    "twostep": {
        "domains": ["A", "B"],
        "z_dim": 8,
        "ngf": 4,
        "ndf": 4,
        "nef": 4,
        "image_size": 32,
    },
    "stargan": {
        "domains": ["A", "B"],
        "conv_dim": 4,
        "repeat_num": 1,
        "d_conv_dim": 4,
        "d_repeat_num": 3,
        "image_size": 32,
    },
}


def untrained_checkpoint(
    path: Path, family: str = "cyclegan", seed: int = 0, step: int = 1, **model: Any
) -> Path:
    """A checkpoint of freshly initialised (seeded) tiny networks of `family`, at `path`."""
    options = {**TINY_MODEL_OPTIONS[family], **model}
    torch.manual_seed(seed)
    networks = create_networks(family, options)
    payload = make_checkpoint(
        family=family,
        config={"family": family, "model": options},
        domains=["A", "B"],
        networks={name: net.state_dict() for name, net in networks.items()},
        step=step,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(payload, path)


def write_images(
    folder: Path, n: int, size: int = 32, seed: int = 0, tint: tuple = (1, 1, 1)
) -> list[Path]:
    """Write `n` smooth random RGB PNGs (gradients plus noise) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    yy, xx = np.mgrid[0:size, 0:size] / size
    for i in range(n):
        base = np.stack([(a * xx + b * yy) for a, b in rng.uniform(-1, 1, (3, 2))], axis=-1)
        img = np.clip((base + 1) / 2 * np.array(tint) * 255 + rng.normal(0, 8, base.shape), 0, 255)
        path = folder / f"{i:03d}.png"
        Image.fromarray(img.astype(np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """An unaligned dataset: 8 images per training domain, 3 per test domain, 32 px."""
    root = tmp_path / "data"
    write_images(root / "trainA", 8, seed=1)
    write_images(root / "trainB", 6, seed=2, tint=(1.0, 0.8, 0.6))
    write_images(root / "testA", 3, seed=3)
    write_images(root / "testB", 3, seed=4, tint=(1.0, 0.8, 0.6))
    return root


def tiny_config(data_root: Path, **changes) -> TrainConfig:
    """A CycleGAN config small enough to run a step in well under a second on a CPU."""
    raw = {
        "family": "cyclegan",
        "model": {
            "netG": "resnet_6blocks",
            "netD": "n_layers",
            "n_layers_D": 2,
            "ngf": 4,
            "ndf": 4,
        },
        "data": {
            "root": str(data_root),
            "preprocess": "crop",
            "load_size": 32,
            "crop_size": 32,
            "num_workers": 0,
        },
        "batch_size": 2,
        "n_epochs": 1,
        "n_epochs_decay": 2,
        "log_every": 1,
        "sample_every": 1000,
        "save_every": 1000,
        "tensorboard": False,
        "progress": False,
    }
    data_changes = changes.pop("data", {})
    raw["data"].update(data_changes)
    raw.update(changes)
    return config_from_dict(raw)


# ---- serving fixtures, defined once here so every folder (serving, client, deploy, export)
# shares the session's tiny repository instead of exporting it again.


@pytest.fixture(scope="session")
def tiny_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository with model "tiny", version 1: A2B and B2A, ONNX FP32 and FP16.

    Shared by the whole session: treat it as read-only (copy it to change it).
    """
    root = tmp_path_factory.mktemp("serving")
    checkpoint = untrained_checkpoint(root / "checkpoints" / "tiny.pt")
    export_checkpoint(checkpoint, root / "repository", MODEL, formats=["onnx", "onnx-fp16"])
    return root / "repository"


@dataclass(frozen=True)
class MultimodalModel:
    """A multimodal family's tiny checkpoint and its export (model "styled", version 1)."""

    family: str
    checkpoint: Path
    repository: Path
    name: str = "styled"

    @property
    def style_dim(self) -> int:
        """S, as the exported manifest gives it."""
        manifest = json.loads((self.repository / self.name / "1" / "manifest.json").read_text())
        return int(manifest["directions"]["A2B"]["style"]["shape"][-1])


@pytest.fixture(scope="session", params=sorted(MULTIMODAL_FAMILIES))
def multimodal_model(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> MultimodalModel:
    """Each multimodal family (the toy stand-in for MUNIT, more as they land), exported once
    per session with its style encoders, ONNX FP32 and FP16. Read-only: copy to change it."""
    root = tmp_path_factory.mktemp(f"multimodal-{request.param}")
    checkpoint = multimodal_checkpoint(root / "checkpoints" / "styled.pt", request.param)
    with registered(request.param):
        export_checkpoint(checkpoint, root / "repository", "styled", formats=["onnx", "onnx-fp16"])
    return MultimodalModel(request.param, checkpoint, root / "repository")


@pytest.fixture(scope="session")
def tiny_checkpoint_path(tiny_repository: Path) -> Path:
    """The checkpoint `tiny_repository` was exported from."""
    return tiny_repository.parent / "checkpoints" / "tiny.pt"


@pytest.fixture
def start_server(tiny_repository: Path) -> Iterator[Callable[..., RunningServer]]:
    """Start servers on the tiny repository with changed settings; all stopped afterwards."""
    started: list[RunningServer] = []

    def start(**changes: Any) -> RunningServer:
        server = RunningServer(server_config(tiny_repository, **changes))
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture(scope="module")
def shared_server(tiny_repository: Path) -> Iterator[RunningServer]:
    """One server with default test settings for the tests of a module that do not change it."""
    server = RunningServer(server_config(tiny_repository))
    yield server
    server.close()


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    d = tmp_path_factory.mktemp("tls")
    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=i2i test CA",
        cwd=d,
    )
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN={name}",
            cwd=d,
        )
        openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            f"{name}.pem",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            cwd=d,
        )
    return d


# What `pip install i2i` (no extras) does not bring: training, export and their tools.
NOT_IN_SERVING = (
    "torch", "onnx", "onnxscript", "onnxconverter_common", "yaml", "skimage", "tensorboard",
)  # fmt: skip


def without_training_packages(folder: Path) -> dict[str, str]:
    """This process's environment, with NOT_IN_SERVING hidden from child processes.

    `folder` gets one package per name whose import raises ModuleNotFoundError, as on a
    machine where only `pip install i2i` ran, and goes first on PYTHONPATH.
    """
    for name in NOT_IN_SERVING:
        (folder / name).mkdir(parents=True, exist_ok=True)
        (folder / name / "__init__.py").write_text(
            f'raise ModuleNotFoundError("No module named {name!r} (hidden by the test)", '
            f"name={name!r})\n"
        )
    path = os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path}
