"""The moving average of the generators (``ema_decay``): the update, every family's
trainer, exact resume, and eval and export using the averaged weights."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from i2i.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_trained_networks,
    save_checkpoint,
    weights_used,
)
from i2i.cli.main import main as i2i_main
from i2i.export import export_checkpoint
from i2i.models import create_networks, get_family, list_families, options_from_dict
from i2i.repository import RepositoryError, validate_manifest
from i2i.training import ConfigError, train
from i2i.training.config import config_from_dict
from i2i.training.ema import GeneratorEMA
from i2i.training.evaluate import evaluate
from tests.conftest import TINY_MODEL_OPTIONS, tiny_config, untrained_checkpoint
from tests.test_families import STEPS_FOR_EVERY_NETWORK, family_config, paired_data  # noqa: F401

DECAY = 0.75


class Tiny(nn.Module):
    """A linear layer and a batch norm: parameters, float buffers and an integer buffer."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


def _step(net: nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    optimizer.zero_grad()
    net(x).pow(2).sum().backward()
    optimizer.step()


def test_the_update_is_the_formula_recomputed_by_hand() -> None:
    torch.manual_seed(0)
    nets = {"g": Tiny().double(), "d": Tiny().double()}
    optimizers = [torch.optim.SGD(nets[n].parameters(), lr=0.1) for n in ("g", "d")]
    ema = GeneratorEMA(nets, ["g"], DECAY, start=1)
    ema.watch(optimizers)
    assert set(ema.state_dict()) == {"g"}  # only the generators are averaged
    expected = {k: v.clone() for k, v in nets["g"].state_dict().items()}

    _step(nets["g"], optimizers[0], seed=1)
    assert ema.update(1) == ["g"]  # step 1 <= start: a copy
    expected = {k: v.clone() for k, v in nets["g"].state_dict().items()}
    for step in (2, 3):
        _step(nets["g"], optimizers[0], seed=step)
        assert ema.update(step) == ["g"]
        current = nets["g"].state_dict()
        for key, value in current.items():
            if value.is_floating_point():  # weights and running statistics: averaged
                expected[key] = DECAY * expected[key] + (1 - DECAY) * value
            else:  # num_batches_tracked: copied
                expected[key] = value.clone()
    averaged = ema.state_dict()["g"]
    assert averaged["norm.num_batches_tracked"].item() == 3
    for key, value in expected.items():
        torch.testing.assert_close(averaged[key], value, rtol=1e-12, atol=1e-12)
        if value.is_floating_point() and key != "norm.num_batches_tracked":
            assert not torch.equal(averaged[key], nets["g"].state_dict()[key]), key

    # A step of another network's optimiser (or none at all) leaves the average alone.
    before = copy.deepcopy(ema.state_dict())
    _step(nets["d"], optimizers[1], seed=9)
    assert ema.update(4) == []
    for key, value in before["g"].items():
        assert torch.equal(ema.state_dict()["g"][key], value)


def test_a_step_the_grad_scaler_skips_is_not_averaged() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    ema = GeneratorEMA({"g": net}, ["g"], DECAY)
    ema.watch([optimizer])
    scaler.scale(net(torch.ones(1, 3)).sum() * math.inf).backward()
    scaler.step(optimizer)  # infinite gradients: the optimiser does not step
    assert ema.update(1) == []
    optimizer.zero_grad()
    scaler.update()
    scaler.scale(net(torch.ones(1, 3)).sum()).backward()
    scaler.step(optimizer)
    assert ema.update(2) == ["g"]


def test_loading_an_average_that_does_not_fit_is_refused() -> None:
    ema = GeneratorEMA({"g": nn.Linear(3, 2)}, ["g"], DECAY)
    with pytest.raises(ValueError, match="lacks network"):
        ema.load_state_dict({})
    with pytest.raises(ValueError, match="shape"):
        ema.load_state_dict({"g": nn.Linear(4, 2).state_dict()})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("ema_decay", 1.0, "ema_decay must be in"),
        ("ema_decay", -0.1, "ema_decay must be in"),
        ("ema_start", -1, "ema_start must be >= 0"),
    ],
)
def test_config_rejects_bad_ema_values(key: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({key: value})
    assert config_from_dict({"ema_decay": 0.999}).ema_decay == 0.999


def _replayed_average(run: Path, steps: int, family: str, cfg: Any) -> dict[str, dict]:
    """The average recomputed from the per-step checkpoints: a generator whose weights a
    step changed is folded in, ``DECAY * average + (1 - DECAY) * weights``."""
    torch.manual_seed(cfg.seed)  # the loop builds the networks right after this
    initial = get_family(family).build(options_from_dict(family, cfg.model))
    previous = {n: initial[n].state_dict() for n in get_family(family).generators}
    average = copy.deepcopy(previous)
    for step in range(1, steps + 1):
        networks = load_checkpoint(run / f"step_{step:08d}.pt")["networks"]
        for name in average:
            now = networks[name]
            if all(torch.equal(now[k], previous[name][k]) for k in now):
                continue  # not trained this step
            for key, value in now.items():
                if value.is_floating_point():
                    average[name][key] = DECAY * average[name][key] + (1 - DECAY) * value
                else:
                    average[name][key] = value.clone()
            previous[name] = now
    return average


def _assert_same_average(saved: dict, expected: dict) -> None:
    assert set(saved) == set(expected)
    for name, state in expected.items():
        for key, value in state.items():
            torch.testing.assert_close(saved[name][key], value, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("family", list_families())
def test_every_family_averages_each_of_its_generators(
    family: str,
    paired_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    steps = STEPS_FOR_EVERY_NETWORK.get(family, 2)  # twostep: e trains in step 2 only
    cfg = family_config(
        family, paired_data, max_steps=steps, ema_decay=DECAY, save_every=1, keep_last=10
    )
    train(cfg, tmp_path / "run")
    checkpoint = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert set(checkpoint["ema"]) == set(get_family(family).generators)
    for name, state in checkpoint["ema"].items():
        raw = checkpoint["networks"][name]
        if (family, name) == ("twostep", "g"):
            continue  # step 2 freezes g's average as g: test_twostep_step_2_inverts_the_average
        assert any(not torch.equal(v, raw[k]) for k, v in state.items()), (
            f"{family}: the average of {name} equals its weights"
        )
    _assert_same_average(checkpoint["ema"], _replayed_average(tmp_path / "run", steps, family, cfg))


def test_stargan_averages_g_on_its_generator_steps_only(
    paired_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = family_config(
        "stargan",
        paired_data,
        max_steps=4,
        ema_decay=DECAY,
        save_every=1,
        keep_last=10,
        loss={"n_critic": 2},
    )
    train(cfg, tmp_path / "run")
    steps = [load_checkpoint(tmp_path / "run" / f"step_{s:08d}.pt") for s in range(1, 5)]
    # g trains on steps 2 and 4: its average moves then only.
    for before, after, moved in zip(steps[:-1], steps[1:], (True, False, True), strict=True):
        same = all(torch.equal(v, before["ema"]["g"][k]) for k, v in after["ema"]["g"].items())
        assert same != moved
    _assert_same_average(steps[-1]["ema"], _replayed_average(tmp_path / "run", 4, "stargan", cfg))


def test_twostep_step_2_inverts_the_average(
    paired_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    # Eval and export pair the averaged g with e, so e must learn to invert that g: step 2
    # starts by making the frozen g its own average.
    steps = STEPS_FOR_EVERY_NETWORK["twostep"]
    cfg = family_config(
        "twostep", paired_data, max_steps=steps, ema_decay=DECAY, save_every=1, keep_last=10
    )
    train(cfg, tmp_path / "run")
    last = load_checkpoint(tmp_path / "run" / "latest.pt")
    assert last["training_state"]["trainer"]["phase"] == 2
    raw_g, ema_g = last["networks"]["g"], last["ema"]["g"]
    assert all(torch.equal(v, ema_g[k]) for k, v in raw_g.items())
    # ... and that average is not the last step-1 weights (it really was averaged).
    step1 = [
        load_checkpoint(p)
        for p in sorted((tmp_path / "run").glob("step_*.pt"))
        if load_checkpoint(p)["training_state"]["trainer"]["phase"] == 1
    ][-1]
    assert any(not torch.equal(v, step1["networks"]["g"][k]) for k, v in raw_g.items())


@pytest.mark.parametrize("family", ["cyclegan", "twostep"])
def test_resume_with_ema_is_bitwise_exact(
    family: str,
    paired_data: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    # twostep: steps 1-2 train g (step 1 of the model), 3-4 train e; resume at the boundary.
    full, part = tmp_path / "full", tmp_path / "part"
    train(family_config(family, paired_data, max_steps=4, ema_decay=DECAY), full)
    train(family_config(family, paired_data, max_steps=2, ema_decay=DECAY), part)
    train(family_config(family, paired_data, max_steps=4, ema_decay=DECAY), part, resume=True)
    a, b = load_checkpoint(full / "latest.pt"), load_checkpoint(part / "latest.pt")
    assert set(a["ema"]) == set(b["ema"]) == set(get_family(family).generators)
    for name, state in a["ema"].items():
        for key, value in state.items():
            assert torch.equal(value, b["ema"][name][key]), f"{name}.{key}"
    for name, state in a["networks"].items():
        for key, value in state.items():
            assert torch.equal(value, b["networks"][name][key]), f"{name}.{key}"


def test_resume_may_turn_ema_on(tiny_dataset: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(tiny_config(tiny_dataset, max_steps=2), run)
    assert "ema" not in load_checkpoint(run / "latest.pt")
    train(tiny_config(tiny_dataset, max_steps=3, ema_decay=DECAY), run, resume=True)
    resumed = load_checkpoint(run / "latest.pt")
    assert set(resumed["ema"]) == {"g_ab", "g_ba"}
    # The average started from the step-2 weights and folded in step 3's.
    step2 = load_checkpoint(run / "step_00000002.pt")
    for key, value in resumed["networks"]["g_ab"].items():
        if value.is_floating_point():
            expected = DECAY * step2["networks"]["g_ab"][key] + (1 - DECAY) * value
            torch.testing.assert_close(resumed["ema"]["g_ab"][key], expected)


# ---- eval and export read the average


@pytest.fixture
def ema_checkpoint(tmp_path: Path) -> Path:
    """A tiny CycleGAN checkpoint whose "ema" holds other weights than its networks (those
    of another seed), so outputs of the two differ clearly."""
    path = untrained_checkpoint(tmp_path / "ckpt" / "raw.pt", seed=0)
    payload = load_checkpoint(path)
    torch.manual_seed(1)
    other = create_networks("cyclegan", TINY_MODEL_OPTIONS["cyclegan"])
    payload["ema"] = {n: other[n].state_dict() for n in get_family("cyclegan").generators}
    return save_checkpoint(payload, tmp_path / "ckpt" / "ema.pt")


def _as_raw(checkpoint: Path, out: Path) -> Path:
    """The same checkpoint with its average as its networks and no "ema"."""
    payload = load_checkpoint(checkpoint)
    payload["networks"].update(payload.pop("ema"))
    return save_checkpoint(payload, out)


def test_load_trained_networks_gives_the_average_unless_told_not_to(
    ema_checkpoint: Path, tmp_path: Path
) -> None:
    payload, averaged = load_trained_networks(ema_checkpoint)
    assert weights_used(payload) == "ema" and weights_used(payload, ema=False) == "raw"
    _, raw = load_trained_networks(ema_checkpoint, ema=False)
    for name in ("g_ab", "g_ba"):
        for key, value in averaged[name].state_dict().items():
            assert torch.equal(value, payload["ema"][name][key])
            assert torch.equal(raw[name].state_dict()[key], payload["networks"][name][key])
    assert weights_used(load_checkpoint(untrained_checkpoint(tmp_path / "plain.pt"))) == "raw"
    payload["ema"] = {"nonexistent": {}}
    broken = save_checkpoint(payload, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="--no-ema"):
        load_trained_networks(broken)


def _scores(report: dict) -> dict:
    return report["directions"]


def test_eval_uses_the_average_and_no_ema_the_raw_weights(
    ema_checkpoint: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    averaged = evaluate(ema_checkpoint, tiny_dataset, out_dir=tmp_path / "ema")
    assert averaged["weights"] == "ema"
    same = evaluate(_as_raw(ema_checkpoint, tmp_path / "as_raw.pt"), tiny_dataset)
    assert same["weights"] == "raw"
    assert _scores(averaged) == _scores(same)
    # The CLI's --no-ema evaluates the raw weights: other numbers.
    assert (
        i2i_main(
            [
                "eval",
                str(ema_checkpoint),
                "--data",
                str(tiny_dataset),
                "--out",
                str(tmp_path / "raw"),
            ]
            + ["--no-ema"]
        )
        == 0
    )
    raw = json.loads((tmp_path / "raw" / "eval.json").read_text())
    assert raw["weights"] == "raw"
    assert _scores(raw) != _scores(averaged)
    assert raw["directions"]["A2B"]["cycle_psnr"] != averaged["directions"]["A2B"]["cycle_psnr"]


def _onnx_output(path: Path, image: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: image[None]})[0][0]


def _torch_output(networks: dict[str, nn.Module], image: np.ndarray) -> np.ndarray:
    options = options_from_dict("cyclegan", TINY_MODEL_OPTIONS["cyclegan"])
    translator = get_family("cyclegan").translators(networks, options)["A2B"]
    with torch.no_grad():
        return translator(torch.from_numpy(image[None])).numpy()[0]


def test_export_uses_the_average_and_no_ema_the_raw_weights(
    ema_checkpoint: Path, tmp_path: Path
) -> None:
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    _, averaged = load_trained_networks(ema_checkpoint)
    _, raw = load_trained_networks(ema_checkpoint, ema=False)
    expected_ema, expected_raw = _torch_output(averaged, image), _torch_output(raw, image)
    assert np.abs(expected_ema.astype(int) - expected_raw.astype(int)).max() > 10

    folder, manifest = export_checkpoint(ema_checkpoint, tmp_path / "repo", "m", formats=["onnx"])
    assert manifest["source"]["weights"] == "ema"
    out = _onnx_output(folder / "A2B.onnx", image)
    assert np.abs(out.astype(int) - expected_ema.astype(int)).max() <= 1
    assert np.abs(out.astype(int) - expected_raw.astype(int)).max() > 10

    assert (
        i2i_main(
            ["export", str(ema_checkpoint), "--repository", str(tmp_path / "repo"), "--name", "m"]
            + ["--formats", "onnx", "--no-ema"]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "repo" / "m" / "2" / "manifest.json").read_text())
    assert manifest["source"]["weights"] == "raw"
    out = _onnx_output(tmp_path / "repo" / "m" / "2" / "A2B.onnx", image)
    assert np.abs(out.astype(int) - expected_raw.astype(int)).max() <= 1


def test_manifest_weights_is_optional_and_checked(tiny_repository: Path) -> None:
    manifest = json.loads((tiny_repository / "tiny" / "1" / "manifest.json").read_text())
    old = copy.deepcopy(manifest)
    old["source"].pop("weights", None)
    validate_manifest(old)  # written before weights were recorded: still valid
    manifest["source"]["weights"] = "ema"
    validate_manifest(manifest)
    manifest["source"]["weights"] = "average"
    with pytest.raises(RepositoryError, match="weights"):
        validate_manifest(manifest)


@pytest.mark.slow
def test_ddp_average_follows_the_formula_across_a_resume(
    tiny_dataset: Path, tmp_path: Path
) -> None:
    # Two gloo processes, then a resume: rank 0's saved average is the one replayed from
    # the per-step weights (equal on every rank under DDP; every rank resumes the saved one).
    from tests.training.test_distributed import CONFIG, _torchrun

    (tmp_path / "ddp.yaml").write_text(
        CONFIG + f"ema_decay: {DECAY}\nsave_every: 1\nkeep_last: 10\n"
    )
    run = tmp_path / "run"
    base = ["--config", str(tmp_path / "ddp.yaml"), "--data", str(tiny_dataset)]
    first = _torchrun(*base, "--out", str(run), "--max-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = _torchrun(*base, "--resume", str(run), "--max-steps", "3")
    assert second.returncode == 0, second.stderr[-3000:]
    cfg = config_from_dict(load_checkpoint(run / "latest.pt")["config"])
    saved = load_checkpoint(run / "latest.pt")["ema"]
    _assert_same_average(saved, _replayed_average(run, 3, "cyclegan", cfg))
