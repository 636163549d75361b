"""Warm-up before SERVING: what each backend gets under --warmup auto, minimal and full."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from i2i.serving.backends import Backend
from i2i.serving.config import ServerConfig, ServerConfigError, add_arguments, config_from_args
from i2i.serving.process import ServerProcess
from i2i.serving.store import MINIMAL_WARMUP_SIZE, Warmup, plan_warmup, warmup_plan
from i2i.shapes import ShapeRule

RESNET = ShapeRule(multiple_of=4, min_size=8)


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, tuple[int, ...]]]:
    """Every Backend.warmup's runs, as (backend name, image batch shape); the runs are real."""
    recorded: list[tuple[str, tuple[int, ...]]] = []
    real_warmup = Backend.warmup

    def recording_warmup(self: Backend, height: int, width: int, batches) -> None:
        real_run = self.run

        def run(images: np.ndarray, style: np.ndarray | None = None) -> np.ndarray:
            recorded.append((self.name, images.shape))
            return real_run(images, style)

        self.run = run  # type: ignore[method-assign]
        try:
            real_warmup(self, height, width, batches)
        finally:
            del self.run

    monkeypatch.setattr(Backend, "warmup", recording_warmup)
    return recorded


@pytest.mark.parametrize(
    ("backend", "plan"),
    [
        ("onnxruntime-cpu", "minimal"),
        ("pytorch-cpu", "minimal"),
        # GPU runtimes choose kernels (cuDNN algorithms, TensorRT tactics, the ORT TensorRT
        # provider's engines) per input shape: warm every shape batching will form.
        ("tensorrt", "full"),
        ("onnxruntime-cuda", "full"),
        ("onnxruntime-tensorrt", "full"),
        ("pytorch-cuda", "full"),
        ("onnxruntime-rocm", "full"),  # a runtime nobody classified: the safe plan
    ],
)
def test_auto_plan_follows_the_backend(backend: str, plan: str) -> None:
    assert warmup_plan(backend, "auto") == plan
    assert warmup_plan(backend, "full") == "full"  # an explicit choice wins
    assert warmup_plan(backend, "minimal") == "minimal"


def test_plan_sizes_fit_the_shape_rule_and_the_engine_profile() -> None:
    full = plan_warmup("full", RESNET, warmup_size=256, max_batch=8)
    assert full == Warmup("full", 256, (1, 2, 4, 8))
    assert plan_warmup("minimal", RESNET, warmup_size=256, max_batch=8) == Warmup(
        "minimal", MINIMAL_WARMUP_SIZE, (1,)
    )
    assert plan_warmup("full", RESNET, warmup_size=130, max_batch=3).size == 128  # down to 4s
    assert plan_warmup("full", RESNET, warmup_size=4, max_batch=1).size == 8  # at least min_size
    fixed = ShapeRule(multiple_of=1, fixed_size=128)
    assert plan_warmup("minimal", fixed, warmup_size=256, max_batch=8).size == 128
    profile = ((96, 96), (512, 512))
    assert plan_warmup("minimal", RESNET, warmup_size=256, max_batch=8, size_range=profile) == (
        Warmup("minimal", 96, (1,))
    )
    assert plan_warmup("full", RESNET, warmup_size=1024, max_batch=8, size_range=profile).size == (
        512
    )
    assert full.describe() == "full warm-up at 256x256, batches 1, 2, 4, 8"
    assert Warmup("minimal", 64, (1,)).describe() == "minimal warm-up at 64x64, batch 1"


def test_cpu_default_runs_one_small_batch_per_direction(start_server, runs) -> None:
    server = start_server(warmup_size=32, max_batch=4)  # the test default: --warmup auto
    size = MINIMAL_WARMUP_SIZE
    assert runs == [("onnxruntime-cpu", (1, size, size, 3))] * 2  # A2B and B2A
    for direction in server.server.store.directions():
        assert direction.warmup == Warmup("minimal", size, (1,))


def test_full_warmup_is_the_old_plan(start_server, runs) -> None:
    server = start_server(warmup="full", warmup_size=32, max_batch=4)
    one_direction = [("onnxruntime-cpu", (n, 32, 32, 3)) for n in (1, 2, 4)]
    assert runs == one_direction * 2
    assert {d.warmup for d in server.server.store.directions()} == {Warmup("full", 32, (1, 2, 4))}


def test_pytorch_on_the_cpu_gets_the_minimal_warmup(start_server, runs) -> None:
    start_server(backend="pytorch", warmup_size=32, max_batch=4)  # the manifest's checkpoint
    size = MINIMAL_WARMUP_SIZE
    assert runs == [("pytorch-cpu", (1, size, size, 3))] * 2


@pytest.mark.slow
def test_i2i_serve_logs_the_warmup_each_direction_got(tiny_repository) -> None:
    with ServerProcess(tiny_repository, "--metrics-port", "-1", "--max-batch", "4") as server:
        log = "".join(server.log)
    assert log.count("minimal warm-up at 64x64, batch 1:") == 2, log
    full = ServerProcess(
        tiny_repository,
        "--metrics-port", "-1", "--max-batch", "4", "--warmup-size", "32",
        env={"I2I_SERVE_WARMUP": "full"},
    )  # fmt: skip
    with full as server:
        log = "".join(server.log)
    assert log.count("full warm-up at 32x32, batches 1, 2, 4:") == 2, log


def parse(argv: list[str], environ: dict[str, str] | None = None) -> ServerConfig:
    parser = argparse.ArgumentParser()
    add_arguments(parser, environ or {})
    return config_from_args(parser.parse_args(argv))


def test_warmup_flag_and_environment(capsys) -> None:
    assert parse(["--repository", "r"]).warmup == "auto"
    assert parse(["--repository", "r", "--warmup", "full"]).warmup == "full"
    assert parse(["--repository", "r"], {"I2I_SERVE_WARMUP": "minimal"}).warmup == "minimal"
    with pytest.raises(SystemExit):
        parse(["--repository", "r", "--warmup", "some"])
    assert "--warmup: invalid choice: 'some'" in capsys.readouterr().err
    with pytest.raises(ServerConfigError, match="--warmup 'some': choose one of auto"):
        ServerConfig(repository=Path("."), warmup="some")
    with pytest.raises(ServerConfigError, match="--warmup-size must be at least 1"):
        ServerConfig(repository=Path("."), warmup_size=0)
