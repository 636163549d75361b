"""Every registered family, the whole way: train a step, resume exactly, export, serve.

Parametrised over the registry, so a new family is covered as soon as it registers (with
tiny options in ``tests/conftest.py``'s TINY_MODEL_OPTIONS and, where its defaults do not
fit tiny CPU runs, the changes below).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch

from i2i.checkpoint import load_checkpoint
from i2i.client import Client
from i2i.export import export_checkpoint
from i2i.models import get_family, list_families, options_from_dict
from i2i.serving.process import ServerProcess
from i2i.training import train
from i2i.training.monitor import read_loss_log
from tests.conftest import TINY_MODEL_OPTIONS, tiny_config, write_images
from tests.training.test_resume import _assert_same_state, _losses

FAMILIES = list_families()
SIZE = 32

# Training settings a family needs beyond its tiny model options (its reference recipe).
TRAIN_CHANGES: dict[str, dict[str, Any]] = {
    "pix2pix": {"gan_mode": "vanilla", "pool_size": 0},
    "unit": {"gan_mode": "lsgan", "lr_policy": "step", "lr_step_size": 2},
    "munit": {"gan_mode": "lsgan", "lr_policy": "step", "lr_step_size": 2},
    # G every step, so that one step changes every network.
    "stargan": {"loss": {"n_critic": 1}},
    # Step 1 is one epoch of 2 batches (the 12 images of domains A and B), step 2 follows:
    # the 4-step runs below cross from step 1 into step 2, and resume at step 2 is there.
    "twostep": {"batch_size": 6, "n_epochs": 1, "n_epochs_decay": 0, "loss": {"encoder_steps": 4}},
}
# Steps the "every network" test runs: the two-step model trains e only in step 2.
STEPS_FOR_EVERY_NETWORK: dict[str, int] = {"twostep": 3}


@pytest.fixture(scope="module")
def paired_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """trainA/ and trainB/ with equal names: unaligned for the unpaired families, pairs for
    the paired ones."""
    root = tmp_path_factory.mktemp("paired")
    write_images(root / "trainA", 6, seed=1, size=SIZE)
    write_images(root / "trainB", 6, seed=2, tint=(1.0, 0.8, 0.6), size=SIZE)
    write_images(root / "testA", 2, seed=3, size=SIZE)
    write_images(root / "testB", 2, seed=4, tint=(1.0, 0.8, 0.6), size=SIZE)
    return root


def family_config(family: str, root: Path, **changes: Any) -> Any:
    return tiny_config(
        root,
        family=family,
        model=dict(TINY_MODEL_OPTIONS[family]),
        **{**TRAIN_CHANGES.get(family, {}), **changes},
    )


@pytest.fixture(scope="module")
def trained(paired_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """``trained(family)``: the run folder of 4 training steps of the family (cached)."""
    cache: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in cache:
            run = tmp_path_factory.mktemp(f"run-{family}")
            train(family_config(family, paired_data, max_steps=4), run)
            cache[family] = run
        return cache[family]

    return get


@pytest.mark.parametrize("family", FAMILIES)
def test_a_step_changes_every_network_and_losses_are_finite(
    family: str, paired_data: Path, tmp_path: Path
) -> None:
    cfg = family_config(family, paired_data, max_steps=STEPS_FOR_EVERY_NETWORK.get(family, 1))
    train(cfg, tmp_path / "run")
    torch.manual_seed(cfg.seed)  # the loop builds the networks right after this
    initial = get_family(family).build(options_from_dict(family, cfg.model))
    trained_state = load_checkpoint(tmp_path / "run" / "latest.pt")["networks"]
    assert set(trained_state) == set(initial)
    for name, net in initial.items():
        changed = [
            key
            for key, tensor in net.state_dict().items()
            if tensor.is_floating_point() and not torch.equal(tensor, trained_state[name][key])
        ]
        assert changed, f"{family}: one step left every weight of {name} unchanged"
    record = read_loss_log(tmp_path / "run" / "losses.jsonl")[-1]
    losses = {k: v for k, v in record.items() if k not in ("step", "epoch", "time")}
    losses = {k: v for k, v in losses.items() if not k.startswith("lr_")}
    assert losses and all(math.isfinite(v) for v in losses.values()), losses


@pytest.mark.parametrize("family", FAMILIES)
def test_resume_is_bitwise_exact(
    family: str, paired_data: Path, trained: Callable[[str], Path], tmp_path: Path
) -> None:
    full = trained(family)  # 4 steps in one go
    part = tmp_path / "part"
    train(family_config(family, paired_data, max_steps=2), part)
    train(family_config(family, paired_data, max_steps=4), part, resume=True)
    assert _losses(part) == _losses(full)
    _assert_same_state(load_checkpoint(full / "latest.pt"), load_checkpoint(part / "latest.pt"))


@pytest.fixture(scope="module")
def served(trained: Callable[[str], Path], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Every family exported (ONNX + FP16 ONNX, each checked for parity by the export)
    into one repository, and one i2i-serve on it."""
    repository = tmp_path_factory.mktemp("repository")
    manifests = {
        family: export_checkpoint(
            trained(family) / "latest.pt", repository, family, formats=("onnx", "onnx-fp16")
        )
        for family in FAMILIES
    }
    server = ServerProcess(repository, "--metrics-port", "-1", "--warmup-size", str(SIZE))
    with server, Client(server.target, timeout=60) as client:
        yield manifests, client
    assert server.stop() == 0


def _ort_outputs(path: Path, image: np.ndarray, style: np.ndarray | None) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds: dict[str, np.ndarray] = {session.get_inputs()[0].name: image[None]}
    if style is not None:
        feeds[session.get_inputs()[1].name] = style[None]
    return session.run(None, feeds)[0][0]


@pytest.mark.parametrize("family", FAMILIES)
def test_export_parity_and_a_round_trip_through_i2i_serve(family: str, served: Any) -> None:
    manifests, client = served
    folder, manifest = manifests[family]
    precisions = {(a.get("direction"), a["precision"]) for a in manifest["artifacts"]}
    assert {(d, p) for d in manifest["directions"] for p in ("fp32", "fp16")} <= precisions
    style_dim = get_family(family).style_dim
    rng = np.random.default_rng(7)
    for direction, spec in manifest["directions"].items():
        channels = spec["input"]["shape"][-1]
        image = rng.integers(0, 256, (SIZE, SIZE, channels), dtype=np.uint8)
        style = rng.standard_normal(style_dim).astype(np.float32) if style_dim else None
        result = client.translate(
            image,
            model=family,
            direction=direction,
            style_code=None if style is None else style.tolist(),
        )
        (served_image,) = result.images
        served_pixels = np.asarray(served_image)
        assert served_pixels.shape == (SIZE, SIZE, spec["output"]["shape"][-1])
        expected = _ort_outputs(folder / f"{direction}.onnx", image, style)
        # The server runs the FP32 graph on the CPU: the same pixels as ONNX Runtime.
        np.testing.assert_array_equal(served_pixels, expected)
    if get_family(family).multi_domain:  # the whole conditional graph, FP32 and FP16
        whole = {a["precision"] for a in manifest["artifacts"] if a.get("graph") == "conditional"}
        assert whole == {"fp32", "fp16"}
        assert manifest["domains"] == [d.removeprefix("to_") for d in manifest["directions"]]


@pytest.mark.parametrize("family", [f for f in FAMILIES if get_family(f).style_dim])
def test_styles_are_deterministic_by_seed_and_samples_differ(family: str, served: Any) -> None:
    _, client = served
    image = np.random.default_rng(3).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)

    def samples(seed: int) -> list[bytes]:
        result = client.translate(
            image, model=family, direction="A2B", num_samples=3, style_seed=seed
        )
        return [np.asarray(i).tobytes() for i in result.images]

    first = samples(5)
    assert len(first) == 3
    assert samples(5) == first
    assert len(set(first)) == 3, "three styles gave identical outputs"
    assert samples(6) != first


def test_a_munit_with_another_style_size_exports_and_translates(tmp_path: Path) -> None:
    """S comes from the model's options, not the family's default of 8: export, the
    repository's runtimes and the checkpoint's PyTorch path all take 4 values."""
    from i2i.checkpoint import make_checkpoint, save_checkpoint
    from i2i.models import create_networks
    from i2i.serving.errors import InvalidArgument
    from i2i.serving.local import LocalTranslator
    from tests.serving.conftest import png_bytes, sample_image

    options = {**TINY_MODEL_OPTIONS["munit"], "style_dim": 4}
    torch.manual_seed(0)
    networks = create_networks("munit", options)
    payload = make_checkpoint(
        family="munit",
        config={"family": "munit", "model": options},
        domains=["A", "B"],
        networks={n: m.state_dict() for n, m in networks.items()},
        step=1,
    )
    checkpoint = save_checkpoint(payload, tmp_path / "munit4.pt")
    _, manifest = export_checkpoint(checkpoint, tmp_path / "repo", "m4", formats=["onnx"])
    for spec in manifest["directions"].values():
        assert spec["style"]["shape"] == ["batch", 4]
        assert spec["style_encoder"]["output"]["shape"] == ["batch", 4]
    image = png_bytes(sample_image(SIZE, SIZE, seed=1))
    reference = png_bytes(sample_image(SIZE, SIZE, seed=2))
    local = LocalTranslator(repository=tmp_path / "repo", model="m4", direction="A2B")
    from_checkpoint = LocalTranslator(checkpoint=checkpoint, direction="A2B")
    try:
        for translator in (local, from_checkpoint):
            assert len(translator.translate(image, style_code=[0.5, -1.0, 0.25, 2.0])) == 1
            assert len(translator.translate(image, style_reference=reference)) == 1
            assert len(translator.translate(image, num_samples=2, style_seed=3)) == 2
            with pytest.raises(InvalidArgument, match="takes exactly 4"):
                translator.translate(image, style_code=[0.0] * 8)
    finally:
        local.close()
        from_checkpoint.close()
